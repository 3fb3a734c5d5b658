//! `sluice-lab bench flows`: what flow events cost the engine's forwarding (issue 7: "at
//! the engine's full packet rate, flow events cost at most 5% of forwarding throughput,
//! and overflow shows up as lost events").
//!
//! The forwarding benchmark's setup ([`super::forward`], V2): a fresh two-pod lab with
//! static pods (no agent), sluice-engine with one busy worker on its own core,
//! `sluice-pktgen tx` in pod 1 on CPU 0 at the maximum rate, an XDP_DROP sink on pod 2's
//! eth0 counting what arrives. Three variants, interleaved per round (A B C A B C ...):
//!
//! - **baseline** (A): the engine serves its events socket but nobody subscribes, so
//!   its workers build no events (what every node without observers pays).
//! - **medium** (B): `--monitor-aggregation medium` (the default) and one subscriber
//!   ([`subscriber::Subscriber`]) reading and parsing every line.
//! - **none** (C): `--monitor-aggregation none` (an event per forwarded frame) and the
//!   same subscriber: more events than the queues hold, so losses are expected and
//!   must show up as `events.lost` in the engine's counters and as `Lost` lines.
//!
//! The consumer (`--consumer`): `bench` (default) is that subscriber thread, in a lab
//! without an agent; `agent` runs the lab through sluice-cni and the real sluice-agent,
//! restarted with flow observation on for B and C ([`agent_consumer`]), and reads what it
//! processed and lost from its Prometheus metrics; in A its agent runs unsubscribed.
//!
//! The traffic mix: `--flows` UDP flows (source ports from 10000, destination port 9)
//! cycled in order, against a conntrack table of `--ct-capacity` entries (two per flow)
//! slightly too small to hold them all: the flows whose buckets overflow are evicted and
//! come back as new flows, a steady few per cent of the frames (8250 flows on 16384
//! entries gave about 4% on the 2-CPU VM), the rest are established flows. Every trial
//! measures the fraction from the engine's conntrack inserts, since at `medium` a UDP
//! frame becomes an event exactly when it opens a flow.

mod agent_consumer;
mod subscriber;
mod summary;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use sluice_xdp::{AttachMode, Sink};

use super::forward::{find_pktgen, TRAFGEN_CPU};
use super::labkit::{link_counts, wait_for_ports, within_netns};
use super::machine::{loadavg, loadavg_1min, process_ticks, ticks_per_second, Machine};
use crate::{EngineOptions, Lab, LabSpec, GATEWAY_MAC};

pub use agent_consumer::AgentCounts;
pub use subscriber::{Subscriber, SubscriberCounts};
pub use summary::{markdown_table, median, summarize, target, Summary, Target, TARGET_RATIO};

/// Frames from pod 1 to pod 2.
const FROM_POD: usize = 1;
const TO_POD: usize = 2;
/// First UDP source port; flow `i` uses `FIRST_PORT + i`.
const FIRST_PORT: u32 = 10000;
const DST_PORT: u16 = 9;
/// Most flows: the source ports from `FIRST_PORT` to 65535.
const MAX_FLOWS: u32 = 65535 - FIRST_PORT + 1;
/// The engine's smallest conntrack table.
const MIN_CT_CAPACITY: usize = 1024;
/// How long the engine may take to see a subscriber (its events thread polls every few ms).
const OBSERVING_TIMEOUT: Duration = Duration::from_secs(3);
/// After the traffic: how long the consumer may take to hear of every lost event (a slow
/// subscriber's `Lost` report waits until its socket buffer has room again).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// What a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Baseline,
    Medium,
    None,
}

impl Variant {
    /// In run order within a round.
    pub const ALL: [Variant; 3] = [Variant::Baseline, Variant::Medium, Variant::None];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Medium => "medium",
            Variant::None => "none",
        }
    }

    /// One line for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Baseline => "A events socket, no subscriber",
            Variant::Medium => "B aggregation medium + subscriber",
            Variant::None => "C aggregation none + subscriber",
        }
    }

    /// `--monitor-aggregation` for the engine.
    pub fn aggregation(self) -> &'static str {
        match self {
            Variant::Baseline | Variant::Medium => "medium",
            Variant::None => "none",
        }
    }

    pub fn subscribes(self) -> bool {
        self != Variant::Baseline
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Variant> {
        match text.trim() {
            "baseline" => Ok(Variant::Baseline),
            "medium" => Ok(Variant::Medium),
            "none" => Ok(Variant::None),
            other => bail!("unknown variant {other:?} (baseline, medium or none)"),
        }
    }
}

/// Who reads the engine's events in variants B and C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consumer {
    /// A subscriber thread in this process ([`Subscriber`]); static pods, no agent.
    Bench,
    /// sluice-agent with `--engine-events-socket`; pods wired by sluice-cni.
    Agent,
}

impl Consumer {
    pub fn name(self) -> &'static str {
        match self {
            Consumer::Bench => "bench",
            Consumer::Agent => "agent",
        }
    }

    /// For the report.
    pub fn describe(self) -> &'static str {
        match self {
            Consumer::Bench => {
                "one subscriber thread in sluice-lab (pinned to the generator's CPU 0, off the worker core) on the engine's events \
                 socket, parsing every line into sluice_api::events::EngineEvent as the \
                 agent's events client does; static pods, no agent, so A has no subscriber"
            }
            Consumer::Agent => {
                "sluice-agent (pods wired by sluice-cni) restarted for B and C with \
                 --engine-events-socket, a 4095-flow Hubble ring and metrics on 127.0.0.1:9962 \
                 in the node namespace; flows read = hubble_flows_processed_total, lost = \
                 hubble_lost_events_total; in A the agent runs without observation"
            }
        }
    }
}

impl FromStr for Consumer {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Consumer> {
        match text.trim() {
            "bench" => Ok(Consumer::Bench),
            "agent" => Ok(Consumer::Agent),
            other => bail!("--consumer {other:?}: bench or agent"),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsConfig {
    /// Rounds; every round runs each variant once.
    pub trials: u32,
    /// Length of the measured window of a trial.
    pub seconds: u32,
    /// Traffic before the window starts.
    pub warmup_seconds: f64,
    /// Frame size including the 4-byte FCS.
    pub size: usize,
    /// UDP flows cycled by the generator (source ports 10000, 10001, ...).
    pub flows: u32,
    /// The engine's `--ct-capacity` (entries, two per flow) in every variant.
    pub ct_capacity: usize,
    /// The engine's `--events-queue-size` per worker; `None` keeps its default.
    pub events_queue_size: Option<usize>,
    /// sluice-engine binary; `None` means [`crate::find_engine`].
    pub engine: Option<PathBuf>,
    /// Core of the engine's one worker (`--cores`).
    pub engine_core: usize,
    /// Appended to the engine's command line.
    pub engine_args: Vec<String>,
    /// sluice-pktgen binary; `None` means [`find_pktgen`].
    pub pktgen: Option<PathBuf>,
    pub consumer: Consumer,
}

impl Default for FlowsConfig {
    fn default() -> FlowsConfig {
        FlowsConfig {
            trials: 3,
            seconds: 5,
            warmup_seconds: 1.0,
            size: 64,
            flows: 8250,
            ct_capacity: 16384,
            events_queue_size: None,
            engine: None,
            engine_core: 1,
            engine_args: Vec::new(),
            pktgen: None,
            consumer: Consumer::Bench,
        }
    }
}

impl FlowsConfig {
    /// `--quick`: one round of 2 s windows after 0.5 s of warm-up.
    pub fn quick(mut self) -> FlowsConfig {
        self.trials = 1;
        self.seconds = 2;
        self.warmup_seconds = 0.5;
        self
    }

    pub fn validate(&self) -> Result<()> {
        ensure!((1..=20).contains(&self.trials), "--trials must be 1 to 20");
        ensure!(
            (1..=60).contains(&self.seconds),
            "--seconds must be 1 to 60"
        );
        ensure!(
            (0.0..=10.0).contains(&self.warmup_seconds),
            "--warmup must be 0 to 10 s"
        );
        ensure!(
            (64..=1518).contains(&self.size),
            "--size must be 64 to 1518 (bytes including the FCS)"
        );
        ensure!(
            (1..=MAX_FLOWS).contains(&self.flows),
            "--flows must be 1 to {MAX_FLOWS} (source ports {FIRST_PORT} to 65535)"
        );
        ensure!(
            (MIN_CT_CAPACITY..=1 << 24).contains(&self.ct_capacity),
            "--ct-capacity must be {MIN_CT_CAPACITY} to {} entries",
            1 << 24
        );
        if let Some(size) = self.events_queue_size {
            ensure!(
                (1..=1 << 20).contains(&size),
                "--events-queue-size must be 1 to {} events",
                1 << 20
            );
        }
        Ok(())
    }

    /// How long the generator runs in one trial.
    fn generator_seconds(&self) -> f64 {
        self.warmup_seconds + f64::from(self.seconds) + 1.0
    }

    /// An upper bound on one trial: setup, the generator's run, its grace, teardown.
    pub fn trial_bound(&self) -> Duration {
        Duration::from_secs_f64(self.generator_seconds() + 30.0)
    }

    /// What a trial usually takes (lab and engine setup about 3 s), for the estimate.
    pub fn trial_estimate(&self) -> Duration {
        Duration::from_secs_f64(self.generator_seconds() + 3.0)
    }

    /// (round, variant) in run order.
    pub fn plan(&self) -> Vec<(u32, Variant)> {
        (1..=self.trials)
            .flat_map(|round| Variant::ALL.into_iter().map(move |v| (round, v)))
            .collect()
    }

    /// The engine's arguments beyond the lab's own for `variant`.
    pub fn engine_args(&self, variant: Variant) -> Vec<String> {
        let mut args: Vec<String> = [
            "--mode",
            "busy",
            "--cores",
            &self.engine_core.to_string(),
            "--ct-capacity",
            &self.ct_capacity.to_string(),
            "--monitor-aggregation",
            variant.aggregation(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(size) = self.events_queue_size {
            args.extend(["--events-queue-size".to_string(), size.to_string()]);
        }
        args.extend(self.engine_args.iter().cloned());
        args
    }

    /// `sluice-pktgen tx` arguments: `flows` source ports, max rate, on [`TRAFGEN_CPU`].
    pub fn pktgen_args(
        &self,
        src_mac: &str,
        src_ip: &str,
        dst_ip: &str,
        seconds: f64,
    ) -> Vec<String> {
        let sport = if self.flows > 1 {
            format!("{FIRST_PORT}-{}", FIRST_PORT + self.flows - 1)
        } else {
            FIRST_PORT.to_string()
        };
        #[rustfmt::skip]
        let args = [
            "tx", "--dev", "eth0",
            "--src-mac", src_mac, "--dst-mac", &GATEWAY_MAC.to_string(),
            "--src-ip", src_ip, "--dst-ip", dst_ip,
            "--src-port", &sport, "--dst-port", &DST_PORT.to_string(),
            "--size", &self.size.to_string(), "--flows", &self.flows.to_string(),
            "--rate", "max", "--duration", &format!("{seconds:.1}"),
            "--cpu", &TRAFGEN_CPU.to_string(), "--json",
        ];
        args.iter().map(|a| a.to_string()).collect()
    }
}

/// The engine's flow event counters (the `events` block of its stats document).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventCounters {
    /// Events the workers queued.
    pub emitted: u64,
    /// Events lost to full worker queues.
    pub lost: u64,
    /// Events the events thread could not write to a slow subscriber.
    pub subscriber_lost: u64,
}

impl EventCounters {
    /// Reads the `events` block; an error naming the field when one is missing.
    pub fn from_stats(stats: &serde_json::Value) -> Result<EventCounters> {
        let events = &stats["events"];
        let field = |name: &str| {
            events[name].as_u64().with_context(|| {
                format!("engine stats: no events.{name} (an engine without flow events?)")
            })
        };
        Ok(EventCounters {
            emitted: field("emitted")?,
            lost: field("lost")?,
            subscriber_lost: field("subscriber_lost")?,
        })
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &EventCounters) -> EventCounters {
        EventCounters {
            emitted: self.emitted.saturating_sub(earlier.emitted),
            lost: self.lost.saturating_sub(earlier.lost),
            subscriber_lost: self.subscriber_lost.saturating_sub(earlier.subscriber_lost),
        }
    }
}

/// One trial of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub variant: Variant,
    /// 1-based round.
    pub round: u32,
    pub lab: String,
    pub window_seconds: f64,
    /// sluice-pktgen's own rate over its whole run.
    pub generator_pps: Option<f64>,
    /// Frames pod 1's eth0 sent plus those it dropped, over the window.
    pub offered_pps: f64,
    /// Frames the sink on pod 2 counted over the window: the throughput.
    pub delivered_packets: u64,
    pub delivered_pps: f64,
    /// Frames the engine received over the window.
    pub engine_rx_pps: f64,
    /// Conntrack inserts over the window: new flows.
    pub new_flows_per_second: f64,
    /// New flows per frame the engine received.
    pub new_flow_fraction: f64,
    pub ct_evictions: u64,
    /// The engine's event counters over the window.
    pub events: EventCounters,
    /// What the subscriber read over the window (variants B and C, consumer bench).
    pub subscriber: Option<SubscriberCounts>,
    /// What the agent processed and lost over the window (B and C, consumer agent).
    pub agent: Option<AgentCounts>,
    /// Events the engine lost over the whole trial (worker queues plus not written to the
    /// subscriber), read after the traffic stopped and the consumer drained.
    pub run_events_lost: u64,
    /// Events the consumer was told were lost over the whole trial (`Lost` lines, or the
    /// agent's counter), after the drain; `None` without a consumer.
    pub run_lost_reported: Option<u64>,
    /// Flows the consumer read per second of the window.
    pub events_delivered_per_second: Option<f64>,
    /// Engine drop reasons over the window.
    pub engine_drops: BTreeMap<String, u64>,
    /// CPU seconds of the engine process (all its threads, the events thread too) per
    /// second of the window.
    pub engine_cpu_per_second: Option<f64>,
    /// CPU seconds of this process (the subscriber's reading thread, mostly) per second.
    pub bench_cpu_per_second: Option<f64>,
    pub loadavg: String,
}

impl Trial {
    /// Events the consumer heard were lost (Lost lines, or the agent's lost counter).
    pub fn lost_reported(&self) -> u64 {
        self.subscriber.map_or(0, |s| s.lost_reported())
            + self.agent.as_ref().map_or(0, AgentCounts::lost_total)
    }
}

/// A trial that could not be measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub variant: Variant,
    pub round: u32,
    pub error: String,
}

/// Everything a run produced; written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: FlowsConfig,
    pub machine: Machine,
    pub consumer: &'static str,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<Summary>,
    pub target: Target,
}

/// The engine's counters of interest in one stats document.
struct EngineSample {
    rx: u64,
    inserts: u64,
    evictions: u64,
    drops: BTreeMap<String, u64>,
    events: EventCounters,
}

impl EngineSample {
    fn parse(stats: &serde_json::Value) -> Result<EngineSample> {
        let number = |value: &serde_json::Value, what: &str| {
            value
                .as_u64()
                .with_context(|| format!("engine stats: no {what}"))
        };
        let drops = stats["drops"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| {
                        Some((row["name"].as_str()?.to_string(), row["count"].as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(EngineSample {
            rx: number(&stats["totals"]["rx_packets"], "totals.rx_packets")?,
            inserts: number(&stats["conntrack"]["inserts"], "conntrack.inserts")?,
            evictions: number(&stats["conntrack"]["evictions"], "conntrack.evictions")?,
            drops,
            events: EventCounters::from_stats(stats)?,
        })
    }
}

/// Every counter at one edge of the window.
struct Snapshot {
    at: Instant,
    sink: u64,
    tx: (u64, u64),
    engine: EngineSample,
    engine_ticks: Option<u64>,
    own_ticks: Option<u64>,
    subscriber: Option<SubscriberCounts>,
    agent: Option<AgentCounts>,
}

fn snapshot(
    lab: &Lab,
    sink: &Sink,
    engine_pid: u32,
    subscriber: Option<&Subscriber>,
    agent: bool,
) -> Result<Snapshot> {
    let pod1 = lab.pod(FROM_POD)?.netns.clone();
    let tx = link_counts(&pod1, "eth0", "tx")?;
    let sink_count = sink.counts().context("reading the sink's counts")?.0;
    let subscriber = subscriber.map(Subscriber::counts);
    let agent = if agent {
        Some(agent_consumer::scrape(lab)?)
    } else {
        None
    };
    let at = Instant::now();
    let stats = lab.engine_stats().context("reading the engine's stats")?;
    Ok(Snapshot {
        at,
        sink: sink_count,
        tx,
        engine: EngineSample::parse(&stats)?,
        engine_ticks: process_ticks(engine_pid),
        own_ticks: process_ticks(std::process::id()),
        subscriber,
        agent,
    })
}

/// The events socket the engine serves, from its stats document.
fn events_socket(stats: &serde_json::Value) -> Result<PathBuf> {
    stats["events"]["socket"]
        .as_str()
        .map(PathBuf::from)
        .context("engine stats: events.socket is null: the engine serves no --events-socket")
}

/// Waits until the engine's `events.observing` is `want` (a subscriber seen or not).
fn wait_observing(lab: &Lab, want: bool) -> Result<()> {
    let deadline = Instant::now() + OBSERVING_TIMEOUT;
    loop {
        let stats = lab.engine_stats()?;
        let observing = stats["events"]["observing"]
            .as_bool()
            .context("engine stats: no events.observing")?;
        if observing == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the engine's events.observing stayed {observing} for {OBSERVING_TIMEOUT:?} \
             (subscribers: {})",
            stats["events"]["subscribers"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_trial(config: &FlowsConfig, variant: Variant, round: u32) -> Result<Trial> {
    let spec = match config.consumer {
        Consumer::Bench => LabSpec::engine(2).with_static_pods(),
        Consumer::Agent => LabSpec::engine(2),
    };
    let lab = Lab::new(spec)?;
    let result = measure(config, variant, round, &lab);
    // `measure` has detached its sink and disconnected; now the namespaces go.
    let teardown = lab.teardown();
    let trial = result?;
    teardown?;
    Ok(trial)
}

fn measure(config: &FlowsConfig, variant: Variant, round: u32, lab: &Lab) -> Result<Trial> {
    let from = lab.pod(FROM_POD)?.clone();
    let to = lab.pod(TO_POD)?.clone();
    let engine_pid = lab.start_engine(&EngineOptions {
        binary: config.engine.clone(),
        workers: Some(1),
        extra_args: config.engine_args(variant),
        ..EngineOptions::default()
    })?;
    wait_for_ports(lab, 2)?;
    let stats = lab.engine_stats()?;
    let socket = events_socket(&stats)?;
    let agent = variant.subscribes() && config.consumer == Consumer::Agent;
    let subscriber = match (variant.subscribes(), config.consumer) {
        (true, Consumer::Bench) => {
            let subscriber =
                Subscriber::connect(&socket, Duration::from_secs(5), Some(TRAFGEN_CPU))?;
            wait_observing(lab, true)?;
            Some(subscriber)
        }
        (true, Consumer::Agent) => {
            ensure!(
                socket == lab.events_socket(),
                "the engine serves events on {}, the agent reads {}",
                socket.display(),
                lab.events_socket().display()
            );
            agent_consumer::start(lab)?;
            wait_observing(lab, true)?;
            None
        }
        (false, consumer) => {
            if consumer == Consumer::Agent {
                // Every lab agent reads the events socket; the baseline has
                // none (the engine keeps forwarding on the agent's last state).
                lab.stop_agent()?;
            }
            wait_observing(lab, false)?;
            None
        }
    };
    let sink = within_netns(&to.netns, || {
        Sink::attach("eth0", AttachMode::Native).context("sink on pod 2's eth0")
    })?;

    let binary = match &config.pktgen {
        Some(path) => path.clone(),
        None => find_pktgen()?,
    };
    // sluice-pktgen stops by itself after --duration; timeout is the backstop.
    let backstop = format!("{:.1}", config.generator_seconds() + 4.0);
    let cpu = TRAFGEN_CPU.to_string();
    #[rustfmt::skip]
    let mut args: Vec<String> = [
        "timeout", "-s", "INT", "-k", "3", &backstop, "taskset", "-c", &cpu,
    ].iter().map(|a| a.to_string()).collect();
    args.push(binary.display().to_string());
    args.extend(config.pktgen_args(
        &from.mac.to_string(),
        &from.ipv4.to_string(),
        &to.ipv4.to_string(),
        config.generator_seconds(),
    ));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = format!("pktgen-{}-r{round}", variant.name());
    let pid = lab.spawn(FROM_POD, &log, &args)?;
    let started = Instant::now();

    std::thread::sleep(Duration::from_secs_f64(config.warmup_seconds));
    ensure!(
        lab.process_running(pid)?,
        "sluice-pktgen exited during the warm-up\n{}",
        lab.log_tail(&log, 10)
    );
    let a = snapshot(lab, &sink, engine_pid, subscriber.as_ref(), agent)?;
    let window_end = a.at + Duration::from_secs(u64::from(config.seconds));
    std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
    let b = snapshot(lab, &sink, engine_pid, subscriber.as_ref(), agent)?;
    ensure!(
        lab.process_running(pid)?,
        "sluice-pktgen exited before the measured window ended\n{}",
        lab.log_tail(&log, 10)
    );
    let bound = Duration::from_secs_f64(config.generator_seconds() + 6.0);
    if lab
        .wait_process(pid, bound.saturating_sub(started.elapsed()))?
        .is_none()
    {
        lab.stop_process(pid)?;
        bail!("sluice-pktgen did not stop within {bound:?}");
    }
    drop(sink);
    let (run_events_lost, run_lost_reported) = drain(lab, subscriber, agent)?;

    let stdout = fs::read_to_string(lab.log_path(&log, "stdout")).unwrap_or_default();
    let generator_pps = serde_json::from_str::<serde_json::Value>(&stdout)
        .ok()
        .and_then(|report| report["pps"].as_f64());
    let mut trial = trial_from(variant, round, lab.prefix(), &a, &b, generator_pps);
    trial.run_events_lost = run_events_lost;
    trial.run_lost_reported = run_lost_reported;
    Ok(trial)
}

/// After the traffic: the engine's lost events since it started, and what the consumer
/// heard of them once it did (or [`DRAIN_TIMEOUT`] passed). Disconnects the subscriber.
fn drain(lab: &Lab, subscriber: Option<Subscriber>, agent: bool) -> Result<(u64, Option<u64>)> {
    let engine_lost = || -> Result<u64> {
        let events = EventCounters::from_stats(&lab.engine_stats()?)?;
        Ok(events.lost + events.subscriber_lost)
    };
    let heard = |subscriber: &Option<Subscriber>| -> Result<Option<u64>> {
        Ok(match subscriber {
            Some(s) => Some(s.counts().lost_reported()),
            None if agent => Some(agent_consumer::scrape(lab)?.lost_total()),
            None => None,
        })
    };
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let (lost, reported) = loop {
        let lost = engine_lost()?;
        let reported = heard(&subscriber)?;
        let done = reported.is_none_or(|r| r >= lost);
        if done || Instant::now() >= deadline {
            break (lost, reported);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(subscriber) = subscriber {
        subscriber.stop()?;
    }
    Ok((lost, reported))
}

/// The trial's numbers from the two snapshots.
fn trial_from(
    variant: Variant,
    round: u32,
    lab: &str,
    a: &Snapshot,
    b: &Snapshot,
    generator_pps: Option<f64>,
) -> Trial {
    let window = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let delivered = b.sink.wrapping_sub(a.sink);
    let offered = b.tx.0.saturating_sub(a.tx.0) + b.tx.1.saturating_sub(a.tx.1);
    let rx = b.engine.rx.saturating_sub(a.engine.rx);
    let inserts = b.engine.inserts.saturating_sub(a.engine.inserts);
    let subscriber = match (&a.subscriber, &b.subscriber) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    let agent = match (&a.agent, &b.agent) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    let flows_read = subscriber
        .map(|s| s.flows)
        .or(agent.as_ref().map(|a| a.flows));
    let ticks = ticks_per_second();
    let cpu =
        |t0: Option<u64>, t1: Option<u64>| Some(t1?.saturating_sub(t0?) as f64 / ticks / window);
    Trial {
        variant,
        round,
        lab: lab.to_string(),
        window_seconds: window,
        generator_pps,
        offered_pps: offered as f64 / window,
        delivered_packets: delivered,
        delivered_pps: delivered as f64 / window,
        engine_rx_pps: rx as f64 / window,
        new_flows_per_second: inserts as f64 / window,
        new_flow_fraction: if rx > 0 {
            inserts as f64 / rx as f64
        } else {
            0.0
        },
        ct_evictions: b.engine.evictions.saturating_sub(a.engine.evictions),
        events: b.engine.events.since(&a.engine.events),
        run_events_lost: 0,
        run_lost_reported: None,
        events_delivered_per_second: flows_read.map(|n| n as f64 / window),
        subscriber,
        agent,
        engine_drops: b
            .engine
            .drops
            .iter()
            .map(|(name, &n)| {
                let before = a.engine.drops.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(before))
            })
            .filter(|&(_, n)| n > 0)
            .collect(),
        engine_cpu_per_second: cpu(a.engine_ticks, b.engine_ticks),
        bench_cpu_per_second: cpu(a.own_ticks, b.own_ticks),
        loadavg: loadavg(),
    }
}

fn mpps(pps: f64) -> String {
    if pps.is_finite() {
        format!("{:.3}", pps / 1e6)
    } else {
        "n/a".to_string()
    }
}

/// One progress line per trial.
pub fn describe_trial(t: &Trial) -> String {
    let mut line = format!(
        "delivered {} Mpps (offered {}, engine rx {}), new flows {:.0}/s ({:.1}% of frames); \
         events emitted {:.0}/s, lost {} in queues",
        mpps(t.delivered_pps),
        mpps(t.offered_pps),
        mpps(t.engine_rx_pps),
        t.new_flows_per_second,
        t.new_flow_fraction * 100.0,
        t.events.emitted as f64 / t.window_seconds,
        t.events.lost,
    );
    if let Some(s) = &t.subscriber {
        line.push_str(&format!(
            "; read {:.0} flows/s, {} Lost lines reporting {} (queue {}, socket {}), {} parse errors",
            t.events_delivered_per_second.unwrap_or(0.0),
            s.lost_reports,
            s.lost_reported(),
            s.lost_perf_ring,
            s.lost_observer_queue,
            s.parse_errors,
        ));
    }
    if let Some(reported) = t.run_lost_reported {
        line.push_str(&format!(
            "; whole trial: {} lost, {reported} reported",
            t.run_events_lost
        ));
    }
    if let Some(agent) = &t.agent {
        line.push_str(&format!(
            "; agent processed {:.0} flows/s, lost {:?}",
            t.events_delivered_per_second.unwrap_or(0.0),
            agent.lost
        ));
    }
    if t.events.subscriber_lost > 0 {
        line.push_str(&format!(
            "; {} not written to the subscriber",
            t.events.subscriber_lost
        ));
    }
    if !t.engine_drops.is_empty() {
        line.push_str(&format!("; engine drops {:?}", t.engine_drops));
    }
    line
}

/// Runs every round and variant, printing a line per trial; returns the report (also when
/// some trials failed).
pub fn run(config: &FlowsConfig, command: String) -> Result<Report> {
    config.validate()?;
    if config.pktgen.is_none() {
        find_pktgen()?;
    }
    if config.engine.is_none() {
        crate::find_engine()?;
    }
    let mut machine = Machine::probe();
    let plan = config.plan();
    println!(
        "bench flows: {} B frames, {} UDP flows on a {}-entry conntrack table, {} round(s) of \
         [baseline medium none], {} s windows after {} s warm-up, consumer {}; about {:.0} s, \
         at most {:.0} s",
        config.size,
        config.flows,
        config.ct_capacity,
        config.trials,
        config.seconds,
        config.warmup_seconds,
        config.consumer.name(),
        config.trial_estimate().as_secs_f64() * plan.len() as f64,
        config.trial_bound().as_secs_f64() * plan.len() as f64,
    );
    println!(
        "machine: {} ({} CPUs), kernel {}, load {}",
        machine.cpu_model, machine.cpus, machine.kernel, machine.loadavg_start
    );
    if loadavg_1min(&machine.loadavg_start).is_some_and(|l| l > 0.5) {
        println!("warning: the machine is not idle (1-min load average above 0.5)");
    }
    let mut trials = Vec::new();
    let mut failed = Vec::new();
    for (round, variant) in plan {
        print!("  round {round} {:<8} ", variant.name());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        match run_trial(config, variant, round) {
            Ok(trial) => {
                println!("{}", describe_trial(&trial));
                trials.push(trial);
            }
            Err(err) => {
                println!("FAILED: {err:#}");
                failed.push(FailedTrial {
                    variant,
                    round,
                    error: format!("{err:#}"),
                });
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(&trials, &failed);
    let target = target(&summary);
    Ok(Report {
        benchmark: "flows",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        consumer: config.consumer.describe(),
        trials,
        failed,
        summary,
        target,
    })
}

/// Prints the table and the verdict, for pasting into docs/benchmarks.md.
pub fn print_report(report: &Report) {
    let c = &report.config;
    println!(
        "\n{} B UDP frames, {} flows on {} conntrack entries, {} round(s) x {} s; load average \
         {} at start, {} at end\n",
        c.size,
        c.flows,
        c.ct_capacity,
        c.trials,
        c.seconds,
        report.machine.loadavg_start,
        report.machine.loadavg_end.as_deref().unwrap_or("?")
    );
    print!("{}", markdown_table(&report.summary));
    println!("\n{}", report.target.describe());
    println!(
        "\nmachine: {}, {} CPUs, kernel {}\nconsumer: {}\nengine: --workers 1 --mode busy \
         --cores {} (sluice-pktgen on CPU {TRAFGEN_CPU})\ncommand: {}",
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.kernel,
        report.consumer,
        c.engine_core,
        report.command
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_flag() {
        assert!(FlowsConfig::default().validate().is_ok());
        assert!(FlowsConfig::default().quick().validate().is_ok());
        let cases: [(FlowsConfig, &str); 5] = [
            (
                FlowsConfig {
                    trials: 0,
                    ..FlowsConfig::default()
                },
                "--trials",
            ),
            (
                FlowsConfig {
                    flows: MAX_FLOWS + 1,
                    ..FlowsConfig::default()
                },
                "--flows",
            ),
            (
                FlowsConfig {
                    ct_capacity: 512,
                    ..FlowsConfig::default()
                },
                "--ct-capacity",
            ),
            (
                FlowsConfig {
                    events_queue_size: Some(0),
                    ..FlowsConfig::default()
                },
                "--events-queue-size",
            ),
            (
                FlowsConfig {
                    size: 63,
                    ..FlowsConfig::default()
                },
                "--size",
            ),
        ];
        for (config, flag) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn default_run_is_bounded_under_two_minutes() {
        let config = FlowsConfig::default();
        let plan = config.plan();
        assert_eq!(plan.len(), 9);
        assert_eq!(
            plan[..4],
            [
                (1, Variant::Baseline),
                (1, Variant::Medium),
                (1, Variant::None),
                (2, Variant::Baseline)
            ]
        );
        let estimate = config.trial_estimate().as_secs_f64() * plan.len() as f64;
        assert!(estimate < 120.0, "{estimate}");
    }

    #[test]
    fn engine_and_generator_arguments() {
        let config = FlowsConfig {
            events_queue_size: Some(256),
            engine_args: vec!["--batch".into(), "32".into()],
            ..FlowsConfig::default()
        };
        assert_eq!(
            config.engine_args(Variant::Baseline).join(" "),
            "--mode busy --cores 1 --ct-capacity 16384 --monitor-aggregation medium \
             --events-queue-size 256 --batch 32"
        );
        assert!(config
            .engine_args(Variant::None)
            .join(" ")
            .contains("--monitor-aggregation none"));
        assert_eq!(
            config
                .pktgen_args("02:00:00:00:00:11", "10.200.0.2", "10.200.0.3", 7.0)
                .join(" "),
            "tx --dev eth0 --src-mac 02:00:00:00:00:11 --dst-mac 02:53:4c:00:00:01 \
             --src-ip 10.200.0.2 --dst-ip 10.200.0.3 --src-port 10000-18249 --dst-port 9 \
             --size 64 --flows 8250 --rate max --duration 7.0 --cpu 0 --json"
        );
        assert!(!Variant::Baseline.subscribes() && Variant::None.subscribes());
        assert_eq!("none".parse::<Variant>().unwrap(), Variant::None);
        assert!("low".parse::<Variant>().is_err());
        assert_eq!("agent".parse::<Consumer>().unwrap(), Consumer::Agent);
        let err = "hubble".parse::<Consumer>().unwrap_err().to_string();
        assert!(err.contains("--consumer"), "{err}");
    }

    #[test]
    fn event_counters_come_from_the_events_block() {
        let stats = serde_json::json!({"events": {"socket": "/run/x/events.sock",
            "emitted": 10, "lost": 3, "subscriber_lost": 1, "observing": true}});
        let c = EventCounters::from_stats(&stats).unwrap();
        assert_eq!(
            c,
            EventCounters {
                emitted: 10,
                lost: 3,
                subscriber_lost: 1
            }
        );
        let later = EventCounters {
            emitted: 25,
            lost: 3,
            subscriber_lost: 4,
        };
        assert_eq!(
            later.since(&c),
            EventCounters {
                emitted: 15,
                lost: 0,
                subscriber_lost: 3
            }
        );
        assert_eq!(
            events_socket(&stats).unwrap(),
            PathBuf::from("/run/x/events.sock")
        );
        let old = serde_json::json!({"totals": {"rx_packets": 1}});
        let err = EventCounters::from_stats(&old).unwrap_err().to_string();
        assert!(err.contains("events.emitted"), "{err}");
        assert!(events_socket(&old).is_err());
    }
}

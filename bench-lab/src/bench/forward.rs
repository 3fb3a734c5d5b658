//! `sluice-lab bench forward`: pod-to-pod UDP forwarding, packets per second.
//!
//! Three ways of moving frames from pod 1 to pod 2 over the same two-pod topology, measured
//! in one run with their trials interleaved (K D E K D E ...), so that load from anything
//! else on the machine falls on all of them alike:
//!
//! - **kernel** (V0): a kernel-mode lab; the node kernel routes lxc1 -> lxc2. Frames are
//!   addressed to lxc1's MAC (pod 1's gateway neighbour); pod 2's address has a permanent
//!   neighbour entry on the node, because the sink drops ARP too.
//! - **devmap** (V1): an engine-mode lab without the engine; an XDP program on lxc1 redirects
//!   every frame into lxc2 through a DEVMAP (the in-kernel XDP ceiling, no MAC rewrite).
//! - **engine** (V2): an engine-mode lab with sluice-engine, one busy-polling worker pinned to
//!   its own core; frames addressed to the gateway MAC.
//!
//! In every variant a generator sends from pod 1's eth0 on CPU 0, and an XDP_DROP program
//! ([`Sink`]) on pod 2's eth0 counts what arrives. The generator ([`Generator`],
//! `--generator`) is `sluice-pktgen tx` (AF_XDP, `perf/`; the default: it offers about 1.3x
//! what trafgen does on the 2-core VM, see docs/benchmarks.md "Packet generators") or trafgen
//! (netsniff-ng). A trial runs it for `warmup + seconds + 1` s (trafgen under
//! `timeout -s INT`, sluice-pktgen with `--duration` and `timeout` as a backstop), and
//! measures over the `seconds` window in the middle: frames counted by the sink (delivered),
//! frames pod 1's eth0 sent or dropped (offered), whole-machine CPU busy time from
//! /proc/stat, and the engine's own counters.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use sluice_tables::MacAddr;
use sluice_xdp::{AttachMode, DevmapRedirect, Sink};

use super::labkit::{find_tool, link_counts, link_mac, require, wait_for_ports, within_netns};
use super::machine::{loadavg, loadavg_1min, process_ticks, ticks_per_second, CpuTimes, Machine};
use crate::command::{ip, run_ok, SETUP_TIMEOUT};
use crate::{EngineOptions, Lab, LabSpec, GATEWAY_MAC};

/// The CPU the generator runs on (`taskset -c 0`; trafgen with `--cpus 1` also binds its
/// one process to CPU 0, sluice-pktgen gets `--cpu 0`).
pub const TRAFGEN_CPU: usize = 0;
/// The AF_XDP generator's binary (package sluice-perf).
pub const PKTGEN_BIN: &str = "sluice-pktgen";
/// Names the sluice-pktgen binary, overriding the search next to this executable.
pub const PKTGEN_ENV: &str = "SLUICE_PKTGEN";
/// Bytes of Ethernet, IPv4 and UDP headers in a generated frame.
const HEADERS: usize = 14 + 20 + 8;
/// Bytes of the Ethernet FCS, counted in `--size` (RFC 2544 frame sizes) but not on a veth.
const FCS: usize = 4;
/// First UDP source port; flow `i` uses `FIRST_PORT + i`.
const FIRST_PORT: u32 = 10000;
const DST_PORT: u16 = 9;
/// Frames from pod 1 to pod 2.
const FROM_POD: usize = 1;
const TO_POD: usize = 2;

/// Who forwards the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Kernel,
    Devmap,
    Engine,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel",
            Variant::Devmap => "devmap",
            Variant::Engine => "engine",
        }
    }

    /// One line for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Kernel => "V0 node kernel routing (ip_forward)",
            Variant::Devmap => "V1 XDP devmap redirect lxc1->lxc2 (in-kernel ceiling)",
            Variant::Engine => "V2 sluice-engine, 1 busy worker, AF_XDP copy mode",
        }
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
            "kernel" => Ok(Variant::Kernel),
            "devmap" => Ok(Variant::Devmap),
            "engine" => Ok(Variant::Engine),
            other => bail!("unknown variant {other:?} (kernel, devmap or engine)"),
        }
    }
}

/// Who sends the frames from pod 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    /// netsniff-ng's trafgen (PACKET_TX_RING).
    Trafgen,
    /// `sluice-pktgen tx` (AF_XDP, copy mode on the veth; no XDP program on pod 1's eth0).
    Afxdp,
}

impl Generator {
    pub fn name(self) -> &'static str {
        match self {
            Generator::Trafgen => "trafgen",
            Generator::Afxdp => "afxdp",
        }
    }
}

impl fmt::Display for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Generator {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Generator> {
        match text.trim() {
            "trafgen" => Ok(Generator::Trafgen),
            "afxdp" | "sluice-pktgen" => Ok(Generator::Afxdp),
            other => bail!("unknown generator {other:?} (trafgen or afxdp)"),
        }
    }
}

/// The sluice-pktgen binary: `$SLUICE_PKTGEN`, else next to this executable (or one
/// directory up, for test binaries in `target/*/deps`).
pub fn find_pktgen() -> Result<PathBuf> {
    find_tool(PKTGEN_BIN, PKTGEN_ENV).context(
        "sluice-pktgen: build it with `cargo build --release -p sluice-perf --bin sluice-pktgen`, \
         or use --generator trafgen",
    )
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardConfig {
    /// Rounds; every round runs each variant once.
    pub trials: u32,
    /// Length of the measured window of a trial.
    pub seconds: u32,
    /// Traffic before the window starts (queues fill, the engine's rings warm up).
    pub warmup_seconds: f64,
    /// Frame size including the 4-byte FCS (RFC 2544 style): 64 means 60 bytes on the veth.
    pub size: usize,
    /// UDP flows (source ports 10000, 10001, ...).
    pub flows: u32,
    pub variants: Vec<Variant>,
    /// sluice-engine binary; `None` means [`crate::find_engine`].
    pub engine: Option<PathBuf>,
    /// Core of the engine's one worker (`--cores`).
    pub engine_core: usize,
    /// Appended to the engine's command line.
    pub engine_args: Vec<String>,
    /// Who sends from pod 1.
    pub generator: Generator,
    /// sluice-pktgen binary; `None` means [`find_pktgen`].
    pub pktgen: Option<PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> ForwardConfig {
        ForwardConfig {
            trials: 5,
            seconds: 5,
            warmup_seconds: 1.0,
            size: 64,
            flows: 1,
            variants: vec![Variant::Kernel, Variant::Devmap, Variant::Engine],
            engine: None,
            engine_core: 1,
            engine_args: Vec::new(),
            generator: Generator::Afxdp,
            pktgen: None,
        }
    }
}

impl ForwardConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!((1..=50).contains(&self.trials), "--trials must be 1 to 50");
        ensure!(
            (1..=120).contains(&self.seconds),
            "--seconds must be 1 to 120"
        );
        ensure!(
            (0.0..=30.0).contains(&self.warmup_seconds),
            "--warmup must be 0 to 30 s"
        );
        ensure!(
            (HEADERS + FCS + 18..=1518).contains(&self.size),
            "--size must be 64 to 1518 (bytes including the FCS)"
        );
        ensure!(
            (1..=50_000).contains(&self.flows),
            "--flows must be 1 to 50000"
        );
        ensure!(!self.variants.is_empty(), "no variants to run");
        Ok(())
    }

    /// Bytes of one frame on the veth (no FCS).
    pub fn frame_bytes(&self) -> usize {
        self.size - FCS
    }

    /// How long trafgen runs in one trial.
    fn trafgen_seconds(&self) -> f64 {
        self.warmup_seconds + f64::from(self.seconds) + 1.0
    }

    /// An upper bound on one trial: setup, trafgen's run and its kill grace, teardown.
    pub fn trial_bound(&self) -> Duration {
        Duration::from_secs_f64(self.trafgen_seconds() + 45.0)
    }
}

/// trafgen's packet configuration for one variant.
pub fn trafgen_config(
    config: &ForwardConfig,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> String {
    let payload = config.frame_bytes() - HEADERS;
    let sport = if config.flows > 1 {
        format!("dinc({FIRST_PORT}, {}, 1)", FIRST_PORT + config.flows - 1)
    } else {
        FIRST_PORT.to_string()
    };
    format!(
        "/* sluice-lab bench forward: {} B frames ({} B with FCS), {} flow(s) */\n\
         {{\n  eth(da={dst_mac}, sa={src_mac}),\n  \
         ipv4(saddr={src}, daddr={dst}, ttl=64),\n  \
         udp(sp={sport}, dp={DST_PORT}),\n  \
         fill(0x00, {payload})\n}}\n",
        config.frame_bytes(),
        config.size,
        config.flows,
    )
}

/// `sluice-pktgen tx` arguments for one variant: the frames of [`trafgen_config`] (flow `i`
/// has source port 10000 + i), at the maximum rate, for `seconds`, on [`TRAFGEN_CPU`].
pub fn pktgen_args(
    config: &ForwardConfig,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seconds: f64,
) -> Vec<String> {
    let sport = if config.flows > 1 {
        format!("{FIRST_PORT}-{}", FIRST_PORT + config.flows - 1)
    } else {
        FIRST_PORT.to_string()
    };
    #[rustfmt::skip]
    let args = [
        "tx", "--dev", "eth0",
        "--src-mac", &src_mac.to_string(), "--dst-mac", &dst_mac.to_string(),
        "--src-ip", &src.to_string(), "--dst-ip", &dst.to_string(),
        "--src-port", &sport, "--dst-port", &DST_PORT.to_string(),
        "--size", &config.size.to_string(), "--flows", &config.flows.to_string(),
        "--rate", "max", "--duration", &format!("{seconds:.1}"),
        "--cpu", &TRAFGEN_CPU.to_string(), "--json",
    ];
    args.iter().map(|a| a.to_string()).collect()
}

/// What trafgen printed on exit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrafgenReport {
    pub packets: u64,
    /// Its own running time ("N sec, M usec on CPU0").
    pub seconds: Option<f64>,
}

/// Parses trafgen's exit summary: `N packets outgoing` and `S sec, U usec on CPU0 (...)`.
pub fn parse_trafgen(output: &str) -> Option<TrafgenReport> {
    let packets = output
        .lines()
        .find(|l| l.contains("packets outgoing"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let seconds = output
        .lines()
        .filter(|l| l.contains(" sec, ") && l.contains(" usec on CPU"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let sec: f64 = words.next()?.parse().ok()?;
            let _ = words.next()?; // "sec,"
            let usec: f64 = words.next()?.parse().ok()?;
            Some(sec + usec / 1e6)
        })
        .reduce(f64::max);
    Some(TrafgenReport { packets, seconds })
}

/// The engine's counters over the window, and its totals at the end of the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Non-zero drop reasons over the window, by name.
    pub drops: BTreeMap<String, u64>,
    /// Since the engine started (warm-up included).
    pub total_rx_packets: u64,
    pub total_tx_packets: u64,
    pub total_drops: BTreeMap<String, u64>,
    /// CPU seconds of the engine process (all its threads) over the window, from
    /// /proc/<pid>/task/*/stat; with a busy-polling worker about one core-second per second
    /// unless other load takes the core.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per received packet: an upper bound on the engine's cost per packet.
    pub ns_per_rx_packet: Option<f64>,
    /// `engine` block of the stats document (cores, mode, hugepages).
    pub info: serde_json::Value,
}

fn engine_numbers(stats: &serde_json::Value) -> (u64, u64, BTreeMap<String, u64>) {
    let totals = &stats["totals"];
    let drops = stats["drops"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| Some((row["name"].as_str()?.to_string(), row["count"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    (
        totals["rx_packets"].as_u64().unwrap_or(0),
        totals["tx_packets"].as_u64().unwrap_or(0),
        drops,
    )
}

/// The engine's counters between two stats documents.
pub fn engine_window(before: &serde_json::Value, after: &serde_json::Value) -> EngineCounters {
    let (rx0, tx0, drops0) = engine_numbers(before);
    let (rx1, tx1, drops1) = engine_numbers(after);
    let drops = drops1
        .iter()
        .map(|(name, &n)| {
            (
                name.clone(),
                n.saturating_sub(drops0.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    EngineCounters {
        rx_packets: rx1.saturating_sub(rx0),
        tx_packets: tx1.saturating_sub(tx0),
        drops,
        total_rx_packets: rx1,
        total_tx_packets: tx1,
        total_drops: drops1.into_iter().filter(|&(_, n)| n > 0).collect(),
        cpu_seconds: None,
        ns_per_rx_packet: None,
        info: after["engine"].clone(),
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
    pub generator: Generator,
    /// trafgen's own count over its whole run and its running time (trafgen only).
    pub trafgen_packets: Option<u64>,
    pub trafgen_seconds: Option<f64>,
    /// The generator's own rate over its whole run (either generator).
    pub offered_pps: Option<f64>,
    /// sluice-pktgen's JSON report (afxdp only): sent frames, pps, kernel counters.
    pub pktgen: Option<serde_json::Value>,
    /// Frames pod 1's eth0 sent plus those it dropped (peer ring full), over the window.
    pub offered_window_packets: u64,
    pub offered_window_pps: f64,
    pub eth0_tx_dropped: u64,
    /// Frames the sink on pod 2's eth0 counted over the window.
    pub delivered_packets: u64,
    pub delivered_pps: f64,
    /// Average delivered frame size (checks that the frames are what was configured).
    pub delivered_frame_bytes: Option<f64>,
    /// `1 - delivered / offered` over the window.
    pub loss: f64,
    /// Busy seconds of every CPU over the window (whole machine, /proc/stat).
    pub cpu_busy_seconds: BTreeMap<usize, f64>,
    pub cpu_busy_total: f64,
    /// `cpu_busy_total / (delivered_packets / 1e6)`.
    pub cpu_seconds_per_mpkt: Option<f64>,
    pub engine: Option<EngineCounters>,
    pub loadavg: String,
}

/// A trial that could not be measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub variant: Variant,
    pub round: u32,
    pub error: String,
}

/// Medians over one variant's trials.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub variant: Variant,
    pub description: &'static str,
    pub trials: usize,
    pub failed: usize,
    pub delivered_pps_median: f64,
    pub delivered_pps_min: f64,
    pub delivered_pps_max: f64,
    /// This variant's median over the kernel's median.
    pub ratio_to_kernel: Option<f64>,
    pub offered_pps_median: f64,
    pub loss_median: f64,
    pub cpu_seconds_per_mpkt_median: Option<f64>,
    /// Engine drop reasons summed over the trials' windows.
    pub engine_drops: BTreeMap<String, u64>,
}

/// Everything a run produced; written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: ForwardConfig,
    pub frame_bytes_on_veth: usize,
    pub machine: Machine,
    pub pinning: String,
    pub cpu_accounting: &'static str,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<Summary>,
}

const CPU_ACCOUNTING: &str =
    "whole machine, all CPUs: /proc/stat user+nice+system+irq+softirq+steal \
     ticks over the measured window, summed over CPUs, divided by millions of delivered packets; \
     includes trafgen, softirq work and (engine) a busy-polling worker core";

/// Median of a non-empty slice (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn summarize(variants: &[Variant], trials: &[Trial], failed: &[FailedTrial]) -> Vec<Summary> {
    let mut rows: Vec<Summary> = variants
        .iter()
        .map(|&variant| {
            let mine: Vec<&Trial> = trials.iter().filter(|t| t.variant == variant).collect();
            let delivered: Vec<f64> = mine.iter().map(|t| t.delivered_pps).collect();
            let cpu: Vec<f64> = mine.iter().filter_map(|t| t.cpu_seconds_per_mpkt).collect();
            let mut engine_drops = BTreeMap::new();
            for t in &mine {
                for (name, n) in t.engine.iter().flat_map(|e| e.drops.iter()) {
                    *engine_drops.entry(name.clone()).or_insert(0) += n;
                }
            }
            Summary {
                variant,
                description: variant.describe(),
                trials: mine.len(),
                failed: failed.iter().filter(|f| f.variant == variant).count(),
                delivered_pps_median: median(&delivered),
                delivered_pps_min: delivered.iter().copied().fold(f64::NAN, f64::min),
                delivered_pps_max: delivered.iter().copied().fold(f64::NAN, f64::max),
                ratio_to_kernel: None,
                offered_pps_median: median(
                    &mine
                        .iter()
                        .map(|t| t.offered_window_pps)
                        .collect::<Vec<_>>(),
                ),
                loss_median: median(&mine.iter().map(|t| t.loss).collect::<Vec<_>>()),
                cpu_seconds_per_mpkt_median: (!cpu.is_empty()).then(|| median(&cpu)),
                engine_drops,
            }
        })
        .collect();
    let kernel = rows
        .iter()
        .find(|r| r.variant == Variant::Kernel && r.trials > 0)
        .map(|r| r.delivered_pps_median);
    if let Some(kernel) = kernel.filter(|k| *k > 0.0) {
        for row in &mut rows {
            if row.trials > 0 {
                row.ratio_to_kernel = Some(row.delivered_pps_median / kernel);
            }
        }
    }
    rows
}

fn mpps(pps: f64) -> String {
    if pps.is_finite() {
        format!("{:.3}", pps / 1e6)
    } else {
        "n/a".to_string()
    }
}

/// The summary as a Markdown table (for docs/benchmarks.md).
pub fn markdown_table(rows: &[Summary]) -> String {
    let mut text = String::from(
        "| variant | delivered Mpps, median (min–max) | ratio to kernel | offered Mpps (median) | loss (median) | CPU s per Mpkt (median) | trials |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        text.push_str(&format!(
            "| {} | {} ({}–{}) | {} | {} | {:.1}% | {} | {}{} |\n",
            r.description,
            mpps(r.delivered_pps_median),
            mpps(r.delivered_pps_min),
            mpps(r.delivered_pps_max),
            r.ratio_to_kernel
                .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}×")),
            mpps(r.offered_pps_median),
            r.loss_median * 100.0,
            r.cpu_seconds_per_mpkt_median
                .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}")),
            r.trials,
            if r.failed > 0 {
                format!(" ({} failed)", r.failed)
            } else {
                String::new()
            }
        ));
    }
    text
}

/// XDP programs a trial attaches; dropped (detached) before its lab is torn down.
struct Attached {
    sink: Sink,
    _devmap: Option<DevmapRedirect>,
}

/// One snapshot of every counter at the edges of the window.
struct Snapshot {
    at: Instant,
    sink: (u64, u64),
    tx: (u64, u64),
    cpu: CpuTimes,
    engine: Option<serde_json::Value>,
    /// CPU ticks of the engine process.
    engine_ticks: Option<u64>,
}

fn snapshot(lab: &Lab, attached: &Attached, engine: bool) -> Result<Snapshot> {
    let pod1 = lab.pod(FROM_POD)?.netns.clone();
    let tx = link_counts(&pod1, "eth0", "tx")?;
    let cpu = CpuTimes::read()?;
    let sink = attached
        .sink
        .counts()
        .context("reading the sink's counts")?;
    let at = Instant::now();
    let engine = if engine {
        Some(lab.engine_stats().context("reading the engine's stats")?)
    } else {
        None
    };
    let engine_ticks = engine
        .as_ref()
        .and_then(|stats| stats["engine"]["pid"].as_u64())
        .and_then(|pid| process_ticks(u32::try_from(pid).ok()?));
    Ok(Snapshot {
        engine_ticks,
        at,
        sink,
        tx,
        cpu,
        engine,
    })
}

fn run_trial(config: &ForwardConfig, variant: Variant, round: u32) -> Result<Trial> {
    let spec = match variant {
        Variant::Kernel => LabSpec::kernel(2),
        // The devmap baseline puts its own XDP programs on the veths: no engine, no agent.
        Variant::Devmap => LabSpec::engine(2).with_static_pods(),
        Variant::Engine => LabSpec::engine(2),
    };
    let lab = Lab::new(spec)?;
    let result = measure(config, variant, round, &lab);
    // `measure` has dropped its XDP programs; now the namespaces go.
    let teardown = lab.teardown();
    let trial = result?;
    teardown?;
    Ok(trial)
}

fn measure(config: &ForwardConfig, variant: Variant, round: u32, lab: &Lab) -> Result<Trial> {
    let node = lab.node_netns().to_string();
    let from = lab.pod(FROM_POD)?.clone();
    let to = lab.pod(TO_POD)?.clone();

    let dst_mac = match variant {
        Variant::Kernel => {
            // The sink drops ARP as well: the node learns pod 2's MAC here, not by asking.
            let mac = to.mac.to_string();
            let addr = to.ipv4.to_string();
            #[rustfmt::skip]
            run_ok(&mut ip(&[
                "-n", &node, "neigh", "replace", &addr, "lladdr", &mac,
                "dev", &to.node_ifname, "nud", "permanent",
            ]), SETUP_TIMEOUT)?;
            link_mac(&node, &from.node_ifname)?
        }
        Variant::Devmap | Variant::Engine => GATEWAY_MAC,
    };
    let engine = variant == Variant::Engine;
    if engine {
        let mut extra = vec![
            "--mode".to_string(),
            "busy".to_string(),
            "--cores".to_string(),
            config.engine_core.to_string(),
        ];
        extra.extend(config.engine_args.iter().cloned());
        lab.start_engine(&EngineOptions {
            binary: config.engine.clone(),
            workers: Some(1),
            extra_args: extra,
            ..EngineOptions::default()
        })?;
        wait_for_ports(lab, 2)?;
    }
    let devmap = match variant {
        Variant::Devmap => {
            let (a, b) = (from.node_ifname.clone(), to.node_ifname.clone());
            Some(within_netns(&node, move || {
                DevmapRedirect::attach(&a, &b, AttachMode::Native)
                    .with_context(|| format!("devmap redirect {a} -> {b}"))
            })?)
        }
        _ => None,
    };
    let sink = within_netns(&to.netns, || {
        Sink::attach("eth0", AttachMode::Native).context("sink on pod 2's eth0")
    })?;
    let attached = Attached {
        sink,
        _devmap: devmap,
    };

    let run_for = format!("{:.1}", config.trafgen_seconds());
    let cpu = TRAFGEN_CPU.to_string();
    let generator = config.generator;
    let log = format!("{generator}-{}-r{round}", variant.name());
    let args: Vec<String> = match generator {
        Generator::Trafgen => {
            let conf_path = lab
                .run_dir()
                .join(format!("trafgen-{}-r{round}.cfg", variant.name()));
            fs::write(
                &conf_path,
                trafgen_config(config, dst_mac, from.mac, from.ipv4, to.ipv4),
            )
            .with_context(|| format!("writing {}", conf_path.display()))?;
            let conf = conf_path.display().to_string();
            #[rustfmt::skip]
            let args = [
                "timeout", "-s", "INT", "-k", "3", &run_for,
                "taskset", "-c", &cpu,
                "trafgen", "--dev", "eth0", "--conf", &conf, "--cpus", "1",
                "--no-sock-mem", "--notouch-irq",
            ];
            args.iter().map(|a| a.to_string()).collect()
        }
        Generator::Afxdp => {
            let binary = match &config.pktgen {
                Some(path) => path.clone(),
                None => find_pktgen()?,
            };
            // sluice-pktgen stops by itself after --duration; timeout is the backstop.
            let backstop = format!("{:.1}", config.trafgen_seconds() + 4.0);
            #[rustfmt::skip]
            let mut args: Vec<String> = [
                "timeout", "-s", "INT", "-k", "3", &backstop,
                "taskset", "-c", &cpu,
            ].iter().map(|a| a.to_string()).collect();
            args.push(binary.display().to_string());
            args.extend(pktgen_args(
                config,
                dst_mac,
                from.mac,
                from.ipv4,
                to.ipv4,
                config.trafgen_seconds(),
            ));
            args
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = lab.spawn(FROM_POD, &log, &args)?;
    let started = Instant::now();

    std::thread::sleep(Duration::from_secs_f64(config.warmup_seconds));
    ensure!(
        lab.process_running(pid)?,
        "{generator} exited during the warm-up\n{}",
        lab.log_tail(&log, 10)
    );
    let a = snapshot(lab, &attached, engine)?;
    let window_end = a.at + Duration::from_secs(u64::from(config.seconds));
    std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
    let b = snapshot(lab, &attached, engine)?;
    ensure!(
        lab.process_running(pid)?,
        "{generator} exited before the measured window ended\n{}",
        lab.log_tail(&log, 10)
    );
    let bound = Duration::from_secs_f64(config.trafgen_seconds() + 6.0);
    if lab
        .wait_process(pid, bound.saturating_sub(started.elapsed()))?
        .is_none()
    {
        lab.stop_process(pid)?;
        bail!("{generator} did not stop within {bound:?}");
    }
    drop(attached);

    let stdout = fs::read_to_string(lab.log_path(&log, "stdout")).unwrap_or_default();
    let (trafgen, pktgen) = match generator {
        Generator::Trafgen => (parse_trafgen(&stdout), None),
        Generator::Afxdp => (
            None,
            serde_json::from_str::<serde_json::Value>(&stdout).ok(),
        ),
    };
    let window = b.at.duration_since(a.at).as_secs_f64();
    let delivered = b.sink.0.wrapping_sub(a.sink.0);
    let delivered_bytes = b.sink.1.wrapping_sub(a.sink.1);
    let tx_packets = b.tx.0.saturating_sub(a.tx.0);
    let tx_dropped = b.tx.1.saturating_sub(a.tx.1);
    let offered = tx_packets + tx_dropped;
    let busy = b.cpu.busy_since(&a.cpu, ticks_per_second());
    let busy_total: f64 = busy.values().sum();
    let ticks = ticks_per_second();
    let engine_counters = match (&a.engine, &b.engine) {
        (Some(before), Some(after)) => {
            let mut counters = engine_window(before, after);
            if let (Some(t0), Some(t1)) = (a.engine_ticks, b.engine_ticks) {
                let cpu = t1.saturating_sub(t0) as f64 / ticks;
                counters.cpu_seconds = Some(cpu);
                counters.ns_per_rx_packet =
                    (counters.rx_packets > 0).then(|| cpu * 1e9 / counters.rx_packets as f64);
            }
            Some(counters)
        }
        _ => None,
    };
    Ok(Trial {
        variant,
        round,
        lab: lab.prefix().to_string(),
        window_seconds: window,
        generator,
        trafgen_packets: trafgen.map(|t| t.packets),
        trafgen_seconds: trafgen.and_then(|t| t.seconds),
        offered_pps: match &pktgen {
            Some(report) => report["pps"].as_f64(),
            None => trafgen.and_then(|t| Some(t.packets as f64 / t.seconds.filter(|s| *s > 0.0)?)),
        },
        pktgen,
        offered_window_packets: offered,
        offered_window_pps: offered as f64 / window,
        eth0_tx_dropped: tx_dropped,
        delivered_packets: delivered,
        delivered_pps: delivered as f64 / window,
        delivered_frame_bytes: (delivered > 0).then(|| delivered_bytes as f64 / delivered as f64),
        loss: if offered > 0 {
            (1.0 - delivered as f64 / offered as f64).max(0.0)
        } else {
            1.0
        },
        cpu_busy_seconds: busy,
        cpu_busy_total: busy_total,
        cpu_seconds_per_mpkt: (delivered > 0).then(|| busy_total / (delivered as f64 / 1e6)),
        engine: engine_counters,
        loadavg: loadavg(),
    })
}

fn describe_trial(t: &Trial) -> String {
    let mut line = format!(
        "delivered {} Mpps, offered {} Mpps ({} {}), loss {:.1}%, CPU {:.2} s busy = {} s/Mpkt",
        mpps(t.delivered_pps),
        mpps(t.offered_window_pps),
        t.generator,
        t.offered_pps
            .map_or_else(|| "n/a".to_string(), |p| format!("{} Mpps", mpps(p))),
        t.loss * 100.0,
        t.cpu_busy_total,
        t.cpu_seconds_per_mpkt
            .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}")),
    );
    if t.eth0_tx_dropped > 0 {
        line.push_str(&format!(", pod1 eth0 tx dropped {}", t.eth0_tx_dropped));
    }
    if let Some(e) = &t.engine {
        line.push_str(&format!(
            "\n      engine rx {} tx {} drops {:?}; engine CPU {} s ({} ns per rx packet)",
            e.rx_packets,
            e.tx_packets,
            e.drops,
            e.cpu_seconds
                .map_or_else(|| "n/a".to_string(), |c| format!("{c:.2}")),
            e.ns_per_rx_packet
                .map_or_else(|| "n/a".to_string(), |n| format!("{n:.0}")),
        ));
    }
    line
}

/// Runs every round and variant, prints progress, the per-variant table and returns the
/// report (also when some trials failed).
pub fn run(config: &ForwardConfig, command: String) -> Result<Report> {
    config.validate()?;
    match config.generator {
        Generator::Trafgen => require("trafgen", "netsniff-ng")?,
        Generator::Afxdp => {
            if config.pktgen.is_none() {
                find_pktgen()?;
            }
        }
    }
    if config.variants.contains(&Variant::Engine) && config.engine.is_none() {
        crate::find_engine()?;
    }
    let mut machine = Machine::probe();
    let runs = config.trials as usize * config.variants.len();
    println!(
        "bench forward: {} B frames ({} B on the veth), {} flow(s) from {}, {} round(s) of [{}], \
         {} s windows after {} s warm-up; at most {:.0} s in all",
        config.size,
        config.frame_bytes(),
        config.flows,
        config.generator,
        config.trials,
        config
            .variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(" "),
        config.seconds,
        config.warmup_seconds,
        config.trial_bound().as_secs_f64() * runs as f64
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
    for round in 1..=config.trials {
        for &variant in &config.variants {
            print!("  round {round} {:<7} ", variant.name());
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
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(&config.variants, &trials, &failed);
    let generator = match config.generator {
        Generator::Trafgen => "trafgen on CPU 0 (taskset, --cpus 1)",
        Generator::Afxdp => "sluice-pktgen tx on CPU 0 (taskset, --cpu 0)",
    };
    let pinning = format!(
        "{generator}; engine worker on core {} (--cores {} --mode busy --workers 1); kernel \
         softirq work runs where the sending CPU raises it",
        config.engine_core, config.engine_core
    );
    Ok(Report {
        benchmark: "forward",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        frame_bytes_on_veth: config.frame_bytes(),
        machine,
        pinning,
        cpu_accounting: CPU_ACCOUNTING,
        trials,
        failed,
        summary,
    })
}

/// Prints the table and the engine's drops, for pasting into docs/benchmarks.md.
pub fn print_report(report: &Report) {
    println!(
        "\n{} B UDP frames, {} flow(s) from {}, {} trial(s) x {} s; load average {} at start, {} at end\n",
        report.config.size,
        report.config.flows,
        report.config.generator,
        report.config.trials,
        report.config.seconds,
        report.machine.loadavg_start,
        report.machine.loadavg_end.as_deref().unwrap_or("?")
    );
    print!("{}", markdown_table(&report.summary));
    for row in &report.summary {
        if !row.engine_drops.is_empty() {
            println!(
                "\n{} drops over the measured windows: {:?}",
                row.variant, row.engine_drops
            );
        }
    }
    println!(
        "\nmachine: {}, {} CPUs, kernel {}, {}\npinning: {}\nCPU: {}\ncommand: {}",
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.kernel,
        report.machine.trafgen,
        report.pinning,
        report.cpu_accounting,
        report.command
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trafgen_summary_parses() {
        let out =
            "     1 packets to schedule\n    60 bytes in total\nRunning! Hang up with ^C!\n\n\n\
                   \x20     440064 packets outgoing\n    26403840 bytes outgoing\n\
                   \x20          2 sec, 971774 usec on CPU0 (440064 packets)\n";
        let r = parse_trafgen(out).unwrap();
        assert_eq!(r.packets, 440064);
        assert!((r.seconds.unwrap() - 2.971774).abs() < 1e-9);
        assert_eq!(parse_trafgen("Running!\n"), None);
    }

    #[test]
    fn config_for_64_byte_frames() {
        let config = ForwardConfig {
            flows: 4,
            ..ForwardConfig::default()
        };
        let text = trafgen_config(
            &config,
            GATEWAY_MAC,
            MacAddr([2, 0, 0, 0, 0, 0x11]),
            Ipv4Addr::new(10, 200, 0, 11),
            Ipv4Addr::new(10, 200, 0, 12),
        );
        assert!(
            text.contains("eth(da=02:53:4c:00:00:01, sa=02:00:00:00:00:11)"),
            "{text}"
        );
        assert!(text.contains("ipv4(saddr=10.200.0.11, daddr=10.200.0.12, ttl=64)"));
        assert!(text.contains("udp(sp=dinc(10000, 10003, 1), dp=9)"));
        // 60 bytes on the veth: 42 of headers, 18 of payload.
        assert!(text.contains("fill(0x00, 18)"));
        let one = trafgen_config(
            &ForwardConfig::default(),
            GATEWAY_MAC,
            MacAddr([2, 0, 0, 0, 0, 0x11]),
            Ipv4Addr::new(10, 200, 0, 11),
            Ipv4Addr::new(10, 200, 0, 12),
        );
        assert!(one.contains("udp(sp=10000, dp=9)"), "{one}");
    }

    #[test]
    fn validation_bounds() {
        assert!(ForwardConfig::default().validate().is_ok());
        let small = ForwardConfig {
            size: 63,
            ..ForwardConfig::default()
        };
        assert!(small.validate().is_err());
        let none = ForwardConfig {
            variants: vec![],
            ..ForwardConfig::default()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn pktgen_args_match_the_trafgen_frames() {
        let config = ForwardConfig {
            flows: 4,
            ..ForwardConfig::default()
        };
        let args = pktgen_args(
            &config,
            GATEWAY_MAC,
            MacAddr([2, 0, 0, 0, 0, 0x11]),
            Ipv4Addr::new(10, 200, 0, 11),
            Ipv4Addr::new(10, 200, 0, 12),
            7.0,
        )
        .join(" ");
        assert_eq!(
            args,
            "tx --dev eth0 --src-mac 02:00:00:00:00:11 --dst-mac 02:53:4c:00:00:01 \
             --src-ip 10.200.0.11 --dst-ip 10.200.0.12 --src-port 10000-10003 --dst-port 9 \
             --size 64 --flows 4 --rate max --duration 7.0 --cpu 0 --json"
        );
        assert_eq!("afxdp".parse::<Generator>().unwrap(), Generator::Afxdp);
        assert_eq!("trafgen".parse::<Generator>().unwrap(), Generator::Trafgen);
        assert!("pktgen".parse::<Generator>().is_err());
    }

    #[test]
    fn variants_parse() {
        assert_eq!("devmap".parse::<Variant>().unwrap(), Variant::Devmap);
        assert!("xdp".parse::<Variant>().is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn engine_window_subtracts_and_names_drops() {
        let before = serde_json::json!({"totals": {"rx_packets": 10, "tx_packets": 8},
            "drops": [{"name": "no_route", "count": 2}, {"name": "rx_ring_dropped", "count": 0}]});
        let after = serde_json::json!({"totals": {"rx_packets": 110, "tx_packets": 90},
            "drops": [{"name": "no_route", "count": 2}, {"name": "rx_ring_dropped", "count": 7}],
            "engine": {"cores": [1]}});
        let w = engine_window(&before, &after);
        assert_eq!((w.rx_packets, w.tx_packets), (100, 82));
        assert_eq!(w.drops.len(), 1);
        assert_eq!(w.drops["rx_ring_dropped"], 7);
        assert_eq!(w.total_drops["no_route"], 2);
        assert_eq!(w.info["cores"][0], 1);
    }

    fn trial(variant: Variant, pps: f64) -> Trial {
        Trial {
            variant,
            round: 1,
            lab: String::new(),
            window_seconds: 1.0,
            generator: Generator::Afxdp,
            trafgen_packets: None,
            trafgen_seconds: None,
            offered_pps: None,
            pktgen: None,
            offered_window_packets: 0,
            offered_window_pps: 2.0 * pps,
            eth0_tx_dropped: 0,
            delivered_packets: pps as u64,
            delivered_pps: pps,
            delivered_frame_bytes: Some(60.0),
            loss: 0.5,
            cpu_busy_seconds: BTreeMap::new(),
            cpu_busy_total: 1.0,
            cpu_seconds_per_mpkt: Some(1.0),
            engine: None,
            loadavg: String::new(),
        }
    }

    #[test]
    fn summary_ratios_are_to_the_kernel_median() {
        let trials = [
            trial(Variant::Kernel, 1e6),
            trial(Variant::Kernel, 3e6),
            trial(Variant::Engine, 1e6),
        ];
        let failed = [FailedTrial {
            variant: Variant::Devmap,
            round: 1,
            error: "x".into(),
        }];
        let rows = summarize(
            &[Variant::Kernel, Variant::Devmap, Variant::Engine],
            &trials,
            &failed,
        );
        assert_eq!(rows[0].delivered_pps_median, 2e6);
        assert_eq!(rows[0].ratio_to_kernel, Some(1.0));
        assert_eq!(rows[1].trials, 0);
        assert_eq!(rows[1].failed, 1);
        assert_eq!(rows[1].ratio_to_kernel, None);
        assert_eq!(rows[2].ratio_to_kernel, Some(0.5));
        let table = markdown_table(&rows);
        assert!(table.contains("| 2.000 (1.000–3.000) | 1.00× |"), "{table}");
        assert!(table.contains("n/a"), "{table}");
    }
}

//! `sluice-lab bench services`: a ClusterIP behind 1, 1k, 10k and 100k services, through
//! sluice-engine's service load balancing and through kube-proxy's iptables rules on the
//! same two-pod topology, in one run (issue 5's lab benchmark).
//!
//! Every trial builds a fresh two-pod lab, puts N services in the dataplane, and measures
//! traffic from pod 1 to the LAST service's ClusterIP (port 80), whose two backends are
//! pod 2 ports [`TARGET_PORT`] and [`SECOND_TARGET_PORT`], a `sluice-connrate server` on
//! each (the engine refuses a service listing one address twice, so unlike `bench
//! scenarios` the two endpoints differ; both dataplanes get the same two):
//!
//! - Sluice: an engine-mode lab with static pods; the lab's node state plus N
//!   [`Service`]s is written as the engine's `--state` file (no agent), and the engine runs
//!   one busy worker on core [`ENGINE_CORE`]. The time to start it (state parse and table
//!   build included: the engine reads its state before it opens its stats socket) is
//!   recorded.
//! - iptables: a kernel-mode lab with kube-proxy's iptables-mode nat table for N services
//!   loaded in the node namespace with one `iptables-restore`, bounded by
//!   `--iptables-load-timeout`; a size that does not load in time is not tried again in
//!   later rounds, nor is any larger one (the report says so).
//!
//! Two measurements per trial, both from pod 1, pinned to CPU [`APP_CPU`]:
//!
//! - First-packet latency: `--probes` sequential connects, each timed from `connect()` to
//!   its return, that is from the SYN sent to the SYN-ACK received (the SYN is the packet
//!   that goes through the service lookup); each connection then does the 1-byte
//!   request/response and close of the CRR loop, untimed. p50/p90/p99 of the connect time.
//! - New connections per second: `sluice-connrate client` with `--parallel` loops for
//!   `--seconds` (connect, 1-byte request, 1-byte response, close).
//!
//! Rounds interleave sizes and dataplanes (round 1: 1 Sluice, 1 iptables, 1k Sluice, ...).
//! Ratios are of medians over rounds: Sluice at N over Sluice at 1 service, and Sluice over
//! iptables at the same N.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde::Serialize;
use sluice_tables::{
    Backend, BackendState, Frontend, FrontendKind, L4Protocol, LbAlgorithm, Service,
};

use super::forward::{engine_window, median};
use super::labkit::{find_tool, require, wait_for_ports, within_netns};
use super::machine::{loadavg, loadavg_1min, ticks_per_second, CpuTimes, Machine};
use super::rules::{self, cluster_ip, Loader, RulesLoad, MAX_SERVICES, SERVICE_PORT, TARGET_PORT};
use super::scenarios::{APP_CPU, CONNRATE_BIN, CONNRATE_ENV, ENGINE_CORE};
use crate::{EngineOptions, Lab, LabSpec};

const FROM_POD: usize = 1;
const TO_POD: usize = 2;
/// The port of every service's second backend in pod 2.
pub const SECOND_TARGET_PORT: u16 = TARGET_PORT + 1;
/// Timeout of one probe connect (and of its request/response).
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// A probe run stops after this many failed connections.
const PROBE_MAX_ERRORS: usize = 50;
/// Unmeasured connects before the probe: neighbour entries, first conntrack and route
/// cache work, page faults of the server.
const PROBE_WARMUP: usize = 20;

/// Who translates the ClusterIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataplane {
    /// sluice-engine's service table and conntrack (static lab, `--state`).
    Sluice,
    /// kube-proxy's iptables mode in the node kernel.
    Iptables,
}

impl Dataplane {
    pub const ALL: [Dataplane; 2] = [Dataplane::Sluice, Dataplane::Iptables];

    pub fn name(self) -> &'static str {
        match self {
            Dataplane::Sluice => "sluice",
            Dataplane::Iptables => "iptables",
        }
    }
}

impl fmt::Display for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataplane {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Dataplane> {
        Dataplane::ALL
            .into_iter()
            .find(|d| d.name() == text.trim())
            .ok_or_else(|| anyhow!("unknown dataplane {text:?} (sluice, iptables)"))
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct ServicesConfig {
    /// Service counts; the first is the baseline of the "vs first size" ratios.
    pub sizes: Vec<usize>,
    pub dataplanes: Vec<Dataplane>,
    pub trials: u32,
    /// Run time of the connection-rate client.
    pub seconds: u32,
    /// Concurrent loops of the connection-rate client.
    pub parallel: usize,
    /// Sequential connects of the first-packet latency probe.
    pub probes: usize,
    /// iptables flavour.
    pub iptables: Loader,
    /// Bound on one iptables-restore.
    pub iptables_load_timeout_seconds: u64,
    /// Bound on the engine's start (state parse and table build included).
    pub engine_start_timeout_seconds: u64,
    pub engine: Option<PathBuf>,
    pub connrate: Option<PathBuf>,
    pub engine_args: Vec<String>,
}

impl Default for ServicesConfig {
    fn default() -> ServicesConfig {
        ServicesConfig {
            sizes: vec![1, 1_000, 10_000, 100_000],
            dataplanes: Dataplane::ALL.to_vec(),
            trials: 3,
            seconds: 5,
            parallel: 4,
            probes: 1_000,
            iptables: Loader::IptablesNft,
            iptables_load_timeout_seconds: 240,
            engine_start_timeout_seconds: 120,
            engine: None,
            connrate: None,
            engine_args: Vec::new(),
        }
    }
}

impl ServicesConfig {
    /// `--quick`: one round, 2 s of connections, 200 probes.
    pub fn quick(mut self) -> ServicesConfig {
        self.trials = 1;
        self.seconds = 2;
        self.probes = 200;
        self
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.sizes.is_empty(), "--sizes names no size");
        for &n in &self.sizes {
            ensure!(
                (1..=MAX_SERVICES).contains(&n),
                "--sizes: {n} services; 1 to {MAX_SERVICES}"
            );
        }
        let mut unique = self.sizes.clone();
        unique.sort_unstable();
        unique.dedup();
        ensure!(
            unique.len() == self.sizes.len(),
            "--sizes names a size twice"
        );
        ensure!(!self.dataplanes.is_empty(), "--dataplanes names none");
        ensure!((1..=20).contains(&self.trials), "--trials must be 1 to 20");
        ensure!(
            (1..=60).contains(&self.seconds),
            "--seconds must be 1 to 60"
        );
        ensure!(
            (1..=32).contains(&self.parallel),
            "--parallel must be 1 to 32"
        );
        ensure!(
            (10..=100_000).contains(&self.probes),
            "--probes must be 10 to 100000"
        );
        ensure!(
            (1..=3600).contains(&self.iptables_load_timeout_seconds),
            "--iptables-load-timeout must be 1 to 3600 s"
        );
        ensure!(
            (1..=3600).contains(&self.engine_start_timeout_seconds),
            "--engine-start-timeout must be 1 to 3600 s"
        );
        ensure!(
            !matches!(self.iptables, Loader::Nft),
            "the iptables dataplane loads with iptables-nft-restore or iptables-legacy-restore"
        );
        Ok(())
    }

    /// (round, services, dataplane) in run order: rounds outside, sizes, then dataplanes.
    pub fn plan(&self) -> Vec<(u32, usize, Dataplane)> {
        let mut plan = Vec::new();
        for round in 1..=self.trials {
            for &n in &self.sizes {
                for &d in &self.dataplanes {
                    plan.push((round, n, d));
                }
            }
        }
        plan
    }

    /// The longest one probe run may take (every connect timing out up to the error cap,
    /// plus the connects themselves at up to 20 ms each).
    fn probe_bound(&self) -> Duration {
        PROBE_IO_TIMEOUT * (3 * PROBE_MAX_ERRORS as u32)
            + Duration::from_millis(20) * (self.probes + PROBE_WARMUP) as u32
    }

    /// What one trial usually takes, for the upfront estimate (seconds).
    fn trial_estimate(&self, n: usize, dataplane: Dataplane) -> f64 {
        let k = n as f64 / 10_000.0;
        let setup = match dataplane {
            // iptables-nft-restore on the 2-vCPU lab machine: 0.3 s for 1k services, 3-8 s
            // for 10k, not done after 400 s for 100k: taken as growing with the square.
            Dataplane::Iptables => {
                4.0 + (3.0 * k + 4.0 * k * k).min(self.iptables_load_timeout_seconds as f64)
            }
            // The engine parsed and built 100k services in about 3 s.
            Dataplane::Sluice => 5.0 + 0.3 * k,
        };
        setup + f64::from(self.seconds) + self.probes as f64 * 0.5e-3 + 2.0
    }

    /// The bound on one trial (seconds).
    fn trial_bound(&self, dataplane: Dataplane) -> f64 {
        let setup = match dataplane {
            Dataplane::Iptables => self.iptables_load_timeout_seconds,
            Dataplane::Sluice => self.engine_start_timeout_seconds + 10,
        };
        60.0 + setup as f64 + f64::from(self.seconds) + 20.0 + self.probe_bound().as_secs_f64()
    }
}

/// The two endpoints of every service: pod 2's address at [`TARGET_PORT`] and
/// [`SECOND_TARGET_PORT`].
pub fn endpoints(pod2: Ipv4Addr) -> [SocketAddrV4; 2] {
    [
        SocketAddrV4::new(pod2, TARGET_PORT),
        SocketAddrV4::new(pod2, SECOND_TARGET_PORT),
    ]
}

/// N ClusterIP services as the engine's node state carries them: service `i` (id `i + 1`)
/// is `default/svc<i>` port `http` on [`cluster_ip`]`(i)`:[`SERVICE_PORT`]/TCP with one
/// ready local backend per entry of `backends` (ids `k*i + 1 ..= k*i + k`, unique over all
/// services), the shape of [`rules::kube_proxy_iptables_to`] with the same endpoints.
pub fn cluster_services(services: usize, backends: &[SocketAddrV4]) -> Vec<Service> {
    let per = u32::try_from(backends.len()).unwrap_or(u32::MAX);
    (0..services)
        .map(|i| {
            let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            Service {
                id,
                name: format!("default/svc{i}"),
                port_name: "http".to_string(),
                protocol: L4Protocol::Tcp,
                frontends: vec![Frontend {
                    kind: FrontendKind::ClusterIp,
                    addr: IpAddr::V4(cluster_ip(i)),
                    port: SERVICE_PORT,
                }],
                backends: (1..)
                    .zip(backends)
                    .map(|(e, ep)| Backend {
                        id: per * (id - 1) + e,
                        addr: IpAddr::V4(*ep.ip()),
                        port: ep.port(),
                        state: BackendState::Ready,
                        local: true,
                    })
                    .collect(),
                algorithm: LbAlgorithm::Random,
                affinity_timeout_s: None,
                external_traffic_local: false,
                internal_traffic_local: false,
                source_ranges: Vec::new(),
            }
        })
        .collect()
}

/// The engine's state file as this benchmark wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct StateFile {
    pub services: usize,
    pub bytes: u64,
    pub write_seconds: f64,
}

/// Writes the lab's node state with `services` ClusterIP services to the lab's state file
/// (compact JSON: 100k services are tens of MB pretty-printed).
pub fn write_state(lab: &Lab, services: usize) -> Result<StateFile> {
    let started = Instant::now();
    let backends = endpoints(lab.pod(TO_POD)?.ipv4);
    let mut state = lab.node_state();
    state.services = cluster_services(services, &backends);
    let path = lab.state_path();
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &state)
        .with_context(|| format!("writing {}", path.display()))?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(StateFile {
        services,
        bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        write_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Connect times of one probe run.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub connects: usize,
    pub errors: usize,
    pub last_error: Option<String>,
    /// Connect times in microseconds: p50, p90, p99, max.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One probe connection: the connect is timed; request, response and close are not.
fn probe_one(to: SocketAddr) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&to, PROBE_IO_TIMEOUT)?;
    let connect = started.elapsed();
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut buf = [0u8; 8];
    if stream.read(&mut buf)? != 1 {
        return Err(std::io::Error::other("no response byte"));
    }
    // The server closes first (TIME_WAIT on its side): wait for its FIN.
    let _ = stream.read(&mut buf);
    let _ = stream.shutdown(Shutdown::Both);
    Ok(connect)
}

/// `warmup` untimed then `count` timed sequential connections to `to` from the calling
/// thread's namespace; stops after [`PROBE_MAX_ERRORS`] failures.
pub fn probe_connects(to: SocketAddr, warmup: usize, count: usize) -> Result<Probe> {
    let mut errors = 0;
    let mut last_error = None;
    let mut times = Vec::with_capacity(count);
    let mut fail = |err: std::io::Error, errors: &mut usize| {
        *errors += 1;
        last_error = Some(err.to_string());
        *errors < PROBE_MAX_ERRORS
    };
    for _ in 0..warmup {
        if let Err(err) = probe_one(to) {
            if !fail(err, &mut errors) {
                break;
            }
        }
    }
    while times.len() < count && errors < PROBE_MAX_ERRORS {
        match probe_one(to) {
            Ok(t) => times.push(t.as_secs_f64() * 1e6),
            Err(err) => {
                fail(err, &mut errors);
            }
        }
    }
    ensure!(
        !times.is_empty(),
        "no probe connection to {to} completed ({errors} errors, last: {})",
        last_error.unwrap_or_default()
    );
    times.sort_unstable_by(f64::total_cmp);
    Ok(Probe {
        connects: times.len(),
        errors,
        last_error,
        p50_us: percentile(&times, 50.0),
        p90_us: percentile(&times, 90.0),
        p99_us: percentile(&times, 99.0),
        max_us: times.last().copied().unwrap_or(f64::NAN),
        mean_us: times.iter().sum::<f64>() / times.len() as f64,
    })
}

/// Runs the probe from pod 1's namespace on a thread pinned to [`APP_CPU`].
fn probe_from_pod(lab: &Lab, to: SocketAddr, count: usize) -> Result<Probe> {
    let netns = lab.pod(FROM_POD)?.netns.clone();
    within_netns(&netns, move || {
        let mut cpus = nix::sched::CpuSet::new();
        cpus.set(APP_CPU).context("CPU set")?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)
            .with_context(|| format!("pinning the probe thread to CPU {APP_CPU}"))?;
        probe_connects(to, PROBE_WARMUP, count)
    })
}

/// The engine's counters over a trial's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct EngineTrial {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: BTreeMap<String, u64>,
    /// Seconds from starting the engine until its stats socket answered (it reads and
    /// builds the state first).
    pub start_seconds: f64,
}

/// One trial: one dataplane with N services.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub dataplane: Dataplane,
    pub services: usize,
    pub round: u32,
    pub lab: String,
    pub probe: Probe,
    /// What sluice-connrate printed, parsed.
    pub connections_per_second: f64,
    pub connections: u64,
    pub crr_errors: u64,
    pub crr_conn_us_p50: Option<f64>,
    pub crr_conn_us_p99: Option<f64>,
    pub crr_seconds: f64,
    /// Whole-machine busy CPU seconds over the client's run per million connections.
    pub cpu_per_m_connections: Option<f64>,
    pub rules: Option<RulesLoad>,
    pub state: Option<StateFile>,
    pub engine: Option<EngineTrial>,
    pub setup_seconds: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub dataplane: Dataplane,
    pub services: usize,
    pub round: u32,
    pub error: String,
}

/// A (dataplane, size) the run did not measure, and why: an iptables rule set that did not
/// load within the bound, or a size at or above one that did not.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTrial {
    pub dataplane: Dataplane,
    pub services: usize,
    pub round: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Median, min and max of the finite values, if any.
pub(super) fn stat(values: &[f64]) -> Option<Stat> {
    let values: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    (!values.is_empty()).then(|| Stat {
        median: median(&values),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// One dataplane at one size, over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dataplane: Dataplane,
    pub services: usize,
    pub trials: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Per-trial connect p50 / p99 (µs) and connections per second, over the trials.
    pub connect_p50_us: Option<Stat>,
    pub connect_p99_us: Option<Stat>,
    pub connections_per_second: Option<Stat>,
    pub cpu_per_m_connections: Option<f64>,
    /// Median connect p50 over the same dataplane's at the first size.
    pub p50_vs_first_size: Option<f64>,
    /// Median connections/s over the same dataplane's at the first size.
    pub rate_vs_first_size: Option<f64>,
    /// iptables load time or engine start time, median seconds.
    pub setup_seconds: Option<f64>,
    pub engine_drops: BTreeMap<String, u64>,
}

/// Sluice beside iptables at one size (ratios of medians).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub services: usize,
    /// Sluice connect p50 / iptables connect p50 (below 1: Sluice is faster).
    pub p50_sluice_over_iptables: Option<f64>,
    pub p99_sluice_over_iptables: Option<f64>,
    /// Sluice connections/s / iptables connections/s (above 1: Sluice is faster).
    pub rate_sluice_over_iptables: Option<f64>,
}

/// Issue 5's targets against the measured ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

fn ratio(a: Option<Stat>, b: Option<Stat>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

pub fn summarize(
    config: &ServicesConfig,
    trials: &[Trial],
    failed: &[FailedTrial],
    skipped: &[SkippedTrial],
) -> Vec<Summary> {
    let mut rows = Vec::new();
    for &dataplane in &config.dataplanes {
        let first = rows.len();
        for &n in &config.sizes {
            let mine: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.dataplane == dataplane && t.services == n)
                .collect();
            let values = |f: &dyn Fn(&Trial) -> Option<f64>| -> Vec<f64> {
                mine.iter().filter_map(|t| f(t)).collect()
            };
            let cpu = values(&|t| t.cpu_per_m_connections);
            let setup = values(&|t| match dataplane {
                Dataplane::Iptables => t.rules.as_ref().map(|r| r.load_seconds),
                Dataplane::Sluice => t.engine.as_ref().map(|e| e.start_seconds),
            });
            let mut engine_drops = BTreeMap::new();
            for t in &mine {
                for (name, n) in t.engine.iter().flat_map(|e| e.drops.iter()) {
                    *engine_drops.entry(name.clone()).or_insert(0) += n;
                }
            }
            rows.push(Summary {
                dataplane,
                services: n,
                trials: mine.len(),
                failed: failed
                    .iter()
                    .filter(|f| f.dataplane == dataplane && f.services == n)
                    .count(),
                skipped: skipped
                    .iter()
                    .filter(|s| s.dataplane == dataplane && s.services == n)
                    .count(),
                connect_p50_us: stat(&values(&|t| Some(t.probe.p50_us))),
                connect_p99_us: stat(&values(&|t| Some(t.probe.p99_us))),
                connections_per_second: stat(&values(&|t| Some(t.connections_per_second))),
                cpu_per_m_connections: (!cpu.is_empty()).then(|| median(&cpu)),
                p50_vs_first_size: None,
                rate_vs_first_size: None,
                setup_seconds: (!setup.is_empty()).then(|| median(&setup)),
                engine_drops,
            });
        }
        let (base_p50, base_rate) = (
            rows[first].connect_p50_us,
            rows[first].connections_per_second,
        );
        for row in &mut rows[first..] {
            row.p50_vs_first_size = ratio(row.connect_p50_us, base_p50);
            row.rate_vs_first_size = ratio(row.connections_per_second, base_rate);
        }
    }
    rows
}

fn row(rows: &[Summary], dataplane: Dataplane, services: usize) -> Option<&Summary> {
    rows.iter()
        .find(|r| r.dataplane == dataplane && r.services == services)
}

pub fn compare(config: &ServicesConfig, rows: &[Summary]) -> Vec<Comparison> {
    config
        .sizes
        .iter()
        .map(|&n| {
            let s = row(rows, Dataplane::Sluice, n);
            let i = row(rows, Dataplane::Iptables, n);
            let pair = |f: fn(&Summary) -> Option<Stat>| ratio(s.and_then(f), i.and_then(f));
            Comparison {
                services: n,
                p50_sluice_over_iptables: pair(|r| r.connect_p50_us),
                p99_sluice_over_iptables: pair(|r| r.connect_p99_us),
                rate_sluice_over_iptables: pair(|r| r.connections_per_second),
            }
        })
        .collect()
}

/// Issue 5: Sluice's first-packet latency at 100k services within 1.05× of 1 service, and
/// at 10k services at least 2× the iptables connection rate.
pub fn targets(rows: &[Summary], comparisons: &[Comparison]) -> Vec<Target> {
    let sluice = |n: usize| row(rows, Dataplane::Sluice, n);
    let latency = match (sluice(1), sluice(100_000)) {
        (Some(one), Some(many)) => ratio(many.connect_p50_us, one.connect_p50_us),
        _ => None,
    };
    let rate = comparisons
        .iter()
        .find(|c| c.services == 10_000)
        .and_then(|c| c.rate_sluice_over_iptables);
    vec![
        Target {
            what: "Sluice connect p50, 100k services / 1 service".to_string(),
            measured: latency,
            goal: "<= 1.05".to_string(),
            met: latency.map(|x| x <= 1.05),
        },
        Target {
            what: "connections/s at 10k services, Sluice / iptables".to_string(),
            measured: rate,
            goal: ">= 2.00".to_string(),
            met: rate.map(|x| x >= 2.0),
        },
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: ServicesConfig,
    pub machine: Machine,
    pub pinning: String,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub skipped: Vec<SkippedTrial>,
    pub summary: Vec<Summary>,
    pub comparison: Vec<Comparison>,
    pub targets: Vec<Target>,
}

// ---------------------------------------------------------------------------------------
// Trials

/// What went into the dataplane before the measurements.
struct Prepared {
    rules: Option<RulesLoad>,
    state: Option<StateFile>,
    engine_start_seconds: Option<f64>,
}

/// Puts `n` services into the lab's dataplane.
fn prepare(config: &ServicesConfig, dataplane: Dataplane, n: usize, lab: &Lab) -> Result<Prepared> {
    match dataplane {
        Dataplane::Iptables => {
            let pod2 = lab.pod(TO_POD)?.ipv4;
            let text = rules::kube_proxy_iptables_to(n, &endpoints(pod2));
            let rules = rules::load_within(
                lab,
                &format!("kube-proxy-iptables-{n}"),
                config.iptables,
                n,
                &text,
                Duration::from_secs(config.iptables_load_timeout_seconds),
            )?;
            Ok(Prepared {
                rules: Some(rules),
                state: None,
                engine_start_seconds: None,
            })
        }
        Dataplane::Sluice => {
            let state = write_state(lab, n)?;
            let mut extra = vec![
                "--mode".to_string(),
                "busy".to_string(),
                "--cores".to_string(),
                ENGINE_CORE.to_string(),
            ];
            extra.extend(config.engine_args.iter().cloned());
            let started = Instant::now();
            lab.start_engine(&EngineOptions {
                binary: config.engine.clone(),
                workers: Some(1),
                extra_args: extra,
                start_timeout: Duration::from_secs(config.engine_start_timeout_seconds),
                ..EngineOptions::default()
            })?;
            let engine_start_seconds = started.elapsed().as_secs_f64();
            wait_for_ports(lab, 2)?;
            Ok(Prepared {
                rules: None,
                state: Some(state),
                engine_start_seconds: Some(engine_start_seconds),
            })
        }
    }
}

/// Waits until something listens on TCP `port` in pod `pod` (at most 5 s).
pub(super) fn wait_listening(lab: &Lab, pod: usize, port: u16, pid: u32, log: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!("sport = :{port}");
    loop {
        let out = lab.exec(pod, &["ss", "-H", "-l", "-t", "-n", &filter])?;
        if !out.stdout.trim().is_empty() {
            return Ok(());
        }
        ensure!(
            lab.process_running(pid)?,
            "server in pod {pod} exited\n{}",
            lab.log_tail(log, 10)
        );
        ensure!(
            Instant::now() < deadline,
            "nothing listens on port {port} in pod {pod} after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the lab, puts the services in, measures, tears down (also on failure).
fn run_trial(
    config: &ServicesConfig,
    connrate: &str,
    dataplane: Dataplane,
    n: usize,
    round: u32,
) -> Result<Trial> {
    let started = Instant::now();
    let spec = match dataplane {
        Dataplane::Sluice => LabSpec::engine(2).with_static_pods(),
        Dataplane::Iptables => LabSpec::kernel(2),
    };
    let lab = Lab::new(spec)?;
    let result = prepare(config, dataplane, n, &lab).and_then(|prepared| {
        let setup_seconds = started.elapsed().as_secs_f64();
        measure(
            config,
            connrate,
            dataplane,
            n,
            round,
            &lab,
            prepared,
            setup_seconds,
        )
    });
    let teardown = lab.teardown();
    let trial = result?;
    teardown?;
    Ok(trial)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    config: &ServicesConfig,
    connrate: &str,
    dataplane: Dataplane,
    n: usize,
    round: u32,
    lab: &Lab,
    prepared: Prepared,
    setup_seconds: f64,
) -> Result<Trial> {
    let pod2 = lab.pod(TO_POD)?.ipv4;
    let service = SocketAddr::from((cluster_ip(n - 1), SERVICE_PORT));
    // Fresh source ports for every connection: the whole range in pod 1's namespace.
    let out = lab.exec(
        FROM_POD,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=1024 65535",
        ],
    )?;
    ensure!(out.success(), "sysctl in pod 1: {}", out.stderr.trim());
    let life = (config.probe_bound().as_secs() + u64::from(config.seconds) + 30).to_string();
    let cpu = APP_CPU.to_string();
    // One server per endpoint; `log` of the first for error messages.
    let mut servers = Vec::new();
    for ep in endpoints(pod2) {
        let log = format!("server-{dataplane}-{n}-r{round}-{}", ep.port());
        let listen = ep.to_string();
        #[rustfmt::skip]
        let pid = lab.spawn(TO_POD, &log, &[
            "taskset", "-c", &cpu, connrate, "server", "--listen", &listen, "--seconds", &life,
        ])?;
        wait_listening(lab, TO_POD, ep.port(), pid, &log)?;
        servers.push((pid, log));
    }
    let log = servers[0].1.clone();

    let engine_before = lab.engine_pid().and_then(|_| lab.engine_stats().ok());
    let probe = probe_from_pod(lab, service, config.probes)
        .with_context(|| format!("first-packet probe to {service}"))?;

    let secs = config.seconds.to_string();
    let parallel = config.parallel.to_string();
    let connect = service.to_string();
    let client_timeout = Duration::from_secs(u64::from(config.seconds) + 20);
    let c0 = CpuTimes::read()?;
    let out = lab.exec_timeout(
        FROM_POD,
        &[
            "taskset",
            "-c",
            &cpu,
            connrate,
            "client",
            "--connect",
            &connect,
            "--seconds",
            &secs,
            "--parallel",
            &parallel,
        ],
        client_timeout,
    )?;
    let c1 = CpuTimes::read()?;
    let engine_after = lab.engine_pid().and_then(|_| lab.engine_stats().ok());
    for (pid, _) in &servers {
        if lab.process_running(*pid).unwrap_or(false) {
            let _ = lab.stop_process(*pid);
        }
    }
    ensure!(
        out.success(),
        "sluice-connrate client to {service} failed ({}): {}\n{}\n{}",
        out.status,
        out.stderr.trim(),
        out.stdout.trim(),
        lab.log_tail(&log, 10)
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("sluice-connrate output {:?}", out.stdout.trim()))?;
    let connections = v["connections"].as_u64().unwrap_or(0);
    let busy: f64 = c1.busy_since(&c0, ticks_per_second()).values().sum();
    let engine = match (engine_before, engine_after, prepared.engine_start_seconds) {
        (Some(b), Some(a), Some(start_seconds)) => {
            let w = engine_window(&b, &a);
            Some(EngineTrial {
                rx_packets: w.rx_packets,
                tx_packets: w.tx_packets,
                drops: w.drops,
                start_seconds,
            })
        }
        _ => None,
    };
    Ok(Trial {
        dataplane,
        services: n,
        round,
        lab: lab.prefix().to_string(),
        probe,
        connections_per_second: v["connections_per_second"].as_f64().unwrap_or(0.0),
        connections,
        crr_errors: v["errors"].as_u64().unwrap_or(0),
        crr_conn_us_p50: v["conn_us_p50"].as_f64(),
        crr_conn_us_p99: v["conn_us_p99"].as_f64(),
        crr_seconds: v["seconds"].as_f64().unwrap_or(0.0),
        cpu_per_m_connections: (connections > 0).then(|| busy / (connections as f64 / 1e6)),
        rules: prepared.rules,
        state: prepared.state,
        engine,
        setup_seconds,
        loadavg: loadavg(),
    })
}

fn describe_trial(t: &Trial) -> String {
    let mut line = format!(
        "connect p50 {:.1} µs p99 {:.1} µs ({} probes, {} errors); {:.0} conn/s ({} errors)",
        t.probe.p50_us,
        t.probe.p99_us,
        t.probe.connects,
        t.probe.errors,
        t.connections_per_second,
        t.crr_errors
    );
    if let Some(r) = &t.rules {
        line.push_str(&format!(
            "; {} lines loaded in {:.2} s",
            r.lines, r.load_seconds
        ));
    }
    if let (Some(s), Some(e)) = (&t.state, &t.engine) {
        line.push_str(&format!(
            "; state {:.1} MB, engine up in {:.2} s",
            s.bytes as f64 / 1e6,
            e.start_seconds
        ));
        if !e.drops.is_empty() {
            line.push_str(&format!("; drops {:?}", e.drops));
        }
    }
    line
}

/// Whether a failed iptables trial was its load running out of time (then no larger size
/// is tried either).
fn load_timed_out(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.to_string().contains("did not finish within"))
}

pub fn run(config: &ServicesConfig, command: String) -> Result<Report> {
    config.validate()?;
    let connrate = match &config.connrate {
        Some(p) => p.clone(),
        None => find_tool(CONNRATE_BIN, CONNRATE_ENV)?,
    };
    let connrate = connrate.display().to_string();
    require("ss", "iproute2")?;
    if config.dataplanes.contains(&Dataplane::Iptables) {
        require(config.iptables.program(), "iptables")?;
    }
    if config.dataplanes.contains(&Dataplane::Sluice) && config.engine.is_none() {
        crate::find_engine()?;
    }
    let plan = config.plan();
    let estimate: f64 = plan
        .iter()
        .map(|&(_, n, d)| config.trial_estimate(n, d))
        .sum();
    let bound: f64 = plan.iter().map(|&(_, _, d)| config.trial_bound(d)).sum();
    let mut machine = Machine::probe();
    println!(
        "bench services: {} trial(s) ({} round(s) of sizes {:?} x {}); {} probes, {} s of \
         connections each; expected about {:.0} s ({:.1} min; less when an iptables size does \
         not load: it is tried once), at most {:.0} s",
        plan.len(),
        config.trials,
        config.sizes,
        config
            .dataplanes
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(","),
        config.probes,
        config.seconds,
        estimate,
        estimate / 60.0,
        bound
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
    let mut skipped = Vec::new();
    // The smallest iptables size whose load ran out of time: it and larger ones are skipped.
    let mut iptables_limit: Option<usize> = None;
    for (round, n, dataplane) in plan {
        print!("  round {round} {:>7} {:<8} ", n, dataplane.name());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if dataplane == Dataplane::Iptables && iptables_limit.is_some_and(|limit| n >= limit) {
            let reason = format!(
                "skipped: {} services did not load within {} s in an earlier trial",
                iptables_limit.unwrap_or(n),
                config.iptables_load_timeout_seconds
            );
            println!("{reason}");
            skipped.push(SkippedTrial {
                dataplane,
                services: n,
                round,
                reason,
            });
            continue;
        }
        match run_trial(config, &connrate, dataplane, n, round) {
            Ok(trial) => {
                println!("{}", describe_trial(&trial));
                trials.push(trial);
            }
            // A rule set too large to load in the bound is a result, not a failure.
            Err(err) if dataplane == Dataplane::Iptables && load_timed_out(&err) => {
                let reason = format!(
                    "not loaded: {} did not finish {n} services within {} s (killed); \
                     larger sizes are skipped",
                    config.iptables.program(),
                    config.iptables_load_timeout_seconds
                );
                println!("{reason}");
                iptables_limit = Some(iptables_limit.map_or(n, |l| l.min(n)));
                skipped.push(SkippedTrial {
                    dataplane,
                    services: n,
                    round,
                    reason,
                });
            }
            Err(err) => {
                println!("FAILED: {err:#}");
                failed.push(FailedTrial {
                    dataplane,
                    services: n,
                    round,
                    error: format!("{err:#}"),
                });
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(config, &trials, &failed, &skipped);
    let comparison = compare(config, &summary);
    let targets = targets(&summary, &comparison);
    Ok(Report {
        benchmark: "services",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        pinning: format!(
            "probe thread, sluice-connrate client and server on CPU {APP_CPU}; Sluice: one \
             busy worker on core {ENGINE_CORE}; kernel softirq work runs where it is raised"
        ),
        trials,
        failed,
        skipped,
        summary,
        comparison,
        targets,
    })
}

// ---------------------------------------------------------------------------------------
// Reporting

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".to_string()
    }
}

fn spread(s: Option<Stat>, digits: usize) -> String {
    s.map_or_else(
        || "n/a".to_string(),
        |s| {
            format!(
                "{} ({}–{})",
                num(s.median, digits),
                num(s.min, digits),
                num(s.max, digits)
            )
        },
    )
}

fn times(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}×"))
}

fn size_label(n: usize) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Why a row has no numbers: failed or skipped trials.
fn empty_reason(r: Option<&Summary>) -> Option<String> {
    let r = r?;
    (r.trials == 0).then(|| {
        if r.skipped > 0 {
            "not loaded within the bound".to_string()
        } else if r.failed > 0 {
            "failed".to_string()
        } else {
            "not run".to_string()
        }
    })
}

/// The two side-by-side tables (first-packet latency, connection rate) and the setup costs.
pub fn markdown_tables(config: &ServicesConfig, rows: &[Summary], cmp: &[Comparison]) -> String {
    let base = size_label(config.sizes[0]);
    let mut text = format!(
        "First-packet latency (connect(): SYN sent to SYN-ACK received), µs, median over \
         rounds of each round's percentile (min–max)\n\n\
         | services | Sluice p50 | Sluice p99 | Sluice p50 / {base} | iptables p50 | iptables p99 | \
         iptables p50 / {base} | Sluice / iptables p50 |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for (i, &n) in config.sizes.iter().enumerate() {
        let s = row(rows, Dataplane::Sluice, n);
        let p = row(rows, Dataplane::Iptables, n);
        let cells = |r: Option<&Summary>| -> [String; 3] {
            match empty_reason(r) {
                Some(why) => [why, String::new(), String::new()],
                None => [
                    spread(r.and_then(|r| r.connect_p50_us), 1),
                    spread(r.and_then(|r| r.connect_p99_us), 1),
                    times(r.and_then(|r| r.p50_vs_first_size)),
                ],
            }
        };
        let [s1, s2, s3] = cells(s);
        let [p1, p2, p3] = cells(p);
        text.push_str(&format!(
            "| {} | {s1} | {s2} | {s3} | {p1} | {p2} | {p3} | {} |\n",
            size_label(n),
            times(cmp[i].p50_sluice_over_iptables)
        ));
    }
    text.push_str(&format!(
        "\nNew TCP connections per second (sluice-connrate, {} loops, {} s), median (min–max)\n\n\
         | services | Sluice conn/s | Sluice / {base} | iptables conn/s | iptables / {base} | \
         Sluice / iptables | Sluice CPU s per M conns | iptables CPU s per M conns |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        config.parallel, config.seconds
    ));
    for (i, &n) in config.sizes.iter().enumerate() {
        let s = row(rows, Dataplane::Sluice, n);
        let p = row(rows, Dataplane::Iptables, n);
        let cells = |r: Option<&Summary>| -> [String; 3] {
            match empty_reason(r) {
                Some(why) => [why, String::new(), String::new()],
                None => [
                    spread(r.and_then(|r| r.connections_per_second), 0),
                    times(r.and_then(|r| r.rate_vs_first_size)),
                    r.and_then(|r| r.cpu_per_m_connections)
                        .map_or_else(|| "n/a".to_string(), |x| num(x, 1)),
                ],
            }
        };
        let [s1, s2, s3] = cells(s);
        let [p1, p2, p3] = cells(p);
        text.push_str(&format!(
            "| {} | {s1} | {s2} | {p1} | {p2} | {} | {s3} | {p3} |\n",
            size_label(n),
            times(cmp[i].rate_sluice_over_iptables)
        ));
    }
    text.push_str(
        "\nSetup, median seconds (Sluice: engine start with the state file, parse and table \
         build included; iptables: one iptables-restore)\n\n\
         | services | Sluice engine start s | iptables load s |\n| --- | --- | --- |\n",
    );
    for &n in &config.sizes {
        let cell = |d: Dataplane| {
            row(rows, d, n)
                .and_then(|r| r.setup_seconds)
                .map_or_else(|| "n/a".to_string(), |x| num(x, 2))
        };
        text.push_str(&format!(
            "| {} | {} | {} |\n",
            size_label(n),
            cell(Dataplane::Sluice),
            cell(Dataplane::Iptables)
        ));
    }
    text
}

pub fn print_report(report: &Report) {
    println!(
        "\n{} round(s); load average {} at start, {} at end\n",
        report.config.trials,
        report.machine.loadavg_start,
        report.machine.loadavg_end.as_deref().unwrap_or("?")
    );
    print!(
        "{}",
        markdown_tables(&report.config, &report.summary, &report.comparison)
    );
    println!("\nTargets (issue 5):\n");
    for t in &report.targets {
        println!(
            "- {}: {} (goal {}): {}",
            t.what,
            t.measured
                .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}")),
            t.goal,
            match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            }
        );
    }
    let drops: Vec<String> = report
        .summary
        .iter()
        .filter(|r| !r.engine_drops.is_empty())
        .map(|r| format!("{} services: {:?}", size_label(r.services), r.engine_drops))
        .collect();
    if !drops.is_empty() {
        println!("\nengine drops over the measurements: {}", drops.join("; "));
    }
    for s in &report.skipped {
        println!("round {} iptables {}: {}", s.round, s.services, s.reason);
    }
    for f in &report.failed {
        println!(
            "round {} {} {}: FAILED {}",
            f.round, f.dataplane, f.services, f.error
        );
    }
    println!(
        "\nmachine: {}, {} CPUs, kernel {}\npinning: {}\ncommand: {}",
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.kernel,
        report.pinning,
        report.command
    );
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use sluice_tables::{LbConfig, NodeState, ServiceTable};

    use super::*;

    #[test]
    fn services_match_the_iptables_shape_and_round_trip() {
        let pod2 = Ipv4Addr::new(10, 200, 0, 3);
        let services = cluster_services(3, &endpoints(pod2));
        assert_eq!(services.len(), 3);
        let last = &services[2];
        assert_eq!(last.id, 3);
        assert_eq!(last.name, "default/svc2");
        assert_eq!(
            last.frontends,
            vec![Frontend {
                kind: FrontendKind::ClusterIp,
                addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 3)),
                port: 80,
            }]
        );
        // Two ready backends, pod 2:8080 and :8081 as in the iptables rules, ids unique
        // over all services.
        let ids: Vec<u32> = services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
        let ports: Vec<u16> = last.backends.iter().map(|b| b.port).collect();
        assert_eq!(ports, vec![8080, 8081]);
        assert!(last
            .backends
            .iter()
            .all(|b| b.addr == IpAddr::V4(pod2) && b.state == BackendState::Ready));
        let rules = rules::kube_proxy_iptables_to(3, &endpoints(pod2));
        assert!(rules.contains("-A KUBE-SERVICES -d 10.96.0.3/32"));
        assert!(rules.contains("--to-destination 10.200.0.3:8081\n"));
        // The state file the engine reads: the services survive a JSON round trip.
        let mut state = NodeState::empty();
        state.services = services.clone();
        let text = serde_json::to_string(&state).unwrap();
        let back: NodeState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.services, services);
        // ... and the engine's table takes them (no address twice, no id twice).
        let table = ServiceTable::build(&back.services, &LbConfig::default());
        assert!(table.is_ok(), "{:?}", table.err());
    }

    #[test]
    fn the_largest_size_spills_into_the_second_cidr() {
        let pod2 = Ipv4Addr::new(10, 200, 0, 3);
        let services = cluster_services(100_000, &endpoints(pod2));
        assert_eq!(
            services[99_999].frontends[0].addr,
            IpAddr::V4(Ipv4Addr::new(10, 97, 136, 184))
        );
        let mut addrs: Vec<IpAddr> = services.iter().map(|s| s.frontends[0].addr).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 100_000);
    }

    #[test]
    fn plan_interleaves_rounds_sizes_and_dataplanes() {
        let config = ServicesConfig {
            sizes: vec![1, 1_000],
            trials: 2,
            ..ServicesConfig::default()
        };
        let plan = config.plan();
        assert_eq!(plan.len(), 8);
        assert_eq!(plan[0], (1, 1, Dataplane::Sluice));
        assert_eq!(plan[1], (1, 1, Dataplane::Iptables));
        assert_eq!(plan[2], (1, 1_000, Dataplane::Sluice));
        assert_eq!(plan[4], (2, 1, Dataplane::Sluice));
        assert!(config.validate().is_ok());
        assert!(ServicesConfig::default().quick().validate().is_ok());
        for bad in [vec![], vec![0], vec![1, 1], vec![MAX_SERVICES + 1]] {
            let c = ServicesConfig {
                sizes: bad.clone(),
                ..ServicesConfig::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn probe_times_connects_to_a_crr_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..(2 + 5) {
                let (mut s, _) = listener.accept().unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
            }
        });
        let probe = probe_connects(addr, 2, 5).unwrap();
        server.join().unwrap();
        assert_eq!((probe.connects, probe.errors), (5, 0));
        assert!(probe.p50_us > 0.0 && probe.p50_us <= probe.p99_us && probe.p99_us <= probe.max_us);
        // Nobody listens: every connect fails, and the probe says so.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let err = probe_connects(gone, 0, 3).unwrap_err();
        assert!(err.to_string().contains("no probe connection"), "{err}");
    }

    fn trial(d: Dataplane, n: usize, round: u32, p50: f64, rate: f64) -> Trial {
        Trial {
            dataplane: d,
            services: n,
            round,
            lab: String::new(),
            probe: Probe {
                connects: 100,
                errors: 0,
                last_error: None,
                p50_us: p50,
                p90_us: p50,
                p99_us: 2.0 * p50,
                max_us: 3.0 * p50,
                mean_us: p50,
            },
            connections_per_second: rate,
            connections: 1000,
            crr_errors: 0,
            crr_conn_us_p50: None,
            crr_conn_us_p99: None,
            crr_seconds: 1.0,
            cpu_per_m_connections: Some(100.0),
            rules: None,
            state: None,
            engine: None,
            setup_seconds: 0.0,
            loadavg: String::new(),
        }
    }

    #[test]
    fn ratios_tables_and_targets() {
        let config = ServicesConfig {
            sizes: vec![1, 10_000, 100_000],
            ..ServicesConfig::default()
        };
        let trials = [
            trial(Dataplane::Sluice, 1, 1, 100.0, 8000.0),
            trial(Dataplane::Sluice, 1, 2, 120.0, 9000.0),
            trial(Dataplane::Sluice, 10_000, 1, 104.0, 8000.0),
            trial(Dataplane::Sluice, 100_000, 1, 115.5, 7000.0),
            trial(Dataplane::Iptables, 1, 1, 60.0, 8000.0),
            trial(Dataplane::Iptables, 10_000, 1, 300.0, 2000.0),
        ];
        let skipped = [SkippedTrial {
            dataplane: Dataplane::Iptables,
            services: 100_000,
            round: 1,
            reason: "load timeout".into(),
        }];
        let rows = summarize(&config, &trials, &[], &skipped);
        assert_eq!(rows.len(), 6);
        let sluice1 = row(&rows, Dataplane::Sluice, 1).unwrap();
        assert_eq!(sluice1.connect_p50_us.unwrap().median, 110.0);
        assert_eq!(sluice1.connections_per_second.unwrap().median, 8500.0);
        let sluice100k = row(&rows, Dataplane::Sluice, 100_000).unwrap();
        assert_eq!(sluice100k.p50_vs_first_size, Some(1.05));
        let ipt10k = row(&rows, Dataplane::Iptables, 10_000).unwrap();
        assert_eq!(ipt10k.p50_vs_first_size, Some(5.0));
        assert_eq!(ipt10k.rate_vs_first_size, Some(0.25));
        let cmp = compare(&config, &rows);
        assert_eq!(cmp[1].rate_sluice_over_iptables, Some(4.0));
        assert_eq!(cmp[2].rate_sluice_over_iptables, None);
        let t = targets(&rows, &cmp);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].measured, Some(4.0));
        assert_eq!(t[1].met, Some(true));
        let text = markdown_tables(&config, &rows, &cmp);
        assert!(
            text.contains("| 1 | 110.0 (100.0–120.0) | 220.0 (200.0–240.0) | 1.00× | 60.0"),
            "{text}"
        );
        assert!(text.contains("| 100k | 115.5 (115.5–115.5) |"), "{text}");
        assert!(text.contains("| not loaded within the bound |"), "{text}");
        assert!(
            text.contains("| 10k | 8000 (8000–8000) | 0.94× | 2000 (2000–2000) | 0.25× | 4.00× |"),
            "{text}"
        );
        // A missed target reads as missed.
        let slow = [
            trial(Dataplane::Sluice, 1, 1, 100.0, 1.0),
            trial(Dataplane::Sluice, 100_000, 1, 106.0, 1.0),
        ];
        let rows = summarize(&config, &slow, &[], &[]);
        let t = targets(&rows, &compare(&config, &rows));
        assert_eq!(t[0].met, Some(false));
        assert_eq!(t[1].met, None);
    }

    #[test]
    fn a_load_timeout_is_recognised() {
        let timed_out = anyhow!("`iptables-nft-restore x` did not finish within 3s and was killed")
            .context("loading");
        assert!(load_timed_out(&timed_out));
        assert!(!load_timed_out(&anyhow!(
            "iptables-nft-restore failed: bad rule"
        )));
    }
}

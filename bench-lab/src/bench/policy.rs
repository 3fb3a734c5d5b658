//! `sluice-lab bench policy`: new TCP connections per second through sluice-engine with
//! 0, 1k and 10k CiliumNetworkPolicy rules over 1k identities, the compile time of those
//! rules and the memory of the compiled tables, in one run (issue 6's benchmark).
//!
//! Before any lab: for every size N, the N rules ([`workload`]: server ingress and client
//! egress over the remote identities, L4 ports, CIDR rules, a few denies, and exactly one
//! rule allowing client -> server:[`TARGET_PORT`]) are generated, parsed and compiled with
//! `sluice_policy::compile` `--compile-runs` times (median compile time); the result is
//! checked by lookup (the target rule allows the measured port in both directions, another
//! port is denied), and the engine-side builds (`PolicyTables::build`, `IpCache::build`)
//! are timed in this process.
//!
//! Every trial builds a fresh two-pod engine-mode lab with static pods and writes the
//! engine's `--state` file itself: the lab's node state, the pods' identities, an ipcache
//! of the two pods and the 1k remote pod addresses (each its own identity) plus the CIDR
//! prefixes the compiler added, and the compiled `PolicyState` (none for N = 0: the engine
//! then skips policy). The engine runs one busy worker on core [`ENGINE_CORE`]. Per trial:
//!
//! - engine start (state parse and table build included) and its VmRSS once its ports
//!   are up and again after the measurements (/proc/<pid>/status);
//! - the enforcement check: a connect from pod 1 to pod 2:[`DENIED_PORT`] (a server
//!   listens there) must fail with rules and succeed without;
//! - first-packet latency: `--probes` sequential connects from pod 1 to pod 2:TARGET_PORT
//!   (the SYN is the packet that meets the policy lookup), p50/p99;
//! - new connections per second: `sluice-connrate client` for `--seconds` with
//!   `--parallel` loops.
//!
//! Rounds interleave sizes (round 1: 0, 1k, 10k; round 2: ...). Ratios are of medians over
//! rounds, each size over 0 rules, and also taken within each round (then the median over
//! rounds), which cancels load that drifts between rounds; the target is 10k rules at
//! least 0.95x the 0-rule rate.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::forward::{engine_window, median};
use super::labkit::{find_tool, require, wait_for_ports, within_netns};
use super::machine::{loadavg, loadavg_1min, ticks_per_second, CpuTimes, Machine};
use super::rules::TARGET_PORT;
use super::scenarios::{APP_CPU, CONNRATE_BIN, CONNRATE_ENV, ENGINE_CORE};
use super::services::{probe_connects, stat, wait_listening, Probe, Stat};
use crate::{EngineOptions, Lab, LabSpec};

pub mod workload;

use workload::{Cluster, CompileCost, CompiledRules, DENIED_PORT, MAX_IDENTITIES, MAX_RULES};

const FROM_POD: usize = 1;
const TO_POD: usize = 2;
/// Unmeasured connects before the probe (neighbour entries, first conntrack work).
const PROBE_WARMUP: usize = 20;
/// How long the enforcement check waits for a connection that policy should drop.
const DENIED_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The target: connections/s at 10k rules over 0 rules.
const TARGET_RATIO: f64 = 0.95;
const TARGET_RULES: usize = 10_000;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyBenchConfig {
    /// Rule counts; the first is the baseline of the ratios (0: no policy at all).
    pub sizes: Vec<usize>,
    /// Remote identities (one pod address each) the rules select from.
    pub identities: usize,
    pub trials: u32,
    /// Run time of the connection-rate client.
    pub seconds: u32,
    /// Concurrent loops of the connection-rate client.
    pub parallel: usize,
    /// Sequential connects of the first-packet latency probe.
    pub probes: usize,
    /// Compiles (and engine-side builds) per size; the median is reported.
    pub compile_runs: usize,
    /// Bound on the engine's start (state parse and table build included).
    pub engine_start_timeout_seconds: u64,
    pub engine: Option<PathBuf>,
    pub connrate: Option<PathBuf>,
    pub engine_args: Vec<String>,
}

impl Default for PolicyBenchConfig {
    fn default() -> PolicyBenchConfig {
        PolicyBenchConfig {
            sizes: vec![0, 1_000, TARGET_RULES],
            identities: 1_000,
            trials: 3,
            seconds: 5,
            parallel: 4,
            probes: 1_000,
            compile_runs: 5,
            engine_start_timeout_seconds: 120,
            engine: None,
            connrate: None,
            engine_args: Vec::new(),
        }
    }
}

impl PolicyBenchConfig {
    /// `--quick`: one round, 2 s of connections, 200 probes, 2 compiles.
    pub fn quick(mut self) -> PolicyBenchConfig {
        self.trials = 1;
        self.seconds = 2;
        self.probes = 200;
        self.compile_runs = 2;
        self
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.sizes.is_empty(), "--rules names no size");
        for &n in &self.sizes {
            ensure!(n <= MAX_RULES, "--rules: {n} rules; 0 to {MAX_RULES}");
        }
        let mut unique = self.sizes.clone();
        unique.sort_unstable();
        unique.dedup();
        ensure!(
            unique.len() == self.sizes.len(),
            "--rules names a size twice"
        );
        ensure!(
            (2..=MAX_IDENTITIES).contains(&self.identities),
            "--identities must be 2 to {MAX_IDENTITIES}"
        );
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
            (1..=100).contains(&self.compile_runs),
            "--compile-runs must be 1 to 100"
        );
        ensure!(
            (1..=3600).contains(&self.engine_start_timeout_seconds),
            "--engine-start-timeout must be 1 to 3600 s"
        );
        Ok(())
    }

    /// (round, rules) in run order: rounds outside, sizes inside.
    pub fn plan(&self) -> Vec<(u32, usize)> {
        (1..=self.trials)
            .flat_map(|round| self.sizes.iter().map(move |&n| (round, n)))
            .collect()
    }

    /// The longest the probe may take: every connect timing out up to the error cap (the
    /// services probe's bounds), plus the connects themselves at up to 20 ms each.
    fn probe_bound(&self) -> Duration {
        Duration::from_secs(150) + Duration::from_millis(20) * (self.probes + PROBE_WARMUP) as u32
    }

    /// What one trial usually takes (seconds), for the upfront estimate.
    fn trial_estimate(&self) -> f64 {
        6.0 + f64::from(self.seconds) + self.probes as f64 * 0.5e-3
    }
}

/// The engine over one trial.
#[derive(Debug, Clone, Serialize)]
pub struct EngineTrial {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Drops over the measurements (the enforcement check's drop is before them).
    pub drops: BTreeMap<String, u64>,
    /// From spawning the engine until its stats socket answered (it reads and builds the
    /// state first).
    pub start_seconds: f64,
    /// VmRSS once its ports were up, and after the measurements (KiB).
    pub rss_kib_started: Option<u64>,
    pub rss_kib_after: Option<u64>,
}

/// One trial: the engine with N rules.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub rules: usize,
    pub round: u32,
    pub lab: String,
    /// Size of the state file written for the engine (compact JSON).
    pub state_bytes: u64,
    /// Whether the connect to pod 2:DENIED_PORT was dropped (it must be, with rules).
    pub denied_port_blocked: bool,
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
    pub engine: EngineTrial,
    pub setup_seconds: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub rules: usize,
    pub round: u32,
    pub error: String,
}

fn ratio(a: Option<Stat>, b: Option<Stat>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// One size over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rules: usize,
    pub trials: usize,
    pub failed: usize,
    pub connect_p50_us: Option<Stat>,
    pub connect_p99_us: Option<Stat>,
    pub connections_per_second: Option<Stat>,
    pub cpu_per_m_connections: Option<f64>,
    /// Median connections/s over the first size's.
    pub rate_vs_baseline: Option<f64>,
    /// Connections/s over the first size's in the same round, over the rounds that
    /// measured both (cancels load that drifts between rounds).
    pub rate_vs_baseline_per_round: Option<Stat>,
    /// Median connect p50 over the first size's.
    pub p50_vs_baseline: Option<f64>,
    pub engine_start_seconds: Option<Stat>,
    pub rss_kib_started: Option<Stat>,
    pub rss_kib_after: Option<Stat>,
    /// Median VmRSS once started minus the first size's (KiB): the compiled tables and
    /// the larger ipcache, as the engine holds them.
    pub rss_kib_over_baseline: Option<f64>,
    pub engine_drops: BTreeMap<String, u64>,
}

/// Issue 6's target against the measured ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

pub fn summarize(
    config: &PolicyBenchConfig,
    trials: &[Trial],
    failed: &[FailedTrial],
) -> Vec<Summary> {
    let mut rows: Vec<Summary> = config
        .sizes
        .iter()
        .map(|&n| {
            let mine: Vec<&Trial> = trials.iter().filter(|t| t.rules == n).collect();
            let values = |f: &dyn Fn(&Trial) -> Option<f64>| -> Vec<f64> {
                mine.iter().filter_map(|t| f(t)).collect()
            };
            let cpu = values(&|t| t.cpu_per_m_connections);
            let mut engine_drops = BTreeMap::new();
            for t in &mine {
                for (name, n) in &t.engine.drops {
                    *engine_drops.entry(name.clone()).or_insert(0) += n;
                }
            }
            Summary {
                rules: n,
                trials: mine.len(),
                failed: failed.iter().filter(|f| f.rules == n).count(),
                connect_p50_us: stat(&values(&|t| Some(t.probe.p50_us))),
                connect_p99_us: stat(&values(&|t| Some(t.probe.p99_us))),
                connections_per_second: stat(&values(&|t| Some(t.connections_per_second))),
                cpu_per_m_connections: (!cpu.is_empty()).then(|| median(&cpu)),
                rate_vs_baseline: None,
                rate_vs_baseline_per_round: None,
                p50_vs_baseline: None,
                engine_start_seconds: stat(&values(&|t| Some(t.engine.start_seconds))),
                rss_kib_started: stat(&values(&|t| t.engine.rss_kib_started.map(|k| k as f64))),
                rss_kib_after: stat(&values(&|t| t.engine.rss_kib_after.map(|k| k as f64))),
                rss_kib_over_baseline: None,
                engine_drops,
            }
        })
        .collect();
    let (base_rate, base_p50, base_rss) = match rows.first() {
        Some(b) => (
            b.connections_per_second,
            b.connect_p50_us,
            b.rss_kib_started,
        ),
        None => return rows,
    };
    let baseline = config.sizes[0];
    let rate_in = |rules: usize, round: u32| {
        trials
            .iter()
            .find(|t| t.rules == rules && t.round == round)
            .map(|t| t.connections_per_second)
    };
    for row in &mut rows {
        let paired: Vec<f64> = (1..=config.trials)
            .filter_map(|round| Some(rate_in(row.rules, round)? / rate_in(baseline, round)?))
            .collect();
        row.rate_vs_baseline_per_round = stat(&paired);
        row.rate_vs_baseline = ratio(row.connections_per_second, base_rate);
        row.p50_vs_baseline = ratio(row.connect_p50_us, base_p50);
        row.rss_kib_over_baseline = match (row.rss_kib_started, base_rss) {
            (Some(a), Some(b)) => Some(a.median - b.median),
            _ => None,
        };
    }
    rows
}

fn row(rows: &[Summary], rules: usize) -> Option<&Summary> {
    rows.iter().find(|r| r.rules == rules)
}

/// Issue 6: at 10k rules at least 0.95x the connection rate with 0 rules, as the ratio of
/// the medians over rounds and as the median of the same-round ratios.
pub fn targets(rows: &[Summary]) -> Vec<Target> {
    let (zero, many) = (row(rows, 0), row(rows, TARGET_RULES));
    let of_medians = match (zero, many) {
        (Some(zero), Some(many)) => ratio(many.connections_per_second, zero.connections_per_second),
        _ => None,
    };
    let per_round = match (zero, many) {
        (Some(_), Some(many)) => many.rate_vs_baseline_per_round.map(|s| s.median),
        _ => None,
    };
    let target = |what: &str, measured: Option<f64>| Target {
        what: what.to_string(),
        measured,
        goal: format!(">= {TARGET_RATIO:.2}"),
        met: measured.map(|x| x >= TARGET_RATIO),
    };
    vec![
        target(
            "new connections/s, 10k rules / 0 rules (medians over rounds)",
            of_medians,
        ),
        target(
            "new connections/s, 10k rules / 0 rules (same round, median over rounds)",
            per_round,
        ),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: PolicyBenchConfig,
    pub machine: Machine,
    pub pinning: String,
    pub compile: Vec<CompileCost>,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<Summary>,
    pub targets: Vec<Target>,
}

// ---------------------------------------------------------------------------------------
// Trials

/// The VmRSS line of a /proc/<pid>/status text, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// What the engine started with.
struct Started {
    state_bytes: u64,
    start_seconds: f64,
    rss_kib: Option<u64>,
}

/// Writes the state file (the lab's node state, identities, ipcache, compiled policy),
/// starts the engine on it and waits for its two ports.
fn start_engine(
    config: &PolicyBenchConfig,
    cluster: &Cluster,
    compiled: &CompiledRules,
    lab: &Lab,
) -> Result<Started> {
    for index in [FROM_POD, TO_POD] {
        let name = workload::endpoint_name(index);
        ensure!(
            lab.pod(index)?.name == name,
            "lab pod {index} is {}, the rules were compiled for {name}",
            lab.pod(index)?.name
        );
    }
    let state = cluster.node_state(lab.node_state(), &compiled.compiled);
    let path = lab.state_path();
    let text = serde_json::to_vec(&state).context("serializing the node state")?;
    fs::File::create(path)
        .and_then(|mut file| file.write_all(&text).and_then(|()| file.write_all(b"\n")))
        .with_context(|| format!("writing {}", path.display()))?;
    let mut extra = vec![
        "--mode".to_string(),
        "busy".to_string(),
        "--cores".to_string(),
        ENGINE_CORE.to_string(),
    ];
    extra.extend(config.engine_args.iter().cloned());
    let started = Instant::now();
    let pid = lab.start_engine(&EngineOptions {
        binary: config.engine.clone(),
        workers: Some(1),
        extra_args: extra,
        start_timeout: Duration::from_secs(config.engine_start_timeout_seconds),
        ..EngineOptions::default()
    })?;
    let start_seconds = started.elapsed().as_secs_f64();
    wait_for_ports(lab, 2)?;
    Ok(Started {
        state_bytes: text.len() as u64 + 1,
        start_seconds,
        rss_kib: vm_rss_kib(pid),
    })
}

/// Runs `f` in pod 1's namespace on a thread pinned to [`APP_CPU`].
fn from_client<T: Send>(lab: &Lab, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns = lab.pod(FROM_POD)?.netns.clone();
    within_netns(&netns, move || {
        let mut cpus = nix::sched::CpuSet::new();
        cpus.set(APP_CPU).context("CPU set")?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)
            .with_context(|| format!("pinning the client thread to CPU {APP_CPU}"))?;
        f()
    })
}

/// Builds the lab, starts the engine with N rules, measures, tears down (also on failure).
fn run_trial(
    config: &PolicyBenchConfig,
    connrate: &str,
    cluster: &Cluster,
    compiled: &CompiledRules,
    round: u32,
) -> Result<Trial> {
    let started = Instant::now();
    let lab = Lab::new(LabSpec::engine(2).with_static_pods())?;
    let result = start_engine(config, cluster, compiled, &lab).and_then(|engine| {
        let setup_seconds = started.elapsed().as_secs_f64();
        measure(
            config,
            connrate,
            compiled.cost.rules,
            round,
            &lab,
            engine,
            setup_seconds,
        )
    });
    let teardown = lab.teardown();
    let trial = result?;
    teardown?;
    Ok(trial)
}

fn measure(
    config: &PolicyBenchConfig,
    connrate: &str,
    rules: usize,
    round: u32,
    lab: &Lab,
    engine: Started,
    setup_seconds: f64,
) -> Result<Trial> {
    let pod2 = lab.pod(TO_POD)?.ipv4;
    let target = SocketAddr::V4(SocketAddrV4::new(pod2, TARGET_PORT));
    let denied = SocketAddr::V4(SocketAddrV4::new(pod2, DENIED_PORT));
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
    let mut servers = Vec::new();
    for port in [TARGET_PORT, DENIED_PORT] {
        let log = format!("server-{rules}-r{round}-{port}");
        let listen = SocketAddrV4::new(pod2, port).to_string();
        #[rustfmt::skip]
        let pid = lab.spawn(TO_POD, &log, &[
            "taskset", "-c", &cpu, connrate, "server", "--listen", &listen, "--seconds", &life,
        ])?;
        wait_listening(lab, TO_POD, port, pid, &log)?;
        servers.push((pid, log));
    }
    let log = servers[0].1.clone();

    // Policy is really on (or off): the port no rule allows is reachable only without rules.
    let reached = from_client(lab, move || {
        Ok(TcpStream::connect_timeout(&denied, DENIED_CONNECT_TIMEOUT).is_ok())
    })?;
    ensure!(
        reached == (rules == 0),
        "with {rules} rules pod 1 {} pod 2:{DENIED_PORT}",
        if reached {
            "reached (policy is not enforced)"
        } else {
            "could not reach (something drops traffic without policy)"
        }
    );

    let engine_before = lab.engine_stats()?;
    let probes = config.probes;
    let probe = from_client(lab, move || probe_connects(target, PROBE_WARMUP, probes))
        .with_context(|| format!("first-packet probe to {target}"))?;

    let secs = config.seconds.to_string();
    let parallel = config.parallel.to_string();
    let connect = target.to_string();
    let client_timeout = Duration::from_secs(u64::from(config.seconds) + 20);
    let c0 = CpuTimes::read()?;
    #[rustfmt::skip]
    let out = lab.exec_timeout(FROM_POD, &[
        "taskset", "-c", &cpu, connrate, "client", "--connect", &connect, "--seconds", &secs,
        "--parallel", &parallel,
    ], client_timeout)?;
    let c1 = CpuTimes::read()?;
    let engine_after = lab.engine_stats()?;
    let rss_kib_after = lab.engine_pid().and_then(vm_rss_kib);
    for (pid, _) in &servers {
        if lab.process_running(*pid).unwrap_or(false) {
            let _ = lab.stop_process(*pid);
        }
    }
    ensure!(
        out.success(),
        "sluice-connrate client to {target} failed ({}): {}\n{}\n{}",
        out.status,
        out.stderr.trim(),
        out.stdout.trim(),
        lab.log_tail(&log, 10)
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("sluice-connrate output {:?}", out.stdout.trim()))?;
    let connections = v["connections"].as_u64().unwrap_or(0);
    let busy: f64 = c1.busy_since(&c0, ticks_per_second()).values().sum();
    let window = engine_window(&engine_before, &engine_after);
    Ok(Trial {
        rules,
        round,
        lab: lab.prefix().to_string(),
        state_bytes: engine.state_bytes,
        denied_port_blocked: !reached,
        probe,
        connections_per_second: v["connections_per_second"].as_f64().unwrap_or(0.0),
        connections,
        crr_errors: v["errors"].as_u64().unwrap_or(0),
        crr_conn_us_p50: v["conn_us_p50"].as_f64(),
        crr_conn_us_p99: v["conn_us_p99"].as_f64(),
        crr_seconds: v["seconds"].as_f64().unwrap_or(0.0),
        cpu_per_m_connections: (connections > 0).then(|| busy / (connections as f64 / 1e6)),
        engine: EngineTrial {
            rx_packets: window.rx_packets,
            tx_packets: window.tx_packets,
            drops: window.drops,
            start_seconds: engine.start_seconds,
            rss_kib_started: engine.rss_kib,
            rss_kib_after,
        },
        setup_seconds,
        loadavg: loadavg(),
    })
}

fn describe_trial(t: &Trial) -> String {
    let mut line = format!(
        "connect p50 {:.1} µs p99 {:.1} µs ({} probes, {} errors); {:.0} conn/s ({} errors); \
         state {:.2} MB, engine up in {:.2} s, RSS {} MiB",
        t.probe.p50_us,
        t.probe.p99_us,
        t.probe.connects,
        t.probe.errors,
        t.connections_per_second,
        t.crr_errors,
        t.state_bytes as f64 / 1e6,
        t.engine.start_seconds,
        t.engine.rss_kib_started.map_or_else(
            || "n/a".to_string(),
            |k| format!("{:.1}", k as f64 / 1024.0)
        ),
    );
    if !t.engine.drops.is_empty() {
        line.push_str(&format!("; drops {:?}", t.engine.drops));
    }
    line
}

fn describe_compile(c: &CompileCost) -> String {
    format!(
        "compile {} ms (median of {}), parse {:.0} ms; {} tables, {} entries, {} CIDR \
         prefixes; policy JSON {:.1} KB; PolicyTables::build {:.2} ms, IpCache::build \
         ({} entries) {:.2} ms",
        c.compile_seconds
            .map_or_else(|| "n/a".to_string(), |s| format!("{:.1}", s.median * 1e3)),
        c.runs,
        c.parse_seconds * 1e3,
        c.tables,
        c.entries,
        c.ipcache_added,
        c.state_json_bytes as f64 / 1e3,
        c.policy_build_seconds * 1e3,
        c.ipcache_entries,
        c.ipcache_build_seconds * 1e3,
    )
}

pub fn run(config: &PolicyBenchConfig, command: String) -> Result<Report> {
    config.validate()?;
    let connrate = match &config.connrate {
        Some(p) => p.clone(),
        None => find_tool(CONNRATE_BIN, CONNRATE_ENV)?,
    };
    let connrate = connrate.display().to_string();
    require("ss", "iproute2")?;
    if config.engine.is_none() {
        crate::find_engine()?;
    }
    let plan = config.plan();
    let estimate = plan.len() as f64 * config.trial_estimate();
    let mut machine = Machine::probe();
    println!(
        "bench policy: rules {:?} over {} identities; {} compile run(s) per size, then {} \
         trial(s) ({} round(s)), {} probes and {} s of connections each; trials about {:.0} s",
        config.sizes,
        config.identities,
        config.compile_runs,
        plan.len(),
        config.trials,
        config.probes,
        config.seconds,
        estimate
    );
    println!(
        "machine: {} ({} CPUs), kernel {}, load {}",
        machine.cpu_model, machine.cpus, machine.kernel, machine.loadavg_start
    );
    if loadavg_1min(&machine.loadavg_start).is_some_and(|l| l > 0.5) {
        println!("warning: the machine is not idle (1-min load average above 0.5)");
    }
    let cluster = Cluster::new(config.identities);
    let mut compiled = Vec::with_capacity(config.sizes.len());
    for &n in &config.sizes {
        print!("  compile {n:>6} rules ");
        let _ = std::io::stdout().flush();
        let result = workload::compile_rules(&cluster, n, config.compile_runs)
            .with_context(|| format!("compiling {n} rules"))?;
        println!("{}", describe_compile(&result.cost));
        compiled.push(result);
    }
    let mut trials = Vec::new();
    let mut failed = Vec::new();
    for (round, n) in plan {
        print!("  round {round} {n:>6} rules ");
        let _ = std::io::stdout().flush();
        let Some(rules) = compiled.iter().find(|c| c.cost.rules == n) else {
            continue;
        };
        match run_trial(config, &connrate, &cluster, rules, round) {
            Ok(trial) => {
                println!("{}", describe_trial(&trial));
                trials.push(trial);
            }
            Err(err) => {
                println!("FAILED: {err:#}");
                failed.push(FailedTrial {
                    rules: n,
                    round,
                    error: format!("{err:#}"),
                });
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(config, &trials, &failed);
    let targets = targets(&summary);
    Ok(Report {
        benchmark: "policy",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        pinning: format!(
            "probe thread, sluice-connrate client and servers on CPU {APP_CPU}; one busy \
             engine worker on core {ENGINE_CORE}; kernel softirq work runs where it is raised"
        ),
        compile: compiled.into_iter().map(|c| c.cost).collect(),
        trials,
        failed,
        summary,
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

fn spread(s: Option<Stat>, digits: usize, scale: f64) -> String {
    s.map_or_else(
        || "n/a".to_string(),
        |s| {
            format!(
                "{} ({}–{})",
                num(s.median * scale, digits),
                num(s.min * scale, digits),
                num(s.max * scale, digits)
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

/// The connection table and the compile/memory table.
pub fn markdown_tables(
    config: &PolicyBenchConfig,
    rows: &[Summary],
    compile: &[CompileCost],
) -> String {
    let base = size_label(config.sizes[0]);
    let mut text = format!(
        "New TCP connections per second (sluice-connrate, {} loops, {} s) and first-packet \
         latency (connect(), {} probes), median over rounds (min–max)\n\n\
         | rules | conn/s | conn/s / {base} rules | same round / {base} rules | connect p50 µs | \
         p50 / {base} rules | connect p99 µs | CPU s per M conns |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        config.parallel, config.seconds, config.probes
    );
    for &n in &config.sizes {
        let Some(r) = row(rows, n) else { continue };
        if r.trials == 0 {
            text.push_str(&format!("| {} | failed | | | | | | |\n", size_label(n)));
            continue;
        }
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            size_label(n),
            spread(r.connections_per_second, 0, 1.0),
            times(r.rate_vs_baseline),
            spread(r.rate_vs_baseline_per_round, 2, 1.0),
            spread(r.connect_p50_us, 1, 1.0),
            times(r.p50_vs_baseline),
            spread(r.connect_p99_us, 1, 1.0),
            r.cpu_per_m_connections
                .map_or_else(|| "n/a".to_string(), |x| num(x, 1)),
        ));
    }
    text.push_str(&format!(
        "\nCompile and memory ({} identities; compile and builds: median of {} runs in \
         sluice-lab; engine: median over rounds)\n\n\
         | rules | compile ms | tables / entries | CIDR prefixes | policy JSON KB | \
         PolicyTables::build ms | IpCache::build ms | engine start s | engine RSS MiB | \
         RSS − {base} rules MiB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        config.identities, config.compile_runs
    ));
    for &n in &config.sizes {
        let Some(c) = compile.iter().find(|c| c.rules == n) else {
            continue;
        };
        let r = row(rows, n);
        text.push_str(&format!(
            "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |\n",
            size_label(n),
            spread(c.compile_seconds, 2, 1e3),
            c.tables,
            c.entries,
            c.ipcache_added,
            num(c.state_json_bytes as f64 / 1e3, 1),
            num(c.policy_build_seconds * 1e3, 2),
            num(c.ipcache_build_seconds * 1e3, 2),
            r.and_then(|r| r.engine_start_seconds)
                .map_or_else(|| "n/a".to_string(), |s| num(s.median, 2)),
            r.and_then(|r| r.rss_kib_started)
                .map_or_else(|| "n/a".to_string(), |s| num(s.median / 1024.0, 1)),
            r.and_then(|r| r.rss_kib_over_baseline)
                .map_or_else(|| "n/a".to_string(), |k| num(k / 1024.0, 1)),
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
        markdown_tables(&report.config, &report.summary, &report.compile)
    );
    if let Some(r) = row(&report.summary, 1_000) {
        println!(
            "\nconnections/s, 1k rules / 0 rules: {} (same round: {})",
            times(r.rate_vs_baseline),
            spread(r.rate_vs_baseline_per_round, 2, 1.0)
        );
    }
    println!("\nTargets (issue 6):\n");
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
    for r in report.summary.iter().filter(|r| !r.engine_drops.is_empty()) {
        println!(
            "engine drops over the measurements, {} rules: {:?}",
            size_label(r.rules),
            r.engine_drops
        );
    }
    for f in &report.failed {
        println!("round {} {} rules: FAILED {}", f.round, f.rules, f.error);
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
    use super::*;

    #[test]
    fn plan_interleaves_rounds_and_sizes() {
        let config = PolicyBenchConfig {
            trials: 2,
            ..PolicyBenchConfig::default()
        };
        assert_eq!(
            config.plan(),
            vec![
                (1, 0),
                (1, 1_000),
                (1, 10_000),
                (2, 0),
                (2, 1_000),
                (2, 10_000)
            ]
        );
        assert!(config.validate().is_ok());
        assert!(PolicyBenchConfig::default().quick().validate().is_ok());
        for bad in [vec![], vec![0, 0], vec![MAX_RULES + 1]] {
            let c = PolicyBenchConfig {
                sizes: bad.clone(),
                ..PolicyBenchConfig::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let few = PolicyBenchConfig {
            identities: 1,
            ..PolicyBenchConfig::default()
        };
        assert!(few.validate().is_err());
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tsluice-engine\nVmPeak:\t  900 kB\nVmRSS:\t   123456 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(123_456));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        // This process has one.
        assert!(vm_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    fn trial(rules: usize, round: u32, rate: f64, p50: f64, rss: u64) -> Trial {
        Trial {
            rules,
            round,
            lab: String::new(),
            state_bytes: 0,
            denied_port_blocked: rules > 0,
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
            connections: 1_000,
            crr_errors: 0,
            crr_conn_us_p50: None,
            crr_conn_us_p99: None,
            crr_seconds: 1.0,
            cpu_per_m_connections: Some(100.0),
            engine: EngineTrial {
                rx_packets: 0,
                tx_packets: 0,
                drops: BTreeMap::new(),
                start_seconds: 0.5,
                rss_kib_started: Some(rss),
                rss_kib_after: Some(rss + 10),
            },
            setup_seconds: 1.0,
            loadavg: String::new(),
        }
    }

    fn cost(rules: usize) -> CompileCost {
        CompileCost {
            rules,
            identities: 1_000,
            parse_seconds: 0.1,
            compile_seconds: stat(&[0.010, 0.012, 0.011]),
            runs: 3,
            state_json_bytes: 2_500,
            tables: 4,
            entries: rules,
            listed_endpoints: 2,
            rule_origins: rules,
            ipcache_added: 7,
            local_identities: 7,
            policy_build_seconds: 0.002,
            ipcache_build_seconds: 0.001,
            ipcache_entries: 1_011,
        }
    }

    #[test]
    fn ratios_tables_and_targets() {
        let config = PolicyBenchConfig::default();
        let trials = [
            trial(0, 1, 10_000.0, 100.0, 40_960),
            trial(0, 2, 12_000.0, 120.0, 40_960),
            trial(1_000, 1, 10_450.0, 110.0, 41_984),
            trial(10_000, 1, 9_500.0, 121.0, 51_200),
        ];
        let failed = [FailedTrial {
            rules: 10_000,
            round: 2,
            error: "x".into(),
        }];
        let rows = summarize(&config, &trials, &failed);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].connections_per_second.unwrap().median, 11_000.0);
        assert_eq!(rows[0].rate_vs_baseline, Some(1.0));
        assert_eq!(rows[1].rate_vs_baseline, Some(0.95));
        assert_eq!(rows[2].p50_vs_baseline, Some(1.1));
        assert_eq!(rows[2].failed, 1);
        assert_eq!(rows[2].rss_kib_over_baseline, Some(10_240.0));
        // Same-round ratios: round 1 has every size, round 2 only the baseline.
        let paired = rows[2].rate_vs_baseline_per_round.unwrap();
        assert_eq!((paired.median, paired.min), (0.95, 0.95));
        assert_eq!(rows[1].rate_vs_baseline_per_round.unwrap().median, 1.045);
        let t = targets(&rows);
        assert_eq!(t[0].measured, Some(9_500.0 / 11_000.0));
        assert_eq!(t[0].met, Some(false));
        assert_eq!(t[1].measured, Some(0.95));
        assert_eq!(t[1].met, Some(true));
        let compile = [cost(0), cost(1_000), cost(10_000)];
        let text = markdown_tables(&config, &rows, &compile);
        assert!(
            text.contains(
                "| 0 | 11000 (10000–12000) | 1.00× | 1.00 (1.00–1.00) | 110.0 (100.0–120.0) | 1.00× |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 1k | 10450 (10450–10450) | 0.95× |"),
            "{text}"
        );
        assert!(
            text.contains("| 10k | 11.00 (10.00–12.00) | 4 / 10000 | 7 | 2.5 | 2.00 | 1.00 | 0.50 | 50.0 | 10.0 |"),
            "{text}"
        );
        // At the goal the target reads as met; without a 10k row as not measured.
        let good = [
            trial(0, 1, 10_000.0, 100.0, 1),
            trial(10_000, 1, 9_500.0, 100.0, 1),
        ];
        let t = targets(&summarize(&config, &good, &[]));
        assert_eq!((t[0].met, t[1].met), (Some(true), Some(true)));
        let small = PolicyBenchConfig {
            sizes: vec![0, 1_000],
            ..PolicyBenchConfig::default()
        };
        let t = targets(&summarize(&small, &good, &[]));
        assert_eq!((t[0].met, t[1].met), (None, None));
        // A size whose every trial failed says so.
        let rows = summarize(&config, &trials[..3], &failed);
        assert!(markdown_tables(&config, &rows, &compile).contains("| 10k | failed |"));
    }
}

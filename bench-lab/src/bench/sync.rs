//! `sluice-lab bench sync`: how fast the control plane gets N pods and their identities from
//! manifests into the engine's tables, and how fast one manifest edit reaches an engine ack.
//!
//! Per trial (sizes interleaved: 100, 1000, 100, 1000, ...):
//!
//! - A fresh lab node namespace with only sluice-engine running (`--api-socket`, no
//!   `--state`: it starts empty and waits for an agent); one static pod veth, unused.
//! - A manifest directory with N pods spread over `namespaces` namespaces (one file per
//!   namespace: the Namespace object and its pods), every pod with a distinct `app` label
//!   (N label sets, so N identities) and one `status.podIPs` address in 10.210.0.0/16 (N
//!   ipcache entries). No pod is local: the engine gets N ipcache entries, no endpoints.
//! - Full sync: a fresh sluice-agent (fresh state directory) is spawned on that directory and
//!   the running engine; the clock runs from the spawn to the first agent status (the agent
//!   socket is polled every `poll_ms`) that is in sync with `ipcache_entries >= N` and
//!   `identities >= N`. The engine's own stats are then checked (`ipcache_entries >= N`).
//!   The agent's RSS (VmRSS) and CPU time are read from /proc right after.
//! - Edits: `edits` times, one pod's `app` label is changed (a new label set: a new
//!   identity, the old one released) by rewriting its namespace file atomically (a hidden
//!   temp file renamed over it); the clock runs from the rename to the first status whose
//!   `acked_generation` is above the one before and that is in sync. The manifest source
//!   waits 100 ms (`SETTLE` in control/agent/src/source/manifests.rs) for more events
//!   before it re-reads the directory: that is the floor of this number.
//!
//! Ratios are N=1000 over N=100 from the same run (the largest size over the smallest).

use std::fmt::Write as _;
use std::io::BufReader;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use sluice_api::agent::{AgentRequest, AgentResponse, AgentStatus, Request};
use sluice_api::{read_message, write_message};

use super::forward::median;
use super::machine::{loadavg, loadavg_1min, process_ticks, ticks_per_second, Machine};
use crate::binaries::{find_binary, AGENT};
use crate::lab::Tracked;
use crate::{EngineOptions, Lab, LabSpec, POD_CIDRS};

/// Log name of the benchmark's agent in the lab's run directory.
const AGENT_LOG: &str = "sync-agent";
/// Most pods a trial may have (10.210.0.0/16 holds the addresses).
pub const MAX_PODS: usize = 60_000;
/// Bound on the full sync and on one edit.
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);
const EDIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct SyncConfig {
    /// Pod counts, each run once per round.
    pub sizes: Vec<usize>,
    pub trials: u32,
    /// Label edits per trial after the full sync.
    pub edits: usize,
    pub namespaces: usize,
    /// Agent status polling period.
    pub poll_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            sizes: vec![100, 1000],
            trials: 3,
            edits: 20,
            namespaces: 10,
            poll_ms: 5,
        }
    }
}

impl SyncConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.sizes.is_empty(), "no sizes given");
        for &n in &self.sizes {
            ensure!(
                (1..=MAX_PODS).contains(&n),
                "a size is 1 to {MAX_PODS} pods, not {n}"
            );
        }
        ensure!(self.trials >= 1, "at least one trial");
        ensure!(
            (1..=1000).contains(&self.namespaces),
            "1 to 1000 namespaces"
        );
        ensure!(self.edits <= 1000, "at most 1000 edits per trial");
        ensure!(
            (1..=1000).contains(&self.poll_ms),
            "poll every 1 to 1000 ms"
        );
        Ok(())
    }
}

/// One trial of one size.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub pods: usize,
    /// 1-based round.
    pub round: u32,
    pub lab: String,
    /// Spawn -> first status answered (the agent's socket is up).
    pub first_answer_ms: f64,
    /// Spawn -> first status whose desired state has all N ipcache entries.
    pub computed_ms: f64,
    /// Spawn -> in sync with all N ipcache entries and identities: the full sync.
    pub full_sync_ms: f64,
    /// Statuses asked during the full sync.
    pub polls: u64,
    pub identities: usize,
    pub ipcache_entries: usize,
    pub engine_ipcache_entries: u64,
    pub generation_at_sync: u64,
    /// VmRSS of the agent right after the full sync, KiB.
    pub agent_rss_kib: u64,
    /// VmHWM (peak RSS) of the agent right after the full sync, KiB.
    pub agent_peak_rss_kib: u64,
    /// utime + stime of the agent at the full sync (includes start-up), seconds.
    pub agent_cpu_seconds_at_sync: f64,
    /// One per edit: rename -> acked and in sync.
    pub edit_ack_ms: Vec<f64>,
    /// Agent CPU over all edits, seconds.
    pub agent_cpu_seconds_edits: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub pods: usize,
    pub round: u32,
    pub error: String,
}

/// One size over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pods: usize,
    pub trials: usize,
    pub failed: usize,
    pub full_sync_ms_median: f64,
    pub full_sync_ms_min: f64,
    pub full_sync_ms_max: f64,
    /// Over every edit of every trial.
    pub edits: usize,
    pub edit_ack_ms_median: f64,
    pub edit_ack_ms_p95: f64,
    pub edit_ack_ms_max: f64,
    pub agent_rss_mib_median: f64,
    pub agent_cpu_seconds_at_sync_median: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: SyncConfig,
    pub machine: Machine,
    /// The sluice-agent measured (`$SLUICE_AGENT` or beside this binary).
    pub agent_binary: String,
    pub method: &'static str,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<Summary>,
    /// Largest size over smallest: (full sync, edit->ack median, edit->ack p95, RSS).
    pub ratios: Option<Ratios>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub large: usize,
    pub small: usize,
    pub full_sync: f64,
    pub edit_ack_median: f64,
    pub edit_ack_p95: f64,
    pub agent_rss: f64,
}

const METHOD: &str = "fresh lab node netns per trial, engine alone (--api-socket, empty); a fresh \
     sluice-agent (fresh --state-dir) on a manifest dir of N pods in M namespaces, distinct app \
     labels, one podIP each; full sync = agent spawn (nsenter) -> first Status with in_sync, \
     ipcache_entries >= N and identities >= N, polled over the agent socket; edit = rename of a \
     rewritten namespace file with one pod's app label changed -> first Status with \
     acked_generation above the previous one and in_sync (includes the manifest source's 100 ms \
     settle delay)";

/// Nearest-rank percentile (`p` in 0..=100) of the finite values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Pod `i`'s (0-based) namespace, name and address.
fn pod_namespace(i: usize, namespaces: usize) -> usize {
    i % namespaces
}

fn pod_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 210, 0, 0)) + n)
}

/// The manifest file of namespace `ns`: the Namespace and its pods, with pod `i` labelled
/// `app: <labels[i]>`.
pub fn namespace_file(ns: usize, pods: usize, namespaces: usize, labels: &[String]) -> String {
    let mut text = format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{ns}\n  \
         labels: {{team: team{ns}}}\n"
    );
    for i in (0..pods).filter(|&i| pod_namespace(i, namespaces) == ns) {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod{i}\n  namespace: ns{ns}\n  \
             labels: {{app: {}, bench: sync}}\nspec:\n  nodeName: elsewhere\n  \
             containers: [{{name: main, image: busybox}}]\nstatus:\n  phase: Running\n  \
             podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n",
            labels[i],
            ip = pod_ip(i)
        );
    }
    text
}

/// Replaces `dir/name` atomically: a hidden temp file (which the agent skips) renamed over it.
fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("renaming {} into place", tmp.display()))
}

/// One Status over the agent's socket; `None` while the socket does not answer yet.
fn ask_status(socket: &Path) -> Result<Option<AgentStatus>> {
    let Ok(stream) = UnixStream::connect(socket) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    write_message(&mut writer, &Request::new(AgentRequest::Status))?;
    let mut reader = BufReader::new(stream);
    match read_message(&mut reader)? {
        Some(AgentResponse::Status { status }) => Ok(Some(status)),
        Some(other) => bail!("unexpected answer to Status: {other:?}"),
        None => bail!("the agent closed the connection without answering"),
    }
}

/// `VmRSS` and `VmHWM` of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Spawns sluice-agent in the lab's node namespace as the lab's agent (stopped with the lab)
/// and returns its PID and the instant just before the spawn.
fn spawn_agent(lab: &Lab, manifests: &Path, state: &Path, socket: &Path) -> Result<(u32, Instant)> {
    let binary = find_binary(AGENT)?.display().to_string();
    let manifests = manifests.display().to_string();
    let state = state.display().to_string();
    let socket = socket.display().to_string();
    let engine = lab.api_socket().display().to_string();
    let node = format!("{}-node", lab.prefix());
    #[rustfmt::skip]
    let args = [
        binary.as_str(), "--manifests", &manifests, "--node-name", &node, "--state-dir", &state,
        "--socket", &socket, "--engine-socket", &engine,
        "--pod-cidr", POD_CIDRS[0], "--pod-cidr", POD_CIDRS[1],
    ];
    let mut inner = lab.shared.lock()?;
    ensure!(inner.agent.is_none(), "the lab's agent is already running");
    let started = Instant::now();
    let child = lab.spawn_logged(lab.node_netns(), AGENT_LOG, &args)?;
    let pid = child.id();
    inner.agent = Some(Tracked {
        what: format!("bench agent (pid {pid})"),
        child,
    });
    Ok((pid, started))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Whether the agent still runs; an error with its log if it exited.
fn agent_alive(lab: &Lab) -> Result<()> {
    let mut inner = lab.shared.lock()?;
    let agent = inner
        .agent
        .as_mut()
        .ok_or_else(|| anyhow!("the agent is gone"))?;
    if let Some(status) = agent.child.try_wait()? {
        drop(inner);
        bail!(
            "the agent exited ({status})\n{}",
            lab.log_tail(AGENT_LOG, 20)
        );
    }
    Ok(())
}

fn run_trial(config: &SyncConfig, pods: usize, round: u32) -> Result<Trial> {
    let lab = Lab::new(LabSpec::engine(1).with_static_pods())?;
    lab.start_engine(&EngineOptions {
        state_file: false,
        api_socket: true,
        ..EngineOptions::default()
    })?;
    let dir = lab.run_dir().join("sync-manifests");
    let state = lab.run_dir().join("sync-agent-state");
    let socket = lab.run_dir().join("sync-agent.sock");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut labels: Vec<String> = (0..pods).map(|i| format!("app{i}")).collect();
    for ns in 0..config.namespaces {
        let text = namespace_file(ns, pods, config.namespaces, &labels);
        write_atomically(&dir, &format!("ns{ns}.yaml"), &text)?;
    }
    let poll = Duration::from_millis(config.poll_ms);
    let ticks = ticks_per_second();

    // Full sync.
    let (pid, started) = spawn_agent(&lab, &dir, &state, &socket)?;
    let mut first_answer_ms = None;
    let mut computed_ms = None;
    let mut polls = 0u64;
    let (full_sync_ms, status) = loop {
        if let Some(status) = ask_status(&socket)? {
            polls += 1;
            let now = ms(started);
            first_answer_ms.get_or_insert(now);
            if status.ipcache_entries >= pods {
                computed_ms.get_or_insert(now);
            }
            if status.in_sync() && status.ipcache_entries >= pods && status.identities >= pods {
                break (now, status);
            }
        }
        if started.elapsed() > SYNC_TIMEOUT {
            bail!(
                "no full sync of {pods} pods within {SYNC_TIMEOUT:?}: {:?}\n{}",
                ask_status(&socket).ok().flatten(),
                lab.log_tail(AGENT_LOG, 20)
            );
        }
        agent_alive(&lab)?;
        std::thread::sleep(poll);
    };
    let (agent_rss_kib, agent_peak_rss_kib) = rss_kib(pid)?;
    let cpu_at_sync = process_ticks(pid).unwrap_or(0);
    // nsenter execs the agent in place: the spawned PID is the agent's (comm is
    // the binary's name, cut to 15 bytes).
    let binary = find_binary(AGENT)?;
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    ensure!(
        name.as_bytes().starts_with(comm.trim().as_bytes()) && !comm.trim().is_empty(),
        "pid {pid} is {:?}, not the agent {name:?} (its RSS would be wrong)",
        comm.trim()
    );
    let engine = lab.engine_stats()?;
    let engine_ipcache_entries = engine["ipcache_entries"].as_u64().unwrap_or(0);
    ensure!(
        engine_ipcache_entries >= pods as u64,
        "the agent is in sync but the engine has {engine_ipcache_entries} ipcache entries, \
         not {pods}"
    );

    // Edits: one pod's label each, spread over the pods and namespaces.
    let mut edit_ack_ms = Vec::with_capacity(config.edits);
    let mut acked = status.acked_generation;
    for k in 0..config.edits {
        let i = (k * 7919 + 13) % pods;
        labels[i] = format!("app{i}-edit{k}");
        let ns = pod_namespace(i, config.namespaces);
        let text = namespace_file(ns, pods, config.namespaces, &labels);
        let edited = Instant::now();
        write_atomically(&dir, &format!("ns{ns}.yaml"), &text)?;
        loop {
            if let Some(s) = ask_status(&socket)? {
                if s.in_sync() && s.acked_generation > acked {
                    edit_ack_ms.push(ms(edited));
                    acked = s.acked_generation;
                    break;
                }
            }
            if edited.elapsed() > EDIT_TIMEOUT {
                bail!(
                    "edit {k} (pod{i}) not acked within {EDIT_TIMEOUT:?}\n{}",
                    lab.log_tail(AGENT_LOG, 20)
                );
            }
            agent_alive(&lab)?;
            std::thread::sleep(poll);
        }
    }
    let cpu_after_edits = process_ticks(pid).unwrap_or(0);
    let final_status =
        ask_status(&socket)?.ok_or_else(|| anyhow!("the agent stopped answering"))?;
    ensure!(
        final_status.identities == pods && final_status.ipcache_entries == pods,
        "after the edits the agent has {} identities and {} ipcache entries, not {pods}",
        final_status.identities,
        final_status.ipcache_entries
    );
    lab.stop_agent()?;
    let trial = Trial {
        pods,
        round,
        lab: lab.prefix().to_string(),
        first_answer_ms: first_answer_ms.unwrap_or(f64::NAN),
        computed_ms: computed_ms.unwrap_or(f64::NAN),
        full_sync_ms,
        polls,
        identities: status.identities,
        ipcache_entries: status.ipcache_entries,
        engine_ipcache_entries,
        generation_at_sync: status.acked_generation,
        agent_rss_kib,
        agent_peak_rss_kib,
        agent_cpu_seconds_at_sync: cpu_at_sync as f64 / ticks,
        edit_ack_ms,
        agent_cpu_seconds_edits: cpu_after_edits.saturating_sub(cpu_at_sync) as f64 / ticks,
        loadavg: loadavg(),
    };
    lab.teardown()?;
    Ok(trial)
}

fn describe_trial(t: &Trial) -> String {
    format!(
        "full sync {:.0} ms (socket {:.0} ms, computed {:.0} ms), edit->ack median {:.0} ms \
         p95 {:.0} ms, agent RSS {:.1} MiB, agent CPU {:.2} s",
        t.full_sync_ms,
        t.first_answer_ms,
        t.computed_ms,
        median(&t.edit_ack_ms),
        percentile(&t.edit_ack_ms, 95.0),
        t.agent_rss_kib as f64 / 1024.0,
        t.agent_cpu_seconds_at_sync
    )
}

pub fn summarize(sizes: &[usize], trials: &[Trial], failed: &[FailedTrial]) -> Vec<Summary> {
    sizes
        .iter()
        .map(|&pods| {
            let mine: Vec<&Trial> = trials.iter().filter(|t| t.pods == pods).collect();
            let syncs: Vec<f64> = mine.iter().map(|t| t.full_sync_ms).collect();
            let edits: Vec<f64> = mine
                .iter()
                .flat_map(|t| t.edit_ack_ms.iter().copied())
                .collect();
            let rss: Vec<f64> = mine
                .iter()
                .map(|t| t.agent_rss_kib as f64 / 1024.0)
                .collect();
            let cpu: Vec<f64> = mine.iter().map(|t| t.agent_cpu_seconds_at_sync).collect();
            let min = syncs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = syncs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Summary {
                pods,
                trials: mine.len(),
                failed: failed.iter().filter(|f| f.pods == pods).count(),
                full_sync_ms_median: median(&syncs),
                full_sync_ms_min: min,
                full_sync_ms_max: max,
                edits: edits.len(),
                edit_ack_ms_median: median(&edits),
                edit_ack_ms_p95: percentile(&edits, 95.0),
                edit_ack_ms_max: edits.iter().copied().fold(f64::NAN, f64::max),
                agent_rss_mib_median: median(&rss),
                agent_cpu_seconds_at_sync_median: median(&cpu),
            }
        })
        .collect()
}

fn ratios(summary: &[Summary]) -> Option<Ratios> {
    let small = summary
        .iter()
        .filter(|s| s.trials > 0)
        .min_by_key(|s| s.pods)?;
    let large = summary
        .iter()
        .filter(|s| s.trials > 0)
        .max_by_key(|s| s.pods)?;
    if small.pods == large.pods {
        return None;
    }
    Some(Ratios {
        large: large.pods,
        small: small.pods,
        full_sync: large.full_sync_ms_median / small.full_sync_ms_median,
        edit_ack_median: large.edit_ack_ms_median / small.edit_ack_ms_median,
        edit_ack_p95: large.edit_ack_ms_p95 / small.edit_ack_ms_p95,
        agent_rss: large.agent_rss_mib_median / small.agent_rss_mib_median,
    })
}

pub fn run(config: &SyncConfig, command: String) -> Result<Report> {
    config.validate()?;
    let agent_binary = find_binary(AGENT)?.display().to_string();
    crate::find_engine()?;
    let mut machine = Machine::probe();
    println!(
        "bench sync: sizes {:?} pods in {} namespaces, {} round(s), {} edit(s) per trial, \
         status polled every {} ms",
        config.sizes, config.namespaces, config.trials, config.edits, config.poll_ms
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
        for &pods in &config.sizes {
            print!("  round {round} N={pods:<6} ");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            match run_trial(config, pods, round) {
                Ok(trial) => {
                    println!("{}", describe_trial(&trial));
                    trials.push(trial);
                }
                Err(err) => {
                    println!("FAILED: {err:#}");
                    failed.push(FailedTrial {
                        pods,
                        round,
                        error: format!("{err:#}"),
                    });
                }
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(&config.sizes, &trials, &failed);
    let ratios = ratios(&summary);
    Ok(Report {
        benchmark: "sync",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        agent_binary,
        method: METHOD,
        trials,
        failed,
        summary,
        ratios,
    })
}

/// The table for docs/benchmarks.md.
pub fn markdown_table(summary: &[Summary], ratios: Option<&Ratios>) -> String {
    let mut out = String::from(
        "| pods (identities, ipcache entries) | full sync ms, median (min–max) | edit->ack ms, \
         median | edit->ack ms, p95 (max) | agent RSS MiB after sync | agent CPU s to sync | \
         trials (edits) |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for s in summary {
        let _ = writeln!(
            out,
            "| {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} ({:.0}) | {:.1} | {:.2} | {} ({}) |",
            s.pods,
            s.full_sync_ms_median,
            s.full_sync_ms_min,
            s.full_sync_ms_max,
            s.edit_ack_ms_median,
            s.edit_ack_ms_p95,
            s.edit_ack_ms_max,
            s.agent_rss_mib_median,
            s.agent_cpu_seconds_at_sync_median,
            s.trials,
            s.edits
        );
    }
    if let Some(r) = ratios {
        let _ = writeln!(
            out,
            "| ratio {}/{} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | | |",
            r.large, r.small, r.full_sync, r.edit_ack_median, r.edit_ack_p95, r.agent_rss
        );
    }
    out
}

pub fn print_report(report: &Report) {
    println!(
        "\n{} round(s), {} edit(s) per trial; load average {} at start, {} at end\n",
        report.config.trials,
        report.config.edits,
        report.machine.loadavg_start,
        report.machine.loadavg_end.as_deref().unwrap_or("?")
    );
    print!(
        "{}",
        markdown_table(&report.summary, report.ratios.as_ref())
    );
    println!(
        "\nmachine: {}, {} CPUs, kernel {}\nagent: {}\nmethod: {}\ncommand: {}",
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.kernel,
        report.agent_binary,
        report.method,
        report.command
    );
}

// ---------------------------------------------------------------------------
// Services mode: N Services (one port each) with an EndpointSlice of two
// backends each; full sync to the engine's ack, then EndpointSlice edits.
// ---------------------------------------------------------------------------

/// Most services a trial may have (cluster IPs in 10.96.0.0/12, backends in 10.210.0.0/16).
pub const MAX_SERVICES: usize = 30_000;
/// Services per manifest file, so an edit rewrites a small file.
const SERVICES_PER_FILE: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct ServicesSyncConfig {
    /// Service counts, each run once per round (the smallest is the baseline).
    pub sizes: Vec<usize>,
    pub trials: u32,
    /// EndpointSlice edits per trial after the full sync.
    pub edits: usize,
    pub poll_ms: u64,
}

impl Default for ServicesSyncConfig {
    fn default() -> ServicesSyncConfig {
        ServicesSyncConfig {
            sizes: vec![100, 10_000],
            trials: 3,
            edits: 20,
            poll_ms: 5,
        }
    }
}

impl ServicesSyncConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.sizes.is_empty(), "no sizes given");
        for &n in &self.sizes {
            ensure!(
                (1..=MAX_SERVICES).contains(&n),
                "a size is 1 to {MAX_SERVICES} services, not {n}"
            );
        }
        ensure!(self.trials >= 1, "at least one trial");
        ensure!(self.edits <= 1000, "at most 1000 edits per trial");
        ensure!(
            (1..=1000).contains(&self.poll_ms),
            "poll every 1 to 1000 ms"
        );
        Ok(())
    }
}

/// One trial of one size in services mode.
#[derive(Debug, Clone, Serialize)]
pub struct ServicesTrial {
    pub services: usize,
    pub round: u32,
    pub lab: String,
    /// Spawn -> first status whose desired state has all N service ports.
    pub computed_ms: f64,
    /// Spawn -> in sync (engine acked) with all N service ports: the full sync.
    pub full_sync_ms: f64,
    pub generation_at_sync: u64,
    pub agent_rss_kib: u64,
    pub agent_cpu_seconds_at_sync: f64,
    /// One per edit: rename of the edited file -> acked and in sync.
    pub edit_ack_ms: Vec<f64>,
    /// Agent CPU over all edits, seconds (divide by the edits for the agent's
    /// own cost of one update, without the manifest source's settle delay).
    pub agent_cpu_seconds_edits: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicesSummary {
    pub services: usize,
    pub trials: usize,
    pub failed: usize,
    pub full_sync_ms_median: f64,
    pub edit_ack_ms_median: f64,
    pub edit_ack_ms_p95: f64,
    /// Agent CPU per edit, ms (median over trials).
    pub agent_cpu_ms_per_edit_median: f64,
    pub agent_rss_mib_median: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicesReport {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: ServicesSyncConfig,
    pub machine: Machine,
    pub agent_binary: String,
    pub method: &'static str,
    pub trials: Vec<ServicesTrial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<ServicesSummary>,
}

const SERVICES_METHOD: &str = "fresh lab node netns per trial, engine alone (--api-socket, \
     empty); a fresh sluice-agent on a manifest dir of N ClusterIP Services (one TCP port each) \
     and N EndpointSlices of two ready backends each, 100 services per file; full sync = agent \
     spawn -> first Status in_sync with services >= N; edit = rename of a rewritten file in which \
     one EndpointSlice's second backend address changed -> first Status with acked_generation \
     above the previous one and in_sync (includes the manifest source's 100 ms settle delay; the \
     agent CPU per edit is the agent's own cost)";

fn service_cluster_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n)
}

/// Backend `b` (0 or 1) of service `i`, moved by `shift` (the edits).
fn service_backend(i: usize, b: usize, shift: usize) -> Ipv4Addr {
    let n = u32::try_from(2 * i + b + 1 + shift * 2 * MAX_SERVICES).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 210, 0, 0)) + n % 65_000)
}

/// File `f` of a services trial: services `f*100 ..` with their EndpointSlices;
/// `shifts[i]` moves service i's second backend.
pub fn services_file(f: usize, services: usize, shifts: &[usize]) -> String {
    let mut text = String::new();
    let first = f * SERVICES_PER_FILE;
    let last = services.min(first + SERVICES_PER_FILE);
    for (i, shift) in shifts.iter().enumerate().take(last).skip(first) {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: bench}}\n\
             spec:\n  clusterIP: {ip}\n  selector: {{app: svc{i}}}\n  \
             ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
             endpoints:\n- addresses: [{a}]\n  nodeName: elsewhere\n- addresses: [{b}]\n  nodeName: elsewhere\n",
            ip = service_cluster_ip(i),
            a = service_backend(i, 0, 0),
            b = service_backend(i, 1, *shift),
        );
    }
    text
}

fn run_services_trial(
    config: &ServicesSyncConfig,
    services: usize,
    round: u32,
) -> Result<ServicesTrial> {
    let lab = Lab::new(LabSpec::engine(1).with_static_pods())?;
    lab.start_engine(&EngineOptions {
        state_file: false,
        api_socket: true,
        ..EngineOptions::default()
    })?;
    let dir = lab.run_dir().join("sync-manifests");
    let state = lab.run_dir().join("sync-agent-state");
    let socket = lab.run_dir().join("sync-agent.sock");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = services.div_ceil(SERVICES_PER_FILE);
    let mut shifts = vec![0usize; services];
    for f in 0..files {
        write_atomically(
            &dir,
            &format!("svc{f}.yaml"),
            &services_file(f, services, &shifts),
        )?;
    }
    let poll = Duration::from_millis(config.poll_ms);
    let ticks = ticks_per_second();

    let (pid, started) = spawn_agent(&lab, &dir, &state, &socket)?;
    let mut computed_ms = None;
    let (full_sync_ms, status) = loop {
        if let Some(status) = ask_status(&socket)? {
            let now = ms(started);
            if status.services >= services {
                computed_ms.get_or_insert(now);
            }
            if status.in_sync() && status.services >= services {
                break (now, status);
            }
        }
        if started.elapsed() > SYNC_TIMEOUT {
            bail!(
                "no full sync of {services} services within {SYNC_TIMEOUT:?}: {:?}\n{}",
                ask_status(&socket).ok().flatten(),
                lab.log_tail(AGENT_LOG, 20)
            );
        }
        agent_alive(&lab)?;
        std::thread::sleep(poll);
    };
    let (agent_rss_kib, _) = rss_kib(pid)?;
    let cpu_at_sync = process_ticks(pid).unwrap_or(0);

    let mut edit_ack_ms = Vec::with_capacity(config.edits);
    let mut acked = status.acked_generation;
    for k in 0..config.edits {
        let i = (k * 7919 + 13) % services;
        shifts[i] += 1;
        let f = i / SERVICES_PER_FILE;
        let text = services_file(f, services, &shifts);
        let edited = Instant::now();
        write_atomically(&dir, &format!("svc{f}.yaml"), &text)?;
        loop {
            if let Some(s) = ask_status(&socket)? {
                if s.in_sync() && s.acked_generation > acked {
                    edit_ack_ms.push(ms(edited));
                    acked = s.acked_generation;
                    break;
                }
            }
            if edited.elapsed() > EDIT_TIMEOUT {
                bail!(
                    "edit {k} (svc{i}) not acked within {EDIT_TIMEOUT:?}\n{}",
                    lab.log_tail(AGENT_LOG, 20)
                );
            }
            agent_alive(&lab)?;
            std::thread::sleep(poll);
        }
    }
    let cpu_after_edits = process_ticks(pid).unwrap_or(0);
    lab.stop_agent()?;
    let trial = ServicesTrial {
        services,
        round,
        lab: lab.prefix().to_string(),
        computed_ms: computed_ms.unwrap_or(f64::NAN),
        full_sync_ms,
        generation_at_sync: status.acked_generation,
        agent_rss_kib,
        agent_cpu_seconds_at_sync: cpu_at_sync as f64 / ticks,
        edit_ack_ms,
        agent_cpu_seconds_edits: cpu_after_edits.saturating_sub(cpu_at_sync) as f64 / ticks,
        loadavg: loadavg(),
    };
    lab.teardown()?;
    Ok(trial)
}

pub fn summarize_services(
    sizes: &[usize],
    trials: &[ServicesTrial],
    failed: &[FailedTrial],
) -> Vec<ServicesSummary> {
    sizes
        .iter()
        .map(|&services| {
            let mine: Vec<&ServicesTrial> =
                trials.iter().filter(|t| t.services == services).collect();
            let syncs: Vec<f64> = mine.iter().map(|t| t.full_sync_ms).collect();
            let edits: Vec<f64> = mine
                .iter()
                .flat_map(|t| t.edit_ack_ms.iter().copied())
                .collect();
            let cpu: Vec<f64> = mine
                .iter()
                .filter(|t| !t.edit_ack_ms.is_empty())
                .map(|t| t.agent_cpu_seconds_edits * 1e3 / t.edit_ack_ms.len() as f64)
                .collect();
            let rss: Vec<f64> = mine
                .iter()
                .map(|t| t.agent_rss_kib as f64 / 1024.0)
                .collect();
            ServicesSummary {
                services,
                trials: mine.len(),
                failed: failed.iter().filter(|f| f.pods == services).count(),
                full_sync_ms_median: median(&syncs),
                edit_ack_ms_median: median(&edits),
                edit_ack_ms_p95: percentile(&edits, 95.0),
                agent_cpu_ms_per_edit_median: median(&cpu),
                agent_rss_mib_median: median(&rss),
            }
        })
        .collect()
}

/// `sluice-lab bench sync --services`: N services to the engine's ack, then edits.
pub fn run_services(config: &ServicesSyncConfig, command: String) -> Result<ServicesReport> {
    config.validate()?;
    let agent_binary = find_binary(AGENT)?.display().to_string();
    crate::find_engine()?;
    let mut machine = Machine::probe();
    println!(
        "bench sync (services): sizes {:?}, {} round(s), {} EndpointSlice edit(s) per trial",
        config.sizes, config.trials, config.edits
    );
    let mut trials = Vec::new();
    let mut failed = Vec::new();
    for round in 1..=config.trials {
        for &services in &config.sizes {
            print!("  round {round} N={services:<6} ");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            match run_services_trial(config, services, round) {
                Ok(t) => {
                    println!(
                        "full sync {:.0} ms (computed {:.0} ms), edit->ack median {:.0} ms, \
                         agent CPU {:.1} ms per edit, RSS {:.1} MiB",
                        t.full_sync_ms,
                        t.computed_ms,
                        median(&t.edit_ack_ms),
                        t.agent_cpu_seconds_edits * 1e3 / t.edit_ack_ms.len().max(1) as f64,
                        t.agent_rss_kib as f64 / 1024.0
                    );
                    trials.push(t);
                }
                Err(err) => {
                    println!("FAILED: {err:#}");
                    failed.push(FailedTrial {
                        pods: services,
                        round,
                        error: format!("{err:#}"),
                    });
                }
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize_services(&config.sizes, &trials, &failed);
    Ok(ServicesReport {
        benchmark: "sync-services",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        agent_binary,
        method: SERVICES_METHOD,
        trials,
        failed,
        summary,
    })
}

/// The services table for docs/benchmarks.md.
pub fn services_markdown_table(summary: &[ServicesSummary]) -> String {
    let mut out = String::from(
        "| services (2 backends each) | full sync ms, median | edit->ack ms, median | \
         edit->ack ms, p95 | agent CPU ms per edit | agent RSS MiB | trials |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for s in summary {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            s.services,
            s.full_sync_ms_median,
            s.edit_ack_ms_median,
            s.edit_ack_ms_p95,
            s.agent_cpu_ms_per_edit_median,
            s.agent_rss_mib_median,
            s.trials
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 95.0).is_nan());
    }

    #[test]
    fn pods_spread_over_namespaces_with_distinct_labels_and_addresses() {
        let labels: Vec<String> = (0..25).map(|i| format!("app{i}")).collect();
        let text = namespace_file(3, 25, 10, &labels);
        assert!(text.contains("kind: Namespace\nmetadata:\n  name: ns3\n"));
        // pods 3, 13, 23
        assert_eq!(text.matches("kind: Pod").count(), 3);
        assert!(text.contains("name: pod13\n  namespace: ns3\n  labels: {app: app13, bench: sync}"));
        assert!(text.contains("podIPs: [{ip: 10.210.0.14}]"));
        assert_eq!(pod_ip(999), Ipv4Addr::new(10, 210, 3, 232));
        assert_eq!(pod_ip(0), Ipv4Addr::new(10, 210, 0, 1));
    }

    #[test]
    fn services_files_hold_100_services_with_two_backends_each() {
        let mut shifts = vec![0; 250];
        let text = services_file(2, 250, &shifts);
        assert_eq!(text.matches("kind: Service\n").count(), 50);
        assert_eq!(text.matches("kind: EndpointSlice").count(), 50);
        assert!(text.contains("clusterIP: 10.96.0.201\n"), "{text}");
        let before = services_file(0, 250, &shifts);
        shifts[7] = 1;
        let after = services_file(0, 250, &shifts);
        assert_ne!(before, after);
        assert_eq!(
            services_file(1, 250, &shifts),
            services_file(1, 250, &vec![0; 250])
        );
        assert!(ServicesSyncConfig::default().validate().is_ok());
    }

    /// The services benchmark, until `sluice-lab bench sync` has a flag for it:
    /// `SLUICE_SYNC_SERVICES=100,10000 cargo test --release -p sluice-lab --lib -- \
    /// --ignored services_sync_bench --nocapture` as root with release binaries.
    #[test]
    #[ignore = "needs root, the release binaries and minutes"]
    fn services_sync_bench() {
        let mut config = ServicesSyncConfig::default();
        if let Ok(sizes) = std::env::var("SLUICE_SYNC_SERVICES") {
            config.sizes = sizes
                .split(',')
                .map(|s| s.trim().parse().unwrap())
                .collect();
        }
        if let Ok(trials) = std::env::var("SLUICE_SYNC_TRIALS") {
            config.trials = trials.parse().unwrap();
        }
        let report = run_services(&config, "services_sync_bench".into()).unwrap();
        println!("\n{}", services_markdown_table(&report.summary));
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
        assert!(report.failed.is_empty(), "{:#?}", report.failed);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(SyncConfig::default().validate().is_ok());
        let c = SyncConfig {
            sizes: vec![0],
            ..SyncConfig::default()
        };
        assert!(c.validate().is_err());
        let c = SyncConfig {
            sizes: vec![],
            ..SyncConfig::default()
        };
        assert!(c.validate().is_err());
    }
}

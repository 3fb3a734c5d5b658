//! The stats socket: a unix socket on which `sluice` (or the lab) writes one
//! command line and reads one JSON document back.
//!
//! Commands: `stats` (counters, ports, generation, agent API, conntrack),
//! `reload` (re-read the state file and publish it; an error without --state)
//! and `conntrack list|flush <filter JSON>` (see [`crate::conntrack_socket`]). Served by its own thread; workers are never
//! involved beyond the counters they already publish.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use serde::Serialize;
use sluice_conntrack::{CtStats, FlowTables};
use sluice_pipeline::DropReason;
use sluice_tables::{PolicyDirection, PolicyState, RuleOrigin, TablesHandle};

use crate::api::{ApiBoard, ApiStatus};
use crate::config::{MonitorAggregation, WaitMode, XdpAttach};
use crate::counters::{self, CounterSnapshot, TrafficDirection, WorkerCounters};
use crate::flow_record::EventQueues;
use crate::ports::{PortBoard, PortStatus};

/// Everything the stats socket reads; shared with the workers.
#[derive(Debug)]
pub struct EngineShared {
    pub tables: TablesHandle,
    pub counters: Vec<WorkerCounters>,
    pub ports: PortBoard,
    pub info: EngineInfo,
    /// The agent API's state (also when no --api-socket is served).
    pub api: Arc<ApiBoard>,
    /// Conntrack and session affinity: the tables workers write, shared by all of them.
    pub flows: Arc<FlowTables>,
    /// Flow event queues (one per worker) and whether anyone subscribes.
    pub events: EventQueues,
}

#[derive(Clone, Debug, Serialize)]
pub struct EngineInfo {
    pub version: &'static str,
    pub pid: u32,
    pub workers: usize,
    /// Core each worker is pinned to.
    pub cores: Vec<usize>,
    pub mode: WaitMode,
    pub xdp_mode: XdpAttach,
    /// Whether each worker's UMEM sits on 2 MiB hugepages.
    pub hugepages: Vec<bool>,
    /// The --events-socket path, if served.
    pub events_socket: Option<PathBuf>,
    #[serde(skip)]
    pub started: Option<Instant>,
}

#[derive(Debug, Serialize)]
pub struct DropRow {
    pub number: u8,
    pub name: &'static str,
    pub count: u64,
    pub per_worker: Vec<u64>,
    /// `count` split by traffic direction: frames from the uplink / from pods.
    pub ingress: u64,
    pub egress: u64,
}

/// Policy drops of one rule in one direction, summed over the workers.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct PolicyDropRow {
    /// Index into the published policy's `rules`; `None` for a rule the
    /// current policy no longer has (its drops are kept).
    pub rule: Option<u32>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub direction: PolicyDirection,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct WorkerRow {
    pub worker: usize,
    pub core: usize,
    /// Share of the uptime spent in passes that received frames (0..1).
    pub busy_ratio: f64,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}

/// Flow events: the socket, the aggregation level, the queues and losses.
#[derive(Debug, Serialize)]
pub struct EventsStatus {
    pub socket: Option<PathBuf>,
    pub monitor_aggregation: MonitorAggregation,
    /// Records each worker's queue holds.
    pub queue_size: usize,
    pub subscribers: usize,
    /// Workers are building events (a subscriber is connected).
    pub observing: bool,
    /// Events queued by the workers (all workers; per worker in `workers`).
    pub emitted: u64,
    /// Events lost to full worker queues.
    pub lost: u64,
    /// Events not written to slow subscribers (summed over subscribers).
    pub subscriber_lost: u64,
}

/// The document `stats` answers with.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub engine: EngineInfo,
    pub uptime_seconds: f64,
    pub generation: u64,
    pub endpoints: usize,
    /// Addresses in the published ipcache (address -> security identity).
    pub ipcache_entries: usize,
    pub totals: CounterSnapshot,
    /// Every reason, also those at zero, in number order.
    pub drops: Vec<DropRow>,
    pub workers: Vec<WorkerRow>,
    pub ports: Vec<PortStatus>,
    /// The agent API: socket, connection, applied agent generation, last refusal.
    pub api: ApiStatus,
    /// Service ports in the published tables.
    pub services: usize,
    /// Connection tracking: size, inserts, evictions, pressure.
    pub conntrack: CtStats,
    /// Policy drops per deciding rule (those with drops), most first.
    pub policy_drops: Vec<PolicyDropRow>,
    pub events: EventsStatus,
}

impl EngineShared {
    pub fn report(&self) -> StatsReport {
        let snaps: Vec<CounterSnapshot> = self.counters.iter().map(|c| c.snapshot()).collect();
        let totals = CounterSnapshot::sum(&snaps);
        let by_direction =
            |d: TrafficDirection, r: &DropReason| totals.drops_by_direction[d.index()][r.index()];
        let drops = DropReason::ALL
            .iter()
            .map(|r| DropRow {
                number: r.number(),
                name: r.name(),
                count: totals.drops[r.index()],
                per_worker: snaps.iter().map(|s| s.drops[r.index()]).collect(),
                ingress: by_direction(TrafficDirection::Ingress, r),
                egress: by_direction(TrafficDirection::Egress, r),
            })
            .collect();
        let tables = self.tables.load();
        let uptime_seconds = self
            .info
            .started
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let events = EventsStatus {
            socket: self.info.events_socket.clone(),
            monitor_aggregation: self.events.level(),
            queue_size: self.events.capacity(),
            subscribers: self.events.subscribers(),
            observing: self.events.observing(),
            emitted: totals.events_emitted,
            lost: totals.events_lost,
            subscriber_lost: self.events.subscriber_lost(),
        };
        StatsReport {
            engine: self.info.clone(),
            uptime_seconds,
            generation: tables.generation,
            endpoints: tables.endpoints.len(),
            ipcache_entries: tables.ipcache.len(),
            totals,
            drops,
            workers: snaps
                .into_iter()
                .enumerate()
                .map(|(worker, counters)| WorkerRow {
                    worker,
                    core: self.info.cores.get(worker).copied().unwrap_or(0),
                    busy_ratio: busy_ratio(counters.busy_ns, uptime_seconds),
                    counters,
                })
                .collect(),
            ports: self.ports.list(),
            api: self.api.status(),
            services: tables.services.len(),
            conntrack: self.flows.conntrack.stats(),
            policy_drops: self.policy_drops(tables.policy.state()),
            events,
        }
    }

    /// The `stats` answer as JSON (also the events socket's `Stats` message).
    pub fn report_json(&self) -> serde_json::Value {
        serde_json::to_value(self.report()).unwrap_or_else(
            |e| serde_json::json!({ "ok": false, "error": format!("stats report: {e}") }),
        )
    }

    /// Every worker's per-rule policy drops, summed by rule origin and
    /// direction, indexed against `current`'s rules.
    fn policy_drops(&self, current: &PolicyState) -> Vec<PolicyDropRow> {
        let counted = counters::merge(self.counters.iter().flat_map(|c| c.rules().counted()));
        let index: HashMap<&RuleOrigin, u32> = current
            .rules
            .iter()
            .enumerate()
            .map(|(i, origin)| (origin, i as u32))
            .collect();
        let mut rows: Vec<PolicyDropRow> = counted
            .into_iter()
            .map(|count| PolicyDropRow {
                rule: index.get(&count.origin).copied(),
                kind: count.origin.kind,
                namespace: count.origin.namespace,
                name: count.origin.name,
                path: count.origin.path,
                direction: count.direction,
                packets: count.packets,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.packets));
        rows
    }
}

/// `busy_ns` over the uptime, within 0..=1.
fn busy_ratio(busy_ns: u64, uptime_seconds: f64) -> f64 {
    if uptime_seconds <= 0.0 {
        return 0.0;
    }
    (busy_ns as f64 / 1e9 / uptime_seconds).clamp(0.0, 1.0)
}

/// Re-reads the state file and applies it; returns the new generation, or
/// why it could not (no --state, a file that does not parse or conflicts).
pub type ReloadFn = Box<dyn Fn() -> Result<u64, String> + Send>;

/// The listening socket; removes its path when dropped.
#[derive(Debug)]
pub struct StatsSocket {
    path: PathBuf,
}

impl StatsSocket {
    /// Binds the socket (replacing a stale file) and serves it on a thread.
    pub fn serve(
        path: &Path,
        shared: Arc<EngineShared>,
        reload: ReloadFn,
    ) -> std::io::Result<StatsSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::thread::Builder::new()
            .name("stats-socket".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Err(e) = answer(stream, &shared, &reload) {
                        tracing::debug!("stats socket client: {e}");
                    }
                }
            })?;
        Ok(StatsSocket {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for StatsSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, shared: &EngineShared, reload: &ReloadFn) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let body = match line.trim() {
        "stats" | "" => serde_json::to_vec_pretty(&shared.report_json())?,
        "reload" => {
            let answer = match reload() {
                Ok(generation) => serde_json::json!({ "ok": true, "generation": generation }),
                Err(error) => serde_json::json!({ "ok": false, "error": error }),
            };
            serde_json::to_vec_pretty(&answer)?
        }
        command if command.starts_with("conntrack ") => {
            let now_ns = shared
                .info
                .started
                .map(|t| t.elapsed().as_nanos() as u64)
                .unwrap_or(0);
            let request = command.trim_start_matches("conntrack ").trim();
            serde_json::to_vec(&crate::conntrack_socket::answer(
                &shared.flows,
                now_ns,
                request,
            ))?
        }
        other => serde_json::to_vec_pretty(&serde_json::json!({
            "ok": false,
            "error": format!(
                "unknown command {other:?}; expected `stats`, `reload` or `conntrack list|flush <filter>`"
            ),
        }))?,
    };
    let mut stream = stream;
    stream.write_all(&body)?;
    stream.write_all(b"\n")
}

#[cfg(test)]
impl EngineShared {
    /// An engine's shared state around `tables`, with `workers` workers,
    /// events enabled (queues of 64 records) and no socket.
    pub(crate) fn for_tests(tables: sluice_tables::Tables, workers: usize) -> EngineShared {
        EngineShared {
            tables: TablesHandle::new(tables),
            counters: (0..workers).map(|_| WorkerCounters::default()).collect(),
            ports: PortBoard::default(),
            info: EngineInfo {
                version: "test",
                pid: 1,
                workers,
                cores: (0..workers).collect(),
                mode: WaitMode::Idle,
                xdp_mode: XdpAttach::Native,
                hugepages: vec![false; workers],
                events_socket: None,
                started: Some(Instant::now()),
            },
            api: Arc::new(ApiBoard::default()),
            flows: Arc::new(FlowTables::new(sluice_conntrack::CtConfig {
                capacity: 1024,
                ..sluice_conntrack::CtConfig::default()
            })),
            events: EventQueues::new(workers, 64, MonitorAggregation::Medium),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::LocalCounters;
    use sluice_tables::{NodeState, Tables};

    fn origin(name: &str, path: &str) -> RuleOrigin {
        RuleOrigin {
            kind: "NetworkPolicy".into(),
            namespace: "x".into(),
            name: name.into(),
            path: path.into(),
        }
    }

    /// Two workers' per-rule drops sum into one row per rule and direction,
    /// named by the policy, in the stats JSON.
    #[test]
    fn the_report_sums_policy_drops_per_rule_over_workers() {
        let mut state = NodeState::empty();
        state.policy.rules = vec![
            origin("deny-80", "ingressDeny[0]"),
            origin("allow", "ingress[0]"),
        ];
        let tables = Tables::build(state).unwrap();
        let policy = Arc::clone(tables.policy.shared_state());
        let shared = EngineShared::for_tests(tables, 2);
        for (worker, drops) in shared.counters.iter().zip([3, 4]) {
            let mut local = LocalCounters::default();
            worker.switch_rules(&mut local, &policy);
            for _ in 0..drops {
                local.policy_drop(
                    DropReason::PolicyDeniedByDenylist,
                    0,
                    PolicyDirection::Ingress,
                    TrafficDirection::Ingress,
                    100,
                );
            }
            local.policy_drop(
                DropReason::PolicyDenied,
                1,
                PolicyDirection::Egress,
                TrafficDirection::Egress,
                60,
            );
            worker.publish(&mut local);
        }
        let report = shared.report();
        assert_eq!(
            report.policy_drops,
            vec![
                PolicyDropRow {
                    rule: Some(0),
                    kind: "NetworkPolicy".into(),
                    namespace: "x".into(),
                    name: "deny-80".into(),
                    path: "ingressDeny[0]".into(),
                    direction: PolicyDirection::Ingress,
                    packets: 7,
                },
                PolicyDropRow {
                    rule: Some(1),
                    kind: "NetworkPolicy".into(),
                    namespace: "x".into(),
                    name: "allow".into(),
                    path: "ingress[0]".into(),
                    direction: PolicyDirection::Egress,
                    packets: 2,
                },
            ]
        );
        let denylist = report
            .drops
            .iter()
            .find(|d| d.name == "policy_denied_by_denylist")
            .unwrap();
        assert_eq!((denylist.number, denylist.count), (29, 7));
        assert_eq!((denylist.ingress, denylist.egress), (7, 0));
        assert_eq!(report.totals.dropped.ingress.bytes, 700);
        assert_eq!(report.totals.dropped.egress.packets, 2);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["policy_drops"][0],
            serde_json::json!({"rule": 0, "kind": "NetworkPolicy", "namespace": "x",
                "name": "deny-80", "path": "ingressDeny[0]", "direction": "ingress", "packets": 7})
        );
    }
}

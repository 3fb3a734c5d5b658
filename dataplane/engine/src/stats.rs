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

use serde::Serialize;
use sluice_conntrack::{CtStats, FlowTables};
use sluice_pipeline::DropReason;
use sluice_tables::TablesHandle;

use crate::api::{ApiBoard, ApiStatus};
use crate::config::{WaitMode, XdpAttach};
use crate::counters::{CounterSnapshot, WorkerCounters};
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
    #[serde(skip)]
    pub started: Option<Instant>,
}

#[derive(Debug, Serialize)]
pub struct DropRow {
    pub number: u8,
    pub name: &'static str,
    pub count: u64,
    pub per_worker: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct WorkerRow {
    pub worker: usize,
    pub core: usize,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
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
}

impl EngineShared {
    pub fn report(&self) -> StatsReport {
        let snaps: Vec<CounterSnapshot> = self.counters.iter().map(|c| c.snapshot()).collect();
        let totals = CounterSnapshot::sum(&snaps);
        let drops = DropReason::ALL
            .iter()
            .map(|r| DropRow {
                number: r.number(),
                name: r.name(),
                count: totals.drops[r.index()],
                per_worker: snaps.iter().map(|s| s.drops[r.index()]).collect(),
            })
            .collect();
        let tables = self.tables.load();
        StatsReport {
            engine: self.info.clone(),
            uptime_seconds: self
                .info
                .started
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0),
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
                    counters,
                })
                .collect(),
            ports: self.ports.list(),
            api: self.api.status(),
            services: tables.services.len(),
            conntrack: self.flows.conntrack.stats(),
        }
    }
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
        "stats" | "" => serde_json::to_vec_pretty(&shared.report())?,
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

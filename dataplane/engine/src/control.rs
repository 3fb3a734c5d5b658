//! The engine's control thread: takes the desired node state (from the --state
//! file and/or the agent on --api-socket), attaches XDP programs and worker
//! sockets to the interfaces it names, publishes table snapshots, serves the
//! stats, API and events sockets, and shuts everything down in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam_channel::{bounded, Sender};
use hashbrown::HashMap;
use sluice_conntrack::{CtConfig, FlowTables};
use sluice_tables::{Cidr, NodeState, Tables, TablesHandle};
use sluice_xdp::{AttachMode, PodProgram, UplinkProgram};
use sluice_xsk::{WorkerIo, XskConfig};

use crate::api::{ApiBoard, ApiServer, Dataplane};
use crate::config::{EngineConfig, XdpAttach};
use crate::counters::WorkerCounters;
use crate::events_socket::{EventsOptions, EventsServer};
use crate::flow_record::EventQueues;
use crate::ports::{PortBoard, PortCommand, PortStatus};
use crate::stats::{EngineInfo, EngineShared, StatsSocket};
use crate::uplink_steering::UplinkSteering;
use crate::worker::Worker;

/// How often the control thread runs a conntrack garbage-collection step.
const GC_TICK: Duration = Duration::from_millis(100);
/// A whole sweep of the table takes at most this many ticks (5 s at 100 ms).
const GC_TICKS_PER_SWEEP: usize = 50;

/// Buckets swept per tick so that the whole table is swept every
/// `GC_TICKS_PER_SWEEP` ticks, and at least 1024 (cheap on small tables).
fn gc_buckets_per_tick(buckets: usize) -> usize {
    (buckets / GC_TICKS_PER_SWEEP).max(1024)
}

/// How long the control thread waits for a worker to open or close a socket.
const WORKER_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and validates a node state file; the error names the file and what is wrong.
pub fn read_state(path: &Path) -> anyhow::Result<(NodeState, Tables)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read node state {}", path.display()))?;
    let state: NodeState = serde_json::from_str(&text)
        .with_context(|| format!("parse node state {}", path.display()))?;
    let tables =
        Tables::build(state.clone()).with_context(|| format!("node state {}", path.display()))?;
    Ok((state, tables))
}

/// The steering program on one interface.
// One per interface, held by the control thread: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
enum Program {
    /// A pod veth: every frame to the engine.
    Pod(PodProgram),
    /// The node's uplink: frames to the pod CIDRs to the engine, the rest to the kernel.
    Uplink(UplinkProgram),
}

impl Program {
    fn register_socket(
        &mut self,
        queue: u32,
        fd: impl std::os::fd::AsRawFd,
    ) -> Result<(), sluice_xdp::XdpError> {
        match self {
            Program::Pod(p) => p.register_socket(queue, fd),
            Program::Uplink(p) => p.register_socket(queue, fd),
        }
    }
}

/// What an interface is to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Pod,
    /// The uplink, with the prefixes steered to the engine.
    Uplink(Vec<Cidr>),
}

/// One interface the engine serves: its steering program and the fact that
/// every worker has a socket on it.
struct Attached {
    ifindex: u32,
    role: Role,
    program: Program,
    /// Uplink only: what its maps steer beyond the pod CIDRs, as applied.
    steering: UplinkSteering,
}

/// Brings the interfaces in line with the desired state.
struct Reconciler {
    /// The --state file `reload` re-reads, if any.
    state_path: Option<PathBuf>,
    /// The node state served now: the base of the agent's next delta.
    state: NodeState,
    /// The agent generation `state` came from; 0 for the empty or file state.
    agent_generation: u64,
    tables: TablesHandle,
    attached: HashMap<String, Attached>,
    workers: Vec<Sender<PortCommand>>,
    xdp_mode: AttachMode,
    shared: Arc<EngineShared>,
}

impl Dataplane for Reconciler {
    fn applied_generation(&self) -> u64 {
        self.agent_generation
    }

    fn state(&self) -> &NodeState {
        &self.state
    }

    fn apply(&mut self, generation: u64, state: NodeState, tables: Tables) {
        self.serve(tables);
        self.state = state;
        self.agent_generation = generation;
    }

    fn build_tables(&self, state: NodeState) -> Result<Tables, sluice_tables::EndpointError> {
        Tables::build_reusing(state, &self.tables.load())
    }
}

impl Reconciler {
    /// Re-reads the state file and applies it. A state that does not parse or
    /// conflicts is refused whole. It replaces an agent's state too: the applied
    /// agent generation goes back to 0, so the agent's next delta is refused
    /// and it sends a snapshot.
    fn reload(&mut self) -> anyhow::Result<u64> {
        let Some(path) = self.state_path.clone() else {
            bail!(
                "reload re-reads the --state file, and this engine was started without one: \
                 its node state comes from the agent on --api-socket"
            );
        };
        let (state, tables) = read_state(&path)?;
        if self.agent_generation != 0 {
            tracing::warn!(
                agent_generation = self.agent_generation,
                file = %path.display(),
                "reload replaces the agent's state with the state file"
            );
        }
        let generation = self.serve(tables);
        self.state = state;
        self.agent_generation = 0;
        self.shared.api.set_applied(0);
        Ok(generation)
    }

    /// Serves `tables`: attaches new and changed interfaces, publishes, then
    /// detaches the interfaces that are gone; returns the tables' generation.
    /// Interfaces whose name, ifindex and role did not change are not touched.
    /// An interface that cannot be attached is shown as down and the others are
    /// served.
    fn serve(&mut self, tables: Tables) -> u64 {
        let mut wanted: Vec<(String, u32, Role)> = tables
            .endpoints
            .iter()
            .map(|e| (e.ifname.clone(), e.ifindex, Role::Pod))
            .collect();
        if let Some(uplink) = &tables.uplink {
            wanted.push((
                uplink.ifname.clone(),
                uplink.ifindex,
                Role::Uplink(uplink.pod_cidrs.clone()),
            ));
        }
        for (ifname, ifindex, role) in &wanted {
            let stale = self
                .attached
                .get(ifname)
                .is_some_and(|a| a.ifindex != *ifindex || a.role != *role);
            if stale {
                self.detach(ifname);
            }
            if !self.attached.contains_key(ifname) {
                if let Err(e) = self.attach(ifname, *ifindex, role) {
                    tracing::error!("{e:#}");
                    for worker in 0..self.workers.len() {
                        self.shared.ports.set(PortStatus {
                            worker,
                            ifname: ifname.clone(),
                            ifindex: *ifindex,
                            queue: worker as u32,
                            state: format!("down: {e:#}"),
                            opened_ms: None,
                            kernel: Default::default(),
                        });
                    }
                }
            }
        }
        // Service addresses and ports before publishing: a frame steered early
        // meets the old tables and is dropped as before, never mis-translated.
        self.steer_uplink(&tables);
        let generation = self.tables.publish(tables);
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|name| !wanted.iter().any(|(w, _, _)| w == *name))
            .cloned()
            .collect();
        for ifname in gone {
            self.detach(&ifname);
        }
        tracing::info!(
            tables_generation = generation,
            interfaces = self.attached.len(),
            "tables published"
        );
        generation
    }

    /// Brings the uplink program's node addresses, service addresses, ports and
    /// masquerade range in line with `tables` (a failure is logged; the rest of
    /// the state is still served).
    fn steer_uplink(&mut self, tables: &Tables) {
        let Some(uplink) = &tables.uplink else {
            return;
        };
        let Some(attached) = self.attached.get_mut(&uplink.ifname) else {
            return;
        };
        let Program::Uplink(program) = &mut attached.program else {
            return;
        };
        let wanted = UplinkSteering::desired(tables);
        if attached.steering == wanted {
            return;
        }
        let (applied, result) = attached.steering.apply(&wanted, program);
        attached.steering = applied;
        if let Err(e) = result {
            tracing::error!(ifname = %uplink.ifname, "uplink steering: {e:#}");
        }
    }

    fn attach(&mut self, ifname: &str, ifindex: u32, role: &Role) -> anyhow::Result<()> {
        let actual = nix::net::if_::if_nametoindex(ifname)
            .with_context(|| format!("interface {ifname} from the node state does not exist"))?;
        if actual != ifindex {
            bail!("interface {ifname} has ifindex {actual}, but the node state says {ifindex}");
        }
        let mut program = match role {
            Role::Pod => Program::Pod(
                PodProgram::attach(ifname, self.xdp_mode)
                    .with_context(|| format!("attach steering program to {ifname}"))?,
            ),
            Role::Uplink(_) => Program::Uplink(
                UplinkProgram::attach(ifname, self.xdp_mode)
                    .with_context(|| format!("attach uplink program to {ifname}"))?,
            ),
        };
        for (queue, worker) in self.workers.iter().enumerate() {
            let (reply, answer) = bounded(1);
            worker
                .send(PortCommand::Open {
                    ifname: ifname.to_string(),
                    ifindex,
                    queue: queue as u32,
                    reply,
                })
                .context("worker has stopped")?;
            let fd = answer
                .recv_timeout(WORKER_REPLY_TIMEOUT)
                .with_context(|| format!("worker {queue} did not answer for {ifname}"))?
                .map_err(anyhow::Error::msg)?;
            program
                .register_socket(queue as u32, fd)
                .with_context(|| format!("register worker {queue} socket in {ifname} XSKMAP"))?;
        }
        // Prefixes last: until every worker's socket is registered, the
        // uplink program passes everything to the kernel.
        if let (Program::Uplink(uplink), Role::Uplink(cidrs)) = (&mut program, role) {
            for cidr in cidrs {
                uplink
                    .add_prefix(cidr.addr, cidr.prefix_len)
                    .with_context(|| format!("steer {cidr} from {ifname} to the engine"))?;
            }
        }
        tracing::info!(ifname, ifindex, ?role, "interface attached");
        self.attached.insert(
            ifname.to_string(),
            Attached {
                ifindex,
                role: role.clone(),
                program,
                steering: UplinkSteering::default(),
            },
        );
        Ok(())
    }

    /// Detaches the program first (frames go back to the kernel, which has no
    /// route for them), then closes the sockets.
    fn detach(&mut self, ifname: &str) {
        let Some(attached) = self.attached.remove(ifname) else {
            return;
        };
        let ifindex = attached.ifindex;
        drop(attached);
        for worker in &self.workers {
            let (reply, answer) = bounded(1);
            if worker.send(PortCommand::Close { ifindex, reply }).is_ok() {
                let _ = answer.recv_timeout(WORKER_REPLY_TIMEOUT);
            }
        }
        tracing::info!(ifname, "interface detached");
    }
}

fn pick_cores(config: &EngineConfig) -> anyhow::Result<Vec<usize>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .context("list CPU cores")?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if !config.cores.is_empty() {
        if config.cores.len() < config.workers {
            bail!(
                "--cores names {} cores for {} workers",
                config.cores.len(),
                config.workers
            );
        }
        for core in &config.cores {
            if !available.contains(core) {
                bail!("--cores: core {core} is not available (have {available:?})");
            }
        }
        return Ok(config.cores[..config.workers].to_vec());
    }
    // Default: the highest-numbered cores, leaving core 0 to the kernel and the control side.
    Ok((0..config.workers)
        .map(|w| available[available.len().saturating_sub(1 + w) % available.len()])
        .collect())
}

/// Runs the engine until SIGINT or SIGTERM.
pub fn run(config: EngineConfig) -> anyhow::Result<()> {
    config.validate()?;
    let epoch = Instant::now();
    let (state, initial) = match &config.state {
        Some(path) => read_state(path)?,
        None => {
            let state = NodeState::empty();
            let tables = Tables::build(state.clone()).context("the empty node state")?;
            (state, tables)
        }
    };
    let tables = TablesHandle::new(initial.clone());
    let cores = pick_cores(&config)?;

    let xsk_config = XskConfig {
        frame_count: config.frames,
        rx_ring: config.ring_size,
        tx_ring: config.ring_size,
        fill_ring: config.ring_size,
        comp_ring: config.ring_size,
        hugepages: !config.no_hugepages,
        ..XskConfig::default()
    };
    xsk_config.validate().context("--frames / --ring-size")?;
    let mut ios = Vec::with_capacity(config.workers);
    for worker in 0..config.workers {
        ios.push(WorkerIo::new(&xsk_config).with_context(|| format!("worker {worker}: UMEM"))?);
    }
    let shared = Arc::new(EngineShared {
        tables: tables.clone(),
        counters: (0..config.workers)
            .map(|_| WorkerCounters::default())
            .collect(),
        ports: PortBoard::default(),
        info: EngineInfo {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            workers: config.workers,
            cores: cores.clone(),
            mode: config.mode,
            xdp_mode: config.xdp_mode,
            hugepages: ios.iter().map(|io| io.uses_hugepages()).collect(),
            events_socket: config.events_socket.clone(),
            started: Some(epoch),
        },
        api: Arc::new(ApiBoard::default()),
        flows: Arc::new(FlowTables::new(CtConfig {
            capacity: config.ct_capacity,
            ..CtConfig::default()
        })),
        // Queues only when events are served: an engine without the socket
        // keeps no per-worker event memory.
        events: match &config.events_socket {
            Some(_) => EventQueues::new(
                config.workers,
                config.events_queue_size,
                config.monitor_aggregation,
            ),
            None => EventQueues::disabled(config.monitor_aggregation),
        },
    });

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("install SIGINT/SIGTERM handler")?;
    }

    let mut senders = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (id, io) in ios.into_iter().enumerate() {
        let (tx, rx) = bounded(16);
        senders.push(tx);
        let worker = Worker::new(
            id,
            io,
            config.batch,
            rx,
            shared.clone(),
            config.mode,
            stop.clone(),
            epoch,
        )
        .context("create worker")?;
        let core = cores[id];
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = id, core, "could not pin worker to its core");
                    }
                    worker.run();
                })
                .context("spawn worker thread")?,
        );
    }

    let reconciler = Arc::new(Mutex::new(Reconciler {
        state_path: config.state.clone(),
        state,
        agent_generation: 0,
        tables,
        attached: HashMap::new(),
        workers: senders,
        xdp_mode: match config.xdp_mode {
            XdpAttach::Native => AttachMode::Native,
            XdpAttach::Skb => AttachMode::Skb,
        },
        shared: shared.clone(),
    }));
    reconciler
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .serve(initial);

    // Bound before the stats socket: once that answers, agents can connect.
    let api = match &config.api_socket {
        Some(path) => Some(
            ApiServer::serve(path, reconciler.clone(), shared.api.clone())
                .with_context(|| format!("serve API socket {}", path.display()))?,
        ),
        None => None,
    };

    let reload = {
        let reconciler = reconciler.clone();
        Box::new(move || {
            reconciler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reload()
                .map_err(|e| format!("{e:#}"))
        })
    };
    let events = match &config.events_socket {
        Some(path) => Some(
            EventsServer::serve(path, shared.clone(), epoch, EventsOptions::default())
                .with_context(|| format!("serve events socket {}", path.display()))?,
        ),
        None => None,
    };
    let socket = StatsSocket::serve(&config.stats_socket, shared.clone(), reload)
        .with_context(|| format!("serve stats socket {}", config.stats_socket.display()))?;
    tracing::info!(
        workers = config.workers,
        cores = ?cores,
        socket = %config.stats_socket.display(),
        api_socket = ?config.api_socket,
        events_socket = ?config.events_socket,
        monitor_aggregation = ?config.monitor_aggregation,
        state = ?config.state,
        "engine ready"
    );

    // The control thread also sweeps conntrack and the FQDN cache: a bounded
    // step every tick, each bucket locked only while its expired entries are
    // removed, so workers never wait. Expired FQDN addresses must go for a
    // name at its address cap to learn new ones.
    let gc_buckets = gc_buckets_per_tick(shared.flows.conntrack.buckets());
    let fqdn_gc_buckets = gc_buckets_per_tick(shared.flows.fqdn.buckets());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(GC_TICK);
        let now_ns = epoch.elapsed().as_nanos() as u64;
        shared.flows.conntrack.gc_step(now_ns, gc_buckets);
        shared.flows.fqdn.gc_step(now_ns, fqdn_gc_buckets);
    }
    tracing::info!("stopping");
    let stopping = std::time::Instant::now();
    // The agent first: its connection closes and changes nothing more.
    drop(api);
    // Detach programs before the sockets go, so no frame is steered to a closed socket.
    {
        let mut reconciler = reconciler.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = reconciler.attached.keys().cloned().collect();
        for name in names {
            reconciler.detach(&name);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    drop(events);
    drop(socket);
    tracing::info!(
        ms = stopping.elapsed().as_millis() as u64,
        "stopped (programs detached, sockets closed)"
    );
    Ok(())
}

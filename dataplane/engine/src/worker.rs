//! One packet worker: owns a UMEM and a socket per interface, pinned to a core.
//!
//! Loop: for each socket, take a batch of received frames, run each through
//! the pipeline against the current table snapshot, queue it for transmit on
//! the socket of the egress interface (same UMEM, so no copy) or release it;
//! then flush (tx kick, completions, fill refill) and publish counters.
//! Every worker can transmit on every interface, so no frame crosses workers.
//!
//! Flow events: once per pass the worker reads whether anyone subscribes
//! ([`crate::flow_record::EventQueues::observing`]). If not, frames go
//! through `process` exactly as without events. If so, each frame goes
//! through `process_observed` with the worker's one [`Observation`]
//! (cleared per frame), and its fate and observation are queued as a
//! [`crate::flow_record::FlowRecord`] when the aggregation level asks for it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hashbrown::HashMap;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sluice_pipeline::{process, process_observed, DropReason, Observation, Verdict};
use sluice_xsk::{Frame, PortId, WorkerIo};

use crate::config::WaitMode;
use crate::counters::{LocalCounters, TrafficDirection};
use crate::flow_record::{self, FrameFate, PassContext, PolicyBlame};
use crate::ports::{KernelSocketStats, PortCommand, PortStatus};
use crate::stats::EngineShared;

/// How long an idle worker sleeps in epoll before it looks at its command
/// channel again.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// A worker that keeps finding frames still publishes counters and reads its
/// command channel after this many loops.
const HOUSEKEEPING_EVERY_LOOPS: u32 = 64;
/// How often kernel-side socket drop counters are folded into the drop counters.
const KERNEL_STATS_EVERY: Duration = Duration::from_secs(1);

struct Port {
    id: PortId,
    ifname: String,
    ifindex: u32,
    queue: u32,
    fd: RawFd,
    /// Kernel drop count (XDP_STATISTICS rx_dropped + rx_ring_full) already counted.
    kernel_drops_seen: u64,
    /// When it was opened, in milliseconds after the engine started.
    opened_ms: u64,
}

pub struct Worker {
    id: usize,
    io: WorkerIo,
    ports: Vec<Port>,
    /// Egress ifindex -> position in `ports`.
    by_ifindex: HashMap<u32, usize>,
    batch: Vec<Frame>,
    batch_size: usize,
    local: LocalCounters,
    commands: Receiver<PortCommand>,
    shared: Arc<EngineShared>,
    mode: WaitMode,
    poll: Poll,
    events: Events,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    /// The tables generation the per-rule policy counters were last checked
    /// against (`u64::MAX`: none yet).
    seen_generation: u64,
    /// What the pipeline noted about the current frame, while observing.
    observation: Observation,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        io: WorkerIo,
        batch_size: usize,
        commands: Receiver<PortCommand>,
        shared: Arc<EngineShared>,
        mode: WaitMode,
        stop: Arc<AtomicBool>,
        epoch: Instant,
    ) -> std::io::Result<Worker> {
        Ok(Worker {
            id,
            io,
            ports: Vec::with_capacity(64),
            by_ifindex: HashMap::with_capacity(64),
            batch: Vec::with_capacity(batch_size),
            batch_size,
            local: LocalCounters::default(),
            commands,
            shared,
            mode,
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            stop,
            epoch,
            seen_generation: u64::MAX,
            observation: Observation::default(),
        })
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        let mut last_housekeeping = Instant::now();
        let mut loops: u32 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let work = self.poll_once();
            loops = loops.wrapping_add(1);
            if work == 0 {
                self.local.idle_loops += 1;
            } else {
                self.local.busy_loops += 1;
            }
            // Housekeeping (commands, counters, kernel stats) is not per loop:
            // a busy worker spends its time on frames, not on clocks and channels.
            if work == 0 || loops.is_multiple_of(HOUSEKEEPING_EVERY_LOOPS) {
                self.shared.counters[self.id].publish(&mut self.local);
                self.handle_commands();
                if last_housekeeping.elapsed() >= KERNEL_STATS_EVERY {
                    self.fold_kernel_drops();
                    // A deleted interface does not wake epoll; look for it here.
                    if let Err(e) = self.io.check_ports() {
                        self.io_failed(e);
                    }
                    last_housekeeping = Instant::now();
                }
            }
            if work == 0 {
                self.wait();
            }
        }
        self.fold_kernel_drops();
        self.shared.counters[self.id].publish(&mut self.local);
    }

    /// One pass over every socket; returns the number of frames received.
    fn poll_once(&mut self) -> usize {
        let tables = self.shared.tables.load();
        if tables.generation != self.seen_generation {
            // Once per new snapshot, not per packet: policy drops count per
            // rule of the snapshot's policy state.
            self.seen_generation = tables.generation;
            let state = tables.policy.shared_state();
            if !Arc::ptr_eq(state, self.local.rules.state()) {
                self.shared.counters[self.id].switch_rules(&mut self.local, state);
            }
        }
        // One relaxed load per pass: without a subscriber nothing below
        // builds or queues an event.
        let observing = self.shared.events.observing();
        let uplink_ifindex = tables.uplink.as_ref().map(|u| u.ifindex);
        // Read the clock once per pass, and only when there are frames.
        let mut now_ns: Option<u64> = None;
        let mut received = 0;
        let mut failed: Option<(usize, String)> = None;
        for index in 0..self.ports.len() {
            let (ingress, ingress_ifindex) = (self.ports[index].id, self.ports[index].ifindex);
            match self.io.receive(ingress, &mut self.batch, self.batch_size) {
                Ok(n) => received += n,
                Err(e) => {
                    failed = Some((index, e.to_string()));
                    continue;
                }
            }
            if self.batch.is_empty() {
                continue;
            }
            let now_ns = *now_ns.get_or_insert_with(|| self.epoch.elapsed().as_nanos() as u64);
            let traffic = TrafficDirection::of_frame(ingress_ifindex, uplink_ifindex);
            let worker_id = self.id;
            let Worker {
                io,
                batch,
                local,
                by_ifindex,
                ports,
                shared,
                observation,
                ..
            } = self;
            // Conntrack and affinity: shared by every worker, written without locks.
            let flows = &*shared.flows;
            let events = if observing {
                shared.events.queue(worker_id).map(|queue| {
                    let pass = PassContext {
                        worker: worker_id as u32,
                        generation: tables.generation,
                        time_ns: now_ns,
                        level: shared.events.level(),
                    };
                    (queue, pass)
                })
            } else {
                None
            };
            for mut frame in batch.drain(..) {
                let len = frame.len();
                local.rx_packets += 1;
                local.rx_bytes += len as u64;
                let buffer = io.buffer_mut(&mut frame);
                let verdict = if events.is_some() {
                    observation.clear();
                    process_observed(
                        buffer,
                        len,
                        ingress_ifindex,
                        &tables,
                        flows,
                        now_ns,
                        observation,
                    )
                } else {
                    process(buffer, len, ingress_ifindex, &tables, flows, now_ns)
                };
                let fate = match verdict {
                    Verdict::Forward {
                        ifindex,
                        len: out_len,
                    } => match by_ifindex.get(&ifindex).map(|i| ports[*i].id) {
                        Some(egress) => {
                            frame.set_len(out_len);
                            match io.transmit(egress, frame) {
                                Ok(()) => {
                                    local.tx_packets += 1;
                                    local.tx_bytes += out_len as u64;
                                    local.forwarded(traffic, out_len as u64);
                                    if ifindex == ingress_ifindex {
                                        local.replies += 1;
                                    }
                                    FrameFate::Forwarded {
                                        egress_ifindex: ifindex,
                                    }
                                }
                                Err(frame) => {
                                    io.release(frame);
                                    tx_unavailable(local, traffic, len)
                                }
                            }
                        }
                        None => {
                            io.release(frame);
                            tx_unavailable(local, traffic, len)
                        }
                    },
                    // A refused packet answered in place (RST, port unreachable):
                    // counted as dropped, and the answer sent like a forward.
                    Verdict::Reject {
                        ifindex,
                        len: out_len,
                        reason,
                    } => {
                        local.drop(reason, traffic, len as u64);
                        match by_ifindex.get(&ifindex).map(|i| ports[*i].id) {
                            Some(egress) => {
                                frame.set_len(out_len);
                                match io.transmit(egress, frame) {
                                    Ok(()) => {
                                        local.tx_packets += 1;
                                        local.tx_bytes += out_len as u64;
                                        if ifindex == ingress_ifindex {
                                            local.replies += 1;
                                        }
                                    }
                                    Err(frame) => {
                                        // The answer is lost too.
                                        local.drop(DropReason::TxUnavailable, traffic, 0);
                                        io.release(frame);
                                    }
                                }
                            }
                            None => {
                                local.drop(DropReason::TxUnavailable, traffic, 0);
                                io.release(frame);
                            }
                        }
                        FrameFate::Dropped {
                            reason,
                            policy: None,
                        }
                    }
                    Verdict::Drop(reason) => {
                        local.drop(reason, traffic, len as u64);
                        io.release(frame);
                        FrameFate::Dropped {
                            reason,
                            policy: None,
                        }
                    }
                    Verdict::PolicyDrop {
                        reason,
                        rule,
                        direction,
                    } => {
                        local.policy_drop(reason, rule, direction, traffic, len as u64);
                        io.release(frame);
                        FrameFate::Dropped {
                            reason,
                            policy: Some(PolicyBlame { rule, direction }),
                        }
                    }
                };
                if let Some((queue, pass)) = &events {
                    flow_record::emit(queue, pass, ingress_ifindex, len, fate, observation, local);
                }
            }
        }
        if let Err(e) = self.io.flush() {
            self.io_failed(e);
        }
        if let Some(started) = now_ns {
            // Busy time: from the first frame of the pass to the end of its
            // flush, one more clock read per pass that had frames.
            let ended = self.epoch.elapsed().as_nanos() as u64;
            self.local.busy_ns += ended.saturating_sub(started);
        }
        if let Some((index, cause)) = failed {
            self.port_failed(index, cause);
        }
        received
    }

    /// Routes an I/O error to the port it names.
    fn io_failed(&mut self, error: sluice_xsk::XskError) {
        match error
            .port()
            .and_then(|id| self.ports.iter().position(|p| p.id == id))
        {
            Some(index) => self.port_failed(index, error.to_string()),
            None => tracing::warn!(worker = self.id, "AF_XDP: {error}"),
        }
    }

    /// An I/O error on one socket (typically its interface vanished): close it,
    /// show it as down, keep serving the others.
    fn port_failed(&mut self, index: usize, cause: String) {
        let port = self.ports.swap_remove(index);
        tracing::error!(
            worker = self.id,
            ifname = %port.ifname,
            "socket failed, closing it and serving the other interfaces: {cause}"
        );
        let _ = self.poll.registry().deregister(&mut SourceFd(&port.fd));
        self.io.close_port(port.id);
        self.reindex();
        self.shared.ports.set(PortStatus {
            worker: self.id,
            ifname: port.ifname,
            ifindex: port.ifindex,
            queue: port.queue,
            state: format!("down: {cause}"),
            opened_ms: Some(port.opened_ms),
            kernel: KernelSocketStats::default(),
        });
    }

    fn reindex(&mut self) {
        self.by_ifindex.clear();
        for (i, p) in self.ports.iter().enumerate() {
            self.by_ifindex.insert(p.ifindex, i);
        }
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                PortCommand::Open {
                    ifname,
                    ifindex,
                    queue,
                    reply,
                } => {
                    let result = self.open(&ifname, ifindex, queue);
                    let _ = reply.send(result);
                }
                PortCommand::Close { ifindex, reply } => {
                    if let Some(index) = self.ports.iter().position(|p| p.ifindex == ifindex) {
                        let port = self.ports.swap_remove(index);
                        let _ = self.poll.registry().deregister(&mut SourceFd(&port.fd));
                        self.io.close_port(port.id);
                        self.reindex();
                    }
                    self.shared.ports.remove(self.id, ifindex);
                    let _ = reply.send(());
                }
            }
        }
    }

    fn open(&mut self, ifname: &str, ifindex: u32, queue: u32) -> Result<RawFd, String> {
        if self.by_ifindex.contains_key(&ifindex) {
            return Err(format!(
                "worker {} already has a socket on {ifname}",
                self.id
            ));
        }
        let id = self
            .io
            .open_port(ifname, queue)
            .map_err(|e| format!("open AF_XDP socket on {ifname} queue {queue}: {e}"))?;
        let fd = self.io.port_fd(id);
        let opened_ms = self.epoch.elapsed().as_millis() as u64;
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(ifindex as usize),
                Interest::READABLE,
            )
            .map_err(|e| format!("epoll register {ifname}: {e}"))?;
        self.ports.push(Port {
            id,
            ifname: ifname.to_string(),
            ifindex,
            queue,
            fd,
            kernel_drops_seen: 0,
            opened_ms,
        });
        self.reindex();
        self.shared.ports.set(PortStatus {
            worker: self.id,
            ifname: ifname.to_string(),
            ifindex,
            queue,
            state: "up".into(),
            opened_ms: Some(opened_ms),
            kernel: KernelSocketStats::default(),
        });
        Ok(fd)
    }

    /// Frames the kernel dropped before they reached the rx ring (ring full,
    /// frame larger than a chunk) are counted under their own reason.
    fn fold_kernel_drops(&mut self) {
        let uplink_ifindex = self.shared.tables.load().uplink.as_ref().map(|u| u.ifindex);
        for port in &mut self.ports {
            if let Ok(stats) = self.io.port_stats(port.id) {
                self.shared.ports.set_kernel_stats(
                    self.id,
                    port.ifindex,
                    KernelSocketStats {
                        rx_ring_full: stats.rx_ring_full,
                        fill_ring_empty: stats.rx_fill_ring_empty_descs,
                        rx_dropped: stats.rx_dropped,
                        rx_invalid_descs: stats.rx_invalid_descs,
                        tx_invalid_descs: stats.tx_invalid_descs,
                    },
                );
                let total = stats.rx_dropped + stats.rx_ring_full + stats.rx_invalid_descs;
                if total > port.kernel_drops_seen {
                    self.local.drops_by(
                        DropReason::RxRingDropped,
                        TrafficDirection::of_frame(port.ifindex, uplink_ifindex),
                        total - port.kernel_drops_seen,
                    );
                    port.kernel_drops_seen = total;
                }
            }
        }
    }

    fn wait(&mut self) {
        match self.mode {
            WaitMode::Busy => std::hint::spin_loop(),
            WaitMode::Idle => {
                if !self.io.wants_poll() {
                    // Transmits are still in flight; copy-mode TX only moves
                    // inside sendto, so keep flushing instead of sleeping.
                    std::thread::yield_now();
                } else if self.ports.is_empty() {
                    std::thread::sleep(IDLE_WAIT);
                } else if let Err(e) = self.poll.poll(&mut self.events, Some(IDLE_WAIT)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        tracing::warn!(worker = self.id, "epoll: {e}");
                        std::thread::sleep(IDLE_WAIT);
                    }
                }
            }
        }
    }
}

/// A forwarded frame that found no transmit slot or socket: dropped.
#[inline]
fn tx_unavailable(local: &mut LocalCounters, traffic: TrafficDirection, len: usize) -> FrameFate {
    local.drop(DropReason::TxUnavailable, traffic, len as u64);
    FrameFate::Dropped {
        reason: DropReason::TxUnavailable,
        policy: None,
    }
}

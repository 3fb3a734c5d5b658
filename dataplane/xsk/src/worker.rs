//! `WorkerIo`: one UMEM, its free pool, and the ports of one worker thread.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::config::XskConfig;
use crate::error::XskError;
use crate::frame::Frame;
use crate::pool::FrameLedger;
use crate::port::{Port, PortState};
use crate::ring::XdpDesc;
use crate::sys;
use crate::umem::{Umem, XDP_PACKET_HEADROOM};

/// Handle of a port on one `WorkerIo`. Stale handles (closed ports) are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId {
    index: u16,
    generation: u16,
}

impl PortId {
    /// Small dense number, for indexing per-port tables. Reused after `close_port`.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Kernel counters of one AF_XDP socket (`getsockopt(XDP_STATISTICS)`), plus ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Dropped for reasons other than invalid descriptors (e.g. frame too big).
    pub rx_dropped: u64,
    /// Invalid fill-ring descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full (we were too slow).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a packet arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
    /// RX/completion descriptors naming frames the port did not own (dropped, never
    /// turned into tokens). Should stay 0.
    pub bogus_descs: u64,
}

/// Empty `receive` calls between liveness probes of a port (one `recvfrom` each).
const PROBE_EVERY: u32 = 1024;
/// TX kicks in a row that move nothing before `flush` gives up until next time.
const MAX_STALLED_KICKS: u32 = 2;

#[derive(Debug)]
struct Slot {
    generation: u16,
    port: Option<Port>,
}

/// Fewest frames a port's fill ring is given, however many ports share the pool.
const MIN_FILL_SHARE: u32 = 32;

/// One worker's AF_XDP I/O: a UMEM shared (`XDP_SHARED_UMEM`) by all of the worker's
/// ports, the pool of free frames, and the ports. `Send`, not `Sync`: build it on the
/// worker thread or move it there.
///
/// The worker loop is: for each port `receive` a batch; for each frame run the pipeline
/// on `buffer_mut`, then `transmit` it to any port of this worker or `release` it; then
/// `flush` once. A frame received on port A may be transmitted on port B; after B's
/// completion it returns to the pool and may refill any port's fill ring.
#[derive(Debug)]
pub struct WorkerIo {
    // Ports before the UMEM: sockets must close before the UMEM is unmapped.
    ports: Vec<Slot>,
    ledger: FrameLedger,
    umem: Umem,
    cfg: XskConfig,
    refill_from: usize,
}

fn port_down(id: PortId, p: &Port, op: &'static str, source: io::Error) -> XskError {
    XskError::PortDown {
        port: id,
        ifname: p.ifname.clone(),
        op,
        source,
    }
}

impl WorkerIo {
    /// Maps the UMEM (2 MiB hugepages if `cfg.hugepages` and available, else normal
    /// pages with a warning) and fills the free pool. Opens no socket.
    pub fn new(cfg: &XskConfig) -> Result<Self, XskError> {
        cfg.validate()?;
        let umem = Umem::new(cfg)?;
        Ok(Self {
            ports: Vec::new(),
            ledger: FrameLedger::new(cfg.frame_count),
            umem,
            cfg: *cfg,
            refill_from: 0,
        })
    }

    /// Whether the UMEM sits on hugepages.
    pub fn uses_hugepages(&self) -> bool {
        self.umem.hugepages
    }

    /// Frames in the UMEM.
    pub fn frame_count(&self) -> u32 {
        self.umem.frame_count
    }

    /// Frames in the free pool right now.
    pub fn free_frames(&self) -> usize {
        self.ledger.free_count()
    }

    /// Opens an AF_XDP socket on `ifname` queue `queue_id` in the calling thread's
    /// network namespace, sharing this worker's UMEM, and fills its fill ring.
    ///
    /// Loads no XDP program: the caller owns the program and must insert
    /// [`port_fd`](Self::port_fd) into its XSKMAP at `queue_id`.
    pub fn open_port(&mut self, ifname: &str, queue_id: u32) -> Result<PortId, XskError> {
        let live = self
            .ports
            .iter()
            .filter_map(|s| s.port.as_ref())
            .filter(|p| p.state == PortState::Live);
        let mut shared_with = None;
        for p in live {
            if &*p.ifname == ifname && p.queue_id == queue_id {
                return Err(XskError::PortInUse {
                    ifname: p.ifname.clone(),
                    queue_id,
                });
            }
            // Any bound socket of this UMEM will do (the kernel requires a bound one),
            // so the first port's interface disappearing does not block new ports.
            shared_with.get_or_insert(p.fd.as_raw_fd());
        }
        let port = Port::open(&self.cfg, &self.umem, ifname, queue_id, shared_with)?;
        let id = self.insert(port)?;
        let share = self.fill_share();
        if let Some(Err(e)) = self.refill(id.index as usize, share) {
            self.close_port(id);
            return Err(e);
        }
        Ok(id)
    }

    fn insert(&mut self, port: Port) -> Result<PortId, XskError> {
        let index = match self.ports.iter().position(|s| s.port.is_none()) {
            Some(i) => i,
            None if self.ports.len() < usize::from(u16::MAX) => {
                self.ports.push(Slot {
                    generation: 0,
                    port: None,
                });
                self.ports.len() - 1
            }
            None => return Err(XskError::TooManyPorts),
        };
        let slot = &mut self.ports[index];
        slot.port = Some(port);
        Ok(PortId {
            index: index as u16,
            generation: slot.generation,
        })
    }

    fn port(&self, id: PortId) -> Result<&Port, XskError> {
        match self.ports.get(id.index as usize) {
            Some(Slot {
                generation,
                port: Some(p),
            }) if *generation == id.generation => Ok(p),
            _ => Err(XskError::UnknownPort(id)),
        }
    }

    fn port_mut(ports: &mut [Slot], id: PortId) -> Result<&mut Port, XskError> {
        match ports.get_mut(id.index as usize) {
            Some(Slot {
                generation,
                port: Some(p),
            }) if *generation == id.generation => Ok(p),
            _ => Err(XskError::UnknownPort(id)),
        }
    }

    /// Closes the socket and takes back every frame its fill and TX paths held.
    /// Frames of this port the caller still holds stay valid. Unknown ids are ignored.
    pub fn close_port(&mut self, id: PortId) {
        let Some(slot) = self.ports.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        if let Some(port) = slot.port.take() {
            // Dropping the port unmaps its rings and closes the socket; the kernel's
            // release unbinds it synchronously, so nothing of ours is touched afterwards.
            drop(port);
            let n = self.ledger.reclaim(id.index);
            tracing::debug!(port = id.index, reclaimed = n, "closed AF_XDP port");
            slot.generation = slot.generation.wrapping_add(1);
        }
    }

    /// The socket fd: insert it into the XDP program's XSKMAP, or register it with
    /// epoll (readable = RX ring non-empty). -1 for an unknown or closed port (so
    /// registering it fails with EBADF). Valid until `close_port`.
    pub fn port_fd(&self, id: PortId) -> RawFd {
        self.port(id).map_or(-1, |p| p.fd.as_raw_fd())
    }

    /// The interface name the port was opened on.
    pub fn port_ifname(&self, id: PortId) -> Result<&str, XskError> {
        Ok(&self.port(id)?.ifname)
    }

    /// Appends up to `max` received frames to `batch` and returns how many. Allocates
    /// nothing when `batch` has the capacity. Empty polls occasionally probe the socket,
    /// so a vanished interface shows up here as [`XskError::PortDown`].
    pub fn receive(
        &mut self,
        id: PortId,
        batch: &mut Vec<Frame>,
        max: usize,
    ) -> Result<usize, XskError> {
        let Self {
            ports,
            ledger,
            umem,
            ..
        } = self;
        let p = Self::port_mut(ports, id)?;
        if p.state == PortState::Dead {
            return Err(port_down(
                id,
                p,
                "receive",
                io::Error::from_raw_os_error(libc::ENXIO),
            ));
        }
        let before = batch.len();
        let mut bogus = 0;
        let n = p.rx.consume(
            u32::try_from(max).unwrap_or(u32::MAX),
            |d: XdpDesc| match umem.locate(d.addr, d.len) {
                Some((index, head)) if ledger.received(index, id.index) => {
                    batch.push(umem.token(index, head, d.len))
                }
                _ => bogus += 1,
            },
        );
        p.bogus_descs += bogus;
        if n > 0 {
            p.idle_polls = 0;
        } else {
            p.idle_polls += 1;
            if p.idle_polls >= PROBE_EVERY {
                p.idle_polls = 0;
                if let Err(e) = sys::poke_rx(&p.fd) {
                    if !sys::is_transient(&e) {
                        p.state = PortState::Dead;
                        return Err(port_down(id, p, "rx probe", e));
                    }
                }
            }
        }
        Ok(batch.len() - before)
    }

    /// The frame's chunk from its packet start to the chunk end (`frame.capacity()`
    /// bytes); the first `frame.len()` are the packet. Grow or shrink with `set_len`.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `WorkerIo`.
    pub fn buffer_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        self.umem.bytes_mut(frame)
    }

    /// The frame's packet bytes.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `WorkerIo`.
    pub fn buffer<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.umem.bytes(frame)
    }

    /// A free frame with `len` 0 and the usual 256 bytes of headroom, for packets the
    /// worker builds itself; `None` when the pool is empty.
    pub fn alloc_frame(&mut self) -> Option<Frame> {
        let index = self.ledger.take_for_user()?;
        Some(self.umem.token(index, XDP_PACKET_HEADROOM, 0))
    }

    /// Queues `frame` on `id`'s TX ring (visible to the kernel at the next `flush`).
    /// Gives the frame back if the ring is full, the port is unknown or dead.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `WorkerIo`.
    pub fn transmit(&mut self, id: PortId, frame: Frame) -> Result<(), Frame> {
        self.umem.check_owner(&frame);
        let Ok(p) = Self::port_mut(&mut self.ports, id) else {
            return Err(frame);
        };
        if p.state == PortState::Dead || p.tx_outstanding >= p.comp_size {
            return Err(frame);
        }
        let desc = XdpDesc {
            addr: frame.addr(),
            len: frame.len,
            options: 0,
        };
        if p.tx.stage(desc).is_err() {
            return Err(frame);
        }
        // The token is unique and not Clone, so its frame is in state User.
        assert!(
            self.ledger.queued_tx(frame.index, id.index),
            "frame token out of sync with ledger"
        );
        p.tx_outstanding += 1;
        Ok(())
    }

    /// Returns `frame` to the free pool.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `WorkerIo`.
    pub fn release(&mut self, frame: Frame) {
        self.umem.check_owner(&frame);
        assert!(
            self.ledger.released(frame.index),
            "frame token out of sync with ledger"
        );
    }

    /// Call once per loop iteration, after the batch. For every live port: publishes
    /// staged TX with one Release store, kicks `sendto` while the kernel keeps taking
    /// descriptors (copy mode sends 32 per call), drains completions into the pool; then
    /// refills every fill ring from the pool and wakes RX where need_wakeup asks.
    ///
    /// A port whose interface vanished is marked dead and reported as
    /// [`XskError::PortDown`] (one per call; others are reported by later calls); all
    /// other ports are still flushed.
    pub fn flush(&mut self) -> Result<(), XskError> {
        let mut first_err: Option<XskError> = None;
        let Self {
            ports,
            ledger,
            umem,
            ..
        } = self;
        for (i, slot) in ports.iter_mut().enumerate() {
            let Some(p) = slot.port.as_mut() else {
                continue;
            };
            if p.state == PortState::Dead {
                continue;
            }
            if let Err(e) = flush_tx(p, ledger, umem, i as u16) {
                if first_err.is_none() {
                    p.state = PortState::Dead;
                    first_err = Some(port_down(
                        PortId {
                            index: i as u16,
                            generation: slot.generation,
                        },
                        p,
                        "tx kick",
                        e,
                    ));
                }
            }
        }
        let n = self.ports.len();
        let share = self.fill_share();
        for k in 0..n {
            let i = (self.refill_from + k) % n;
            if let Some(Err(e)) = self.refill(i, share) {
                if first_err.is_none() {
                    if let Some(p) = self.ports[i].port.as_mut() {
                        p.state = PortState::Dead;
                    }
                    first_err = Some(e);
                }
            }
        }
        self.refill_from = if n == 0 {
            0
        } else {
            (self.refill_from + 1) % n
        };
        first_err.map_or(Ok(()), Err)
    }

    /// How many frames one port's fill ring may hold: half the pool split over
    /// the live ports, at least one batch, at most the ring. Otherwise the first
    /// ports opened take every frame and a later one starts with an empty fill
    /// ring and drops what it receives. Computed once per pass over the ports.
    fn fill_share(&self) -> u32 {
        let live = self
            .ports
            .iter()
            .filter(|s| s.port.as_ref().is_some_and(|p| p.state == PortState::Live))
            .count()
            .max(1) as u32;
        (self.umem.frame_count / (2 * live))
            .max(MIN_FILL_SHARE)
            .min(self.cfg.fill_ring)
    }

    /// Tops up port `i`'s fill ring from the pool, up to `share` frames in the
    /// ring; `None` if there is no live port there.
    fn refill(&mut self, i: usize, share: u32) -> Option<Result<(), XskError>> {
        let fill_size = self.cfg.fill_ring;
        let slot = &mut self.ports[i];
        let p = slot.port.as_mut().filter(|p| p.state == PortState::Live)?;
        let in_ring = fill_size.saturating_sub(p.fill.free());
        let room = share
            .saturating_sub(in_ring)
            .min(self.ledger.free_count() as u32);
        for _ in 0..room {
            let Some(index) = self.ledger.take_for_fill(i as u16) else {
                break;
            };
            let staged = p
                .fill
                .stage(u64::from(index) * u64::from(self.umem.frame_size));
            debug_assert!(staged.is_ok(), "room was checked");
        }
        p.fill.publish();
        if p.need_wakeup && p.fill.needs_wakeup() {
            if let Err(e) = sys::poke_rx(&p.fd) {
                if !sys::is_transient(&e) {
                    let id = PortId {
                        index: i as u16,
                        generation: slot.generation,
                    };
                    return Some(Err(port_down(id, p, "rx wakeup", e)));
                }
            }
        }
        Some(Ok(()))
    }

    /// Probes every live port with one `recvfrom` and reports the first whose socket
    /// lost its interface (marking it dead). For idle mode, where `receive` is not
    /// called often enough for its own probe: call it from a periodic tick.
    pub fn check_ports(&mut self) -> Result<(), XskError> {
        for (i, slot) in self.ports.iter_mut().enumerate() {
            let Some(p) = slot.port.as_mut().filter(|p| p.state == PortState::Live) else {
                continue;
            };
            if let Err(e) = sys::poke_rx(&p.fd) {
                if !sys::is_transient(&e) {
                    p.state = PortState::Dead;
                    return Err(port_down(
                        PortId {
                            index: i as u16,
                            generation: slot.generation,
                        },
                        p,
                        "probe",
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when no live port has TX in flight (staged, unsent or awaiting completion),
    /// so the worker may block in epoll on the port fds (readable = RX ready) without
    /// stalling TX. Call after `flush`. A port whose link is down can keep this false.
    pub fn wants_poll(&self) -> bool {
        self.ports
            .iter()
            .filter_map(|s| s.port.as_ref())
            .all(|p| p.state == PortState::Dead || p.tx_outstanding == 0)
    }

    /// Kernel statistics of the port's socket.
    pub fn port_stats(&self, id: PortId) -> Result<XskStats, XskError> {
        let p = self.port(id)?;
        let s = sys::xdp_statistics(p.fd.as_raw_fd()).map_err(|source| XskError::Stats {
            ifname: p.ifname.clone(),
            source,
        })?;
        Ok(XskStats {
            rx_dropped: s[0],
            rx_invalid_descs: s[1],
            tx_invalid_descs: s[2],
            rx_ring_full: s[3],
            rx_fill_ring_empty_descs: s[4],
            tx_ring_empty_descs: s[5],
            bogus_descs: p.bogus_descs,
        })
    }
}

/// Publishes, kicks and drains one port's TX. Errors are fatal kick errors.
fn flush_tx(p: &mut Port, ledger: &mut FrameLedger, umem: &Umem, pi: u16) -> Result<(), io::Error> {
    p.tx.publish();
    drain_completions(p, ledger, umem, pi);
    let mut stalled = 0;
    loop {
        let before = p.tx.in_flight();
        if before == 0 || (p.need_wakeup && !p.tx.needs_wakeup()) {
            break;
        }
        // EAGAIN here usually means "sent a batch, more left" (copy mode); progress
        // below decides whether to go on.
        if let Err(e) = sys::kick_tx(&p.fd) {
            if !sys::is_transient(&e) {
                return Err(e);
            }
        }
        drain_completions(p, ledger, umem, pi);
        if p.tx.in_flight() >= before {
            stalled += 1;
            if stalled >= MAX_STALLED_KICKS {
                break;
            }
        } else {
            stalled = 0;
        }
    }
    Ok(())
}

fn drain_completions(p: &mut Port, ledger: &mut FrameLedger, umem: &Umem, pi: u16) {
    let (mut done, mut bogus) = (0, 0);
    p.comp.consume(u32::MAX, |addr| match umem.locate(addr, 0) {
        Some((index, _)) if ledger.completed(index, pi) => done += 1,
        _ => bogus += 1,
    });
    p.tx_outstanding -= done;
    p.bogus_descs += bogus;
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

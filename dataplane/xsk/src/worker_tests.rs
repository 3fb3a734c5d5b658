//! `WorkerIo` against a simulated kernel: ports whose rings live in the heap, and a
//! fake `sendto`/`recvfrom` (see `sys::hooks`). Needs no root.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use super::*;
use crate::pool::Owner;
use crate::port::RingMemory;
use crate::ring::heap::HeapRing;
use crate::ring::{Consumer, Producer};
use crate::sys::hooks;

/// The kernel side of one simulated port.
struct SimKernel {
    fill: Consumer<u64>,
    rx: Producer<XdpDesc>,
    tx: Consumer<XdpDesc>,
    comp: Producer<u64>,
    /// Descriptors "put on the wire", in order.
    sent: Vec<XdpDesc>,
    /// Descriptors taken per kick (copy mode takes 32).
    budget: u32,
    /// errno every kick/poke fails with (ENXIO = interface gone).
    fail_with: Option<i32>,
    kicks: u32,
    pokes: u32,
    mem: [HeapRing; 4],
}

impl SimKernel {
    /// Moves up to `n` fill entries to the RX ring as `len`-byte packets.
    fn deliver(&mut self, n: u32, len: u32) -> u32 {
        let n = n.min(self.rx.free());
        let rx = &mut self.rx;
        let got = self.fill.consume(n, |addr| {
            let addr = (addr & !4095) + u64::from(XDP_PACKET_HEADROOM);
            rx.stage(XdpDesc {
                addr,
                len,
                options: 0,
            })
            .unwrap();
        });
        rx.publish();
        got
    }

    /// Puts an arbitrary descriptor on the RX ring.
    fn raw_rx(&mut self, desc: XdpDesc) {
        self.rx.stage(desc).unwrap();
        self.rx.publish();
    }

    fn kick(&mut self) -> io::Result<()> {
        self.kicks += 1;
        if let Some(errno) = self.fail_with {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let n = self.budget.min(self.comp.free());
        let (sent, comp) = (&mut self.sent, &mut self.comp);
        self.tx.consume(n, |d| {
            sent.push(d);
            comp.stage(d.addr).unwrap();
        });
        comp.publish();
        if self.tx.available(1) > 0 {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        } else {
            Ok(())
        }
    }
}

type Sims = Rc<RefCell<Vec<(RawFd, Rc<RefCell<SimKernel>>)>>>;

/// Routes the fake syscalls of this thread to the simulated kernels in `sims`.
fn install(sims: &Sims) {
    let sims = sims.clone();
    hooks::install(move |call| {
        let (hooks::Call::KickTx(fd) | hooks::Call::PokeRx(fd)) = call;
        let sims = sims.borrow();
        let sim = sims.iter().find(|(f, _)| *f == fd).map(|(_, s)| s)?;
        let mut sim = sim.borrow_mut();
        Some(match call {
            hooks::Call::KickTx(_) => sim.kick(),
            hooks::Call::PokeRx(_) => {
                sim.pokes += 1;
                sim.fail_with
                    .map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
            }
        })
    });
}

impl WorkerIo {
    fn open_sim_port(&mut self, name: &str, sims: &Sims) -> (PortId, Rc<RefCell<SimKernel>>) {
        let cfg = self.cfg;
        let mem = [
            HeapRing::new::<XdpDesc>(cfg.rx_ring),
            HeapRing::new::<XdpDesc>(cfg.tx_ring),
            HeapRing::new::<u64>(cfg.fill_ring),
            HeapRing::new::<u64>(cfg.comp_ring),
        ];
        // SAFETY: each HeapRing is kept alive by both the port (`RingMemory::Heap`) and
        // the sim (`mem`), which outlive the layouts they hold; one user-side and one
        // kernel-side accessor per ring.
        let (port, sim) = unsafe {
            let fd: OwnedFd = File::open("/dev/null").unwrap().into();
            let port = Port {
                ifname: Arc::from(name),
                queue_id: 0,
                rx: Consumer::new(mem[0].layout()),
                tx: Producer::new(mem[1].layout()),
                fill: Producer::new(mem[2].layout()),
                comp: Consumer::new(mem[3].layout()),
                tx_outstanding: 0,
                comp_size: cfg.comp_ring,
                need_wakeup: cfg.need_wakeup,
                state: PortState::Live,
                idle_polls: 0,
                bogus_descs: 0,
                _memory: RingMemory::Heap(mem.clone()),
                fd,
            };
            let sim = SimKernel {
                rx: Producer::new(mem[0].layout()),
                tx: Consumer::new(mem[1].layout()),
                fill: Consumer::new(mem[2].layout()),
                comp: Producer::new(mem[3].layout()),
                sent: Vec::with_capacity(1 << 16),
                budget: 32,
                fail_with: None,
                kicks: 0,
                pokes: 0,
                mem,
            };
            (port, sim)
        };
        // Copy mode: the kernel always wants a sendto for TX.
        sim.mem[1].set_need_wakeup(true);
        let fd = port.fd.as_raw_fd();
        let id = self.insert(port).unwrap();
        let share = self.fill_share();
        self.refill(id.index(), share).unwrap().unwrap();
        let sim = Rc::new(RefCell::new(sim));
        sims.borrow_mut().push((fd, sim.clone()));
        (id, sim)
    }

    fn count(&self, owner: Owner) -> usize {
        self.ledger.count(owner)
    }

    /// Frames in any state; must always equal `frame_count`.
    fn accounted(&self) -> usize {
        let ports = self.ports.len() as u16;
        self.ledger.free_count()
            + self.count(Owner::User)
            + (0..ports)
                .map(|p| self.count(Owner::Fill(p)) + self.count(Owner::Tx(p)))
                .sum::<usize>()
    }
}

fn small() -> XskConfig {
    XskConfig {
        frame_count: 64,
        rx_ring: 16,
        tx_ring: 16,
        fill_ring: 16,
        comp_ring: 16,
        hugepages: false,
        ..Default::default()
    }
}

fn setup(cfg: XskConfig) -> (WorkerIo, Sims) {
    let io = WorkerIo::new(&cfg).unwrap();
    let sims = Sims::default();
    install(&sims);
    (io, sims)
}

#[test]
fn frames_received_on_a_are_sent_on_b_and_come_back_to_the_pool() {
    let (mut io, sims) = setup(small());
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    assert_eq!(io.count(Owner::Fill(a.index)), 16);
    assert_eq!(io.free_frames(), 64 - 32);

    assert_eq!(sim_a.borrow_mut().deliver(10, 60), 10);
    let mut batch = Vec::with_capacity(32);
    assert_eq!(io.receive(a, &mut batch, 32).unwrap(), 10);
    let mut addrs = vec![];
    for (i, mut frame) in batch.drain(..).enumerate() {
        assert_eq!(
            (frame.len(), frame.headroom(), frame.capacity()),
            (60, 256, 4096 - 256)
        );
        let buf = io.buffer_mut(&mut frame);
        assert_eq!(buf.len(), 4096 - 256);
        buf[..4].copy_from_slice(&(i as u32).to_be_bytes());
        frame.set_len(64);
        addrs.push(frame.addr());
        io.transmit(b, frame).unwrap();
    }
    assert!(
        sim_b.borrow().sent.is_empty(),
        "nothing visible before flush"
    );
    io.flush().unwrap();
    let sent: Vec<_> = sim_b
        .borrow()
        .sent
        .iter()
        .map(|d| (d.addr, d.len))
        .collect();
    assert_eq!(sent, addrs.iter().map(|&a| (a, 64)).collect::<Vec<_>>());
    assert!(io.wants_poll());
    // Completed frames went back to the pool and refilled A's fill ring.
    assert_eq!(io.count(Owner::Fill(a.index)), 16);
    assert_eq!(io.count(Owner::Tx(b.index)), 0);
    assert_eq!(io.accounted(), 64);
}

#[test]
fn transmit_gives_the_frame_back_when_the_ring_is_full() {
    let (mut io, sims) = setup(XskConfig {
        tx_ring: 8,
        ..small()
    });
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    for _ in 0..8 {
        let f = io_alloc(&mut io);
        io.transmit(b, f).unwrap();
    }
    let extra = io.alloc_frame().unwrap();
    let extra = io.transmit(b, extra).unwrap_err();
    assert!(!io.wants_poll());
    io.flush().unwrap();
    assert_eq!(sim_b.borrow().sent.len(), 8);
    io.transmit(b, extra).unwrap();
    io.flush().unwrap();
    assert_eq!(io.accounted(), 64);
}

fn io_alloc(io: &mut WorkerIo) -> Frame {
    io.alloc_frame().expect("pool empty")
}

#[test]
fn outstanding_tx_never_exceeds_the_completion_ring() {
    let (mut io, sims) = setup(XskConfig {
        comp_ring: 8,
        ..small()
    });
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    sim_b.borrow_mut().budget = 0; // the kernel sends nothing yet
    for _ in 0..8 {
        let f = io_alloc(&mut io);
        io.transmit(b, f).unwrap();
    }
    let f = io.alloc_frame().unwrap();
    let f = io.transmit(b, f).unwrap_err();
    io.release(f);
    io.flush().unwrap(); // gives up after two kicks without progress
    assert_eq!(sim_b.borrow().kicks, 2);
    assert!(!io.wants_poll());
    sim_b.borrow_mut().budget = 32;
    io.flush().unwrap();
    assert!(io.wants_poll());
    assert_eq!(io.accounted(), 64);
}

#[test]
fn flush_keeps_kicking_until_the_tx_ring_is_drained() {
    let cfg = XskConfig {
        frame_count: 512,
        tx_ring: 256,
        comp_ring: 256,
        ..small()
    };
    let (mut io, sims) = setup(cfg);
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    for _ in 0..200 {
        let f = io_alloc(&mut io);
        io.transmit(b, f).unwrap();
    }
    io.flush().unwrap();
    let sim = sim_b.borrow();
    assert_eq!(sim.sent.len(), 200);
    assert_eq!(sim.kicks, 7, "32 per kick");
    assert!(io.wants_poll());
    assert_eq!(io.free_frames(), 512 - 16);
}

#[test]
fn bogus_kernel_descriptors_never_become_tokens() {
    let (mut io, sims) = setup(small());
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    let (_b, _sim_b) = io.open_sim_port("simB", &sims);
    // A frame on B's fill ring, one outside the UMEM, one whose length overruns its chunk.
    let b_frame = 16 * 4096 + 256; // B's fill got frames 16..32
    for desc in [
        XdpDesc {
            addr: b_frame,
            len: 60,
            options: 0,
        },
        XdpDesc {
            addr: 64 * 4096 + 256,
            len: 60,
            options: 0,
        },
        XdpDesc {
            addr: 256,
            len: 4000,
            options: 0,
        },
    ] {
        sim_a.borrow_mut().raw_rx(desc);
    }
    sim_a.borrow_mut().deliver(1, 60);
    let mut batch = Vec::with_capacity(8);
    assert_eq!(io.receive(a, &mut batch, 8).unwrap(), 1);
    let a_port = io.port(a).unwrap();
    assert_eq!(a_port.bogus_descs, 3);
    for f in batch.drain(..) {
        io.release(f);
    }
    assert_eq!(io.accounted(), 64);
}

#[test]
fn a_vanished_interface_is_named_and_other_ports_keep_working() {
    let (mut io, sims) = setup(small());
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    sim_a.borrow_mut().fail_with = Some(libc::ENXIO);
    for _ in 0..3 {
        let f = io_alloc(&mut io);
        io.transmit(a, f).unwrap();
        let f = io_alloc(&mut io);
        io.transmit(b, f).unwrap();
    }
    let err = io.flush().unwrap_err();
    assert!(
        matches!(&err, XskError::PortDown { ifname, port, .. } if &**ifname == "simA" && *port == a),
        "{err}"
    );
    assert!(err.to_string().contains("simA"), "{err}");
    assert_eq!(sim_b.borrow().sent.len(), 3);
    io.flush().unwrap();
    let mut batch = Vec::with_capacity(8);
    assert!(matches!(
        io.receive(a, &mut batch, 8),
        Err(XskError::PortDown { .. })
    ));
    let f = io.alloc_frame().unwrap();
    let f = io.transmit(a, f).unwrap_err();
    io.release(f);
    // B still forwards.
    sim_b.borrow_mut().deliver(2, 60);
    assert_eq!(io.receive(b, &mut batch, 8).unwrap(), 2);
    for f in batch.drain(..) {
        io.transmit(b, f).unwrap();
    }
    io.flush().unwrap();
    assert_eq!(sim_b.borrow().sent.len(), 5);
    // Closing A takes back its fill ring and its unsent frames.
    io.close_port(a);
    assert_eq!(
        io.count(Owner::Fill(a.index)) + io.count(Owner::Tx(a.index)),
        0
    );
    assert_eq!(io.accounted(), 64);
    assert!(matches!(
        io.receive(a, &mut batch, 8),
        Err(XskError::UnknownPort(_))
    ));
}

#[test]
fn two_dead_ports_are_both_reported() {
    let (mut io, sims) = setup(small());
    let (_a, sim_a) = io.open_sim_port("simA", &sims);
    let (_b, sim_b) = io.open_sim_port("simB", &sims);
    let (a, b) = (_a, _b);
    for (p, s) in [(a, &sim_a), (b, &sim_b)] {
        s.borrow_mut().fail_with = Some(libc::ENXIO);
        let f = io_alloc(&mut io);
        io.transmit(p, f).unwrap();
    }
    let first = io.flush().unwrap_err().port().unwrap();
    let second = io.flush().unwrap_err().port().unwrap();
    assert_eq!((first, second), (a, b));
    io.flush().unwrap();
}

#[test]
fn idle_receive_probes_and_reports_a_vanished_interface() {
    let (mut io, sims) = setup(small());
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    let mut batch = Vec::new();
    for _ in 0..PROBE_EVERY - 1 {
        assert_eq!(io.receive(a, &mut batch, 8).unwrap(), 0);
    }
    sim_a.borrow_mut().fail_with = Some(libc::ENXIO);
    let err = io.receive(a, &mut batch, 8).unwrap_err();
    assert!(
        matches!(err, XskError::PortDown { op: "rx probe", .. }),
        "{err}"
    );
    assert_eq!(sim_a.borrow().pokes, 1);
}

#[test]
fn check_ports_reports_a_dead_port() {
    let (mut io, sims) = setup(small());
    let (_a, _sim_a) = io.open_sim_port("simA", &sims);
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    io.check_ports().unwrap();
    sim_b.borrow_mut().fail_with = Some(libc::ENXIO);
    assert_eq!(io.check_ports().unwrap_err().port(), Some(b));
    io.check_ports().unwrap();
}

#[test]
fn fill_need_wakeup_pokes_rx_only_when_asked() {
    let (mut io, sims) = setup(small());
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    sim_a.borrow_mut().deliver(4, 60);
    let mut batch = Vec::with_capacity(8);
    io.receive(a, &mut batch, 8).unwrap();
    for f in batch.drain(..) {
        io.release(f);
    }
    io.flush().unwrap();
    assert_eq!(sim_a.borrow().pokes, 0);
    sim_a.borrow().mem[2].set_need_wakeup(true);
    io.flush().unwrap();
    assert_eq!(sim_a.borrow().pokes, 1);
}

#[test]
fn closed_port_ids_are_not_reused() {
    let (mut io, sims) = setup(small());
    let (a, _s) = io.open_sim_port("simA", &sims);
    io.close_port(a);
    let (a2, _s2) = io.open_sim_port("simA2", &sims);
    assert_eq!(a.index(), a2.index());
    assert_ne!(a, a2);
    assert_eq!(io.port_fd(a), -1);
    assert_eq!(io.port_ifname(a2).unwrap(), "simA2");
}

#[test]
#[should_panic(expected = "does not belong")]
fn a_frame_cannot_cross_umems() {
    let mut one = WorkerIo::new(&small()).unwrap();
    let mut two = WorkerIo::new(&small()).unwrap();
    let f = one.alloc_frame().unwrap();
    two.release(f);
}

#[test]
fn hugepage_request_falls_back_when_none_are_reserved() {
    // Uses whatever the machine has: either way the UMEM works.
    let io = WorkerIo::new(&XskConfig {
        hugepages: true,
        ..small()
    })
    .unwrap();
    let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
    if reserved.trim() == "0" {
        assert!(!io.uses_hugepages());
    }
}

// Steady-state allocation check: a counting allocator that counts per thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a
// thread-local `Cell` with const initialisation, so counting never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_steady_state_loop_allocates_nothing() {
    let (mut io, sims) = setup(XskConfig {
        frame_count: 256,
        rx_ring: 64,
        tx_ring: 64,
        fill_ring: 64,
        comp_ring: 64,
        ..small()
    });
    let (a, sim_a) = io.open_sim_port("simA", &sims);
    let (b, sim_b) = io.open_sim_port("simB", &sims);
    let mut batch = Vec::with_capacity(64);
    let mut round = |io: &mut WorkerIo| {
        sim_a.borrow_mut().deliver(32, 100);
        sim_b.borrow_mut().sent.clear();
        io.receive(a, &mut batch, 64).unwrap();
        for mut f in batch.drain(..) {
            io.buffer_mut(&mut f)[0] ^= 1;
            if let Err(f) = io.transmit(b, f) {
                io.release(f);
            }
        }
        io.flush().unwrap();
    };
    round(&mut io);
    let before = ALLOCS.with(Cell::get);
    for _ in 0..1000 {
        round(&mut io);
    }
    assert_eq!(ALLOCS.with(Cell::get) - before, 0);
    assert_eq!(io.accounted(), 256);
    assert_eq!(
        sim_b.borrow().sent.len(),
        32,
        "the last round forwarded everything"
    );
}

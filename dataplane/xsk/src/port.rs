//! One AF_XDP socket bound to a device queue, with its four rings.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::config::{BindMode, XskConfig};
use crate::error::XskError;
use crate::ring::{Consumer, Producer, RingLayout, XdpDesc};
use crate::sys::{self, Mapping, RingOffsets};
use crate::umem::Umem;

/// Whether the port can still move packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortState {
    Live,
    /// The socket lost its device; reported once, then only `close_port` helps.
    Dead,
}

/// The memory behind a port's rings.
#[derive(Debug)]
pub(crate) enum RingMemory {
    /// rx, tx, fill, completion mappings of the socket.
    Mapped(#[allow(dead_code)] [Mapping; 4]),
    /// Test-only heap rings shared with a simulated kernel.
    #[cfg(test)]
    Heap(#[allow(dead_code)] [crate::ring::heap::HeapRing; 4]),
}

#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) ifname: Arc<str>,
    pub(crate) queue_id: u32,
    pub(crate) rx: Consumer<XdpDesc>,
    pub(crate) tx: Producer<XdpDesc>,
    pub(crate) fill: Producer<u64>,
    pub(crate) comp: Consumer<u64>,
    /// Frames staged, on the TX ring or awaiting completion; kept <= `comp_size` so the
    /// completion ring can always take every completion and TX never stalls on it.
    pub(crate) tx_outstanding: u32,
    pub(crate) comp_size: u32,
    pub(crate) need_wakeup: bool,
    pub(crate) state: PortState,
    /// Consecutive empty `receive` calls, for the liveness probe.
    pub(crate) idle_polls: u32,
    /// Descriptors from the kernel that named frames this port did not own (dropped).
    pub(crate) bogus_descs: u64,
    // Field order matters for drop: rings (plain pointers) above, then the ring
    // memory, then the socket.
    pub(crate) _memory: RingMemory,
    pub(crate) fd: OwnedFd,
}

fn ring_len<T>(offsets: RingOffsets, size: u32) -> usize {
    offsets.desc + size as usize * std::mem::size_of::<T>()
}

impl Port {
    /// Creates, sizes, maps and binds a socket on `ifname`/`queue_id` using `umem`.
    /// `shared_with` is a bound socket of the same UMEM, or `None` to register the UMEM
    /// on this socket. Never attaches an XDP program.
    pub(crate) fn open(
        cfg: &XskConfig,
        umem: &Umem,
        ifname: &str,
        queue_id: u32,
        shared_with: Option<RawFd>,
    ) -> Result<Self, XskError> {
        let name: Arc<str> = Arc::from(ifname);
        let fail = |step: &'static str| {
            let name = name.clone();
            move |source: io::Error| XskError::PortSetup {
                ifname: name,
                queue_id,
                step,
                source,
            }
        };
        let cname = CString::new(ifname).map_err(|_| XskError::NoSuchInterface {
            ifname: name.clone(),
        })?;
        let ifindex = sys::if_nametoindex(&cname).ok_or_else(|| XskError::NoSuchInterface {
            ifname: name.clone(),
        })?;

        let fd = sys::xdp_socket().map_err(|source| match source.raw_os_error() {
            Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => {
                XskError::AfXdpUnsupported { source }
            }
            _ => fail("socket(AF_XDP)")(source),
        })?;
        let raw = fd.as_raw_fd();

        if shared_with.is_none() {
            sys::register_umem(raw, umem.mapping(), umem.len(), umem.frame_size)
                .map_err(fail("register UMEM"))?;
        }
        // A socket sharing the UMEM on another device/queue gets its own fill and
        // completion rings (the kernel requires them, xsk_bind); the first socket's pair
        // is created the same way.
        sys::set_ring_size(raw, libc::XDP_UMEM_FILL_RING, cfg.fill_ring)
            .map_err(fail("size fill ring"))?;
        sys::set_ring_size(raw, libc::XDP_UMEM_COMPLETION_RING, cfg.comp_ring)
            .map_err(fail("size completion ring"))?;
        sys::set_ring_size(raw, libc::XDP_RX_RING, cfg.rx_ring).map_err(fail("size rx ring"))?;
        sys::set_ring_size(raw, libc::XDP_TX_RING, cfg.tx_ring).map_err(fail("size tx ring"))?;

        let off = sys::mmap_offsets(raw).map_err(fail("get mmap offsets"))?;
        let rx_map = sys::mmap_ring(
            raw,
            ring_len::<XdpDesc>(off.rx, cfg.rx_ring),
            libc::XDP_PGOFF_RX_RING as u64,
        )
        .map_err(fail("mmap rx ring"))?;
        let tx_map = sys::mmap_ring(
            raw,
            ring_len::<XdpDesc>(off.tx, cfg.tx_ring),
            libc::XDP_PGOFF_TX_RING as u64,
        )
        .map_err(fail("mmap tx ring"))?;
        let fill_map = sys::mmap_ring(
            raw,
            ring_len::<u64>(off.fill, cfg.fill_ring),
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )
        .map_err(fail("mmap fill ring"))?;
        let comp_map = sys::mmap_ring(
            raw,
            ring_len::<u64>(off.comp, cfg.comp_ring),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )
        .map_err(fail("mmap completion ring"))?;

        // A shared bind may not carry mode flags: it inherits copy/zero-copy and
        // need_wakeup from the UMEM's first socket (kernel xsk_bind).
        let flags = match shared_with {
            Some(_) => libc::XDP_SHARED_UMEM,
            None => {
                let mode = match cfg.bind_mode {
                    BindMode::Auto => 0,
                    BindMode::Copy => libc::XDP_COPY,
                    BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                };
                mode | if cfg.need_wakeup {
                    libc::XDP_USE_NEED_WAKEUP
                } else {
                    0
                }
            }
        };
        sys::bind_xdp(raw, ifindex, queue_id, flags, shared_with).map_err(fail("bind"))?;

        // SAFETY: (all four) each mapping was created above for exactly this ring of
        // `fd`, with the kernel's offsets and the size we set, so producer, consumer,
        // flags (u32, 4-aligned) and the slot array lie inside it; the mappings move into
        // `_memory` of the returned Port, which drops them only after the rings (field
        // order), and the port is the single user-side accessor of each ring.
        let (rx, tx, fill, comp) = unsafe {
            (
                RingLayout::new(rx_map.addr(), off.rx, cfg.rx_ring),
                RingLayout::new(tx_map.addr(), off.tx, cfg.tx_ring),
                RingLayout::new(fill_map.addr(), off.fill, cfg.fill_ring),
                RingLayout::new(comp_map.addr(), off.comp, cfg.comp_ring),
            )
        };
        Ok(Self {
            ifname: name,
            queue_id,
            rx: Consumer::new(rx),
            tx: Producer::new(tx),
            fill: Producer::new(fill),
            comp: Consumer::new(comp),
            tx_outstanding: 0,
            comp_size: cfg.comp_ring,
            need_wakeup: cfg.need_wakeup,
            state: PortState::Live,
            idle_polls: 0,
            bogus_descs: 0,
            _memory: RingMemory::Mapped([rx_map, tx_map, fill_map, comp_map]),
            fd,
        })
    }
}

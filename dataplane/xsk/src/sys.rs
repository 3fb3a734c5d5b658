//! Every syscall this crate makes. Nothing else in the crate calls libc.
//!
//! The hot-path calls (`kick_tx`, `poke_rx`) go through [`hooks`] in test builds, so
//! unit tests can replace the kernel (the idea of aya's `sys/fake.rs`).

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

/// Size of a 2 MiB hugepage; hugepage mappings are rounded up to it.
pub(crate) const HUGEPAGE: usize = 2 << 20;

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is plain process memory with no thread affinity; it is only an
// address range plus the duty to unmap it, which any thread may do.
unsafe impl Send for Mapping {}

impl Mapping {
    pub(crate) fn addr(&self) -> NonNull<u8> {
        self.addr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly what a successful `mmap` returned (the only
        // constructors are `mmap_anonymous` and `mmap_ring`), and `Mapping` is not Clone,
        // so this is the single unmap. Borrows of the memory cannot outlive the owner
        // (the UMEM or the port), which drops this last.
        let rc = unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
        if rc != 0 {
            tracing::error!(error = %io::Error::last_os_error(), "munmap failed");
        }
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Anonymous shared mapping for the UMEM, optionally on 2 MiB hugepages.
pub(crate) fn mmap_anonymous(len: usize, hugepages: bool) -> io::Result<Mapping> {
    let mut flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    if hugepages {
        // MAP_HUGETLB reserves the pages at mmap time, so a shortage is ENOMEM here
        // rather than SIGBUS on first touch.
        flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    }
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    mapped(addr, len)
}

/// Maps one of an AF_XDP socket's rings (`pgoff` is one of the `XDP_*PGOFF*` constants).
pub(crate) fn mmap_ring(fd: RawFd, len: usize, pgoff: u64) -> io::Result<Mapping> {
    // SAFETY: maps kernel-provided ring memory of `fd` at a kernel-chosen address; the
    // offset selects which ring and the kernel checks `len` against the ring size.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff as libc::off_t,
        )
    };
    mapped(addr, len)
}

fn mapped(addr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let addr =
        NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
    Ok(Mapping { addr, len })
}

/// `socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)`.
pub(crate) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and the length passed is its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

fn getsockopt<T: Default>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, which is a live `T`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    if len as usize != mem::size_of::<T>() {
        return Err(io::Error::other(
            "kernel returned an unexpected option size",
        ));
    }
    Ok(value)
}

/// Registers the first `len` bytes of `umem` (page-aligned, `frame_size` chunks) with the socket.
pub(crate) fn register_umem(
    fd: RawFd,
    umem: &Mapping,
    len: usize,
    frame_size: u32,
) -> io::Result<()> {
    assert!(len <= umem.len());
    let reg = libc::xdp_umem_reg {
        addr: umem.addr().as_ptr() as u64,
        len: len as u64,
        chunk_size: frame_size,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, libc::XDP_UMEM_REG, &reg)
}

/// Sets one ring size (`XDP_RX_RING`, `XDP_TX_RING`, `XDP_UMEM_FILL_RING`, ...).
pub(crate) fn set_ring_size(fd: RawFd, ring: libc::c_int, entries: u32) -> io::Result<()> {
    setsockopt(fd, ring, &entries)
}

/// Where producer, consumer, flags and descriptors sit inside each ring mapping.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MmapOffsets {
    pub(crate) rx: RingOffsets,
    pub(crate) tx: RingOffsets,
    pub(crate) fill: RingOffsets,
    pub(crate) comp: RingOffsets,
}

/// Byte offsets of one ring's fields inside its mapping.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RingOffsets {
    pub(crate) producer: usize,
    pub(crate) consumer: usize,
    pub(crate) desc: usize,
    pub(crate) flags: usize,
}

#[derive(Default)]
#[repr(C)]
struct RawOffsets([u64; 16]);

pub(crate) fn mmap_offsets(fd: RawFd) -> io::Result<MmapOffsets> {
    // `struct xdp_mmap_offsets` is four `xdp_ring_offset {producer, consumer, desc,
    // flags}`, all u64; the v1 layout without flags is older than need_wakeup (5.4).
    let raw: RawOffsets = getsockopt(fd, libc::XDP_MMAP_OFFSETS)?;
    let ring = |i: usize| RingOffsets {
        producer: raw.0[i * 4] as usize,
        consumer: raw.0[i * 4 + 1] as usize,
        desc: raw.0[i * 4 + 2] as usize,
        flags: raw.0[i * 4 + 3] as usize,
    };
    Ok(MmapOffsets {
        rx: ring(0),
        tx: ring(1),
        fill: ring(2),
        comp: ring(3),
    })
}

/// `bind()` to a device queue. `shared_umem_fd` is a bound socket of the same UMEM.
pub(crate) fn bind_xdp(
    fd: RawFd,
    ifindex: u32,
    queue_id: u32,
    flags: u16,
    shared_umem_fd: Option<RawFd>,
) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue_id,
        sxdp_shared_umem_fd: shared_umem_fd.map_or(0, |fd| fd as u32),
    };
    // SAFETY: `addr` is a live sockaddr_xdp and the length passed is its size.
    check(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_xdp).cast(),
            mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })
}

/// Kernel per-socket counters (`struct xdp_statistics`).
pub(crate) fn xdp_statistics(fd: RawFd) -> io::Result<[u64; 6]> {
    #[derive(Default)]
    #[repr(C)]
    struct Raw([u64; 6]);
    let raw: Raw = getsockopt(fd, libc::XDP_STATISTICS)?;
    Ok(raw.0)
}

/// Interface index of `name` in the calling thread's network namespace.
pub(crate) fn if_nametoindex(name: &CStr) -> Option<u32> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: makes the kernel process the TX ring. In copy
/// mode this is where frames are sent, a bounded batch (32) per call.
pub(crate) fn kick_tx(fd: &OwnedFd) -> io::Result<()> {
    #[cfg(test)]
    if let Some(result) = hooks::call(hooks::Call::KickTx(fd.as_raw_fd())) {
        return result;
    }
    // SAFETY: zero-length send with no buffer and no address; only the fd is used.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null(),
            0,
        )
    };
    check(rc as libc::c_int)
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: wakes the driver's RX (need_wakeup on the
/// fill ring) and, as a side effect, reports ENXIO once the socket lost its device.
pub(crate) fn poke_rx(fd: &OwnedFd) -> io::Result<()> {
    #[cfg(test)]
    if let Some(result) = hooks::call(hooks::Call::PokeRx(fd.as_raw_fd())) {
        return result;
    }
    // SAFETY: zero-length receive into no buffer; only the fd is used.
    let rc = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    check(rc as libc::c_int)
}

/// Whether a kick/poke error only means "not now" (the kernel was busy, out of skbs,
/// or the link is administratively down) rather than "this socket is finished".
pub(crate) fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR)
    )
}

/// Test-only replacement of the hot-path syscalls.
#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::RawFd;

    /// A call the fake may answer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Call {
        KickTx(RawFd),
        PokeRx(RawFd),
    }

    type Hook = Box<dyn FnMut(Call) -> Option<io::Result<()>>>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Installs `hook` for the current thread; returning `None` falls through to the real syscall.
    pub(crate) fn install(hook: impl FnMut(Call) -> Option<io::Result<()>> + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(super) fn call(call: Call) -> Option<io::Result<()>> {
        HOOK.with(|h| h.borrow_mut().as_mut().and_then(|f| f(call)))
    }
}

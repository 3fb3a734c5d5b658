//! The UMEM: one memory region of equal chunks, shared by all of a worker's ports.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::XskConfig;
use crate::error::XskError;
use crate::frame::Frame;
use crate::sys::{self, Mapping};

/// Kernel headroom in front of every received packet (`XDP_PACKET_HEADROOM`).
pub(crate) const XDP_PACKET_HEADROOM: u32 = 256;

/// Source of UMEM identities, so a `Frame` can be matched to its UMEM.
static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

#[derive(Debug)]
pub(crate) struct Umem {
    mem: Mapping,
    /// Registered bytes (`frame_count * frame_size`; the mapping may be rounded up).
    len: usize,
    pub(crate) frame_size: u32,
    pub(crate) frame_count: u32,
    pub(crate) hugepages: bool,
    pub(crate) id: u32,
}

impl Umem {
    pub(crate) fn new(cfg: &XskConfig) -> Result<Self, XskError> {
        let len = cfg.frame_count as usize * cfg.frame_size as usize;
        let mut hugepages = false;
        let mut mem = None;
        if cfg.hugepages {
            let rounded = len.div_ceil(sys::HUGEPAGE) * sys::HUGEPAGE;
            match sys::mmap_anonymous(rounded, true) {
                Ok(m) => {
                    hugepages = true;
                    mem = Some(m);
                }
                Err(error) => tracing::warn!(
                    bytes = rounded,
                    %error,
                    "no 2 MiB hugepages for the UMEM (see /proc/sys/vm/nr_hugepages); using normal pages"
                ),
            }
        }
        let mem = match mem {
            Some(m) => m,
            None => sys::mmap_anonymous(len, false)
                .map_err(|source| XskError::Umem { bytes: len, source })?,
        };
        let id = NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed);
        assert_ne!(id, 0, "UMEM id space exhausted");
        Ok(Self {
            mem,
            len,
            frame_size: cfg.frame_size,
            frame_count: cfg.frame_count,
            hugepages,
            id,
        })
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mem
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A token for chunk `index`, packet starting at `head`.
    pub(crate) fn token(&self, index: u32, head: u32, len: u32) -> Frame {
        Frame {
            umem: self.id,
            index,
            head,
            len,
            size: self.frame_size,
        }
    }

    /// Splits a descriptor address into (chunk index, offset in chunk), checking that
    /// `len` bytes from it stay inside the chunk.
    pub(crate) fn locate(&self, addr: u64, len: u32) -> Option<(u32, u32)> {
        let size = u64::from(self.frame_size);
        let index = addr / size;
        let head = addr % size;
        (index < u64::from(self.frame_count) && head + u64::from(len) <= size)
            .then_some((index as u32, head as u32))
    }

    /// Panics unless `frame` was minted by this UMEM.
    pub(crate) fn check_owner(&self, frame: &Frame) {
        assert_eq!(
            frame.umem, self.id,
            "Frame used with a WorkerIo (UMEM) it does not belong to"
        );
    }

    /// The chunk bytes of `frame` from its packet start to the chunk end.
    pub(crate) fn bytes_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        self.check_owner(frame);
        let start = frame.addr() as usize;
        let cap = frame.capacity();
        debug_assert!(start + cap <= self.len);
        // SAFETY: in bounds: `frame` was minted by this UMEM (checked above) with
        // index < frame_count and head <= frame_size (`locate`, `token`, `push_head`,
        // `pull_head` keep that), so [start, start + cap) lies in chunk `index` inside the
        // mapping, which lives as long as `self` (the returned borrow is tied to it).
        // Exclusive: the ledger mints at most one token per chunk and the token is not
        // Clone, so the `&mut Frame` borrowed here is the only access path to this chunk in
        // user space; the kernel does not touch a chunk while the user owns it (it is on no
        // fill or TX ring, see pool.rs). Different frames are disjoint chunks.
        unsafe { std::slice::from_raw_parts_mut(self.mem.addr().as_ptr().add(start), cap) }
    }

    /// The valid packet bytes of `frame`.
    pub(crate) fn bytes<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.check_owner(frame);
        let start = frame.addr() as usize;
        // SAFETY: bounds as in `bytes_mut` (len <= capacity is kept by `set_len` and the
        // RX length check in `locate`); shared access only, and no `&mut` to the chunk can
        // exist while `frame` is borrowed shared.
        unsafe { std::slice::from_raw_parts(self.mem.addr().as_ptr().add(start), frame.len()) }
    }
}

//! The frame token.

/// One UMEM frame, owned by the caller.
///
/// Not `Clone` or `Copy`: a frame comes only from [`WorkerIo::receive`] or
/// [`WorkerIo::alloc_frame`] and leaves only through [`WorkerIo::transmit`] or
/// [`WorkerIo::release`], so at most one token exists per frame and the bytes are reachable
/// only as a borrow of it ([`WorkerIo::buffer_mut`]). A token belongs to the `WorkerIo`
/// (UMEM) that produced it; passing it to another one panics. Dropping a token instead of
/// releasing it leaks the frame from the pool until the `WorkerIo` is dropped.
///
/// [`WorkerIo::receive`]: crate::WorkerIo::receive
/// [`WorkerIo::alloc_frame`]: crate::WorkerIo::alloc_frame
/// [`WorkerIo::transmit`]: crate::WorkerIo::transmit
/// [`WorkerIo::release`]: crate::WorkerIo::release
/// [`WorkerIo::buffer_mut`]: crate::WorkerIo::buffer_mut
#[derive(Debug, PartialEq, Eq)]
#[must_use = "release or transmit a Frame; dropping it leaks the UMEM frame"]
pub struct Frame {
    /// Which UMEM (WorkerIo) this frame belongs to.
    pub(crate) umem: u32,
    /// Chunk index in the UMEM.
    pub(crate) index: u32,
    /// Offset of the first packet byte inside the chunk.
    pub(crate) head: u32,
    /// Valid packet bytes from `head`.
    pub(crate) len: u32,
    /// Chunk size.
    pub(crate) size: u32,
}

impl Frame {
    /// Valid packet bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame holds no packet bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes from the packet start to the end of the chunk (the length of
    /// [`WorkerIo::buffer_mut`](crate::WorkerIo::buffer_mut)).
    pub fn capacity(&self) -> usize {
        (self.size - self.head) as usize
    }

    /// Free bytes in front of the packet, usable with [`Frame::push_head`].
    pub fn headroom(&self) -> usize {
        self.head as usize
    }

    /// Sets the number of valid bytes.
    ///
    /// # Panics
    ///
    /// If `len > self.capacity()`: lengths come from the buffer the pipeline was given,
    /// so a larger one is a bug.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "frame length {len} exceeds capacity {}",
            self.capacity()
        );
        self.len = len as u32;
    }

    /// Grows the packet at the front by `n` bytes (for encapsulation); false if the
    /// headroom is too small. The new bytes are whatever the chunk held.
    #[must_use]
    pub fn push_head(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.head => {
                self.head -= n;
                self.len += n;
                true
            }
            _ => false,
        }
    }

    /// Drops `n` bytes from the front (for decapsulation); false if `n > len`.
    #[must_use]
    pub fn pull_head(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.len => {
                self.head += n;
                self.len -= n;
                true
            }
            _ => false,
        }
    }

    /// UMEM offset of the first packet byte (what a descriptor carries).
    pub(crate) fn addr(&self) -> u64 {
        u64::from(self.index) * u64::from(self.size) + u64::from(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            umem: 1,
            index: 3,
            head: 256,
            len: 60,
            size: 4096,
        }
    }

    #[test]
    fn head_moves_keep_the_tail_in_place() {
        let mut f = frame();
        assert_eq!(f.addr(), 3 * 4096 + 256);
        assert!(f.push_head(50));
        assert_eq!((f.headroom(), f.len(), f.capacity()), (206, 110, 3890));
        assert!(!f.push_head(207));
        assert!(f.pull_head(110));
        assert!(f.is_empty());
        assert!(!f.pull_head(1));
    }

    #[test]
    #[should_panic(expected = "exceeds capacity")]
    fn set_len_beyond_chunk_panics() {
        frame().set_len(4096 - 255);
    }
}

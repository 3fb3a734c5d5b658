//! Who owns each UMEM frame: the worker's free pool, the user (a `Frame` token), or a
//! port's fill or TX path in the kernel. Pure bookkeeping, no memory access.
//!
//! Every frame is in exactly one state, and every transition checks the state it leaves.
//! That makes the token rules checkable: a descriptor the kernel hands back is accepted
//! only if that port's fill (for RX) or TX (for completion) path owned that frame, so a
//! bogus or duplicated descriptor can never mint a second token for a frame.

/// Owner of one frame. `u16` is the port's slot index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// In the worker's free pool.
    Free,
    /// Held by the caller as a `Frame` token.
    User,
    /// On a port's fill ring or in the kernel waiting for a packet.
    Fill(u16),
    /// Staged or on a port's TX ring, or sent and waiting for completion.
    Tx(u16),
}

/// Ownership of every frame plus the free stack.
#[derive(Debug)]
pub(crate) struct FrameLedger {
    owner: Vec<Owner>,
    /// Free frame indices; LIFO so recently used (cache-warm) frames go out first.
    free: Vec<u32>,
}

impl FrameLedger {
    pub(crate) fn new(count: u32) -> Self {
        Self {
            owner: vec![Owner::Free; count as usize],
            free: (0..count).rev().collect(),
        }
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    fn take(&mut self, to: Owner) -> Option<u32> {
        let index = self.free.pop()?;
        debug_assert_eq!(self.owner[index as usize], Owner::Free);
        self.owner[index as usize] = to;
        Some(index)
    }

    /// Pool -> fill ring of `port`.
    pub(crate) fn take_for_fill(&mut self, port: u16) -> Option<u32> {
        self.take(Owner::Fill(port))
    }

    /// Pool -> caller (a fresh token).
    pub(crate) fn take_for_user(&mut self) -> Option<u32> {
        self.take(Owner::User)
    }

    fn transition(&mut self, index: u32, from: Owner, to: Owner) -> bool {
        match self.owner.get_mut(index as usize) {
            Some(owner) if *owner == from => {
                *owner = to;
                true
            }
            _ => false,
        }
    }

    /// RX on `port` handed the frame back: fill -> caller. False if the kernel
    /// returned a frame that port's fill ring did not own.
    #[must_use]
    pub(crate) fn received(&mut self, index: u32, port: u16) -> bool {
        self.transition(index, Owner::Fill(port), Owner::User)
    }

    /// Caller -> TX of `port`.
    #[must_use]
    pub(crate) fn queued_tx(&mut self, index: u32, port: u16) -> bool {
        self.transition(index, Owner::User, Owner::Tx(port))
    }

    /// TX of `port` completed: -> pool. False if that port was not sending it.
    #[must_use]
    pub(crate) fn completed(&mut self, index: u32, port: u16) -> bool {
        let ok = self.transition(index, Owner::Tx(port), Owner::Free);
        if ok {
            self.free.push(index);
        }
        ok
    }

    /// Caller gave the token back: -> pool.
    #[must_use]
    pub(crate) fn released(&mut self, index: u32) -> bool {
        let ok = self.transition(index, Owner::User, Owner::Free);
        if ok {
            self.free.push(index);
        }
        ok
    }

    /// Takes back every frame `port`'s fill or TX path held. Only sound once the
    /// kernel can no longer touch them (socket closed or unbound).
    pub(crate) fn reclaim(&mut self, port: u16) -> u32 {
        let mut n = 0;
        for (index, owner) in self.owner.iter_mut().enumerate() {
            if matches!(*owner, Owner::Fill(p) | Owner::Tx(p) if p == port) {
                *owner = Owner::Free;
                self.free.push(index as u32);
                n += 1;
            }
        }
        n
    }

    /// Frames currently in state `owner` (O(frames)).
    #[cfg(test)]
    pub(crate) fn count(&self, owner: Owner) -> usize {
        self.owner.iter().filter(|o| **o == owner).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_cannot_return_a_frame_it_was_not_given() {
        let mut l = FrameLedger::new(4);
        let f = l.take_for_fill(0).unwrap();
        assert!(!l.received(f, 1), "wrong port");
        assert!(l.received(f, 0));
        assert!(!l.received(f, 0), "duplicate rx descriptor");
        assert!(!l.completed(f, 0), "never queued for tx");
        assert!(l.queued_tx(f, 1));
        assert!(l.completed(f, 1));
        assert!(!l.completed(f, 1), "duplicate completion");
        assert!(!l.received(99, 0), "out of range");
        assert_eq!(l.free_count(), 4);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Fill(u16),
        Alloc,
        Rx(u16, usize),
        Tx(usize, u16),
        Complete(u16, usize),
        Release(usize),
        Reclaim(u16),
        Bogus(u16, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..3).prop_map(Op::Fill),
            Just(Op::Alloc),
            (0u16..3, any::<usize>()).prop_map(|(p, i)| Op::Rx(p, i)),
            (any::<usize>(), 0u16..3).prop_map(|(i, p)| Op::Tx(i, p)),
            (0u16..3, any::<usize>()).prop_map(|(p, i)| Op::Complete(p, i)),
            any::<usize>().prop_map(Op::Release),
            (0u16..3).prop_map(Op::Reclaim),
            (0u16..3, 0u32..20).prop_map(|(p, i)| Op::Bogus(p, i)),
        ]
    }

    proptest! {
        /// Against a model where each port's fill and TX are FIFO queues (as the kernel
        /// treats them) and the user holds a set: no frame is ever lost or duplicated.
        #[test]
        fn frames_are_never_lost_or_duplicated(ops in proptest::collection::vec(op(), 1..400)) {
            const N: u32 = 16;
            let mut l = FrameLedger::new(N);
            let mut fill: Vec<Vec<u32>> = vec![vec![]; 3];
            let mut tx: Vec<Vec<u32>> = vec![vec![]; 3];
            let mut user: Vec<u32> = vec![];
            for op in ops {
                match op {
                    Op::Fill(p) => if let Some(f) = l.take_for_fill(p) { fill[p as usize].push(f) },
                    Op::Alloc => if let Some(f) = l.take_for_user() { user.push(f) },
                    Op::Rx(p, i) => {
                        let q = &mut fill[p as usize];
                        if !q.is_empty() {
                            let f = q.remove(i % q.len());
                            prop_assert!(l.received(f, p));
                            user.push(f);
                        }
                    }
                    Op::Tx(i, p) => if !user.is_empty() {
                        let f = user.swap_remove(i % user.len());
                        prop_assert!(l.queued_tx(f, p));
                        tx[p as usize].push(f);
                    },
                    Op::Complete(p, i) => {
                        let q = &mut tx[p as usize];
                        if !q.is_empty() {
                            let f = q.remove(i % q.len());
                            prop_assert!(l.completed(f, p));
                        }
                    }
                    Op::Release(i) => if !user.is_empty() {
                        let f = user.swap_remove(i % user.len());
                        prop_assert!(l.released(f));
                    },
                    Op::Reclaim(p) => {
                        let n = fill[p as usize].len() + tx[p as usize].len();
                        fill[p as usize].clear();
                        tx[p as usize].clear();
                        prop_assert_eq!(l.reclaim(p) as usize, n);
                    }
                    Op::Bogus(p, f) => {
                        // A descriptor the kernel should not produce is refused unless the
                        // model says that port really owns the frame.
                        let owned_fill = fill[p as usize].contains(&f);
                        if !owned_fill {
                            prop_assert!(!l.received(f, p));
                        }
                        if !tx[p as usize].contains(&f) {
                            prop_assert!(!l.completed(f, p));
                        }
                    }
                }
                let held = user.len() + fill.iter().chain(&tx).map(Vec::len).sum::<usize>();
                prop_assert_eq!(held + l.free_count(), N as usize);
                prop_assert_eq!(l.count(Owner::User), user.len());
                let mut all: Vec<u32> = user.iter().chain(fill.iter().flatten()).chain(tx.iter().flatten()).copied().collect();
                all.extend(&l.free);
                all.sort_unstable();
                all.dedup();
                prop_assert_eq!(all.len(), N as usize, "a frame is in two places");
            }
        }
    }
}

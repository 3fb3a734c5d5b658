//! What the table keeps per entry: direction, rewrites, the flow's state and
//! its ids, and that entry's word encoding.

use std::net::SocketAddr;

use crate::key::{ip_from_words, ip_to_words};
use crate::tcp::TcpState;
use crate::Rewrites;

/// Which direction of its flow an entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Original,
    Reply,
}

/// State of a flow. TCP follows [`TcpState`]; UDP, SCTP and ICMP only know
/// whether a reply was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    Tcp(TcpState),
    Unreplied,
    Replied,
}

/// Flags on a flow (bit set).
pub mod flags {
    /// Created by a service translation (DNAT to a backend).
    pub const SERVICE: u16 = 1 << 0;
    /// Source rewritten to the node address for traffic leaving the cluster.
    pub const MASQUERADE: u16 = 1 << 1;
    /// Client and backend are the same pod; the source was rewritten too.
    pub const HAIRPIN: u16 = 1 << 2;
    /// The first packet came from outside the cluster (the uplink).
    pub const EXTERNAL: u16 = 1 << 3;
    /// Allowed by a policy entry with DNS rules: the pipeline checks the
    /// queries of this flow and reads its answers into the FQDN cache.
    pub const DNS: u16 = 1 << 4;
}

/// One entry as readers see it (a copy; the table keeps the words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CtEntry {
    pub direction: Direction,
    pub rewrites: Rewrites,
    /// State of the flow. Authoritative in the original entry; a reply entry
    /// returned by [`crate::Conntrack::observe`] carries the original's state.
    pub state: FlowState,
    /// Service and backend the flow was balanced to (0 = none).
    pub service_id: u32,
    pub backend_id: u32,
    /// [`flags`] bits.
    pub flags: u16,
    /// Policy verdict cache: the policy revision (`Tables::policy_revision`,
    /// low 32 bits) at which the flow was last allowed; 0 when no policy was
    /// enforced then. The pipeline re-checks a flow whose word is not the
    /// current one.
    pub policy: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

/// Words an entry takes: the two rewrite addresses (two words each), one word
/// of rewrite ports, presence/family bits, direction, state and flags, one of
/// service and backend ids, one of policy, then created and last seen.
pub(crate) const ENTRY_WORDS: usize = 9;

// Bits of the meta word (word 4).
const SRC_SET: u64 = 1 << 0;
const SRC_V6: u64 = 1 << 1;
const DST_SET: u64 = 1 << 2;
const DST_V6: u64 = 1 << 3;
const REPLY: u64 = 1 << 4;
const STATE_SHIFT: u32 = 8;
const STATE_MASK: u64 = 0xf;
const FLAGS_SHIFT: u32 = 16;
const SRC_PORT_SHIFT: u32 = 48;
const DST_PORT_SHIFT: u32 = 32;

/// Index of the meta word and of last seen, for writers that touch only them.
pub(crate) const META_WORD: usize = 4;
pub(crate) const LAST_SEEN_WORD: usize = 8;
const IDS_WORD: usize = 5;
pub(crate) const POLICY_WORD: usize = 6;
const CREATED_WORD: usize = 7;

/// The flow state in a meta word.
#[inline]
fn state_of(meta: u64) -> FlowState {
    state_from_code(meta >> STATE_SHIFT & STATE_MASK)
}

/// The direction in a meta word.
#[inline]
fn direction_of(meta: u64) -> Direction {
    if meta & REPLY != 0 {
        Direction::Reply
    } else {
        Direction::Original
    }
}

/// The rewrites of the entry with this meta word; the address words (0 to
/// 3) are loaded through `word` only for a rewrite that is present, so an
/// entry without rewrites (most flows) costs no address decoding.
#[inline]
fn rewrites_of(meta: u64, word: &impl Fn(usize) -> u64) -> Rewrites {
    if meta & (SRC_SET | DST_SET) == 0 {
        return Rewrites::default();
    }
    let src = (meta & SRC_SET != 0).then(|| {
        SocketAddr::new(
            ip_from_words(word(0), word(1), meta & SRC_V6 != 0),
            (meta >> SRC_PORT_SHIFT) as u16,
        )
    });
    let dst = (meta & DST_SET != 0).then(|| {
        SocketAddr::new(
            ip_from_words(word(2), word(3), meta & DST_V6 != 0),
            (meta >> DST_PORT_SHIFT) as u16,
        )
    });
    Rewrites { src, dst }
}

/// What a packet's own path needs from its entry ([`crate::Conntrack::track`]):
/// the entry's words as read, less the created word, decoded on demand. A
/// hit on an entry without rewrites (most flows) loads 4 of the entry's 9
/// words and moves 8 words, where a [`CtEntry`] is 13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    meta: u64,
    ids: u64,
    last_seen_ns: u64,
    /// The policy verdict cache ([`CtEntry::policy`]).
    policy: u32,
    /// The rewrite address words; zero unless the meta word says present.
    addrs: [u64; 4],
}

impl Tracked {
    /// Reads the words a [`Tracked`] keeps through `word`, each at most once.
    #[inline]
    pub(crate) fn read(word: impl Fn(usize) -> u64) -> Tracked {
        let meta = word(META_WORD);
        let addrs = if meta & (SRC_SET | DST_SET) == 0 {
            [0; 4]
        } else {
            [word(0), word(1), word(2), word(3)]
        };
        Tracked {
            meta,
            ids: word(IDS_WORD),
            last_seen_ns: word(LAST_SEEN_WORD),
            policy: word(POLICY_WORD) as u32,
            addrs,
        }
    }

    pub fn direction(&self) -> Direction {
        direction_of(self.meta)
    }

    /// The flow's state (as [`CtEntry::state`]).
    pub fn state(&self) -> FlowState {
        state_of(self.meta)
    }

    /// [`flags`] bits.
    pub fn flags(&self) -> u16 {
        (self.meta >> FLAGS_SHIFT) as u16
    }

    pub fn service_id(&self) -> u32 {
        (self.ids >> 32) as u32
    }

    pub fn backend_id(&self) -> u32 {
        self.ids as u32
    }

    pub fn last_seen_ns(&self) -> u64 {
        self.last_seen_ns
    }

    /// The policy revision the flow was last allowed at ([`CtEntry::policy`]).
    #[inline]
    pub fn policy(&self) -> u32 {
        self.policy
    }

    /// True when [`Tracked::rewrites`] has a source or destination rewrite.
    #[inline]
    pub fn has_rewrites(&self) -> bool {
        self.meta & (SRC_SET | DST_SET) != 0
    }

    #[inline]
    pub fn rewrites(&self) -> Rewrites {
        rewrites_of(self.meta, &|i| self.addrs[i % 4])
    }
}

impl From<CtEntry> for Tracked {
    fn from(entry: CtEntry) -> Tracked {
        Tracked::read(|i| entry.to_words()[i % ENTRY_WORDS])
    }
}

fn state_code(state: FlowState) -> u64 {
    match state {
        FlowState::Unreplied => 0,
        FlowState::Replied => 1,
        FlowState::Tcp(TcpState::SynSent) => 2,
        FlowState::Tcp(TcpState::SynRecv) => 3,
        FlowState::Tcp(TcpState::Established) => 4,
        FlowState::Tcp(TcpState::FinWait) => 5,
        FlowState::Tcp(TcpState::CloseWait) => 6,
        FlowState::Tcp(TcpState::LastAck) => 7,
        FlowState::Tcp(TcpState::TimeWait) => 8,
        FlowState::Tcp(TcpState::Close) => 9,
    }
}

#[inline]
fn state_from_code(code: u64) -> FlowState {
    match code {
        0 => FlowState::Unreplied,
        1 => FlowState::Replied,
        2 => FlowState::Tcp(TcpState::SynSent),
        3 => FlowState::Tcp(TcpState::SynRecv),
        4 => FlowState::Tcp(TcpState::Established),
        5 => FlowState::Tcp(TcpState::FinWait),
        6 => FlowState::Tcp(TcpState::CloseWait),
        7 => FlowState::Tcp(TcpState::LastAck),
        8 => FlowState::Tcp(TcpState::TimeWait),
        // Only `state_code` writes this field, so 9 is the last code; CLOSE
        // (the shortest TCP timeout) is the safe reading of anything else.
        _ => FlowState::Tcp(TcpState::Close),
    }
}

impl CtEntry {
    pub(crate) fn to_words(self) -> [u64; ENTRY_WORDS] {
        let mut meta = u64::from(self.flags) << FLAGS_SHIFT | state_code(self.state) << STATE_SHIFT;
        if self.direction == Direction::Reply {
            meta |= REPLY;
        }
        let (src_hi, src_lo) = match self.rewrites.src {
            Some(addr) => {
                let (hi, lo, v6) = ip_to_words(addr.ip());
                meta |= SRC_SET | if v6 { SRC_V6 } else { 0 };
                meta |= u64::from(addr.port()) << SRC_PORT_SHIFT;
                (hi, lo)
            }
            None => (0, 0),
        };
        let (dst_hi, dst_lo) = match self.rewrites.dst {
            Some(addr) => {
                let (hi, lo, v6) = ip_to_words(addr.ip());
                meta |= DST_SET | if v6 { DST_V6 } else { 0 };
                meta |= u64::from(addr.port()) << DST_PORT_SHIFT;
                (hi, lo)
            }
            None => (0, 0),
        };
        [
            src_hi,
            src_lo,
            dst_hi,
            dst_lo,
            meta,
            u64::from(self.service_id) << 32 | u64::from(self.backend_id),
            u64::from(self.policy),
            self.created_ns,
            self.last_seen_ns,
        ]
    }

    pub(crate) fn from_words(words: &[u64; ENTRY_WORDS]) -> CtEntry {
        CtEntry::read(|i| words[i % ENTRY_WORDS])
    }

    /// Decodes an entry from its words, each loaded through `word` once.
    #[inline]
    pub(crate) fn read(word: impl Fn(usize) -> u64) -> CtEntry {
        let meta = word(META_WORD);
        let ids = word(IDS_WORD);
        CtEntry {
            direction: direction_of(meta),
            rewrites: rewrites_of(meta, &word),
            state: state_of(meta),
            service_id: (ids >> 32) as u32,
            backend_id: ids as u32,
            flags: (meta >> FLAGS_SHIFT) as u16,
            policy: word(POLICY_WORD) as u32,
            created_ns: word(CREATED_WORD),
            last_seen_ns: word(LAST_SEEN_WORD),
        }
    }

    /// The meta word with the flow state replaced (the only field of it a
    /// packet changes).
    pub(crate) fn meta_with_state(meta: u64, state: FlowState) -> u64 {
        meta & !(STATE_MASK << STATE_SHIFT) | state_code(state) << STATE_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_every_state_and_rewrite_shape() {
        let states = [
            FlowState::Unreplied,
            FlowState::Replied,
            FlowState::Tcp(TcpState::SynSent),
            FlowState::Tcp(TcpState::SynRecv),
            FlowState::Tcp(TcpState::Established),
            FlowState::Tcp(TcpState::FinWait),
            FlowState::Tcp(TcpState::CloseWait),
            FlowState::Tcp(TcpState::LastAck),
            FlowState::Tcp(TcpState::TimeWait),
            FlowState::Tcp(TcpState::Close),
        ];
        let rewrites = [
            Rewrites::default(),
            Rewrites {
                src: Some("10.0.0.1:1".parse().unwrap()),
                dst: None,
            },
            Rewrites {
                src: None,
                dst: Some("[fd00::5]:65535".parse().unwrap()),
            },
            Rewrites {
                src: Some("[::1.2.3.4]:0".parse().unwrap()),
                dst: Some("1.2.3.4:8080".parse().unwrap()),
            },
        ];
        for (i, state) in states.into_iter().enumerate() {
            for (j, rewrites) in rewrites.into_iter().enumerate() {
                let entry = CtEntry {
                    direction: if i % 2 == 0 {
                        Direction::Original
                    } else {
                        Direction::Reply
                    },
                    rewrites,
                    state,
                    service_id: u32::MAX - i as u32,
                    backend_id: j as u32 + 7,
                    flags: 0xffff >> i,
                    policy: u32::MAX >> (i + j),
                    created_ns: u64::MAX - 1,
                    last_seen_ns: i as u64 * 1_000_000_007,
                };
                assert_eq!(CtEntry::from_words(&entry.to_words()), entry);
                let tracked = Tracked::from(entry);
                assert_eq!(
                    (
                        tracked.direction(),
                        tracked.rewrites(),
                        tracked.has_rewrites(),
                        tracked.state(),
                    ),
                    (entry.direction, rewrites, j != 0, state)
                );
                assert_eq!(
                    (
                        tracked.service_id(),
                        tracked.backend_id(),
                        tracked.flags(),
                        tracked.last_seen_ns(),
                        tracked.policy(),
                    ),
                    (
                        entry.service_id,
                        entry.backend_id,
                        entry.flags,
                        entry.last_seen_ns,
                        entry.policy,
                    )
                );
                let meta =
                    CtEntry::meta_with_state(entry.to_words()[META_WORD], FlowState::Replied);
                let mut words = entry.to_words();
                words[META_WORD] = meta;
                assert_eq!(
                    CtEntry::from_words(&words),
                    CtEntry {
                        state: FlowState::Replied,
                        ..entry
                    }
                );
            }
        }
    }
}

//! Table size and timeouts.

use crate::{FlowState, TcpState};

/// Kernel nf_conntrack default timeouts (seconds), configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_replied: u32,
    pub icmp: u32,
    /// SCTP and anything else.
    pub other: u32,
}

impl Default for Timeouts {
    /// nf_conntrack's defaults: tcp 120/60/432000/120/60/30/120/10, udp 30/120, icmp 30.
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 120,
            icmp: 30,
            other: 600,
        }
    }
}

/// IP protocol numbers the timeouts tell apart.
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

impl Timeouts {
    /// Seconds a flow of `protocol` in `state` lives after its last packet.
    /// TCP states carry their own timeout whatever the protocol number says.
    #[inline]
    pub fn for_state(&self, protocol: u8, state: FlowState) -> u32 {
        match state {
            FlowState::Tcp(tcp) => match tcp {
                TcpState::SynSent => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait => self.tcp_fin_wait,
                TcpState::CloseWait => self.tcp_close_wait,
                TcpState::LastAck => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close => self.tcp_close,
            },
            FlowState::Unreplied if protocol == UDP => self.udp_unreplied,
            FlowState::Replied if protocol == UDP => self.udp_replied,
            FlowState::Unreplied | FlowState::Replied if protocol == ICMP || protocol == ICMPV6 => {
                self.icmp
            }
            FlowState::Unreplied | FlowState::Replied => self.other,
        }
    }

    /// The first instant a flow last seen at `last_seen_ns` is expired.
    #[inline]
    pub(crate) fn expiry_ns(&self, protocol: u8, state: FlowState, last_seen_ns: u64) -> u64 {
        last_seen_ns.saturating_add(u64::from(self.for_state(protocol, state)) * 1_000_000_000)
    }
}

/// Table shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// Most entries (each flow takes two). Rounded up to whole buckets.
    pub capacity: usize,
    pub timeouts: Timeouts,
}

/// Default capacity: 512Ki entries (256Ki flows).
pub const DEFAULT_CAPACITY: usize = 512 * 1024;

impl Default for CtConfig {
    fn default() -> CtConfig {
        CtConfig {
            capacity: DEFAULT_CAPACITY,
            timeouts: Timeouts::default(),
        }
    }
}

//! What happens to a frame, as data.

use sluice_tables::PolicyDirection;

/// Fate of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit `len` bytes of the (possibly rewritten) frame on the interface
    /// with this kernel ifindex. A reply to the sender (ARP, ND, ICMP error) is a
    /// `Forward` back to the ingress interface.
    Forward { ifindex: u32, len: usize },
    /// The frame was refused with an answer to its sender (a TCP RST or an ICMP
    /// destination unreachable, built in the frame): transmit `len` bytes on
    /// `ifindex` like a `Forward`, and count the refused packet under `reason`
    /// like a `Drop`, so a service without backends shows in the drop counters
    /// whether it rejects or drops.
    Reject {
        ifindex: u32,
        len: usize,
        reason: DropReason,
    },
    /// Drop and count under the reason.
    Drop(DropReason),
    /// Dropped by network policy: counted under `reason`
    /// ([`DropReason::PolicyDenied`] or [`DropReason::PolicyDeniedByDenylist`])
    /// and per rule, which names the deciding policy (kind, namespace, name)
    /// for counters and flow records.
    PolicyDrop {
        reason: DropReason,
        /// Index into the snapshot's `policy.rules`; [`Verdict::NO_RULE`]
        /// when no rule is to blame (mode `always`, an endpoint no policy
        /// selects).
        rule: u32,
        /// The direction, seen from the endpoint whose table decided.
        direction: PolicyDirection,
    },
}

impl Verdict {
    /// [`Verdict::PolicyDrop`]'s `rule` when there is none.
    pub const NO_RULE: u32 = u32::MAX;

    /// The reason the frame was dropped (or refused), if it was.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match *self {
            Verdict::Forward { .. } => None,
            Verdict::Reject { reason, .. }
            | Verdict::Drop(reason)
            | Verdict::PolicyDrop { reason, .. } => Some(reason),
        }
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )+) => {
        /// Why a frame was dropped. The numbers and names are stable: counters,
        /// flow events, metrics labels and the CLI all show these values. New
        /// reasons get new numbers; numbers are never reused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant = $num, )+
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];
            /// Size of a counter array indexed by [`DropReason::index`].
            pub const COUNT: usize = Self::ALL.len();

            /// Stable number shown to users.
            pub const fn number(self) -> u8 {
                self as u8
            }

            /// Stable snake_case name shown to users.
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )+ }
            }

            /// Position in a dense counter array.
            pub fn index(self) -> usize {
                Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
            }

            pub fn from_number(number: u8) -> Option<DropReason> {
                Self::ALL.iter().copied().find(|r| r.number() == number)
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a header length field points past the end.
    Truncated = 1, "truncated";
    /// Ethertype the engine does not handle.
    UnknownEthertype = 2, "unknown_ethertype";
    /// IPv4 header malformed: version, IHL, total length.
    InvalidIpv4Header = 3, "invalid_ipv4_header";
    /// IPv4 header checksum does not verify.
    Ipv4ChecksumBad = 4, "ipv4_checksum_bad";
    /// IPv6 header or extension header chain malformed.
    InvalidIpv6Header = 5, "invalid_ipv6_header";
    /// L4 header (TCP, UDP, ICMP) shorter than its minimum or than its own length field.
    InvalidL4Header = 6, "invalid_l4_header";
    /// ARP packet malformed or not Ethernet/IPv4.
    InvalidArp = 7, "invalid_arp";
    /// ARP request for an address the engine does not answer for, or an ARP reply.
    ArpNotForGateway = 8, "arp_not_for_gateway";
    /// Frame from a pod whose source MAC is not the pod's.
    SpoofedSourceMac = 9, "spoofed_source_mac";
    /// Frame from a pod whose source IP is not the pod's.
    SpoofedSourceIp = 10, "spoofed_source_ip";
    /// Frame arrived on an interface the tables do not know.
    UnknownIngress = 11, "unknown_ingress";
    /// Destination address has no endpoint.
    NoRoute = 12, "no_route";
    /// TTL or hop limit expired (an ICMP time-exceeded reply is sent instead when possible).
    TtlExceeded = 13, "ttl_exceeded";
    /// IPv4 fragment; not forwarded until reassembly or fragment tracking lands.
    Fragment = 14, "fragment";
    /// ICMPv6 neighbour discovery or other control traffic not for the gateway.
    Icmpv6NotHandled = 15, "icmpv6_not_handled";
    /// Multicast or broadcast destination the engine does not forward.
    Multicast = 16, "multicast";
    /// Frame addressed to the gateway itself that it does not answer (e.g. TCP to the gateway IP).
    ToGatewayNotHandled = 17, "to_gateway_not_handled";
    /// Egress would be the interface the frame came from (hairpin without a service).
    SameInterface = 18, "same_interface";
    /// Frame longer than the UMEM chunk or the egress MTU.
    FrameTooLarge = 19, "frame_too_large";
    /// Transmit ring full or egress interface has no socket on this worker.
    TxUnavailable = 20, "tx_unavailable";
    /// The kernel dropped frames for this socket (rx ring full, invalid descriptors);
    /// counted from XDP_STATISTICS, not per frame.
    RxRingDropped = 21, "rx_ring_dropped";
    /// ICMP/ICMPv6 checksum of a message addressed to the gateway itself (ND, echo)
    /// does not verify. Transit traffic is not checksummed by the engine.
    L4ChecksumBad = 22, "l4_checksum_bad";
    /// New connection to a service frontend whose service has no usable backend
    /// (counted also when it is answered with a TCP RST or ICMP port unreachable).
    ServiceNoBackend = 23, "service_no_backend";
    /// The connection tracking table had no room for a new flow.
    CtFull = 24, "ct_full";
    /// Masquerade found no free source port (or ICMP identifier) for a new flow.
    NatPortExhausted = 25, "nat_port_exhausted";
    /// New connection from outside the cluster to a service whose
    /// loadBalancerSourceRanges do not contain its source.
    LbSourceRangeDenied = 26, "lb_source_range_denied";
    /// A new flow's reply direction is already tracked by another flow (a
    /// tuple clash the engine does not resolve by remapping a port).
    CtTupleTaken = 27, "ct_tuple_taken";
    /// New connection (or a tracked one re-checked after a policy change)
    /// that no policy allows, in a direction that is default-deny (Cilium's
    /// "Policy denied").
    PolicyDenied = 28, "policy_denied";
    /// A deny rule matched (Cilium's "Policy denied by denylist").
    PolicyDeniedByDenylist = 29, "policy_denied_by_denylist";
    /// A DNS query whose name no DNS rule of its connection allows; answered
    /// REFUSED by the engine, never sent to the server.
    DnsRefused = 30, "dns_refused";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_number(r.number()), Some(*r));
            assert_eq!(
                DropReason::ALL
                    .iter()
                    .filter(|o| o.name() == r.name())
                    .count(),
                1
            );
        }
    }

    #[test]
    fn numbers_are_stable() {
        // Changing these breaks dashboards and saved flows.
        assert_eq!(DropReason::Truncated.number(), 1);
        assert_eq!(DropReason::SpoofedSourceIp.number(), 10);
        assert_eq!(DropReason::NoRoute.number(), 12);
        assert_eq!(DropReason::TtlExceeded.number(), 13);
        assert_eq!(DropReason::ServiceNoBackend.number(), 23);
        assert_eq!(DropReason::CtFull.number(), 24);
        assert_eq!(DropReason::NatPortExhausted.number(), 25);
        assert_eq!(DropReason::LbSourceRangeDenied.number(), 26);
        assert_eq!(DropReason::CtTupleTaken.number(), 27);
        assert_eq!(DropReason::PolicyDenied.number(), 28);
        assert_eq!(DropReason::PolicyDeniedByDenylist.number(), 29);
        assert_eq!(DropReason::DnsRefused.number(), 30);
        assert_eq!(DropReason::PolicyDenied.name(), "policy_denied");
        assert_eq!(
            DropReason::PolicyDeniedByDenylist.name(),
            "policy_denied_by_denylist"
        );
        assert_eq!(DropReason::DnsRefused.name(), "dns_refused");
    }
}

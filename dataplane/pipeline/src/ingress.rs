//! First stage: is the frame ours, well formed, and from the pod it claims?

use sluice_conntrack::FlowTables;
use sluice_tables::{Endpoint, Tables};
use sluice_wire::{ParseError, Parsed, L3};

use crate::conntrack::Stage;
use crate::icmp_error::ReplyLink;
use crate::{arp, ipv4, ipv6, observe, uplink, DropReason, Observation, Verdict};

/// Bytes a frame may carry beyond the IP MTU: the Ethernet header, plus 4 bytes
/// of slack for one 802.1Q tag (which is then refused as an ethertype).
pub const FRAME_OVERHEAD: usize = 14 + 4;

/// Longest frame accepted at the default 1500-byte MTU.
pub const MAX_FRAME_LEN: usize = 1500 + FRAME_OVERHEAD;

/// What every later stage needs to know about where the frame came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ingress<'t> {
    pub ifindex: u32,
    /// The pod behind the ingress interface.
    pub endpoint: &'t Endpoint,
    pub tables: &'t Tables,
    pub flows: &'t FlowTables,
    pub now_ns: u64,
    /// Valid bytes in the frame.
    pub len: usize,
    pub parsed: Parsed,
}

impl Ingress<'_> {
    /// The conntrack stage's view of a frame from this pod.
    pub fn stage(&self) -> Stage<'_> {
        Stage {
            tables: self.tables,
            flows: self.flows,
            now_ns: self.now_ns,
            from_uplink: false,
            link: ReplyLink {
                ifindex: self.ifindex,
                eth_dst: self.parsed.src,
                eth_src: self.tables.gateway.mac.0,
            },
        }
    }
}

pub(crate) fn run(
    frame: &mut [u8],
    len: usize,
    ifindex: u32,
    tables: &Tables,
    flows: &FlowTables,
    now_ns: u64,
    observation: &mut Observation,
) -> Result<Verdict, DropReason> {
    // The node state's MTU decides (pods may use jumbo frames up to what a
    // UMEM chunk holds); the chunk itself is the hard limit.
    if len > frame.len() || len > tables.mtu as usize + FRAME_OVERHEAD {
        return Err(DropReason::FrameTooLarge);
    }
    if tables.uplink.as_ref().is_some_and(|u| u.ifindex == ifindex) {
        let parsed = sluice_wire::parse(&frame[..len]).map_err(drop_reason)?;
        observe::arrival(frame, &parsed, observation);
        return uplink::from_outside(frame, len, tables, flows, now_ns, parsed, observation);
    }
    let endpoint = tables
        .endpoints
        .by_ifindex(ifindex)
        .ok_or(DropReason::UnknownIngress)?;
    let parsed = sluice_wire::parse(&frame[..len]).map_err(drop_reason)?;
    if parsed.src != endpoint.mac.0 {
        observe::arrival(frame, &parsed, observation);
        return Err(DropReason::SpoofedSourceMac);
    }
    let ctx = Ingress {
        ifindex,
        endpoint,
        tables,
        flows,
        now_ns,
        len,
        parsed,
    };
    match parsed.l3 {
        L3::Arp => arp::handle(frame, &ctx),
        L3::Ipv4 {
            header_len,
            total_len,
            protocol,
            fragment,
            l4,
        } => ipv4::handle(
            frame,
            &ctx,
            ipv4::Layout {
                header_len,
                total_len,
                protocol,
                fragment,
                l4,
            },
            observation,
        ),
        L3::Ipv6 {
            payload_len,
            upper,
            l4,
        } => ipv6::handle(
            frame,
            &ctx,
            ipv6::Layout {
                payload_len,
                upper,
                l4,
            },
            observation,
        ),
        L3::Other => Err(DropReason::UnknownEthertype),
    }
}

/// The drop counter for a failed parse check.
pub fn drop_reason(e: ParseError) -> DropReason {
    use ParseError as P;
    match e {
        P::EthernetTruncated
        | P::Ipv4Truncated
        | P::Ipv4HeaderTruncated
        | P::Ipv4TotalLengthTruncated
        | P::Ipv6Truncated
        | P::Ipv6PayloadTruncated => DropReason::Truncated,
        P::ArpTruncated
        | P::ArpHardwareType
        | P::ArpProtocolType
        | P::ArpAddressLength
        | P::ArpOperation => DropReason::InvalidArp,
        P::Ipv4Version | P::Ipv4HeaderLength | P::Ipv4TotalLength => DropReason::InvalidIpv4Header,
        P::Ipv4Checksum => DropReason::Ipv4ChecksumBad,
        P::Ipv6Version
        | P::Ipv6ExtensionTruncated
        | P::Ipv6HopByHopNotFirst
        | P::Ipv6ExtensionChainTooLong => DropReason::InvalidIpv6Header,
        P::TcpTruncated
        | P::TcpDataOffset
        | P::TcpHeaderTruncated
        | P::UdpTruncated
        | P::UdpLength
        | P::UdpLengthTruncated
        | P::Icmpv4Truncated
        | P::Icmpv6Truncated
        | P::NdiscTruncated
        | P::NdiscCode
        | P::NdiscOptionLength
        | P::NdiscLinkLayerOption
        | P::IcmpType => DropReason::InvalidL4Header,
    }
}

//! Pipeline fixtures: `{description, input frame, tables, expected verdict,
//! expected output frame}`, shared by the unit tests, the allocation test, the
//! perf crate and the fuzz targets (cargo feature `fixtures`).
//!
//! Inputs are built with the `sluice-wire` reprs; expected outputs are built
//! from scratch (not by editing the input the way the pipeline does) and the
//! unit tests check them again with smoltcp.

use core::net::{Ipv4Addr, Ipv6Addr};

use sluice_tables::{Cidr, Endpoint, EndpointTable, Gateway, MacAddr, Tables, Uplink};
use sluice_wire::ip_protocol::{
    DESTINATION_OPTIONS, FRAGMENT, HOP_BY_HOP, ICMP, ICMPV6, ROUTING, TCP, UDP,
};
use sluice_wire::{
    checksum, ethertype, ArpOperation, ArpRepr, EthernetRepr, Ipv4Repr, Ipv6Repr, MacAddress,
    NdiscRepr,
};

use crate::{process_observed, DropReason, FlowTables, Observation, Verdict};
use sluice_conntrack::CtConfig;

mod policy;
mod services;
pub use policy::*;
pub use services::*;

/// UMEM chunk size the fixtures run in unless they say otherwise.
pub const DEFAULT_CAPACITY: usize = 2048;

pub const GATEWAY_MAC: MacAddress = [0x02, 0x53, 0x4c, 0, 0, 1];
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// A dual-stack pod.
pub const POD_A: Pod = Pod {
    ifindex: 10,
    mac: [2, 0, 0, 0, 0, 0x0a],
    ipv4: Ipv4Addr::new(10, 200, 0, 10),
    ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x0a),
};
/// Another dual-stack pod.
pub const POD_B: Pod = Pod {
    ifindex: 11,
    mac: [2, 0, 0, 0, 0, 0x0b],
    ipv4: Ipv4Addr::new(10, 200, 0, 11),
    ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x0b),
};
/// An IPv4-only pod (its `ipv6` is never put in the tables).
pub const POD_C: Pod = Pod {
    ifindex: 12,
    mac: [2, 0, 0, 0, 0, 0x0c],
    ipv4: Ipv4Addr::new(10, 200, 0, 12),
    ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x0c),
};
/// An interface the tables do not know.
pub const UNKNOWN_IFINDEX: u32 = 99;

/// Addresses of one fixture pod.
#[derive(Clone, Copy, Debug)]
pub struct Pod {
    pub ifindex: u32,
    pub mac: MacAddress,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Pod {
    /// The pod's link-local address (fe80::<last byte of MAC>).
    pub const fn link_local(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, self.mac[5] as u16)
    }
}

/// One pipeline case.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub description: &'static str,
    pub ingress_ifindex: u32,
    /// Size of the UMEM chunk the frame sits in (`frame.len()` for `process`).
    pub capacity: usize,
    pub input: Vec<u8>,
    pub expected_verdict: Verdict,
    /// For a `Forward` or `Reject`, the expected `frame[..len]`; `None` for drops.
    pub expected_output: Option<Vec<u8>>,
}

impl Fixture {
    /// Copies the input into the front of `chunk` and runs the pipeline over
    /// `chunk[..capacity]`. Does not allocate. `chunk` must hold `capacity`
    /// bytes (a shorter chunk is used whole).
    pub fn run(
        &self,
        tables: &Tables,
        flows: &FlowTables,
        chunk: &mut [u8],
        now_ns: u64,
    ) -> Verdict {
        self.run_observed(tables, flows, chunk, now_ns, &mut Observation::default())
    }

    /// [`Fixture::run`] through [`crate::process_observed`]: `observation`
    /// is cleared first, then filled. Does not allocate.
    pub fn run_observed(
        &self,
        tables: &Tables,
        flows: &FlowTables,
        chunk: &mut [u8],
        now_ns: u64,
        observation: &mut Observation,
    ) -> Verdict {
        let capacity = self.capacity.min(chunk.len());
        let frame = &mut chunk[..capacity];
        let len = self.input.len();
        match frame.get_mut(..len) {
            Some(dst) => dst.copy_from_slice(&self.input),
            // The input itself does not fit the chunk: pass its length as is,
            // which the pipeline refuses.
            None => frame.copy_from_slice(&self.input[..capacity]),
        }
        observation.clear();
        let ingress = self.ingress_ifindex;
        process_observed(frame, len, ingress, tables, flows, now_ns, observation)
    }
}

/// Flow tables for fixture runs: small (4096 entries), default timeouts.
pub fn flows() -> FlowTables {
    FlowTables::new(CtConfig {
        capacity: 4096,
        ..CtConfig::default()
    })
}

/// The tables every fixture runs against: gateway and pods A, B, C.
pub fn tables() -> Tables {
    let endpoint = |name: &str, pod: Pod, v6: bool| Endpoint {
        name: name.into(),
        ifindex: pod.ifindex,
        ifname: format!("lxc{}", pod.ifindex),
        mac: MacAddr(pod.mac),
        ipv4: Some(pod.ipv4),
        ipv6: v6.then_some(pod.ipv6),
        identity: 0,
    };
    Tables {
        generation: 1,
        gateway: Gateway {
            mac: MacAddr(GATEWAY_MAC),
            ipv4: GATEWAY_V4,
            ipv6: GATEWAY_V6,
        },
        endpoints: EndpointTable::build(vec![
            endpoint("default/a", POD_A, true),
            endpoint("default/b", POD_B, true),
            endpoint("default/c", POD_C, false),
        ])
        .unwrap_or_default(),
        mtu: sluice_tables::DEFAULT_MTU,
        uplink: None,
        ipcache: Default::default(),
        services: Default::default(),
        lb: Default::default(),
        policy: Default::default(),
        policy_revision: 1,
    }
}

/// The node's uplink in [`uplink_tables`].
pub const UPLINK_IFINDEX: u32 = 20;
/// The node's MAC on the uplink.
pub const UPLINK_MAC: MacAddress = [0x02, 0x55, 0, 0, 0, 1];
/// The next router's MAC, behind the uplink.
pub const NEXT_HOP_MAC: MacAddress = [0x02, 0x55, 0, 0, 0, 2];
/// A host outside the node.
pub const OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 254, 2);
pub const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x254, 0, 0, 0, 0, 0, 2);

/// [`tables`] plus an uplink owning 10.200.0.0/24 and fd00::/64; the
/// [`uplink_all`] fixtures run against it.
pub fn uplink_tables() -> Tables {
    let mut t = tables();
    t.uplink = Some(Uplink {
        ifname: "uplink0".into(),
        ifindex: UPLINK_IFINDEX,
        mac: MacAddr(UPLINK_MAC),
        next_hop_mac: MacAddr(NEXT_HOP_MAC),
        pod_cidrs: ["10.200.0.0/24", "fd00::/64"]
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect(),
        addrs: Vec::new(),
    });
    t
}

// ---- frame builders -------------------------------------------------------

/// Ethernet header followed by `payload`.
pub fn ethernet(dst: MacAddress, src: MacAddress, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    let _ = EthernetRepr {
        dst,
        src,
        ethertype,
    }
    .emit(&mut f);
    f.extend_from_slice(payload);
    f
}

/// Parameters of the IPv4 header the builders write.
#[derive(Clone, Copy, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub more_frags: bool,
    pub frag_offset: u16,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8) -> V4 {
        V4 {
            src,
            dst,
            protocol,
            ttl,
            tos: 0,
            ident: 0x1234,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// The IPv4 packet with `l4`, whose checksum (TCP, UDP, ICMP) is filled in.
    pub fn packet(&self, l4: &[u8]) -> Vec<u8> {
        let mut l4 = l4.to_vec();
        let pseudo = checksum::pseudo_header_v4(self.src, self.dst, self.protocol, l4.len() as u32);
        fill_l4_checksum(self.protocol, pseudo, &mut l4);
        let mut p = vec![0u8; 20];
        let _ = Ipv4Repr {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
            ttl: self.ttl,
            tos: self.tos,
            ident: self.ident,
            dont_frag: !self.more_frags && self.frag_offset == 0,
            more_frags: self.more_frags,
            frag_offset: self.frag_offset,
            payload_len: l4.len(),
        }
        .emit(&mut p);
        p.extend_from_slice(&l4);
        p
    }
}

/// The IPv6 packet: `ext` extension headers (already chained, the last one's
/// next header must be `upper`), then `l4` with its checksum filled in.
pub fn ipv6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    first: u8,
    ext: &[u8],
    upper: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    let pseudo = checksum::pseudo_header_v6(src, dst, upper, l4.len() as u32);
    fill_l4_checksum(upper, pseudo, &mut l4);
    let mut p = vec![0u8; 40];
    let _ = Ipv6Repr {
        src,
        dst,
        next_header: first,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
        payload_len: ext.len() + l4.len(),
    }
    .emit(&mut p);
    p.extend_from_slice(ext);
    p.extend_from_slice(&l4);
    p
}

/// IPv6 packet without extension headers.
pub fn ipv6_simple(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, upper: u8, l4: &[u8]) -> Vec<u8> {
    ipv6_packet(src, dst, hop_limit, upper, &[], upper, l4)
}

fn fill_l4_checksum(protocol: u8, pseudo: u64, l4: &mut [u8]) {
    let at = match protocol {
        TCP if l4.len() >= 20 => 16,
        UDP if l4.len() >= 8 => 6,
        ICMP | ICMPV6 if l4.len() >= 8 => 2,
        _ => return,
    };
    l4[at] = 0;
    l4[at + 1] = 0;
    let sum = if protocol == ICMP {
        checksum::sum(l4)
    } else {
        pseudo + checksum::sum(l4)
    };
    let mut c = checksum::finish(sum);
    if protocol == UDP {
        c = checksum::udp_nonzero(c);
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A UDP datagram (checksum filled by the IP builders).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A TCP segment with `options` (padded to a word) and no payload.
pub fn tcp(src_port: u16, dst_port: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let mut s = Vec::with_capacity(20 + opts.len());
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&1000u32.to_be_bytes());
    s.extend_from_slice(&0u32.to_be_bytes());
    s.push((((20 + opts.len()) / 4) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(&opts);
    s
}

/// An ICMP or ICMPv6 message: type, code, the 4-byte rest of header, data.
pub fn icmp(msg_type: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    m
}

/// A neighbour solicitation body for `target` (checksum filled by the IP builder).
pub fn neighbor_solicit(target: Ipv6Addr, source_lladdr: Option<MacAddress>) -> Vec<u8> {
    let repr = NdiscRepr::NeighborSolicit {
        target,
        source_lladdr,
    };
    let mut m = vec![0u8; repr.buffer_len()];
    let _ = repr.emit(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, &mut m);
    m
}

fn arp(
    op: ArpOperation,
    sha: MacAddress,
    spa: Ipv4Addr,
    tha: MacAddress,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut b = vec![0u8; 28];
    let _ = ArpRepr {
        operation: op,
        sender_hardware_addr: sha,
        sender_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    }
    .emit(&mut b);
    b
}

// ---- expected outputs -----------------------------------------------------

/// What a routed IPv4 frame looks like: MACs rewritten, TTL one less, header
/// checksum recomputed from scratch.
fn routed_v4(input: &[u8], egress_mac: MacAddress) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&egress_mac);
    out[6..12].copy_from_slice(&GATEWAY_MAC);
    out[14 + 8] -= 1;
    out[14 + 10] = 0;
    out[14 + 11] = 0;
    let ihl = usize::from(out[14] & 0xf) * 4;
    let c = checksum::checksum(&out[14..14 + ihl]);
    out[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    out
}

/// A routed frame leaving through the uplink: to the next hop, from the node's uplink MAC.
fn to_next_hop(routed: Vec<u8>) -> Vec<u8> {
    let mut out = routed;
    out[0..6].copy_from_slice(&NEXT_HOP_MAC);
    out[6..12].copy_from_slice(&UPLINK_MAC);
    out
}

fn routed_v6(input: &[u8], egress_mac: MacAddress) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&egress_mac);
    out[6..12].copy_from_slice(&GATEWAY_MAC);
    out[14 + 7] -= 1;
    out
}

fn time_exceeded_v4(pod: Pod, original_ip: &[u8]) -> Vec<u8> {
    let quote = &original_ip[..original_ip.len().min(576 - 28)];
    let mut v4 = V4::new(GATEWAY_V4, pod.ipv4, ICMP, 64);
    v4.tos = 0xc0;
    v4.ident = 0;
    let ip = v4.packet(&icmp(11, 0, [0; 4], quote));
    ethernet(pod.mac, GATEWAY_MAC, ethertype::IPV4, &ip)
}

fn time_exceeded_v6(pod: Pod, original_ip: &[u8]) -> Vec<u8> {
    let quote = &original_ip[..original_ip.len().min(1280 - 48)];
    let ip = ipv6_simple(GATEWAY_V6, pod.ipv6, 64, ICMPV6, &icmp(3, 0, [0; 4], quote));
    ethernet(pod.mac, GATEWAY_MAC, ethertype::IPV6, &ip)
}

fn neighbor_advert(dst_mac: MacAddress, dst: Ipv6Addr, solicited: bool) -> Vec<u8> {
    let flags = 0x80 | 0x20 | if solicited { 0x40 } else { 0 };
    let mut body = vec![136, 0, 0, 0, flags, 0, 0, 0];
    body.extend_from_slice(&GATEWAY_V6.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&GATEWAY_MAC);
    let ip = ipv6_simple(GATEWAY_V6, dst, 255, ICMPV6, &body);
    ethernet(dst_mac, GATEWAY_MAC, ethertype::IPV6, &ip)
}

// ---- the set --------------------------------------------------------------

fn drop(
    description: &'static str,
    ingress_ifindex: u32,
    input: Vec<u8>,
    reason: DropReason,
) -> Fixture {
    Fixture {
        description,
        ingress_ifindex,
        capacity: DEFAULT_CAPACITY,
        input,
        expected_verdict: Verdict::Drop(reason),
        expected_output: None,
    }
}

fn forward(
    description: &'static str,
    ingress_ifindex: u32,
    input: Vec<u8>,
    egress: u32,
    output: Vec<u8>,
) -> Fixture {
    Fixture {
        description,
        ingress_ifindex,
        capacity: DEFAULT_CAPACITY,
        input,
        expected_verdict: Verdict::Forward {
            ifindex: egress,
            len: output.len(),
        },
        expected_output: Some(output),
    }
}

fn from_a_v4(ip: &[u8]) -> Vec<u8> {
    ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV4, ip)
}

fn from_a_v6(ip: &[u8]) -> Vec<u8> {
    ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV6, ip)
}

/// Every fixture, in a stable order.
pub fn all() -> Vec<Fixture> {
    let (a, b, c) = (POD_A, POD_B, POD_C);
    let sn_gw = sluice_wire::ipv6::solicited_node(&GATEWAY_V6);
    let sn_mac = sluice_wire::ethernet::ipv6_multicast(&sn_gw);
    let mut v = Vec::new();

    // --- ingress ---
    let udp_ab = V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&udp(40000, 53, b"query"));
    v.push(drop(
        "frame from an interface the tables do not know",
        UNKNOWN_IFINDEX,
        from_a_v4(&udp_ab),
        DropReason::UnknownIngress,
    ));
    v.push(drop(
        "source MAC is not the pod's",
        a.ifindex,
        ethernet(GATEWAY_MAC, b.mac, ethertype::IPV4, &udp_ab),
        DropReason::SpoofedSourceMac,
    ));
    v.push(drop(
        "shorter than an Ethernet header",
        a.ifindex,
        from_a_v4(&udp_ab)[..13].to_vec(),
        DropReason::Truncated,
    ));
    v.push(drop(
        "802.1Q tagged frame",
        a.ifindex,
        ethernet(GATEWAY_MAC, a.mac, ethertype::VLAN, &[0, 5, 8, 0]),
        DropReason::UnknownEthertype,
    ));
    v.push(drop(
        "longer than the MTU allows",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&udp(1, 2, &[0; 1600]))),
        DropReason::FrameTooLarge,
    ));

    // --- ARP ---
    v.push(forward(
        "ARP request for the gateway is answered",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &arp(ArpOperation::Request, a.mac, a.ipv4, [0; 6], GATEWAY_V4),
        ),
        a.ifindex,
        ethernet(
            a.mac,
            GATEWAY_MAC,
            ethertype::ARP,
            &arp(ArpOperation::Reply, GATEWAY_MAC, GATEWAY_V4, a.mac, a.ipv4),
        ),
    ));
    v.push(drop(
        "ARP request for another pod",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &arp(ArpOperation::Request, a.mac, a.ipv4, [0; 6], b.ipv4),
        ),
        DropReason::ArpNotForGateway,
    ));
    v.push(drop(
        "gratuitous ARP reply",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &arp(ArpOperation::Reply, a.mac, a.ipv4, a.mac, a.ipv4),
        ),
        DropReason::ArpNotForGateway,
    ));
    let mut bad_arp = arp(ArpOperation::Request, a.mac, a.ipv4, [0; 6], GATEWAY_V4);
    bad_arp[4] = 8;
    v.push(drop(
        "ARP with a hardware address length of 8",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &bad_arp,
        ),
        DropReason::InvalidArp,
    ));
    v.push(drop(
        "ARP sender MAC differs from the frame's",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &arp(ArpOperation::Request, b.mac, a.ipv4, [0; 6], GATEWAY_V4),
        ),
        DropReason::SpoofedSourceMac,
    ));
    v.push(drop(
        "ARP sender IP is another pod's",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::BROADCAST,
            a.mac,
            ethertype::ARP,
            &arp(ArpOperation::Request, a.mac, b.ipv4, [0; 6], GATEWAY_V4),
        ),
        DropReason::SpoofedSourceIp,
    ));

    // --- IPv4 ---
    let input = from_a_v4(&udp_ab);
    v.push(forward(
        "IPv4 UDP from pod A to pod B is routed",
        a.ifindex,
        input.clone(),
        b.ifindex,
        routed_v4(&input, b.mac),
    ));
    let syn =
        V4::new(a.ipv4, b.ipv4, TCP, 64).packet(&tcp(40000, 80, 0x02, &[2, 4, 5, 0xb4, 4, 2]));
    let input = from_a_v4(&syn);
    v.push(forward(
        "IPv4 TCP SYN with options is routed",
        a.ifindex,
        input.clone(),
        b.ifindex,
        routed_v4(&input, b.mac),
    ));
    let mut padded = from_a_v4(&V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&udp(1, 2, &[])));
    padded.resize(60, 0);
    v.push(forward(
        "minimum-size frame with Ethernet padding keeps its length",
        a.ifindex,
        padded.clone(),
        b.ifindex,
        routed_v4(&padded, b.mac),
    ));
    v.push(drop(
        "IPv4 source is another pod's address",
        a.ifindex,
        from_a_v4(&V4::new(b.ipv4, c.ipv4, UDP, 64).packet(&udp(1, 2, &[]))),
        DropReason::SpoofedSourceIp,
    ));
    v.push(drop(
        "IPv4 destination without an endpoint",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, Ipv4Addr::new(192, 0, 2, 1), UDP, 64).packet(&udp(1, 2, &[]))),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "IPv4 to the outside without an uplink",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, OUTSIDE_V4, UDP, 64).packet(&udp(40000, 53, b"q"))),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "IPv4 to the pod's own address",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, a.ipv4, UDP, 64).packet(&udp(1, 2, &[]))),
        DropReason::SameInterface,
    ));
    let ttl1 = V4::new(a.ipv4, b.ipv4, UDP, 1).packet(&udp(40000, 53, b"query"));
    v.push(forward(
        "IPv4 TTL 1 gets time exceeded quoting the whole small packet",
        a.ifindex,
        from_a_v4(&ttl1),
        a.ifindex,
        time_exceeded_v4(a, &ttl1),
    ));
    let big = V4::new(a.ipv4, b.ipv4, UDP, 1).packet(&udp(40000, 9, &[0xab; 1000]));
    v.push(forward(
        "IPv4 TTL 1 on a large packet: the error stays within 576 bytes",
        a.ifindex,
        from_a_v4(&big),
        a.ifindex,
        time_exceeded_v4(a, &big),
    ));
    // A chunk exactly as large as the frame: the error needs 28 more bytes,
    // so the quote loses the original's last 28.
    let medium = V4::new(a.ipv4, b.ipv4, UDP, 1).packet(&udp(40000, 9, &[0xab; 272]));
    let expected = {
        let mut v4 = V4::new(GATEWAY_V4, a.ipv4, ICMP, 64);
        v4.tos = 0xc0;
        v4.ident = 0;
        let quote = &medium[..medium.len() - 28];
        ethernet(
            a.mac,
            GATEWAY_MAC,
            ethertype::IPV4,
            &v4.packet(&icmp(11, 0, [0; 4], quote)),
        )
    };
    let mut tight = forward(
        "IPv4 time exceeded shortens the quote to fit the chunk",
        a.ifindex,
        from_a_v4(&medium),
        a.ifindex,
        expected,
    );
    tight.capacity = 14 + medium.len();
    v.push(tight);
    let mut no_room = drop(
        "IPv4 time exceeded that cannot be built in the chunk",
        a.ifindex,
        from_a_v4(&ttl1),
        DropReason::TtlExceeded,
    );
    no_room.capacity = 14 + 28 + 20 + 7;
    v.push(no_room);
    v.push(drop(
        "IPv4 TTL 1 on an ICMP error: no error about an error",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, b.ipv4, ICMP, 1).packet(&icmp(3, 3, [0; 4], &ttl1[..28]))),
        DropReason::TtlExceeded,
    ));
    let mut bad_sum = from_a_v4(&udp_ab);
    bad_sum[14 + 10] ^= 0x55;
    v.push(drop(
        "IPv4 header checksum does not verify",
        a.ifindex,
        bad_sum,
        DropReason::Ipv4ChecksumBad,
    ));
    let mut frag = V4::new(a.ipv4, b.ipv4, UDP, 64);
    frag.more_frags = true;
    v.push(drop(
        "IPv4 first fragment",
        a.ifindex,
        from_a_v4(&frag.packet(&udp(1, 2, &[0; 16]))),
        DropReason::Fragment,
    ));
    let mut frag = V4::new(a.ipv4, b.ipv4, UDP, 64);
    frag.frag_offset = 1480;
    v.push(drop(
        "IPv4 later fragment",
        a.ifindex,
        from_a_v4(&frag.packet(&[0; 16])),
        DropReason::Fragment,
    ));
    v.push(drop(
        "IPv4 limited broadcast",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, Ipv4Addr::BROADCAST, UDP, 64).packet(&udp(68, 67, &[]))),
        DropReason::Multicast,
    ));
    v.push(drop(
        "IPv4 multicast (mDNS)",
        a.ifindex,
        from_a_v4(
            &V4::new(a.ipv4, Ipv4Addr::new(224, 0, 0, 251), UDP, 255).packet(&udp(5353, 5353, &[])),
        ),
        DropReason::Multicast,
    ));
    let mut bad_udp = udp(1, 2, &[0; 4]);
    bad_udp[5] = 200;
    v.push(drop(
        "UDP length past the end of the IP payload",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, b.ipv4, UDP, 64).packet(&bad_udp)),
        DropReason::InvalidL4Header,
    ));
    let mut bad_tcp = tcp(1, 2, 0x10, &[]);
    bad_tcp[12] = 0x40;
    v.push(drop(
        "TCP data offset below 5",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, b.ipv4, TCP, 64).packet(&bad_tcp)),
        DropReason::InvalidL4Header,
    ));
    let mut short = from_a_v4(&udp_ab);
    short.truncate(short.len() - 3);
    v.push(drop(
        "IPv4 total length past the end of the frame",
        a.ifindex,
        short,
        DropReason::Truncated,
    ));
    let mut ihl = from_a_v4(&udp_ab);
    ihl[14] = 0x44;
    v.push(drop(
        "IPv4 IHL below 5",
        a.ifindex,
        ihl,
        DropReason::InvalidIpv4Header,
    ));
    let ping = icmp(8, 0, [0x12, 0x34, 0, 1], b"abcdefgh");
    v.push(forward(
        "ping to the gateway IPv4 address is answered",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, GATEWAY_V4, ICMP, 64).packet(&ping)),
        a.ifindex,
        ethernet(
            a.mac,
            GATEWAY_MAC,
            ethertype::IPV4,
            &V4::new(GATEWAY_V4, a.ipv4, ICMP, 64).packet(&icmp(
                0,
                0,
                [0x12, 0x34, 0, 1],
                b"abcdefgh",
            )),
        ),
    ));
    v.push(drop(
        "TCP to the gateway IPv4 address",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, GATEWAY_V4, TCP, 64).packet(&tcp(40000, 22, 0x02, &[]))),
        DropReason::ToGatewayNotHandled,
    ));
    v.push(drop(
        "IPv6 from the IPv4-only pod",
        c.ifindex,
        ethernet(
            GATEWAY_MAC,
            c.mac,
            ethertype::IPV6,
            &ipv6_simple(c.ipv6, a.ipv6, 64, UDP, &udp(1, 2, &[])),
        ),
        DropReason::SpoofedSourceIp,
    ));

    // --- IPv6 ---
    let udp6 = ipv6_simple(a.ipv6, b.ipv6, 64, UDP, &udp(40000, 53, b"query"));
    let input = from_a_v6(&udp6);
    v.push(forward(
        "IPv6 UDP from pod A to pod B is routed",
        a.ifindex,
        input.clone(),
        b.ifindex,
        routed_v6(&input, b.mac),
    ));
    let ext = [
        ROUTING,
        0,
        1,
        4,
        0,
        0,
        0,
        0, // hop-by-hop: PadN
        DESTINATION_OPTIONS,
        0,
        0,
        0,
        0,
        0,
        0,
        0, // routing, segments left 0
        TCP,
        0,
        1,
        4,
        0,
        0,
        0,
        0, // destination options
    ];
    let input = from_a_v6(&ipv6_packet(
        a.ipv6,
        b.ipv6,
        64,
        HOP_BY_HOP,
        &ext,
        TCP,
        &tcp(40000, 443, 0x02, &[]),
    ));
    v.push(forward(
        "IPv6 TCP behind hop-by-hop, routing and destination options is routed",
        a.ifindex,
        input.clone(),
        b.ifindex,
        routed_v6(&input, b.mac),
    ));
    let bad_chain = [
        ROUTING, 0, 0, 0, 0, 0, 0, 0, HOP_BY_HOP, 0, 0, 0, 0, 0, 0, 0, UDP, 0, 0, 0, 0, 0, 0, 0,
    ];
    v.push(drop(
        "IPv6 hop-by-hop header that is not first",
        a.ifindex,
        from_a_v6(&ipv6_packet(
            a.ipv6,
            b.ipv6,
            64,
            HOP_BY_HOP,
            &bad_chain,
            UDP,
            &udp(1, 2, &[]),
        )),
        DropReason::InvalidIpv6Header,
    ));
    let frag_ext = [UDP, 0, 0, 1, 0, 0, 0, 42];
    v.push(drop(
        "IPv6 first fragment",
        a.ifindex,
        from_a_v6(&ipv6_packet(
            a.ipv6,
            b.ipv6,
            64,
            FRAGMENT,
            &frag_ext,
            UDP,
            &udp(1, 2, &[0; 16]),
        )),
        DropReason::Fragment,
    ));
    v.push(drop(
        "IPv6 source is another pod's address",
        a.ifindex,
        from_a_v6(&ipv6_simple(b.ipv6, a.ipv6, 64, UDP, &udp(1, 2, &[]))),
        DropReason::SpoofedSourceIp,
    ));
    v.push(drop(
        "IPv6 UDP from the pod's link-local address is not forwarded",
        a.ifindex,
        from_a_v6(&ipv6_simple(
            a.link_local(),
            b.ipv6,
            64,
            UDP,
            &udp(1, 2, &[]),
        )),
        DropReason::SpoofedSourceIp,
    ));
    v.push(drop(
        "IPv6 destination without an endpoint",
        a.ifindex,
        from_a_v6(&ipv6_simple(
            a.ipv6,
            "2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            64,
            UDP,
            &udp(1, 2, &[]),
        )),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "IPv6 multicast UDP",
        a.ifindex,
        ethernet(
            [0x33, 0x33, 0, 0, 0, 0xfb],
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                a.ipv6,
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb),
                255,
                UDP,
                &udp(5353, 5353, &[]),
            ),
        ),
        DropReason::Multicast,
    ));
    let hop1 = ipv6_simple(a.ipv6, b.ipv6, 1, UDP, &udp(40000, 53, b"query"));
    v.push(forward(
        "IPv6 hop limit 1 gets time exceeded",
        a.ifindex,
        from_a_v6(&hop1),
        a.ifindex,
        time_exceeded_v6(a, &hop1),
    ));
    let big6 = ipv6_simple(a.ipv6, b.ipv6, 1, UDP, &udp(40000, 9, &[0xcd; 1400]));
    v.push(forward(
        "IPv6 hop limit 1 on a large packet: the error fits 1280 bytes",
        a.ifindex,
        from_a_v6(&big6),
        a.ifindex,
        time_exceeded_v6(a, &big6),
    ));
    let ping6 = icmp(128, 0, [0x12, 0x34, 0, 1], b"abcdefgh");
    v.push(forward(
        "ping to the gateway IPv6 address is answered",
        a.ifindex,
        from_a_v6(&ipv6_simple(a.ipv6, GATEWAY_V6, 64, ICMPV6, &ping6)),
        a.ifindex,
        ethernet(
            a.mac,
            GATEWAY_MAC,
            ethertype::IPV6,
            &ipv6_simple(
                GATEWAY_V6,
                a.ipv6,
                64,
                ICMPV6,
                &icmp(129, 0, [0x12, 0x34, 0, 1], b"abcdefgh"),
            ),
        ),
    ));

    // --- neighbour discovery ---
    let ns = neighbor_solicit(GATEWAY_V6, Some(a.mac));
    v.push(forward(
        "NS for the gateway to its solicited-node group is answered",
        a.ifindex,
        ethernet(
            sn_mac,
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(a.ipv6, sn_gw, 255, ICMPV6, &ns),
        ),
        a.ifindex,
        neighbor_advert(a.mac, a.ipv6, true),
    ));
    v.push(forward(
        "NS for the gateway from the pod's link-local address",
        a.ifindex,
        ethernet(
            sn_mac,
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(a.link_local(), sn_gw, 255, ICMPV6, &ns),
        ),
        a.ifindex,
        neighbor_advert(a.mac, a.link_local(), true),
    ));
    v.push(forward(
        "unicast NS (reachability probe) for the gateway",
        a.ifindex,
        from_a_v6(&ipv6_simple(
            a.ipv6,
            GATEWAY_V6,
            255,
            ICMPV6,
            &neighbor_solicit(GATEWAY_V6, None),
        )),
        a.ifindex,
        neighbor_advert(a.mac, a.ipv6, true),
    ));
    v.push(forward(
        "DAD probe for the gateway address is defended to all-nodes",
        a.ifindex,
        ethernet(
            sn_mac,
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                Ipv6Addr::UNSPECIFIED,
                sn_gw,
                255,
                ICMPV6,
                &neighbor_solicit(GATEWAY_V6, None),
            ),
        ),
        a.ifindex,
        neighbor_advert(
            [0x33, 0x33, 0, 0, 0, 1],
            sluice_wire::ipv6::ALL_NODES,
            false,
        ),
    ));
    let sn_a = sluice_wire::ipv6::solicited_node(&a.ipv6);
    v.push(drop(
        "DAD probe for the pod's own address",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::ipv6_multicast(&sn_a),
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                Ipv6Addr::UNSPECIFIED,
                sn_a,
                255,
                ICMPV6,
                &neighbor_solicit(a.ipv6, None),
            ),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    let sn_b = sluice_wire::ipv6::solicited_node(&b.ipv6);
    v.push(drop(
        "NS for another pod",
        a.ifindex,
        ethernet(
            sluice_wire::ethernet::ipv6_multicast(&sn_b),
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                a.ipv6,
                sn_b,
                255,
                ICMPV6,
                &neighbor_solicit(b.ipv6, Some(a.mac)),
            ),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    v.push(drop(
        "NS with hop limit 64 (off-link)",
        a.ifindex,
        ethernet(
            sn_mac,
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(a.ipv6, sn_gw, 64, ICMPV6, &ns),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    let mut bad_ns = ethernet(
        sn_mac,
        a.mac,
        ethertype::IPV6,
        &ipv6_simple(a.ipv6, sn_gw, 255, ICMPV6, &ns),
    );
    bad_ns[14 + 40 + 2] ^= 0x10;
    v.push(drop(
        "NS with a bad ICMPv6 checksum",
        a.ifindex,
        bad_ns,
        DropReason::L4ChecksumBad,
    ));
    v.push(drop(
        "NS whose source link-layer option is not the pod's MAC",
        a.ifindex,
        ethernet(
            sn_mac,
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                a.ipv6,
                sn_gw,
                255,
                ICMPV6,
                &neighbor_solicit(GATEWAY_V6, Some(b.mac)),
            ),
        ),
        DropReason::SpoofedSourceMac,
    ));
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    v.push(drop(
        "router solicitation is not answered",
        a.ifindex,
        ethernet(
            [0x33, 0x33, 0, 0, 0, 2],
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                a.link_local(),
                all_routers,
                255,
                ICMPV6,
                &icmp(133, 0, [0; 4], &[1, 1, 2, 0, 0, 0, 0, 0x0a]),
            ),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    let mld_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
    v.push(drop(
        "MLDv2 report during DAD",
        a.ifindex,
        ethernet(
            [0x33, 0x33, 0, 0, 0, 0x16],
            a.mac,
            ethertype::IPV6,
            &ipv6_simple(
                Ipv6Addr::UNSPECIFIED,
                mld_routers,
                1,
                ICMPV6,
                &icmp(143, 0, [0; 4], &[]),
            ),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    v
}

fn from_outside(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    ethernet(UPLINK_MAC, NEXT_HOP_MAC, ethertype, ip)
}

/// The fixtures for the node's uplink; run them against [`uplink_tables`].
pub fn uplink_all() -> Vec<Fixture> {
    let (a, b) = (POD_A, POD_B);
    let unassigned_v4 = Ipv4Addr::new(10, 200, 0, 99);
    let unassigned_v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99);
    let mut v = Vec::new();

    let out4 = from_a_v4(&V4::new(a.ipv4, OUTSIDE_V4, UDP, 64).packet(&udp(40000, 53, b"q")));
    v.push(forward(
        "uplink: IPv4 from a pod to the outside leaves through the uplink",
        a.ifindex,
        out4.clone(),
        UPLINK_IFINDEX,
        to_next_hop(routed_v4(&out4, NEXT_HOP_MAC)),
    ));
    let out6 = from_a_v6(&ipv6_simple(
        a.ipv6,
        OUTSIDE_V6,
        64,
        UDP,
        &udp(40000, 53, b"q"),
    ));
    v.push(forward(
        "uplink: IPv6 from a pod to the outside leaves through the uplink",
        a.ifindex,
        out6.clone(),
        UPLINK_IFINDEX,
        to_next_hop(routed_v6(&out6, NEXT_HOP_MAC)),
    ));
    let in4 = from_outside(
        ethertype::IPV4,
        &V4::new(OUTSIDE_V4, b.ipv4, ICMP, 63).packet(&icmp(8, 0, [0, 1, 0, 1], b"ping")),
    );
    v.push(forward(
        "uplink: IPv4 from the outside to a pod is routed to the pod",
        UPLINK_IFINDEX,
        in4.clone(),
        b.ifindex,
        routed_v4(&in4, b.mac),
    ));
    let in6 = from_outside(
        ethertype::IPV6,
        &ipv6_simple(OUTSIDE_V6, b.ipv6, 63, UDP, &udp(53, 40000, b"a")),
    );
    v.push(forward(
        "uplink: IPv6 from the outside to a pod is routed to the pod",
        UPLINK_IFINDEX,
        in6.clone(),
        b.ifindex,
        routed_v6(&in6, b.mac),
    ));
    v.push(drop(
        "uplink: IPv4 from the outside to an address without an endpoint",
        UPLINK_IFINDEX,
        from_outside(
            ethertype::IPV4,
            &V4::new(OUTSIDE_V4, unassigned_v4, UDP, 64).packet(&udp(1, 2, &[])),
        ),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "uplink: IPv6 from the outside to an address without an endpoint",
        UPLINK_IFINDEX,
        from_outside(
            ethertype::IPV6,
            &ipv6_simple(OUTSIDE_V6, unassigned_v6, 64, UDP, &udp(1, 2, &[])),
        ),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "uplink: IPv4 from the outside to another outside address",
        UPLINK_IFINDEX,
        from_outside(
            ethertype::IPV4,
            &V4::new(OUTSIDE_V4, Ipv4Addr::new(198, 51, 100, 1), UDP, 64).packet(&udp(1, 2, &[])),
        ),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "uplink: IPv4 from the outside with TTL 1",
        UPLINK_IFINDEX,
        from_outside(
            ethertype::IPV4,
            &V4::new(OUTSIDE_V4, b.ipv4, UDP, 1).packet(&udp(1, 2, &[])),
        ),
        DropReason::TtlExceeded,
    ));
    v.push(drop(
        "uplink: ARP from the outside",
        UPLINK_IFINDEX,
        ethernet(
            [0xff; 6],
            NEXT_HOP_MAC,
            ethertype::ARP,
            &arp(
                ArpOperation::Request,
                NEXT_HOP_MAC,
                OUTSIDE_V4,
                [0; 6],
                b.ipv4,
            ),
        ),
        DropReason::ArpNotForGateway,
    ));
    let sn = sluice_wire::ipv6::solicited_node(&b.ipv6);
    v.push(drop(
        "uplink: neighbour solicitation from the outside",
        UPLINK_IFINDEX,
        ethernet(
            sluice_wire::ethernet::ipv6_multicast(&sn),
            NEXT_HOP_MAC,
            ethertype::IPV6,
            &ipv6_simple(
                OUTSIDE_V6,
                sn,
                255,
                ICMPV6,
                &neighbor_solicit(b.ipv6, Some(NEXT_HOP_MAC)),
            ),
        ),
        DropReason::Icmpv6NotHandled,
    ));
    v.push(drop(
        "uplink: IPv4 from a pod to an unassigned pod address is not sent out",
        a.ifindex,
        from_a_v4(&V4::new(a.ipv4, unassigned_v4, UDP, 64).packet(&udp(1, 2, &[]))),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "uplink: IPv6 from a pod to an unassigned pod address is not sent out",
        a.ifindex,
        from_a_v6(&ipv6_simple(
            a.ipv6,
            unassigned_v6,
            64,
            UDP,
            &udp(1, 2, &[]),
        )),
        DropReason::NoRoute,
    ));
    v.push(drop(
        "uplink: a pod's spoofed source is still refused with an uplink",
        a.ifindex,
        from_a_v4(&V4::new(b.ipv4, OUTSIDE_V4, UDP, 64).packet(&udp(1, 2, &[]))),
        DropReason::SpoofedSourceIp,
    ));
    v
}

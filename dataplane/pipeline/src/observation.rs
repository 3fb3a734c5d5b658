//! What the pipeline saw of one frame, for flow events: the caller passes an
//! [`Observation`] to [`crate::process_observed`], the stages fill it in, and
//! the engine turns it (with the verdict) into a flow event when its
//! aggregation level asks for one. Plain `Copy` data, no allocation; the
//! caller calls [`Observation::clear`] before each frame.

use std::net::IpAddr;

/// What conntrack made of the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CtOutcome {
    /// Not tracked: ARP, ND, gateway traffic, untracked protocols, or dropped
    /// before the conntrack stage.
    #[default]
    Untracked,
    /// First packet of a new flow (the original direction): Hubble's trace
    /// reason NEW.
    New,
    /// A tracked flow in its original direction: ESTABLISHED.
    Established,
    /// A tracked flow in its reply direction: REPLY (`is_reply`).
    Reply,
}

/// An L3/L4 tuple. Ports are 0 for protocols without ports; for ICMP the
/// type and code sit in [`Observation::icmp`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
}

/// The policy rules behind a decision on this frame, as indexes into the
/// snapshot's `policy.rules` (`u32::MAX` = no rule: not enforced, or allowed
/// without a rule such as allow-localhost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyNote {
    /// The source endpoint's egress table was consulted.
    pub egress_enforced: bool,
    /// The rule that allowed egress (`u32::MAX` when none or not enforced).
    pub egress_rule: u32,
    /// The destination endpoint's ingress table was consulted.
    pub ingress_enforced: bool,
    /// The rule that allowed ingress.
    pub ingress_rule: u32,
}

/// Longest DNS name kept in an event; longer names are cut and flagged.
pub const DNS_NAME_MAX: usize = 255;
/// Addresses of an answer kept in an event.
pub const DNS_ADDRESSES_MAX: usize = 8;

/// A DNS query or answer seen on a DNS-inspected flow (a flow allowed by a
/// rule with `toPorts.rules.dns`), as Hubble's l7 dns record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsNote {
    /// false: a query (l7 REQUEST); true: an answer (RESPONSE).
    pub is_response: bool,
    /// The query was answered REFUSED by the engine because no DNS rule
    /// matched the name (the verdict is a drop with reason `dns_refused`).
    pub refused_by_policy: bool,
    pub id: u16,
    /// QTYPE of the (first) question: 1 A, 28 AAAA, ...
    pub qtype: u16,
    /// RCODE of an answer (0 for a query).
    pub rcode: u8,
    /// The question name, lowercase, without the trailing dot: `name[..name_len]`.
    pub name: [u8; DNS_NAME_MAX],
    pub name_len: u8,
    /// The name was longer than [`DNS_NAME_MAX`] and cut.
    pub name_truncated: bool,
    /// A/AAAA addresses of an answer: `addresses[..address_count]`.
    pub addresses: [IpAddr; DNS_ADDRESSES_MAX],
    pub address_count: u8,
    /// Lowest TTL on the answer chain (seconds).
    pub ttl: u32,
}

impl DnsNote {
    /// The question name as text (names are ASCII on the wire; anything else
    /// is replaced).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..self.name_len as usize]).into_owned()
    }

    /// The answer's addresses.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses[..self.address_count as usize]
    }
}

/// Everything the stages noted about one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub ct: CtOutcome,
    /// The tuple as received, before any rewrite (None for non-IP frames or
    /// frames dropped before parsing got that far).
    pub original: Option<Tuple>,
    /// The tuple as transmitted when a rewrite changed it (service DNAT,
    /// hairpin SNAT, masquerade, reverse NAT of a reply); None otherwise.
    pub translated: Option<Tuple>,
    /// Id (`Service::id`) of the service whose frontend the original
    /// destination is (a new or tracked flow to a frontend), or whose
    /// frontend a reply's translated source is.
    pub service: Option<u32>,
    /// TCP flags byte of a TCP frame (FIN 0x01 .. CWR 0x80), else 0.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type and code of an ICMP frame.
    pub icmp: Option<(u8, u8)>,
    /// The policy decision taken on this frame (new connection or a
    /// re-check after a policy change), if policy was evaluated.
    pub policy: Option<PolicyNote>,
    /// A DNS message on a DNS-inspected flow.
    pub dns: Option<DnsNote>,
}

impl Observation {
    /// Resets it for the next frame.
    pub fn clear(&mut self) {
        self.ct = CtOutcome::Untracked;
        self.original = None;
        self.translated = None;
        self.service = None;
        self.tcp_flags = 0;
        self.icmp = None;
        self.policy = None;
        self.dns = None;
    }
}

//! Label values of the Hubble metrics, as Hubble's metric handlers spell
//! them (cilium/cilium `pkg/hubble/metrics/*`, `pkg/hubble/api/v1`
//! `FlowProtocol`, `pkg/monitor/api` observation points and policy match
//! types, gopacket's ICMP type/code names), so dashboards and alerts written
//! for Hubble work unchanged.

use sluice_api::hubble::{Flow, Icmp};

/// Hubble's event type numbers (`CiliumEventType.type`).
pub const EVENT_DROP: i32 = 1;
pub const EVENT_TRACE: i32 = 4;
pub const EVENT_POLICY_VERDICT: i32 = 5;
pub const EVENT_ACCESS_LOG: i32 = 129;

/// The reserved identity of this node (policy verdicts from it are not
/// counted, as Hubble does: the host may reach every local endpoint).
pub const IDENTITY_HOST: u32 = 1;

/// Hubble's `FlowProtocol`: the L7 protocol of an access log flow, else
/// the L4 protocol.
pub fn flow_protocol(flow: &Flow) -> &'static str {
    let event_type = flow.event_type.map(|t| t.event_type);
    if event_type == Some(EVENT_ACCESS_LOG) || (event_type.is_none() && flow.l7.is_some()) {
        return match &flow.l7 {
            Some(l7) if l7.dns.is_some() => "DNS",
            _ => "Unknown L7",
        };
    }
    match &flow.l4 {
        Some(l4) if l4.tcp.is_some() => "TCP",
        Some(l4) if l4.udp.is_some() => "UDP",
        Some(l4) if l4.icmpv4.is_some() => "ICMPv4",
        Some(l4) if l4.icmpv6.is_some() => "ICMPv6",
        Some(l4) if l4.sctp.is_some() => "SCTP",
        _ => "Unknown L4",
    }
}

/// `type` and `subtype` of `hubble_flows_processed_total`: `Trace` with the
/// observation point (`to-endpoint`, ...), `Drop`, `PolicyVerdict`, `L7` with
/// `DNS`; anything else `Unknown` with its number.
pub fn flow_type(flow: &Flow) -> (&'static str, String) {
    let Some(event_type) = flow.event_type else {
        return ("Unknown", "0".to_string());
    };
    match event_type.event_type {
        EVENT_TRACE => ("Trace", trace_observation_point(flow, event_type.sub_type)),
        EVENT_DROP => ("Drop", String::new()),
        EVENT_POLICY_VERDICT => ("PolicyVerdict", String::new()),
        EVENT_ACCESS_LOG => {
            let subtype = match &flow.l7 {
                Some(l7) if l7.dns.is_some() => "DNS",
                _ => "",
            };
            ("L7", subtype.to_string())
        }
        other => ("Unknown", other.to_string()),
    }
}

/// Hubble's observation point names (`to-endpoint`): from the flow's
/// `trace_observation_point` (`TO_ENDPOINT`), else from the event subtype
/// number as Cilium's monitor numbers them.
fn trace_observation_point(flow: &Flow, sub_type: i32) -> String {
    if !flow.trace_observation_point.is_empty() {
        return flow
            .trace_observation_point
            .to_ascii_lowercase()
            .replace('_', "-");
    }
    const BY_NUMBER: [&str; 12] = [
        "to-endpoint",
        "to-proxy",
        "to-host",
        "to-stack",
        "to-overlay",
        "from-endpoint",
        "from-proxy",
        "from-host",
        "from-stack",
        "from-overlay",
        "from-network",
        "to-network",
    ];
    usize::try_from(sub_type)
        .ok()
        .and_then(|i| BY_NUMBER.get(i))
        .map_or_else(|| sub_type.to_string(), |name| (*name).to_string())
}

/// `match` of `hubble_policy_verdicts_total`: Cilium's policy match type
/// names, lowercased.
pub fn policy_match(match_type: u32) -> String {
    match match_type {
        0 => "none",
        1 => "l3-only",
        2 => "l3-l4",
        3 => "l4-only",
        4 => "all",
        _ => "unknown",
    }
    .to_string()
}

/// `rcode` of `hubble_dns_responses_total` (Hubble's names).
pub fn dns_rcode(rcode: u32) -> String {
    let name = match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Not Authorized",
        10 => "Name not contained in zone",
        11 => "DSO-TYPE Not Implemented",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad/missing Server Cookie",
        // Hubble indexes a map: an unknown code gives the empty string.
        _ => "",
    };
    name.to_string()
}

/// `type` of `hubble_icmp_total` for ICMPv4: gopacket's type(code) names
/// (`EchoRequest`, `DestinationUnreachable(Port)`, `TimeExceeded(TTLExceeded)`).
pub fn icmpv4_type(icmp: &Icmp) -> String {
    let code = icmp.code;
    let (type_name, code_name): (&str, Option<&str>) = match icmp.icmp_type {
        0 => ("EchoReply", None),
        3 => (
            "DestinationUnreachable",
            Some(match code {
                0 => "Net",
                1 => "Host",
                2 => "Protocol",
                3 => "Port",
                4 => "FragmentationNeeded",
                5 => "SourceRoutingFailed",
                6 => "NetUnknown",
                7 => "HostUnknown",
                8 => "SourceIsolated",
                9 => "NetAdminProhibited",
                10 => "HostAdminProhibited",
                11 => "NetTOS",
                12 => "HostTOS",
                13 => "CommAdminProhibited",
                14 => "HostPrecedence",
                15 => "PrecedenceCutoff",
                _ => "",
            }),
        ),
        4 => ("SourceQuench", None),
        5 => (
            "Redirect",
            Some(match code {
                0 => "Net",
                1 => "Host",
                2 => "TOS+Net",
                3 => "TOS+Host",
                _ => "",
            }),
        ),
        8 => ("EchoRequest", None),
        9 => ("RouterAdvertisement", None),
        10 => ("RouterSolicitation", None),
        11 => (
            "TimeExceeded",
            Some(match code {
                0 => "TTLExceeded",
                1 => "FragmentReassemblyTimeExceeded",
                _ => "",
            }),
        ),
        12 => (
            "ParameterProblem",
            Some(match code {
                0 => "PointerIndicatesError",
                1 => "MissingOption",
                2 => "BadLength",
                _ => "",
            }),
        ),
        13 => ("TimestampRequest", None),
        14 => ("TimestampReply", None),
        15 => ("InfoRequest", None),
        16 => ("InfoReply", None),
        17 => ("AddressMaskRequest", None),
        18 => ("AddressMaskReply", None),
        other => return format!("{other}({code})"),
    };
    type_and_code(type_name, code_name, code)
}

/// `type` of `hubble_icmp_total` for ICMPv6 (gopacket's names).
pub fn icmpv6_type(icmp: &Icmp) -> String {
    let code = icmp.code;
    let (type_name, code_name): (&str, Option<&str>) = match icmp.icmp_type {
        1 => (
            "DestinationUnreachable",
            Some(match code {
                0 => "NoRouteToDst",
                1 => "AdminProhibited",
                2 => "BeyondScopeOfSrc",
                3 => "AddressUnreachable",
                4 => "PortUnreachable",
                5 => "SrcAddressFailedPolicy",
                6 => "RejectRouteToDst",
                _ => "",
            }),
        ),
        2 => ("PacketTooBig", None),
        3 => (
            "TimeExceeded",
            Some(match code {
                0 => "HopLimitExceeded",
                1 => "FragmentReassemblyTimeExceeded",
                _ => "",
            }),
        ),
        4 => (
            "ParameterProblem",
            Some(match code {
                0 => "ErroneousHeaderField",
                1 => "UnrecognizedNextHeader",
                2 => "UnrecognizedIPv6Option",
                _ => "",
            }),
        ),
        128 => ("EchoRequest", None),
        129 => ("EchoReply", None),
        133 => ("RouterSolicitation", None),
        134 => ("RouterAdvertisement", None),
        135 => ("NeighborSolicitation", None),
        136 => ("NeighborAdvertisement", None),
        137 => ("Redirect", None),
        other => return format!("{other}({code})"),
    };
    type_and_code(type_name, code_name, code)
}

/// gopacket's rule: a type without code names prints alone when the code is
/// 0, else with `(Code: n)`; an unknown code of a named type prints as
/// `(Code: n)` too.
fn type_and_code(type_name: &str, code_name: Option<&str>, code: u32) -> String {
    match code_name {
        None if code == 0 => type_name.to_string(),
        Some(name) if !name.is_empty() => format!("{type_name}({name})"),
        _ => format!("{type_name}(Code: {code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp(icmp_type: u32, code: u32) -> Icmp {
        Icmp { icmp_type, code }
    }

    #[test]
    fn icmp_names_follow_gopacket() {
        assert_eq!(icmpv4_type(&icmp(8, 0)), "EchoRequest");
        assert_eq!(icmpv4_type(&icmp(3, 3)), "DestinationUnreachable(Port)");
        assert_eq!(icmpv4_type(&icmp(11, 0)), "TimeExceeded(TTLExceeded)");
        assert_eq!(icmpv4_type(&icmp(8, 7)), "EchoRequest(Code: 7)");
        assert_eq!(
            icmpv4_type(&icmp(3, 99)),
            "DestinationUnreachable(Code: 99)"
        );
        assert_eq!(icmpv4_type(&icmp(42, 1)), "42(1)");
        assert_eq!(icmpv6_type(&icmp(128, 0)), "EchoRequest");
        assert_eq!(
            icmpv6_type(&icmp(1, 4)),
            "DestinationUnreachable(PortUnreachable)"
        );
        assert_eq!(icmpv6_type(&icmp(3, 0)), "TimeExceeded(HopLimitExceeded)");
    }

    #[test]
    fn names_of_match_types_and_rcodes() {
        assert_eq!(policy_match(2), "l3-l4");
        assert_eq!(policy_match(4), "all");
        assert_eq!(policy_match(9), "unknown");
        assert_eq!(dns_rcode(3), "Non-Existent Domain");
        assert_eq!(dns_rcode(5), "Query Refused");
        assert_eq!(dns_rcode(12), "");
    }
}

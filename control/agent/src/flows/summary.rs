//! Hubble's one-line `Summary` of a flow: `TCP Flags: SYN, ACK`, `UDP`,
//! `ICMPv4 EchoRequest`, `DNS Query example.com. A`. Hubble takes the packet
//! layers' names from gopacket; the same names are written out here.

use sluice_api::hubble::{Dns, TcpFlags};

/// `SYN, ACK`: the set flags in Hubble's order.
pub fn tcp_flags_text(flags: &TcpFlags) -> String {
    let named = [
        (flags.SYN, "SYN"),
        (flags.ACK, "ACK"),
        (flags.RST, "RST"),
        (flags.FIN, "FIN"),
        (flags.PSH, "PSH"),
        (flags.URG, "URG"),
        (flags.ECE, "ECE"),
        (flags.CWR, "CWR"),
        (flags.NS, "NS"),
    ];
    named
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary of an L3/L4 flow by IP protocol number.
pub fn l4_summary(protocol: u8, flags: Option<&TcpFlags>, icmp: Option<(u8, u8)>) -> String {
    match protocol {
        6 => format!(
            "TCP Flags: {}",
            flags.map(tcp_flags_text).unwrap_or_default()
        ),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => match icmp {
            Some((t, c)) => format!("ICMPv4 {}", icmpv4_name(t, c)),
            None => "ICMPv4".into(),
        },
        58 => match icmp {
            Some((t, c)) => format!("ICMPv6 {}", icmpv6_name(t, c)),
            None => "ICMPv6".into(),
        },
        other => format!("IP protocol {other}"),
    }
}

/// gopacket's ICMPv4 type (and code) name.
pub fn icmpv4_name(icmp_type: u8, code: u8) -> String {
    let (name, codes): (&str, &[&str]) = match icmp_type {
        0 => ("EchoReply", &[]),
        3 => (
            "DestinationUnreachable",
            &[
                "Net",
                "Host",
                "Protocol",
                "Port",
                "FragmentationNeeded",
                "SourceRoutingFailed",
                "NetUnknown",
                "HostUnknown",
                "SourceIsolated",
                "NetAdminProhibited",
                "HostAdminProhibited",
                "NetTOS",
                "HostTOS",
                "CommAdminProhibited",
                "HostPrecedence",
                "PrecedenceCutoff",
            ],
        ),
        4 => ("SourceQuench", &[]),
        5 => ("Redirect", &["Network", "Host", "TOS+Network", "TOS+Host"]),
        8 => ("EchoRequest", &[]),
        9 => ("RouterAdvertisement", &[]),
        10 => ("RouterSolicitation", &[]),
        11 => (
            "TimeExceeded",
            &["TTLExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        12 => (
            "ParameterProblem",
            &["PointerIndicatesError", "MissingOption", "BadLength"],
        ),
        13 => ("Timestamp", &[]),
        14 => ("TimestampReply", &[]),
        _ => return format!("{icmp_type}({code})"),
    };
    with_code(name, codes, code)
}

/// gopacket's ICMPv6 type (and code) name.
pub fn icmpv6_name(icmp_type: u8, code: u8) -> String {
    let (name, codes): (&str, &[&str]) = match icmp_type {
        1 => (
            "DestinationUnreachable",
            &[
                "NoRouteToDst",
                "AdminProhibited",
                "BeyondScopeOfSrc",
                "Address",
                "Port",
                "SrcAddressFailedPolicy",
                "RejectRouteToDst",
            ],
        ),
        2 => ("PacketTooBig", &[]),
        3 => (
            "TimeExceeded",
            &["HopLimitExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        4 => (
            "ParameterProblem",
            &[
                "ErroneousHeaderField",
                "UnrecognizedNextHeader",
                "UnrecognizedIPv6Option",
            ],
        ),
        128 => ("EchoRequest", &[]),
        129 => ("EchoReply", &[]),
        133 => ("RouterSolicitation", &[]),
        134 => ("RouterAdvertisement", &[]),
        135 => ("NeighborSolicitation", &[]),
        136 => ("NeighborAdvertisement", &[]),
        137 => ("Redirect", &[]),
        _ => return format!("{icmp_type}({code})"),
    };
    with_code(name, codes, code)
}

fn with_code(name: &str, codes: &[&str], code: u8) -> String {
    if codes.is_empty() {
        return name.to_string();
    }
    match codes.get(code as usize) {
        Some(c) => format!("{name}({c})"),
        None => format!("{name}(Code: {code})"),
    }
}

/// A DNS record type's name (`A`, `AAAA`, ...), or `TYPE<n>` (RFC 3597).
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

/// A DNS RCODE's name as Hubble prints it.
pub fn rcode_name(rcode: u32) -> String {
    match rcode {
        0 => "No Error".into(),
        1 => "Format Error".into(),
        2 => "Server Failure".into(),
        3 => "Non-Existent Domain".into(),
        4 => "Not Implemented".into(),
        5 => "Query Refused".into(),
        other => format!("RCode {other}"),
    }
}

/// `DNS Query example.com. A`, or for an answer
/// `DNS Answer "10.0.0.1,10.0.0.2" TTL: 30 (Query example.com. A)`.
pub fn dns_summary(dns: &Dns, is_response: bool) -> String {
    let qtypes = dns.qtypes.join(",");
    if !is_response {
        return format!("DNS Query {} {qtypes}", dns.query);
    }
    let answer = if dns.rcode != 0 {
        format!("RCode: {}", rcode_name(dns.rcode))
    } else {
        format!("{:?}", dns.ips.join(","))
    };
    format!(
        "DNS Answer {answer} TTL: {} (Query {} {qtypes})",
        dns.ttl, dns.query
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_hubbles() {
        let flags = TcpFlags {
            SYN: true,
            ACK: true,
            FIN: true,
            ..Default::default()
        };
        assert_eq!(
            l4_summary(6, Some(&flags), None),
            "TCP Flags: SYN, ACK, FIN"
        );
        assert_eq!(l4_summary(17, None, None), "UDP");
        assert_eq!(l4_summary(1, None, Some((8, 0))), "ICMPv4 EchoRequest");
        assert_eq!(
            l4_summary(1, None, Some((3, 3))),
            "ICMPv4 DestinationUnreachable(Port)"
        );
        assert_eq!(l4_summary(58, None, Some((129, 0))), "ICMPv6 EchoReply");
        assert_eq!(
            l4_summary(58, None, Some((1, 4))),
            "ICMPv6 DestinationUnreachable(Port)"
        );
        assert_eq!(icmpv4_name(3, 40), "DestinationUnreachable(Code: 40)");
        assert_eq!(icmpv4_name(99, 1), "99(1)");
        let dns = Dns {
            query: "example.com.".into(),
            ips: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            ttl: 30,
            qtypes: vec!["A".into()],
            ..Default::default()
        };
        assert_eq!(dns_summary(&dns, false), "DNS Query example.com. A");
        assert_eq!(
            dns_summary(&dns, true),
            "DNS Answer \"10.0.0.1,10.0.0.2\" TTL: 30 (Query example.com. A)"
        );
        let refused = Dns { rcode: 5, ..dns };
        assert_eq!(
            dns_summary(&refused, true),
            "DNS Answer RCode: Query Refused TTL: 30 (Query example.com. A)"
        );
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(4242), "TYPE4242");
    }
}

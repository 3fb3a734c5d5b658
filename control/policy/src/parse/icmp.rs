//! ICMP types in `icmps[].fields[]`: a number 0-255 or the CamelCase name
//! Cilium accepts for the family (`EchoRequest` is 8 for IPv4 and 128 for
//! IPv6). The names follow IANA's ICMP and ICMPv6 parameter registries
//! (RFC 792, 1256, 2521, 8335; RFC 4443, 2710, 4861, 2894, 4620, 3122,
//! 6275, 6775) and are exactly Cilium's set, so a policy Cilium accepts is
//! accepted here and one it refuses is refused.

use crate::model::PortValue;

const ICMPV4_TYPES: [(&str, u8); 14] = [
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

const ICMPV6_TYPES: [(&str, u8); 27] = [
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

fn table(family_v6: bool) -> &'static [(&'static str, u8)] {
    if family_v6 {
        &ICMPV6_TYPES
    } else {
        &ICMPV4_TYPES
    }
}

/// The ICMP type an `icmps[].fields[].type` names, for ICMPv6 when
/// `family_v6`: a number 0-255 (also as a string of digits) or a name of
/// the family (case-sensitive, as Cilium).
pub fn icmp_type(family_v6: bool, value: &PortValue) -> Result<u8, String> {
    let number = match value {
        PortValue::Number(n) => Some(*n),
        PortValue::Text(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(text.parse().unwrap_or(i64::MAX))
        }
        PortValue::Text(name) => {
            if let Some((_, code)) = table(family_v6).iter().find(|(n, _)| n == name) {
                return Ok(*code);
            }
            None
        }
    };
    if let Some(number) = number.and_then(|n| u8::try_from(n).ok()) {
        return Ok(number);
    }
    let family = if family_v6 { "ICMPv6" } else { "ICMPv4" };
    let names: Vec<&str> = table(family_v6).iter().map(|(name, _)| *name).collect();
    Err(format!(
        "{value} is not an {family} type (0-255 or one of {})",
        names.join(", ")
    ))
}

/// The name of an ICMP type, if it has one (the first of its aliases).
pub fn icmp_type_name(family_v6: bool, code: u8) -> Option<&'static str> {
    table(family_v6)
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(name, _)| *name)
}

/// `icmps[].fields[].family`: absent or `IPv4` (false), `IPv6` (true).
pub(crate) fn icmp_family(family: Option<&str>) -> Result<bool, String> {
    match family {
        None | Some("IPv4") => Ok(false),
        Some("IPv6") => Ok(true),
        Some(other) => Err(format!("{other:?} is not IPv4 or IPv6")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> PortValue {
        PortValue::Text(text.into())
    }

    #[test]
    fn names_per_family() {
        assert_eq!(icmp_type(false, &name("EchoRequest")), Ok(8));
        assert_eq!(icmp_type(false, &name("Echo")), Ok(8));
        assert_eq!(icmp_type(true, &name("EchoRequest")), Ok(128));
        assert_eq!(icmp_type(true, &name("NeighborSolicitation")), Ok(135));
        assert_eq!(icmp_type(false, &name("DestinationUnreachable")), Ok(3));
        assert_eq!(icmp_type(true, &name("DestinationUnreachable")), Ok(1));
        assert_eq!(icmp_type(true, &name("PacketTooBig")), Ok(2));
        assert!(icmp_type(false, &name("PacketTooBig")).is_err());
        assert!(icmp_type(false, &name("echorequest")).is_err());
        assert_eq!(icmp_type_name(false, 8), Some("Echo"));
        assert_eq!(icmp_type_name(true, 129), Some("EchoReply"));
        assert_eq!(icmp_type_name(true, 143), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(icmp_type(false, &PortValue::Number(0)), Ok(0));
        assert_eq!(icmp_type(true, &PortValue::Number(255)), Ok(255));
        assert_eq!(icmp_type(false, &name("13")), Ok(13));
        assert_eq!(
            icmp_type(false, &PortValue::Number(256)).unwrap_err(),
            "256 is not an ICMPv4 type (0-255 or one of EchoReply, DestinationUnreachable, \
             Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, \
             ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, \
             ExtendedEchoReply)"
        );
        assert!(icmp_type(false, &name("99999999999999999999999")).is_err());
        assert!(icmp_type(false, &PortValue::Number(-1)).is_err());
    }

    #[test]
    fn families() {
        assert_eq!(icmp_family(None), Ok(false));
        assert_eq!(icmp_family(Some("IPv4")), Ok(false));
        assert_eq!(icmp_family(Some("IPv6")), Ok(true));
        assert_eq!(
            icmp_family(Some("ipv6")).unwrap_err(),
            "\"ipv6\" is not IPv4 or IPv6"
        );
    }
}

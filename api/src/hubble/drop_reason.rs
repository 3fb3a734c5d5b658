//! Sluice's drop reasons (`sluice_pipeline::DropReason` numbers) as Hubble's
//! `DropReason` enum (flow.proto): the name for `drop_reason_desc` and the
//! number for the deprecated `drop_reason`.
//!
//! The api crate cannot depend on the pipeline, so the mapping is keyed by
//! Sluice's stable reason numbers; `api/tests/hubble_drop_reason.rs` lists
//! every number with its name as `dataplane/pipeline/src/verdict.rs` has it.

/// Hubble's `DropReason` values: name, number, and the text Hubble prints for
/// it (Cilium `pkg/monitor/api/drop.go`: the compact output's type column).
pub const HUBBLE_DROP_REASONS: &[(&str, u32, &str)] = &[
    ("DROP_REASON_UNKNOWN", 0, "Unknown"),
    ("INVALID_SOURCE_MAC", 130, "Invalid source mac"),
    ("INVALID_DESTINATION_MAC", 131, "Invalid destination mac"),
    ("INVALID_SOURCE_IP", 132, "Invalid source ip"),
    ("POLICY_DENIED", 133, "Policy denied"),
    ("INVALID_PACKET_DROPPED", 134, "Invalid packet"),
    (
        "CT_TRUNCATED_OR_INVALID_HEADER",
        135,
        "CT: Truncated or invalid header",
    ),
    ("CT_MISSING_TCP_ACK_FLAG", 136, "Fragmentation needed"),
    ("CT_UNKNOWN_L4_PROTOCOL", 137, "CT: Unknown L4 protocol"),
    (
        "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
        138,
        "CT: Can't create entry from packet",
    ),
    ("UNSUPPORTED_L3_PROTOCOL", 139, "Unsupported L3 protocol"),
    ("MISSED_TAIL_CALL", 140, "Missed tail call"),
    ("ERROR_WRITING_TO_PACKET", 141, "Error writing to packet"),
    ("UNKNOWN_L4_PROTOCOL", 142, "Unknown L4 protocol"),
    ("UNKNOWN_ICMPV4_CODE", 143, "Unknown ICMPv4 code"),
    ("UNKNOWN_ICMPV4_TYPE", 144, "Unknown ICMPv4 type"),
    ("UNKNOWN_ICMPV6_CODE", 145, "Unknown ICMPv6 code"),
    ("UNKNOWN_ICMPV6_TYPE", 146, "Unknown ICMPv6 type"),
    (
        "ERROR_RETRIEVING_TUNNEL_KEY",
        147,
        "Error retrieving tunnel key",
    ),
    (
        "ERROR_RETRIEVING_TUNNEL_OPTIONS",
        148,
        "Error retrieving tunnel options",
    ),
    ("INVALID_GENEVE_OPTION", 149, "Invalid Geneve option"),
    (
        "UNKNOWN_L3_TARGET_ADDRESS",
        150,
        "Unknown L3 target address",
    ),
    ("STALE_OR_UNROUTABLE_IP", 151, "Stale or unroutable IP"),
    (
        "NO_MATCHING_LOCAL_CONTAINER_FOUND",
        152,
        "No matching local container found",
    ),
    (
        "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
        153,
        "Error while correcting L3 checksum",
    ),
    (
        "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
        154,
        "Error while correcting L4 checksum",
    ),
    ("CT_MAP_INSERTION_FAILED", 155, "CT: Map insertion failed"),
    (
        "INVALID_IPV6_EXTENSION_HEADER",
        156,
        "Invalid IPv6 extension header",
    ),
    (
        "IP_FRAGMENTATION_NOT_SUPPORTED",
        157,
        "IP fragmentation not supported",
    ),
    (
        "SERVICE_BACKEND_NOT_FOUND",
        158,
        "Service backend not found",
    ),
    (
        "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
        160,
        "No tunnel/encapsulation endpoint (datapath BUG!)",
    ),
    (
        "FAILED_TO_INSERT_INTO_PROXYMAP",
        161,
        "NAT 46/64 not enabled",
    ),
    (
        "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
        162,
        "Reached EDT rate-limiting drop horizon",
    ),
    (
        "UNKNOWN_CONNECTION_TRACKING_STATE",
        163,
        "Unknown connection tracking state",
    ),
    (
        "LOCAL_HOST_IS_UNREACHABLE",
        164,
        "Local host is unreachable",
    ),
    (
        "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
        165,
        "No configuration available to perform policy decision",
    ),
    ("UNSUPPORTED_L2_PROTOCOL", 166, "Unsupported L2 protocol"),
    (
        "NO_MAPPING_FOR_NAT_MASQUERADE",
        167,
        "No mapping for NAT masquerade",
    ),
    (
        "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
        168,
        "Unsupported protocol for NAT masquerade",
    ),
    ("FIB_LOOKUP_FAILED", 169, "FIB lookup failed"),
    (
        "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
        170,
        "Encapsulation traffic is prohibited",
    ),
    ("INVALID_IDENTITY", 171, "Invalid identity"),
    ("UNKNOWN_SENDER", 172, "Unknown sender"),
    ("NAT_NOT_NEEDED", 173, "NAT not needed"),
    ("IS_A_CLUSTERIP", 174, "Is a ClusterIP"),
    (
        "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
        175,
        "First logical datagram fragment not found",
    ),
    ("FORBIDDEN_ICMPV6_MESSAGE", 176, "Forbidden ICMPv6 message"),
    (
        "DENIED_BY_LB_SRC_RANGE_CHECK",
        177,
        "Denied by LB src range check",
    ),
    ("SOCKET_LOOKUP_FAILED", 178, "Socket lookup failed"),
    ("SOCKET_ASSIGN_FAILED", 179, "Socket assign failed"),
    (
        "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
        180,
        "Proxy redirection not supported for protocol",
    ),
    ("POLICY_DENY", 181, "Policy denied by denylist"),
    (
        "VLAN_FILTERED",
        182,
        "VLAN traffic disallowed by VLAN filter",
    ),
    ("INVALID_VNI", 183, "Incorrect VNI from VTEP"),
    (
        "INVALID_TC_BUFFER",
        184,
        "Failed to update or lookup TC buffer",
    ),
    ("NO_SID", 185, "No SID was found for the IP address"),
    (
        "MISSING_SRV6_STATE",
        186,
        "SRv6 state was removed during tail call",
    ),
    (
        "NAT46",
        187,
        "L3 translation from IPv4 to IPv6 failed (NAT46)",
    ),
    (
        "NAT64",
        188,
        "L3 translation from IPv6 to IPv4 failed (NAT64)",
    ),
    ("AUTH_REQUIRED", 189, "Authentication required"),
    ("CT_NO_MAP_FOUND", 190, "No conntrack map found"),
    ("SNAT_NO_MAP_FOUND", 191, "No nat map found"),
    ("INVALID_CLUSTER_ID", 192, "Invalid ClusterID"),
    (
        "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP",
        193,
        "Unsupported packet protocol for DSR encapsulation",
    ),
    ("NO_EGRESS_GATEWAY", 194, "No egress gateway found"),
    ("UNENCRYPTED_TRAFFIC", 195, "Traffic is unencrypted"),
    ("TTL_EXCEEDED", 196, "TTL exceeded"),
    ("NO_NODE_ID", 197, "No node ID found"),
    ("DROP_RATE_LIMITED", 198, "Rate limited"),
    ("IGMP_HANDLED", 199, "IGMP handled"),
    ("IGMP_SUBSCRIBED", 200, "IGMP subscribed"),
    ("MULTICAST_HANDLED", 201, "Multicast handled"),
    ("DROP_HOST_NOT_READY", 202, "Host datapath not ready"),
    (
        "DROP_EP_NOT_READY",
        203,
        "Endpoint policy program not available",
    ),
    ("DROP_NO_EGRESS_IP", 204, "No Egress IP configured"),
    ("DROP_PUNT_PROXY", 205, "Punt to proxy"),
];

/// Hubble's number for a `DropReason` name.
pub fn hubble_number(name: &str) -> Option<u32> {
    HUBBLE_DROP_REASONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, number, _)| *number)
}

/// Hubble's name for a `DropReason` number.
pub fn hubble_name(number: u32) -> Option<&'static str> {
    HUBBLE_DROP_REASONS
        .iter()
        .find(|(_, n, _)| *n == number)
        .map(|(name, _, _)| *name)
}

/// The text Hubble prints for a drop reason number (`Policy denied`), or
/// the number when Hubble has none.
pub fn description(number: u32) -> String {
    HUBBLE_DROP_REASONS
        .iter()
        .find(|(_, n, _)| *n == number)
        .map_or_else(|| number.to_string(), |(_, _, text)| (*text).to_string())
}

/// Sluice reason number -> Hubble reason name. Where Cilium drops for the
/// same cause the name is exact; otherwise it is the closest Cilium reason,
/// chosen so that `--drop-reason-desc` groups drops the way a Cilium user
/// expects (malformed input -> INVALID_PACKET_DROPPED, and so on).
const SLUICE_TO_HUBBLE: &[(u8, &str)] = &[
    // truncated: Cilium's "Invalid packet" covers short frames.
    (1, "INVALID_PACKET_DROPPED"),
    // unknown_ethertype: the ethertype names the L3 protocol.
    (2, "UNSUPPORTED_L3_PROTOCOL"),
    (3, "INVALID_PACKET_DROPPED"),
    (4, "INVALID_PACKET_DROPPED"),
    (5, "INVALID_IPV6_EXTENSION_HEADER"),
    (6, "INVALID_PACKET_DROPPED"),
    (7, "INVALID_PACKET_DROPPED"),
    // arp_not_for_gateway: Cilium drops ARP for targets it does not own so.
    (8, "UNKNOWN_L3_TARGET_ADDRESS"),
    (9, "INVALID_SOURCE_MAC"),
    (10, "INVALID_SOURCE_IP"),
    // unknown_ingress: a frame from an interface with no endpoint.
    (11, "UNKNOWN_SENDER"),
    // no_route: an address with no endpoint (Cilium: unroutable IP).
    (12, "STALE_OR_UNROUTABLE_IP"),
    (13, "TTL_EXCEEDED"),
    (14, "IP_FRAGMENTATION_NOT_SUPPORTED"),
    (15, "UNKNOWN_ICMPV6_TYPE"),
    // multicast: a group or broadcast destination the engine does not forward.
    (16, "INVALID_DESTINATION_MAC"),
    // to_gateway_not_handled: the gateway (the host side) takes no such traffic.
    (17, "LOCAL_HOST_IS_UNREACHABLE"),
    // same_interface: the route leads back out of the ingress interface.
    (18, "FIB_LOOKUP_FAILED"),
    // frame_too_large, tx_unavailable: the frame could not be written out.
    (19, "ERROR_WRITING_TO_PACKET"),
    (20, "ERROR_WRITING_TO_PACKET"),
    // rx_ring_dropped: the kernel dropped for lack of room, a capacity limit.
    (21, "DROP_RATE_LIMITED"),
    (22, "INVALID_PACKET_DROPPED"),
    (23, "SERVICE_BACKEND_NOT_FOUND"),
    (24, "CT_MAP_INSERTION_FAILED"),
    (25, "NO_MAPPING_FOR_NAT_MASQUERADE"),
    (26, "DENIED_BY_LB_SRC_RANGE_CHECK"),
    // ct_tuple_taken: the new entry could not be inserted.
    (27, "CT_MAP_INSERTION_FAILED"),
    (28, "POLICY_DENIED"),
    (29, "POLICY_DENY"),
    // dns_refused: a DNS rule denied the name (Cilium's proxy: policy denied).
    (30, "POLICY_DENIED"),
];

/// Hubble's name and number for Sluice's drop reason `number` (named
/// `sluice_name`). Reasons with a Hubble equivalent map to it; the others to
/// Hubble's closest generic reason, so `--drop-reason-desc` filters work;
/// Sluice's own name is always kept in the flow's `sluice.drop_reason`.
/// A number this table does not know (a reason newer than this crate) is
/// `DROP_REASON_UNKNOWN`.
pub fn to_hubble(number: u8, sluice_name: &str) -> (&'static str, u32) {
    // The name is not needed while numbers are stable; it is taken so a
    // caller cannot pass a number without knowing what it is.
    let _ = sluice_name;
    SLUICE_TO_HUBBLE
        .iter()
        .find(|(n, _)| *n == number)
        .and_then(|(_, name)| hubble_number(name).map(|num| (*name, num)))
        .unwrap_or(("DROP_REASON_UNKNOWN", 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_name_is_a_hubble_reason() {
        for (number, name) in SLUICE_TO_HUBBLE {
            assert!(hubble_number(name).is_some(), "sluice {number} -> {name}");
        }
    }

    #[test]
    fn hubble_table_is_consistent() {
        assert_eq!(hubble_number("POLICY_DENIED"), Some(133));
        assert_eq!(hubble_name(181), Some("POLICY_DENY"));
        assert_eq!(description(133), "Policy denied");
        assert_eq!(description(9999), "9999");
        for (i, (name, number, _)) in HUBBLE_DROP_REASONS.iter().enumerate() {
            assert!(
                HUBBLE_DROP_REASONS[i + 1..]
                    .iter()
                    .all(|(n, m, _)| n != name && m != number),
                "{name} {number} twice"
            );
        }
    }
}

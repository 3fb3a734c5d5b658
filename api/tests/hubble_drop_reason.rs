//! Every Sluice drop reason (numbers and names as in
//! dataplane/pipeline/src/verdict.rs; keep in sync) maps to a Hubble reason.

use sluice_api::hubble::drop_reason::{hubble_number, to_hubble};

const SLUICE_REASONS: &[(u8, &str, &str, u32)] = &[
    (1, "truncated", "INVALID_PACKET_DROPPED", 134),
    (2, "unknown_ethertype", "UNSUPPORTED_L3_PROTOCOL", 139),
    (3, "invalid_ipv4_header", "INVALID_PACKET_DROPPED", 134),
    (4, "ipv4_checksum_bad", "INVALID_PACKET_DROPPED", 134),
    (
        5,
        "invalid_ipv6_header",
        "INVALID_IPV6_EXTENSION_HEADER",
        156,
    ),
    (6, "invalid_l4_header", "INVALID_PACKET_DROPPED", 134),
    (7, "invalid_arp", "INVALID_PACKET_DROPPED", 134),
    (8, "arp_not_for_gateway", "UNKNOWN_L3_TARGET_ADDRESS", 150),
    (9, "spoofed_source_mac", "INVALID_SOURCE_MAC", 130),
    (10, "spoofed_source_ip", "INVALID_SOURCE_IP", 132),
    (11, "unknown_ingress", "UNKNOWN_SENDER", 172),
    (12, "no_route", "STALE_OR_UNROUTABLE_IP", 151),
    (13, "ttl_exceeded", "TTL_EXCEEDED", 196),
    (14, "fragment", "IP_FRAGMENTATION_NOT_SUPPORTED", 157),
    (15, "icmpv6_not_handled", "UNKNOWN_ICMPV6_TYPE", 146),
    (16, "multicast", "INVALID_DESTINATION_MAC", 131),
    (
        17,
        "to_gateway_not_handled",
        "LOCAL_HOST_IS_UNREACHABLE",
        164,
    ),
    (18, "same_interface", "FIB_LOOKUP_FAILED", 169),
    (19, "frame_too_large", "ERROR_WRITING_TO_PACKET", 141),
    (20, "tx_unavailable", "ERROR_WRITING_TO_PACKET", 141),
    (21, "rx_ring_dropped", "DROP_RATE_LIMITED", 198),
    (22, "l4_checksum_bad", "INVALID_PACKET_DROPPED", 134),
    (23, "service_no_backend", "SERVICE_BACKEND_NOT_FOUND", 158),
    (24, "ct_full", "CT_MAP_INSERTION_FAILED", 155),
    (
        25,
        "nat_port_exhausted",
        "NO_MAPPING_FOR_NAT_MASQUERADE",
        167,
    ),
    (
        26,
        "lb_source_range_denied",
        "DENIED_BY_LB_SRC_RANGE_CHECK",
        177,
    ),
    (27, "ct_tuple_taken", "CT_MAP_INSERTION_FAILED", 155),
    (28, "policy_denied", "POLICY_DENIED", 133),
    (29, "policy_denied_by_denylist", "POLICY_DENY", 181),
    (30, "dns_refused", "POLICY_DENIED", 133),
];

#[test]
fn every_sluice_reason_maps_to_its_hubble_reason() {
    for (number, name, hubble, hubble_num) in SLUICE_REASONS {
        assert_eq!(
            to_hubble(*number, name),
            (*hubble, *hubble_num),
            "{number} {name}"
        );
        assert_eq!(hubble_number(hubble), Some(*hubble_num), "{hubble}");
    }
}

#[test]
fn unknown_numbers_are_drop_reason_unknown() {
    assert_eq!(to_hubble(0, "?"), ("DROP_REASON_UNKNOWN", 0));
    assert_eq!(to_hubble(200, "future"), ("DROP_REASON_UNKNOWN", 0));
}

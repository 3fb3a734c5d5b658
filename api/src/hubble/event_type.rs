//! Cilium's monitor event types and trace observation points, by number and
//! by the names `hubble observe -t TYPE[:SUBTYPE]` takes (Cilium
//! `pkg/monitor/api/types.go`).

/// A dropped packet (`drop`).
pub const DROP: i32 = 1;
/// A debug capture (`capture`).
pub const CAPTURE: i32 = 3;
/// A forwarded packet at an observation point (`trace`).
pub const TRACE: i32 = 4;
/// A policy decision (`policy-verdict`).
pub const POLICY_VERDICT: i32 = 5;
/// A socket load-balancing trace (`trace-sock`).
pub const TRACE_SOCK: i32 = 7;
/// An L7 access log record (`l7`).
pub const L7: i32 = 129;

/// `-t` type names and their numbers.
pub const TYPE_NAMES: &[(&str, i32)] = &[
    ("drop", DROP),
    ("capture", CAPTURE),
    ("trace", TRACE),
    ("policy-verdict", POLICY_VERDICT),
    ("trace-sock", TRACE_SOCK),
    ("l7", L7),
];

/// Trace sub-types: `-t trace:NAME`, the flow's `trace_observation_point`
/// and the `event_type.sub_type` number.
pub const TRACE_POINTS: &[(&str, &str, i32)] = &[
    ("to-endpoint", "TO_ENDPOINT", 0),
    ("to-proxy", "TO_PROXY", 1),
    ("to-host", "TO_HOST", 2),
    ("to-stack", "TO_STACK", 3),
    ("to-overlay", "TO_OVERLAY", 4),
    ("from-endpoint", "FROM_ENDPOINT", 5),
    ("from-proxy", "FROM_PROXY", 6),
    ("from-host", "FROM_HOST", 7),
    ("from-stack", "FROM_STACK", 8),
    ("from-overlay", "FROM_OVERLAY", 9),
    ("from-network", "FROM_NETWORK", 10),
    ("to-network", "TO_NETWORK", 11),
    ("from-crypto", "FROM_CRYPTO", 12),
    ("to-crypto", "TO_CRYPTO", 13),
];

/// The type number for a `-t` name.
pub fn type_number(name: &str) -> Option<i32> {
    TYPE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The `-t` name of a type number (`drop`, `trace`, ...).
pub fn type_name(number: i32) -> Option<&'static str> {
    TYPE_NAMES
        .iter()
        .find(|(_, t)| *t == number)
        .map(|(n, _)| *n)
}

/// The trace sub-type number for `trace:NAME`.
pub fn trace_point_number(name: &str) -> Option<i32> {
    TRACE_POINTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, s)| *s)
}

/// The `to-endpoint` style name of a `TO_ENDPOINT` observation point.
pub fn trace_point_cli_name(observation_point: &str) -> Option<&'static str> {
    TRACE_POINTS
        .iter()
        .find(|(_, p, _)| *p == observation_point)
        .map(|(n, _, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_match_cilium_monitor_types() {
        assert_eq!(type_number("drop"), Some(1));
        assert_eq!(type_number("trace"), Some(4));
        assert_eq!(type_number("policy-verdict"), Some(5));
        assert_eq!(type_number("l7"), Some(129));
        assert_eq!(type_number("bogus"), None);
        assert_eq!(type_name(129), Some("l7"));
        assert_eq!(trace_point_number("to-endpoint"), Some(0));
        assert_eq!(trace_point_number("from-network"), Some(10));
        assert_eq!(trace_point_number("to-network"), Some(11));
        assert_eq!(trace_point_cli_name("FROM_ENDPOINT"), Some("from-endpoint"));
    }
}

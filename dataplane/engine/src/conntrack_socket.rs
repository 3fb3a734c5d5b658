//! `conntrack list` and `conntrack flush` on the stats socket: the engine side
//! of `sluice conntrack` (the request and answer shapes are `sluice_api::conntrack`).
//!
//! A filter matches a flow by its original direction's key, so both entries of
//! a flow are listed (and flushed) together; a reply entry's original key is
//! its partner key (`FlowKey::partner`).

use sluice_api::conntrack::{
    CtEntry as ApiEntry, CtFilter, CtFlushAnswer, CtKey, CtListAnswer, CtListItem, CtRewrites,
    CtState,
};
use sluice_conntrack::{CtEntry, Direction, FlowKey, FlowState, FlowTables};

/// Most entries one list answer carries when the filter names no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 10_000;

/// Answers `list <json>` or `flush <json>` (the text after `conntrack `).
pub fn answer(flows: &FlowTables, now_ns: u64, request: &str) -> serde_json::Value {
    let (verb, filter_json) = request.split_once(' ').unwrap_or((request, "{}"));
    let filter: CtFilter = match serde_json::from_str(filter_json.trim()) {
        Ok(filter) => filter,
        Err(e) => {
            return serde_json::json!({
                "error": format!("conntrack {verb}: the filter is not valid JSON: {e}")
            })
        }
    };
    let matches =
        |key: &FlowKey, entry: &CtEntry| matches(&filter, &original_key(key, entry), entry);
    match verb {
        "list" => {
            let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT) as usize;
            // One more than the limit tells whether the answer is truncated.
            let mut found = flows
                .conntrack
                .entries(now_ns, &matches, limit.saturating_add(1));
            let truncated = found.len() > limit;
            found.truncate(limit);
            found.sort_by(|a, b| {
                (original_key(&a.0, &a.1), a.1.direction as u8)
                    .cmp(&(original_key(&b.0, &b.1), b.1.direction as u8))
            });
            let timeouts = *flows.conntrack.timeouts();
            let answer = CtListAnswer {
                entries: found
                    .iter()
                    .map(|(key, entry)| CtListItem {
                        key: api_key(key),
                        entry: api_entry(entry, |state| {
                            u64::from(timeouts.for_state(key.protocol, state)) * 1_000_000_000
                        }),
                    })
                    .collect(),
                truncated,
                now_ns,
            };
            serde_json::to_value(answer)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        }
        "flush" => {
            let flushed = flows.conntrack.flush(&matches) as u64;
            serde_json::to_value(CtFlushAnswer { flushed })
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        }
        other => serde_json::json!({
            "error": format!("unknown conntrack command {other:?}; expected `list` or `flush`")
        }),
    }
}

/// The key of the flow's original direction.
fn original_key(key: &FlowKey, entry: &CtEntry) -> FlowKey {
    match entry.direction {
        Direction::Original => *key,
        Direction::Reply => key.partner(&entry.rewrites),
    }
}

fn matches(filter: &CtFilter, key: &FlowKey, entry: &CtEntry) -> bool {
    filter.src.is_none_or(|ip| ip == key.src)
        && filter.dst.is_none_or(|ip| ip == key.dst)
        && filter.src_port.is_none_or(|p| p == key.src_port)
        && filter.dst_port.is_none_or(|p| p == key.dst_port)
        && filter.protocol.is_none_or(|p| p == key.protocol)
        && filter.service_id.is_none_or(|id| id == entry.service_id)
}

fn api_key(key: &FlowKey) -> CtKey {
    CtKey {
        src: key.src,
        dst: key.dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        protocol: key.protocol,
    }
}

fn api_entry(entry: &CtEntry, timeout_ns: impl Fn(FlowState) -> u64) -> ApiEntry {
    ApiEntry {
        direction: match entry.direction {
            Direction::Original => "original",
            Direction::Reply => "reply",
        }
        .to_string(),
        rewrites: CtRewrites {
            src: entry.rewrites.src.map(|a| a.to_string()),
            dst: entry.rewrites.dst.map(|a| a.to_string()),
        },
        state: match entry.state {
            FlowState::Tcp(state) => CtState::Tcp(tcp_state_name(state)),
            FlowState::Replied => CtState::Replied,
            FlowState::Unreplied => CtState::Unreplied,
        },
        service_id: (entry.service_id != 0).then_some(entry.service_id),
        backend_id: (entry.backend_id != 0).then_some(entry.backend_id),
        flags: u32::from(entry.flags),
        policy: entry.policy,
        created_ns: entry.created_ns,
        last_seen_ns: entry.last_seen_ns,
        expires_ns: Some(entry.last_seen_ns.saturating_add(timeout_ns(entry.state))),
    }
}

/// The state's name as conntrack(8) prints it (`ESTABLISHED`, `TIME_WAIT`).
fn tcp_state_name(state: sluice_conntrack::TcpState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_conntrack::{flags, CtConfig, Rewrites, TcpState};

    /// Client 10.200.0.2:40000 -> ClusterIP 10.96.0.10:80, balanced to 10.200.0.5:8080.
    fn service_flow(flows: &FlowTables, client_port: u16) {
        let original = FlowKey {
            src: "10.200.0.2".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: client_port,
            dst_port: 80,
            protocol: 6,
        };
        let to_backend = Rewrites {
            src: None,
            dst: Some("10.200.0.5:8080".parse().unwrap()),
        };
        let reply = original.partner(&to_backend);
        let entry = |direction, rewrites| CtEntry {
            direction,
            rewrites,
            state: FlowState::Tcp(TcpState::SynSent),
            service_id: 3,
            backend_id: 7,
            flags: flags::SERVICE,
            policy: 0,
            created_ns: 1_000,
            last_seen_ns: 1_000,
        };
        let back = Rewrites {
            src: Some("10.96.0.10:80".parse().unwrap()),
            dst: None,
        };
        flows
            .conntrack
            .insert_flow(
                &original,
                entry(Direction::Original, to_backend),
                &reply,
                entry(Direction::Reply, back),
            )
            .unwrap();
    }

    fn flows() -> FlowTables {
        FlowTables::new(CtConfig {
            capacity: 4096,
            ..CtConfig::default()
        })
    }

    #[test]
    fn list_shows_both_directions_of_matching_flows_with_their_translation() {
        let flows = flows();
        service_flow(&flows, 40000);
        service_flow(&flows, 40001);
        let answer: CtListAnswer = serde_json::from_value(answer(
            &flows,
            2_000,
            r#"list {"src":"10.200.0.2","src_port":40001}"#,
        ))
        .unwrap();
        assert_eq!(answer.entries.len(), 2, "{answer:?}");
        assert!(!answer.truncated);
        let original = &answer.entries[0];
        assert_eq!(original.entry.direction, "original");
        assert_eq!(original.key.src_port, 40001);
        assert_eq!(
            original.entry.rewrites.dst.as_deref(),
            Some("10.200.0.5:8080")
        );
        assert_eq!(original.entry.state, CtState::Tcp("SYN_SENT".into()));
        assert_eq!(original.entry.service_id, Some(3));
        // SYN_SENT times out after 120 s.
        assert_eq!(original.entry.expires_ns, Some(1_000 + 120_000_000_000));
        let reply = &answer.entries[1];
        assert_eq!(reply.entry.direction, "reply");
        assert_eq!(reply.key.src.to_string(), "10.200.0.5");
        assert_eq!(reply.entry.rewrites.src.as_deref(), Some("10.96.0.10:80"));
    }

    #[test]
    fn list_limit_truncates_and_flush_removes_only_what_matches() {
        let flows = flows();
        for port in 40000..40010 {
            service_flow(&flows, port);
        }
        let listed: CtListAnswer =
            serde_json::from_value(answer(&flows, 2_000, r#"list {"limit":4}"#)).unwrap();
        assert_eq!(listed.entries.len(), 4);
        assert!(listed.truncated);
        let flushed: CtFlushAnswer =
            serde_json::from_value(answer(&flows, 2_000, r#"flush {"src_port":40003}"#)).unwrap();
        assert_eq!(flushed.flushed, 1);
        let left: CtListAnswer = serde_json::from_value(answer(&flows, 2_000, "list {}")).unwrap();
        assert_eq!(left.entries.len(), 18);
        let none: CtFlushAnswer =
            serde_json::from_value(answer(&flows, 2_000, r#"flush {"service_id":99}"#)).unwrap();
        assert_eq!(none.flushed, 0);
    }

    #[test]
    fn a_bad_filter_or_verb_is_an_error_naming_it() {
        let flows = flows();
        let bad = answer(&flows, 0, "list {not json");
        assert!(
            bad["error"].as_str().unwrap().contains("not valid JSON"),
            "{bad}"
        );
        let verb = answer(&flows, 0, "drop {}");
        assert!(
            verb["error"].as_str().unwrap().contains("\"drop\""),
            "{verb}"
        );
    }
}

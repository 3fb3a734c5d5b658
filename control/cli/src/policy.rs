//! `sluice policy get` and `sluice policy trace`: the agent's policy listing
//! and traces, rendered for people (with `-o json` the agent's answer as it
//! is). Policy drops come from the engine's stats (`policy_drops`), when the
//! engine answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use sluice_api::agent::{DirectionTrace, PolicyInfo, PolicyTrace, TraceDecision, TracePeer};
use sluice_tables::RuleOrigin;

/// `Kind namespace/name` (`Kind name` for a clusterwide policy).
fn policy_name(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn origin_text(rule: &RuleOrigin) -> String {
    format!(
        "{} {}",
        policy_name(&rule.kind, &rule.namespace, &rule.name),
        rule.path
    )
}

/// Packets the engine dropped per policy (`kind`, `namespace`, `name`),
/// summed over rules and directions, from the stats JSON's `policy_drops`.
pub fn drops_by_policy(stats: &Value) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for row in stats["policy_drops"].as_array().into_iter().flatten() {
        let text = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        *out.entry((text("kind"), text("namespace"), text("name")))
            .or_default() += row["packets"].as_u64().unwrap_or(0);
    }
    out
}

/// The `policy get` table: one line per policy, then every error.
/// `drops`: per-policy drop counts when the engine answered.
pub fn render_policies(
    list: &[PolicyInfo],
    drops: Option<&BTreeMap<(String, String, String), u64>>,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<32} {:<16} {:<28} {:>5}  {:<28} {:>6}",
        "KIND", "NAMESPACE", "NAME", "RULES", "ENDPOINTS", "ERRORS"
    );
    if drops.is_some() {
        let _ = write!(out, " {:>10}", "DROPS");
    }
    out.push('\n');
    for p in list {
        let endpoints = if p.endpoints.is_empty() {
            "-".to_string()
        } else {
            p.endpoints.join(",")
        };
        let namespace = if p.namespace.is_empty() {
            "-"
        } else {
            p.namespace.as_str()
        };
        let _ = write!(
            out,
            "{:<32} {:<16} {:<28} {:>5}  {:<28} {:>6}",
            p.kind,
            namespace,
            p.name,
            p.rules,
            endpoints,
            p.errors.len()
        );
        if let Some(drops) = drops {
            let key = (p.kind.clone(), p.namespace.clone(), p.name.clone());
            let _ = write!(out, " {:>10}", drops.get(&key).copied().unwrap_or(0));
        }
        out.push('\n');
    }
    let errors: Vec<&String> = list.iter().flat_map(|p| &p.errors).collect();
    if !errors.is_empty() {
        out.push_str("\nErrors (policies with errors are not enforced):\n");
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

fn peer_text(peer: &TracePeer) -> String {
    let mut text = format!("{} {} identity {}", peer.name, peer.addr, peer.identity);
    match &peer.endpoint {
        Some(e) if *e == peer.name => text.push_str(" (local endpoint)"),
        Some(e) => {
            let _ = write!(text, " (local endpoint {e})");
        }
        None => text.push_str(" (not on this node)"),
    }
    text
}

fn decision_text(d: &DirectionTrace, direction: &str) -> String {
    let head = format!("{direction:<7} {} ->", d.endpoint);
    match d.decision {
        TraceDecision::NotEnforced => {
            format!("{head} allowed (no policy selects it for {direction})")
        }
        TraceDecision::AllowedLocalhost => {
            format!("{head} allowed (from the host, --allow-localhost=always)")
        }
        TraceDecision::Allowed => {
            let by = d
                .rule
                .as_ref()
                .map_or("an unnamed rule".to_string(), origin_text);
            let dns = if d.dns {
                " (DNS queries checked against its rules)"
            } else {
                ""
            };
            format!("{head} allowed by {by}{dns}")
        }
        TraceDecision::Denied => {
            let by = d
                .rule
                .as_ref()
                .map_or("an unnamed rule".to_string(), origin_text);
            format!("{head} DENIED (policy_denied_by_denylist) by {by}")
        }
        TraceDecision::NoAllowRule => {
            let mut text = format!("{head} DENIED (policy_denied): no allow rule matches");
            if let Some(rule) = &d.rule {
                let _ = write!(text, "; default deny from {}", origin_text(rule));
            }
            if !d.selected_by.is_empty() {
                let _ = write!(text, "; selected by {}", d.selected_by.join(", "));
            }
            text
        }
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// The `policy trace` answer for people: the peers, each direction's
/// decision with the deciding rule, and the verdict on the last line.
pub fn render_trace(trace: &PolicyTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "src     {}", peer_text(&trace.src));
    let _ = writeln!(out, "dst     {}", peer_text(&trace.dst));
    if let Some(service) = &trace.service {
        let _ = writeln!(
            out,
            "service {service}: {} backend(s), each traced",
            trace.paths.len()
        );
    }
    for path in &trace.paths {
        let kind = if matches!(path.protocol, 1 | 58) {
            "type"
        } else {
            "port"
        };
        if trace.service.is_some() {
            let _ = writeln!(
                out,
                "backend {} {kind} {}/{}",
                peer_text(&path.dst),
                path.port,
                protocol_name(path.protocol)
            );
        } else {
            let _ = writeln!(
                out,
                "{:<7} {}/{}",
                kind,
                path.port,
                protocol_name(path.protocol)
            );
        }
        match &path.egress {
            Some(d) => {
                let _ = writeln!(out, "{}", decision_text(d, "egress"));
            }
            None => {
                let _ = writeln!(
                    out,
                    "egress  {} is not on this node: not checked here",
                    trace.src.name
                );
            }
        }
        match &path.ingress {
            Some(d) => {
                let _ = writeln!(out, "{}", decision_text(d, "ingress"));
            }
            None => {
                let _ = writeln!(
                    out,
                    "ingress {} is not on this node: not checked here",
                    path.dst.name
                );
            }
        }
    }
    for note in &trace.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "verdict: {}",
        if trace.allowed { "ALLOWED" } else { "DENIED" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::agent::TracePath;

    fn peer(name: &str, addr: &str, identity: u32, local: bool) -> TracePeer {
        TracePeer {
            name: name.into(),
            addr: addr.parse().unwrap(),
            identity,
            endpoint: local.then(|| name.to_string()),
        }
    }

    fn origin(kind: &str, namespace: &str, name: &str, path: &str) -> Option<RuleOrigin> {
        Some(RuleOrigin {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: path.into(),
        })
    }

    #[test]
    fn trace_names_the_deciding_rules_and_ends_with_the_verdict() {
        let trace = PolicyTrace {
            src: peer("default/a", "10.200.0.2", 256, true),
            dst: peer("default/b", "10.200.0.3", 257, true),
            service: None,
            paths: vec![TracePath {
                dst: peer("default/b", "10.200.0.3", 257, true),
                protocol: 6,
                port: 80,
                egress: Some(DirectionTrace {
                    endpoint: "default/a".into(),
                    decision: TraceDecision::Allowed,
                    rule: origin(
                        "CiliumNetworkPolicy",
                        "default",
                        "allow-a",
                        "specs[0].egress[0]",
                    ),
                    dns: false,
                    selected_by: Vec::new(),
                }),
                ingress: Some(DirectionTrace {
                    endpoint: "default/b".into(),
                    decision: TraceDecision::Denied,
                    rule: origin(
                        "CiliumNetworkPolicy",
                        "default",
                        "deny-80",
                        "spec.ingressDeny[0]",
                    ),
                    dns: false,
                    selected_by: Vec::new(),
                }),
                allowed: false,
            }],
            allowed: false,
            notes: Vec::new(),
        };
        let text = render_trace(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "src     default/a 10.200.0.2 identity 256 (local endpoint)",
                "dst     default/b 10.200.0.3 identity 257 (local endpoint)",
                "port    80/tcp",
                "egress  default/a -> allowed by CiliumNetworkPolicy default/allow-a specs[0].egress[0]",
                "ingress default/b -> DENIED (policy_denied_by_denylist) by CiliumNetworkPolicy default/deny-80 spec.ingressDeny[0]",
                "verdict: DENIED",
            ]
        );
    }

    #[test]
    fn no_allow_rule_names_the_default_deny_and_the_selecting_policies() {
        let d = DirectionTrace {
            endpoint: "x/a".into(),
            decision: TraceDecision::NoAllowRule,
            rule: origin("CiliumClusterwideNetworkPolicy", "", "lockdown", "specs[1]"),
            dns: false,
            selected_by: vec![
                "CiliumClusterwideNetworkPolicy lockdown".into(),
                "NetworkPolicy x/deny-all".into(),
            ],
        };
        assert_eq!(
            decision_text(&d, "ingress"),
            "ingress x/a -> DENIED (policy_denied): no allow rule matches; default deny from \
             CiliumClusterwideNetworkPolicy lockdown specs[1]; selected by \
             CiliumClusterwideNetworkPolicy lockdown, NetworkPolicy x/deny-all"
        );
    }

    #[test]
    fn policy_table_counts_drops_per_policy() {
        let list = vec![
            PolicyInfo {
                kind: "NetworkPolicy".into(),
                namespace: "x".into(),
                name: "deny-all".into(),
                rules: 1,
                endpoints: vec!["x/a".into(), "x/b".into()],
                errors: Vec::new(),
            },
            PolicyInfo {
                kind: "CiliumNetworkPolicy".into(),
                namespace: "x".into(),
                name: "broken".into(),
                rules: 0,
                endpoints: Vec::new(),
                errors: vec![
                    "CiliumNetworkPolicy x/broken: spec.ingress[0].toPorts[0].ports[0].port: bad"
                        .into(),
                ],
            },
        ];
        let stats = serde_json::json!({"policy_drops": [
            {"rule": 0, "kind": "NetworkPolicy", "namespace": "x", "name": "deny-all",
             "path": "spec", "direction": "ingress", "packets": 3},
            {"rule": 1, "kind": "NetworkPolicy", "namespace": "x", "name": "deny-all",
             "path": "spec", "direction": "egress", "packets": 4},
        ]});
        let drops = drops_by_policy(&stats);
        let text = render_policies(&list, Some(&drops));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("KIND") && lines[0].ends_with("DROPS"));
        assert!(lines[1].contains("deny-all") && lines[1].contains("x/a,x/b"));
        assert!(lines[1].ends_with(" 7"), "{}", lines[1]);
        assert!(lines[2].contains("broken") && lines[2].ends_with(" 0"));
        assert_eq!(
            lines[5],
            "  CiliumNetworkPolicy x/broken: spec.ingress[0].toPorts[0].ports[0].port: bad"
        );
        // Without the engine: no drops column.
        assert!(!render_policies(&list, None).contains("DROPS"));
    }
}

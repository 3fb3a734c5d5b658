//! `sluice status`: one screen on the whole node, in the spirit of `cilium
//! status`: the agent, the engine, whether they agree on the generation,
//! endpoints, services, policies, conntrack fill, drops by reason and the
//! flow pipeline. Exits 1 (through [`run`]'s answer) when the engine does
//! not run the agent's latest generation.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;
use sluice_api::agent::{AgentRequest, AgentStatus, PolicyInfo, Request};
use sluice_api::{read_message, write_message};

/// How many drop reasons the summary lists.
const TOP_DROPS: usize = 5;

/// Everything `sluice status` shows; also its `-o json` form.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub agent: AgentStatus,
    pub in_sync: bool,
    /// The engine's stats document, when the engine socket answered.
    pub engine: Option<Value>,
    pub policies: Option<PolicySummary>,
    /// The agent's flow buffer (`flows` of its status), when it reports one.
    pub flows: Option<Value>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub policies: usize,
    pub rules: usize,
    /// `Kind namespace/name: error`.
    pub errors: Vec<String>,
}

impl PolicySummary {
    pub fn of(list: &[PolicyInfo]) -> PolicySummary {
        PolicySummary {
            policies: list.len(),
            rules: list.iter().map(|p| p.rules).sum(),
            errors: list
                .iter()
                .flat_map(|p| {
                    let name = if p.namespace.is_empty() {
                        format!("{} {}", p.kind, p.name)
                    } else {
                        format!("{} {}/{}", p.kind, p.namespace, p.name)
                    };
                    p.errors.iter().map(move |e| format!("{name}: {e}"))
                })
                .collect(),
        }
    }
}

/// Asks the agent for its status, keeping the raw answer too (fields this
/// CLI's `AgentStatus` does not know, such as `flows`, are read from it).
fn agent_status(socket: &Path) -> anyhow::Result<(AgentStatus, Value)> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to the agent at {} (is sluice-agent running? set --agent-socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut writer = stream.try_clone()?;
    write_message(&mut writer, &Request::new(AgentRequest::Status))?;
    let answer: Value = match read_message(&mut BufReader::new(stream))? {
        Some(answer) => answer,
        None => bail!("the agent closed the connection without answering"),
    };
    if answer["response"] == "error" {
        bail!("agent: {}", answer["message"].as_str().unwrap_or("?"));
    }
    let raw = answer["status"].clone();
    let status: AgentStatus = serde_json::from_value(raw.clone())
        .with_context(|| format!("the agent's status answer does not parse: {answer}"))?;
    Ok((status, raw))
}

/// Gathers the report: the agent must answer; the engine and the policy
/// list are shown as unavailable when they do not.
pub fn gather(agent_socket: &Path, engine_socket: &Path) -> anyhow::Result<StatusReport> {
    let (agent, raw) = agent_status(agent_socket)?;
    let engine = crate::engine::ask(engine_socket, "stats").ok();
    let policies = crate::agent::policies(agent_socket)
        .ok()
        .map(|list| PolicySummary::of(&list));
    Ok(StatusReport {
        in_sync: agent.in_sync(),
        agent,
        engine,
        policies,
        flows: raw.get("flows").filter(|f| !f.is_null()).cloned(),
    })
}

/// `sluice status [-o json]`. Returns whether agent and engine are in sync;
/// the caller exits 1 when they are not.
pub fn run(agent_socket: &Path, engine_socket: &Path, json: bool) -> anyhow::Result<bool> {
    let report = gather(agent_socket, engine_socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.in_sync)
}

fn duration_text(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m{s}s"),
        _ => format!("{d}d{h}h{m}m"),
    }
}

fn sync_text(s: &AgentStatus) -> String {
    if s.in_sync() {
        format!("in sync at generation {}", s.acked_generation)
    } else if !s.engine_connected {
        format!(
            "NOT CONNECTED (desired generation {}, last acked {})",
            s.desired_generation, s.acked_generation
        )
    } else if let Some(e) = &s.engine_error {
        format!("REFUSED generation {}: {e}", s.desired_generation)
    } else {
        format!(
            "SYNCING: desired generation {}, acked {}",
            s.desired_generation, s.acked_generation
        )
    }
}

/// The reasons with drops, most first (name, count), and the total.
fn top_drops(engine: &Value) -> (Vec<(String, u64)>, u64) {
    let mut drops: Vec<(String, u64)> = engine["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let count = row["count"].as_u64()?;
            (count > 0).then(|| (row["name"].as_str().unwrap_or("?").to_string(), count))
        })
        .collect();
    drops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total = drops.iter().map(|(_, n)| n).sum();
    (drops, total)
}

/// The text summary.
pub fn render(report: &StatusReport) -> String {
    let s = &report.agent;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        out.push_str(&format!("{:<14}{value}\n", format!("{key}:")));
    };
    let agent_health = if s.source_errors.is_empty() {
        "OK".to_string()
    } else {
        format!("{} error(s)", s.source_errors.len())
    };
    line(
        "Agent",
        format!(
            "{agent_health} · {} on node {} · source {} ({})",
            s.agent,
            s.node,
            s.source,
            if s.source_synced {
                "synced"
            } else {
                "initial sync pending"
            }
        ),
    );
    match &report.engine {
        Some(e) => line(
            "Engine",
            format!(
                "reachable · {} · {} worker(s) · up {} · tables generation {}",
                e["engine"]["version"].as_str().unwrap_or("?"),
                e["engine"]["workers"],
                duration_text(e["uptime_seconds"].as_f64().unwrap_or(0.0)),
                e["generation"]
            ),
        ),
        None => line(
            "Engine",
            format!(
                "stats socket unreachable · agent connection: {}",
                s.engine.as_deref().unwrap_or("none")
            ),
        ),
    }
    line("Sync", sync_text(s));
    line(
        "Endpoints",
        format!(
            "{} · identities {} · ipcache {} entries · pod CIDRs {}",
            s.endpoints,
            s.identities,
            s.ipcache_entries,
            if s.pod_cidrs.is_empty() {
                "-".to_string()
            } else {
                s.pod_cidrs.join(" ")
            }
        ),
    );
    line("Services", format!("{} port(s)", s.services));
    line(
        "Policies",
        match &report.policies {
            Some(p) if p.errors.is_empty() => {
                format!("{} ({} rule(s)) · errors: none", p.policies, p.rules)
            }
            Some(p) => format!(
                "{} ({} rule(s)) · {} ERROR(S)",
                p.policies,
                p.rules,
                p.errors.len()
            ),
            None => "unavailable".to_string(),
        },
    );
    if let Some(e) = &report.engine {
        let ct = &e["conntrack"];
        let (entries, capacity) = (
            ct["entries"].as_u64().unwrap_or(0),
            ct["capacity"].as_u64().unwrap_or(0),
        );
        let pressure = if capacity > 0 {
            entries as f64 * 100.0 / capacity as f64
        } else {
            0.0
        };
        line(
            "Conntrack",
            format!(
                "{entries}/{capacity} entries ({pressure:.1}%) · evicted {} · expired {}",
                ct["evictions"].as_u64().unwrap_or(0),
                ct["expired"].as_u64().unwrap_or(0)
            ),
        );
        let (drops, total) = top_drops(e);
        line(
            "Drops",
            if drops.is_empty() {
                "none".to_string()
            } else {
                let mut shown: Vec<String> = drops
                    .iter()
                    .take(TOP_DROPS)
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                if drops.len() > TOP_DROPS {
                    shown.push(format!("… {} more reason(s)", drops.len() - TOP_DROPS));
                }
                format!("{total} total · {}", shown.join(", "))
            },
        );
    }
    let mut flows = Vec::new();
    if let Some(f) = &report.flows {
        let lost: u64 = f["lost"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.get(1).and_then(Value::as_u64))
            .sum();
        flows.push(format!(
            "buffer {}/{} · seen {} · lost {lost}",
            f["buffered"], f["capacity"], f["flows_seen"]
        ));
    }
    if let Some(totals) = report.engine.as_ref().map(|e| &e["totals"]) {
        if let (Some(emitted), Some(lost)) = (
            totals["events_emitted"].as_u64(),
            totals["events_lost"].as_u64(),
        ) {
            flows.push(format!("engine events emitted {emitted} · lost {lost}"));
        }
    }
    line(
        "Flows",
        if flows.is_empty() {
            "not reported".to_string()
        } else {
            flows.join(" · ")
        },
    );
    if !s.source_errors.is_empty()
        || report
            .policies
            .as_ref()
            .is_some_and(|p| !p.errors.is_empty())
    {
        out.push_str("Errors:\n");
        for e in &s.source_errors {
            out.push_str(&format!("  {e}\n"));
        }
        for e in report.policies.iter().flat_map(|p| &p.errors) {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(in_sync: bool) -> AgentStatus {
        AgentStatus {
            agent: "sluice-agent 0.1.0".into(),
            node: "n1".into(),
            source: "manifests:/m".into(),
            source_synced: true,
            engine_connected: true,
            engine: Some("sluice-engine 0.1.0".into()),
            desired_generation: 7,
            acked_generation: if in_sync { 7 } else { 6 },
            engine_error: None,
            endpoints: 3,
            identities: 2,
            ipcache_entries: 5,
            services: 4,
            pod_cidrs: vec!["10.200.0.0/24".into()],
            source_errors: vec![],
            flows: None,
        }
    }

    fn engine() -> Value {
        serde_json::json!({
            "engine": {"version": "0.1.0", "workers": 2},
            "uptime_seconds": 3725.2,
            "generation": 7,
            "drops": [
                {"number": 1, "name": "no_route", "count": 3},
                {"number": 28, "name": "policy_denied", "count": 12},
                {"number": 2, "name": "ttl_exceeded", "count": 0}
            ],
            "conntrack": {"entries": 512, "capacity": 2048, "evictions": 1, "expired": 9},
            "totals": {"events_emitted": 40, "events_lost": 2}
        })
    }

    #[test]
    fn the_summary_shows_every_part_with_the_values_it_was_given() {
        let report = StatusReport {
            agent: agent(true),
            in_sync: true,
            engine: Some(engine()),
            policies: Some(PolicySummary {
                policies: 2,
                rules: 3,
                errors: vec![],
            }),
            flows: Some(serde_json::json!({
                "flows_seen": 100, "buffered": 90, "capacity": 4095,
                "lost": [["HUBBLE_RING_BUFFER", 4], ["PERF_EVENT_RING_BUFFER", 1]]
            })),
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "Agent:        OK · sluice-agent 0.1.0 on node n1 · source manifests:/m (synced)",
                "Engine:       reachable · 0.1.0 · 2 worker(s) · up 1h2m5s · tables generation 7",
                "Sync:         in sync at generation 7",
                "Endpoints:    3 · identities 2 · ipcache 5 entries · pod CIDRs 10.200.0.0/24",
                "Services:     4 port(s)",
                "Policies:     2 (3 rule(s)) · errors: none",
                "Conntrack:    512/2048 entries (25.0%) · evicted 1 · expired 9",
                "Drops:        15 total · policy_denied 12, no_route 3",
                "Flows:        buffer 90/4095 · seen 100 · lost 5 · engine events emitted 40 · lost 2",
            ]
        );
    }

    #[test]
    fn problems_are_spelled_out() {
        let mut status = agent(false);
        status.source_errors = vec!["pod.yaml: Pod x/a: spec.containers: missing".into()];
        let report = StatusReport {
            in_sync: status.in_sync(),
            agent: status,
            engine: None,
            policies: Some(PolicySummary::of(&[PolicyInfo {
                kind: "CiliumNetworkPolicy".into(),
                namespace: "x".into(),
                name: "deny".into(),
                rules: 0,
                endpoints: vec![],
                errors: vec!["specs[0].ingress[0].toPorts: bad port".into()],
            }])),
            flows: None,
        };
        assert!(!report.in_sync);
        let text = render(&report);
        assert!(text.contains("Agent:        1 error(s) ·"), "{text}");
        assert!(
            text.contains("Engine:       stats socket unreachable"),
            "{text}"
        );
        assert!(
            text.contains("Sync:         SYNCING: desired generation 7, acked 6"),
            "{text}"
        );
        assert!(
            text.contains("Policies:     1 (0 rule(s)) · 1 ERROR(S)"),
            "{text}"
        );
        assert!(text.contains("Flows:        not reported"), "{text}");
        assert!(
            text.contains("  CiliumNetworkPolicy x/deny: specs[0].ingress[0].toPorts: bad port"),
            "{text}"
        );
        assert!(!text.contains("Conntrack:"), "{text}");
    }

    #[test]
    fn durations_read_like_cilium_status() {
        assert_eq!(duration_text(59.9), "59s");
        assert_eq!(duration_text(61.0), "1m1s");
        assert_eq!(duration_text(90_061.0), "1d1h1m");
    }
}

//! `sluice conntrack list|flush`: the engine's connection table, filtered.
//! The filter travels as [`CtFilter`] over the engine's stats socket; a
//! `--service` is first resolved to its service ids through the agent (one id
//! per service port and protocol, so one request per id).

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use sluice_api::conntrack::{CtFilter, CtFlushAnswer, CtListAnswer, CtState};
use sluice_tables::Service;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
}

/// The filters both `list` and `flush` take.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterArgs {
    /// Original source address.
    #[arg(long)]
    pub src: Option<IpAddr>,
    /// Original destination address (a service frontend for balanced flows).
    #[arg(long)]
    pub dst: Option<IpAddr>,
    #[arg(long)]
    pub sport: Option<u16>,
    #[arg(long)]
    pub dport: Option<u16>,
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Connections balanced to this service (`namespace/name`, every port).
    #[arg(long, value_name = "NS/NAME")]
    pub service: Option<String>,
}

/// The ids of service `ns/name` (one per port and protocol).
pub fn service_ids(services: &[Service], name: &str) -> anyhow::Result<Vec<u32>> {
    if !name.contains('/') {
        bail!("--service {name:?}: give namespace/name, e.g. default/{name}");
    }
    let ids: Vec<u32> = services
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.id)
        .collect();
    if ids.is_empty() {
        bail!("--service {name}: no such service on this node (see `sluice service list`)");
    }
    Ok(ids)
}

/// The requests a filter takes: one per service id and, for ICMP without an
/// address to tell the family, one each for ICMP and ICMPv6.
pub fn filters(args: &FilterArgs, service_ids: &[u32], limit: Option<u32>) -> Vec<CtFilter> {
    let v6 = args.src.or(args.dst).map(|ip| ip.is_ipv6());
    let protocols: Vec<Option<u8>> = match (args.protocol, v6) {
        (None, _) => vec![None],
        (Some(ProtocolArg::Tcp), _) => vec![Some(6)],
        (Some(ProtocolArg::Udp), _) => vec![Some(17)],
        (Some(ProtocolArg::Icmp), Some(false)) => vec![Some(1)],
        (Some(ProtocolArg::Icmp), Some(true)) => vec![Some(58)],
        (Some(ProtocolArg::Icmp), None) => vec![Some(1), Some(58)],
    };
    let services: Vec<Option<u32>> = if service_ids.is_empty() {
        vec![None]
    } else {
        service_ids.iter().map(|id| Some(*id)).collect()
    };
    let mut out = Vec::new();
    for protocol in &protocols {
        for service_id in &services {
            out.push(CtFilter {
                src: args.src,
                dst: args.dst,
                src_port: args.sport,
                dst_port: args.dport,
                protocol: *protocol,
                service_id: *service_id,
                limit,
            });
        }
    }
    out
}

fn engine_error(answer: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(e) = answer.get("error") {
        bail!("engine: {}", e.as_str().unwrap_or(&e.to_string()));
    }
    Ok(())
}

/// Sends every filter's list request and merges the answers, at most `limit` entries.
pub fn list(
    ask: impl Fn(&str) -> anyhow::Result<serde_json::Value>,
    filters: &[CtFilter],
    limit: Option<u32>,
) -> anyhow::Result<CtListAnswer> {
    let mut merged = CtListAnswer {
        entries: Vec::new(),
        truncated: false,
        now_ns: 0,
    };
    for f in filters {
        let answer = ask(&f.request_line("list"))?;
        engine_error(&answer)?;
        let part: CtListAnswer = serde_json::from_value(answer)
            .context("the engine's conntrack list answer is not in the expected form")?;
        merged.now_ns = merged.now_ns.max(part.now_ns);
        merged.truncated |= part.truncated;
        merged.entries.extend(part.entries);
    }
    if let Some(limit) = limit.map(|l| l as usize) {
        if merged.entries.len() > limit {
            merged.entries.truncate(limit);
            merged.truncated = true;
        }
    }
    Ok(merged)
}

/// Sends every filter's flush request; the number of entries removed.
pub fn flush(
    ask: impl Fn(&str) -> anyhow::Result<serde_json::Value>,
    filters: &[CtFilter],
) -> anyhow::Result<u64> {
    let mut flushed = 0;
    for f in filters {
        let answer = ask(&f.request_line("flush"))?;
        engine_error(&answer)?;
        let part: CtFlushAnswer = serde_json::from_value(answer)
            .context("the engine's conntrack flush answer is not in the expected form")?;
        flushed += part.flushed;
    }
    Ok(flushed)
}

fn protocol_name(number: u8) -> String {
    match number {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

fn seconds(ns: u64) -> String {
    format!("{}s", ns / 1_000_000_000)
}

/// The table: like `conntrack -L` and `cilium bpf ct list global`.
pub fn render(answer: &CtListAnswer) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<7} {:<12} {:<45} {:<45} {:<30} {:>7} {:>7} {:>10}",
        "PROTO", "STATE", "SOURCE", "DESTINATION", "XLATE", "SERVICE", "BACKEND", "EXPIRES"
    );
    for item in &answer.entries {
        let (k, e) = (&item.key, &item.entry);
        let state = match &e.state {
            CtState::Tcp(s) => s.clone(),
            CtState::Replied => "replied".into(),
            CtState::Unreplied => "unreplied".into(),
        };
        let mut xlate = Vec::new();
        if let Some(s) = &e.rewrites.src {
            xlate.push(format!("src={s}"));
        }
        if let Some(d) = &e.rewrites.dst {
            xlate.push(format!("dst={d}"));
        }
        let expires = match e.expires_ns {
            Some(t) => seconds(t.saturating_sub(answer.now_ns)),
            None => format!(
                "idle {}",
                seconds(answer.now_ns.saturating_sub(e.last_seen_ns))
            ),
        };
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<7} {:<12} {:<45} {:<45} {:<30} {:>7} {:>7} {:>10}",
            protocol_name(k.protocol),
            state,
            endpoint(k.src, k.src_port),
            endpoint(k.dst, k.dst_port),
            if xlate.is_empty() {
                "-".to_string()
            } else {
                xlate.join(" ")
            },
            opt(e.service_id),
            opt(e.backend_id),
            expires
        );
    }
    let _ = writeln!(
        out,
        "{} entr{}{}",
        answer.entries.len(),
        if answer.entries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        if answer.truncated {
            " (truncated: more matched; raise --limit or narrow the filter)"
        } else {
            ""
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn icmp_without_an_address_asks_for_both_families_and_services_per_id() {
        let args = FilterArgs {
            protocol: Some(ProtocolArg::Icmp),
            dport: Some(80),
            ..FilterArgs::default()
        };
        let f = filters(&args, &[3, 4], Some(10));
        let got: Vec<(Option<u8>, Option<u32>)> =
            f.iter().map(|f| (f.protocol, f.service_id)).collect();
        assert_eq!(
            got,
            [
                (Some(1), Some(3)),
                (Some(1), Some(4)),
                (Some(58), Some(3)),
                (Some(58), Some(4))
            ]
        );
        assert!(f
            .iter()
            .all(|f| f.dst_port == Some(80) && f.limit == Some(10)));
        let v6 = FilterArgs {
            protocol: Some(ProtocolArg::Icmp),
            dst: Some("fd00::1".parse().unwrap()),
            ..FilterArgs::default()
        };
        assert_eq!(filters(&v6, &[], None)[0].protocol, Some(58));
        assert_eq!(filters(&FilterArgs::default(), &[], None).len(), 1);
    }

    #[test]
    fn answers_are_merged_limited_and_engine_errors_surface() {
        let entry = r#"{"key":{"src":"10.200.0.2","dst":"10.96.0.10","src_port":40000,"dst_port":80,"protocol":6},
            "entry":{"direction":"original","rewrites":{"src":null,"dst":"10.200.0.5:8080"},"state":{"tcp":"ESTABLISHED"},
            "service_id":3,"backend_id":7,"flags":1,"policy":0,"created_ns":1000000000,"last_seen_ns":2000000000}}"#;
        let asked = RefCell::new(Vec::new());
        let ask = |line: &str| {
            asked.borrow_mut().push(line.to_string());
            Ok(serde_json::from_str(&format!(
                r#"{{"entries":[{entry},{entry}],"truncated":false,"now_ns":9000000000}}"#
            ))?)
        };
        let fs = filters(&FilterArgs::default(), &[3, 4], Some(3));
        let answer = list(ask, &fs, Some(3)).unwrap();
        assert_eq!(asked.borrow().len(), 2);
        assert!(asked.borrow()[0].starts_with(r#"conntrack list {"src":null"#));
        assert_eq!(answer.entries.len(), 3);
        assert!(answer.truncated);
        let text = render(&answer);
        assert!(
            text.contains("tcp     ESTABLISHED  10.200.0.2:40000"),
            "{text}"
        );
        assert!(text.contains("dst=10.200.0.5:8080"), "{text}");
        assert!(text.contains("idle 7s"), "{text}");
        assert!(text.contains("3 entries (truncated"), "{text}");

        let refuse = |_: &str| Ok(serde_json::json!({"error": "no conntrack table"}));
        let err = flush(refuse, &fs).unwrap_err().to_string();
        assert_eq!(err, "engine: no conntrack table");
        let count = |_: &str| Ok(serde_json::json!({"flushed": 2}));
        assert_eq!(flush(count, &fs).unwrap(), 4);
    }

    #[test]
    fn a_service_resolves_to_all_its_ports_or_is_refused_by_name() {
        let svc = |id: u32, name: &str| Service {
            id,
            name: name.into(),
            port_name: String::new(),
            protocol: sluice_tables::L4Protocol::Tcp,
            frontends: Vec::new(),
            backends: Vec::new(),
            algorithm: Default::default(),
            affinity_timeout_s: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            source_ranges: Vec::new(),
        };
        let list = [
            svc(1, "default/web"),
            svc(2, "default/db"),
            svc(5, "default/web"),
        ];
        assert_eq!(service_ids(&list, "default/web").unwrap(), [1, 5]);
        let err = service_ids(&list, "default/nope").unwrap_err().to_string();
        assert!(
            err.contains("--service default/nope: no such service"),
            "{err}"
        );
        assert!(service_ids(&list, "web").is_err());
    }
}

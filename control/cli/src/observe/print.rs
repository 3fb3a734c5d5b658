//! `sluice observe` output in Hubble's formats: `compact` (one line per
//! flow), `dict` (KEY: value blocks), `table` (aligned columns, Go
//! tabwriter style) and `json`/`jsonpb` (one `GetFlowsResponse` per line).
//! Times print as Hubble's default `StampMilli` in UTC.

use sluice_api::hubble::{
    drop_reason, event_type, parse_time, Flow, GetFlowsResponse, LostEvent, Policy,
};

use super::filters::RESERVED_IDENTITIES;

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Compact,
    Dict,
    Json,
    Jsonpb,
    Table,
}

/// Printing options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub format: Format,
    pub node_name: bool,
    pub policy_names: bool,
}

/// Formats answers one by one; `table` keeps rows until [`Printer::finish`].
pub struct Printer {
    options: Options,
    lines: usize,
    rows: Vec<Vec<String>>,
}

fn stamp(time: &str) -> String {
    match parse_time(time) {
        Ok(ns) => {
            let t = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns as i64);
            t.format("%b %e %H:%M:%S%.3f").to_string()
        }
        Err(_) => "N/A".to_string(),
    }
}

fn identity(id: u32) -> String {
    match RESERVED_IDENTITIES.iter().find(|(_, n)| *n == id) {
        Some((name, _)) => format!("({name})"),
        None => format!("(ID:{id})"),
    }
}

fn ports(flow: &Flow) -> (Option<u32>, Option<u32>) {
    let Some(l4) = &flow.l4 else {
        return (None, None);
    };
    if let Some(tcp) = &l4.tcp {
        return (Some(tcp.source_port), Some(tcp.destination_port));
    }
    match l4.udp.as_ref().or(l4.sctp.as_ref()) {
        Some(u) => (Some(u.source_port), Some(u.destination_port)),
        None => (None, None),
    }
}

/// Hubble's host column: `ns/pod`, `ns/service` or names instead of the
/// address, with `:port` (IPv6 addresses bracketed).
fn host(ip: &str, port: Option<u32>, name: Option<String>, names: &[String]) -> String {
    let host = match name {
        Some(name) => name,
        None if !names.is_empty() => names.join(","),
        None => ip.to_string(),
    };
    match port {
        Some(p) if p != 0 && host.contains(':') => format!("[{host}]:{p}"),
        Some(p) if p != 0 => format!("{host}:{p}"),
        _ => host,
    }
}

fn hosts(flow: &Flow) -> (String, String) {
    let Some(ip) = &flow.ip else {
        return match &flow.ethernet {
            Some(eth) => (eth.source.clone(), eth.destination.clone()),
            None => (String::new(), String::new()),
        };
    };
    let name = |endpoint: Option<&sluice_api::hubble::Endpoint>,
                service: Option<&sluice_api::hubble::Service>| {
        let ns = service
            .map(|s| s.namespace.as_str())
            .or(endpoint.map(|e| e.namespace.as_str()))
            .unwrap_or("");
        let join = |n: &str| {
            if ns.is_empty() {
                n.to_string()
            } else {
                format!("{ns}/{n}")
            }
        };
        match (endpoint, service) {
            (Some(e), _) if !e.pod_name.is_empty() => Some(join(&e.pod_name)),
            (_, Some(s)) if !s.name.is_empty() => Some(join(&s.name)),
            _ => None,
        }
    };
    let (sport, dport) = ports(flow);
    (
        host(
            &ip.source,
            sport,
            name(flow.source.as_ref(), flow.source_service.as_ref()),
            &flow.source_names,
        ),
        host(
            &ip.destination,
            dport,
            name(flow.destination.as_ref(), flow.destination_service.as_ref()),
            &flow.destination_names,
        ),
    )
}

/// Hubble's type column.
fn flow_type(flow: &Flow) -> String {
    if let Some(l7) = &flow.l7 {
        let kind = l7.l7_type.to_ascii_lowercase();
        return match &l7.dns {
            Some(dns) => format!("dns-{kind} {}", dns.observation_source),
            None => format!("l7-{kind}"),
        };
    }
    let Some(event) = flow.event_type else {
        return "UNKNOWN".into();
    };
    match event.event_type {
        event_type::TRACE => event_type::TRACE_POINTS
            .iter()
            .find(|(_, _, n)| *n == event.sub_type)
            .map_or_else(
                || event.sub_type.to_string(),
                |(name, _, _)| name.to_string(),
            ),
        event_type::DROP => drop_reason::description(event.sub_type as u32),
        event_type::POLICY_VERDICT => format!(
            "policy-verdict:{} {}",
            policy_match(flow.policy_match_type),
            if flow.traffic_direction.is_empty() {
                "TRAFFIC_DIRECTION_UNKNOWN"
            } else {
                &flow.traffic_direction
            }
        ),
        _ => "UNKNOWN".into(),
    }
}

/// Cilium's policy match type names (`api.PolicyMatchType`).
fn policy_match(kind: u32) -> &'static str {
    match kind {
        1 => "L3-L4",
        2 => "L3-Only",
        3 => "L4-Only",
        4 => "all",
        _ => "none",
    }
}

fn policy_names(policies: &[Policy]) -> String {
    let named: Vec<String> = policies
        .iter()
        .filter(|p| !p.kind.is_empty() && !p.name.is_empty())
        .map(|p| format!("{} ({})", p.name, p.kind))
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" BY {}", named.join(", "))
    }
}

fn verdict(flow: &Flow, with_policy_names: bool) -> String {
    let is_policy_verdict = flow
        .event_type
        .is_some_and(|e| e.event_type == event_type::POLICY_VERDICT);
    let by = |egress: &[Policy], ingress: &[Policy]| match flow.traffic_direction.as_str() {
        _ if !with_policy_names => String::new(),
        "EGRESS" => policy_names(egress),
        "INGRESS" => policy_names(ingress),
        _ => String::new(),
    };
    match flow.verdict.as_str() {
        "FORWARDED" | "REDIRECTED" if is_policy_verdict => {
            format!(
                "ALLOWED{}",
                by(&flow.egress_allowed_by, &flow.ingress_allowed_by)
            )
        }
        "DROPPED" | "ERROR" if is_policy_verdict => {
            format!(
                "DENIED{}",
                by(&flow.egress_denied_by, &flow.ingress_denied_by)
            )
        }
        // Sluice names the denying policy of every drop (Hubble only of
        // policy verdicts).
        "DROPPED" if with_policy_names => format!(
            "DROPPED{}",
            by(&flow.egress_denied_by, &flow.ingress_denied_by)
        ),
        "AUDIT" if is_policy_verdict => "AUDITED".into(),
        other => other.to_string(),
    }
}

const TCP_FLAG_ORDER: &[&str] = &["SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];

/// The summary column: the flow's `Summary` when it has one, else one in
/// Hubble's words (`TCP Flags: SYN`, `UDP`, `ICMPv4 EchoRequest`, DNS).
pub fn summary(flow: &Flow) -> String {
    if !flow.summary.is_empty() {
        return flow.summary.clone();
    }
    if let Some(dns) = flow.l7.as_ref().and_then(|l7| l7.dns.as_ref()) {
        let qtypes = dns.qtypes.join(",");
        return match flow.l7.as_ref().map(|l| l.l7_type.as_str()) {
            Some("RESPONSE") => format!(
                "DNS Answer {:?} TTL: {} ({} {} {})",
                dns.ips.join(","),
                dns.ttl,
                dns.observation_source,
                dns.query,
                qtypes
            ),
            _ => format!("DNS Query {} {}", dns.query, qtypes),
        };
    }
    let Some(l4) = &flow.l4 else {
        return String::new();
    };
    if let Some(tcp) = &l4.tcp {
        let flags = tcp.flags.unwrap_or_default();
        let set = [
            flags.SYN, flags.FIN, flags.RST, flags.PSH, flags.ACK, flags.URG, flags.ECE, flags.CWR,
            flags.NS,
        ];
        let names: Vec<&str> = TCP_FLAG_ORDER
            .iter()
            .zip(set)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        return format!("TCP Flags: {}", names.join(", "));
    }
    if l4.udp.is_some() {
        return "UDP".into();
    }
    if l4.sctp.is_some() {
        return "SCTP".into();
    }
    if let Some(icmp) = &l4.icmpv4 {
        return format!("ICMPv4 {}", icmpv4_name(icmp.icmp_type));
    }
    if let Some(icmp) = &l4.icmpv6 {
        return format!("ICMPv6 {}", icmpv6_name(icmp.icmp_type));
    }
    String::new()
}

fn icmpv4_name(kind: u32) -> String {
    match kind {
        0 => "EchoReply".into(),
        3 => "DestinationUnreachable".into(),
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        11 => "TimeExceeded".into(),
        other => other.to_string(),
    }
}

fn icmpv6_name(kind: u32) -> String {
    match kind {
        1 => "DestinationUnreachable".into(),
        3 => "TimeExceeded".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        other => other.to_string(),
    }
}

impl Printer {
    pub fn new(options: Options) -> Printer {
        Printer {
            options,
            lines: 0,
            rows: Vec::new(),
        }
    }

    /// The text for one answer (possibly several lines, each ending in a
    /// newline); empty for `table` until [`Printer::finish`].
    pub fn write(&mut self, response: &GetFlowsResponse) -> String {
        let out = match (&response.flow, &response.lost_events) {
            (Some(flow), _) => self.flow(response, flow),
            (None, Some(lost)) => self.lost(response, lost),
            (None, None) => String::new(),
        };
        self.lines += 1;
        out
    }

    fn json(response: &GetFlowsResponse) -> String {
        // Serializing plain data cannot fail.
        serde_json::to_string(response).unwrap_or_default() + "\n"
    }

    fn flow(&mut self, response: &GetFlowsResponse, flow: &Flow) -> String {
        let o = self.options;
        let (mut src, mut dst) = hosts(flow);
        let time = stamp(&flow.time);
        let kind = flow_type(flow);
        let verdict = verdict(flow, o.policy_names);
        let summary = summary(flow);
        match o.format {
            Format::Json | Format::Jsonpb => Self::json(response),
            Format::Compact => {
                let mut src_id = identity(flow.source.as_ref().map_or(0, |e| e.identity));
                let mut dst_id = identity(flow.destination.as_ref().map_or(0, |e| e.identity));
                let arrow = match flow.is_reply {
                    None => "<>",
                    Some(false) => "->",
                    Some(true) => {
                        std::mem::swap(&mut src, &mut dst);
                        std::mem::swap(&mut src_id, &mut dst_id);
                        "<-"
                    }
                };
                let node = if o.node_name {
                    format!(" [{}]", flow.node_name)
                } else {
                    String::new()
                };
                format!("{time}{node}: {src} {src_id} {arrow} {dst} {dst_id} {kind} {verdict} ({summary})\n")
            }
            Format::Dict => {
                let mut out = String::new();
                if self.lines != 0 {
                    out.push_str("------------\n");
                }
                out.push_str(&format!("  TIMESTAMP: {time}\n"));
                if o.node_name {
                    out.push_str(&format!("       NODE: {}\n", flow.node_name));
                }
                out.push_str(&format!(
                    "     SOURCE: {src}\nDESTINATION: {dst}\n       TYPE: {kind}\n    VERDICT: {verdict}\n    SUMMARY: {summary}\n"
                ));
                out
            }
            Format::Table => {
                let mut row = vec![time];
                if o.node_name {
                    row.push(flow.node_name.clone());
                }
                row.extend([src, dst, kind, verdict, summary]);
                self.rows.push(row);
                String::new()
            }
        }
    }

    fn lost(&mut self, response: &GetFlowsResponse, lost: &LostEvent) -> String {
        let o = self.options;
        let cpu = lost.cpu.map_or(0, |c| c.value);
        let time = stamp(&response.time);
        match o.format {
            Format::Json | Format::Jsonpb => Self::json(response),
            Format::Compact => format!(
                "{time}: EVENTS LOST: {} CPU({cpu}) {}\n",
                lost.source, lost.num_events_lost
            ),
            Format::Dict => {
                let sep = if self.lines != 0 {
                    "------------\n"
                } else {
                    ""
                };
                format!(
                    "{sep}  TIMESTAMP: {time}\n     SOURCE: {}\n       TYPE: EVENTS LOST\n    VERDICT: -\n    SUMMARY: CPU({cpu}) - {}\n",
                    lost.source, lost.num_events_lost
                )
            }
            Format::Table => {
                let mut row = vec![time];
                if o.node_name {
                    row.push(response.node_name.clone());
                }
                row.extend([
                    lost.source.clone(),
                    "-".into(),
                    "EVENTS LOST".into(),
                    "-".into(),
                    format!("CPU({cpu}) - {}", lost.num_events_lost),
                ]);
                self.rows.push(row);
                String::new()
            }
        }
    }

    /// What is still to print: the table, with its header, aligned like Go's
    /// tabwriter (cells padded to the column's widest plus 3 spaces; the
    /// last column as is).
    pub fn finish(&mut self) -> String {
        if self.options.format != Format::Table || self.rows.is_empty() {
            return String::new();
        }
        let mut header = vec!["TIMESTAMP".to_string()];
        if self.options.node_name {
            header.push("NODE".into());
        }
        header.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"].map(String::from));
        let mut rows = vec![header];
        rows.append(&mut self.rows);
        let columns = rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == columns {
                    out.push_str(cell);
                } else {
                    let pad = widths[c] + 3 - cell.chars().count();
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

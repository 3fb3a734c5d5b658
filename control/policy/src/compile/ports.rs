//! `toPorts` and `icmps` -> port specs: (protocol, port range) lines, named
//! ports left for the table builder to resolve, and the DNS rules of a
//! port.

use sluice_tables::{Action, DnsRules, DnsSelector, PolicyDirection};

use super::rules::canonical_dns;
use crate::model::{IcmpRule, PortRule, PortValue};

pub(super) const TCP: u8 = 6;
pub(super) const UDP: u8 = 17;
pub(super) const SCTP: u8 = 132;
pub(super) const ICMP: u8 = 1;
pub(super) const ICMPV6: u8 = 58;

/// One port line of an element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum PortSpec {
    /// `protocol` 0 is any protocol (then the range is the whole range).
    Range {
        protocol: u8,
        min: u16,
        max: u16,
        dns: Option<DnsRules>,
    },
    /// A named port; `protocol` `None` for `ANY`.
    Named {
        name: String,
        protocol: Option<u8>,
        dns: Option<DnsRules>,
    },
}

impl PortSpec {
    /// Any protocol, any port: an element without ports or ICMP types.
    pub fn any() -> PortSpec {
        PortSpec::Range {
            protocol: 0,
            min: 0,
            max: u16::MAX,
            dns: None,
        }
    }
}

/// The port specs of an element; problems go to `error(field, message)`.
/// Without `toPorts` and `icmps`: any protocol and port.
pub(super) fn port_specs(
    to_ports: &[PortRule],
    icmps: &[IcmpRule],
    direction: PolicyDirection,
    action: Action,
    error: &mut dyn FnMut(&str, String),
) -> Vec<PortSpec> {
    if to_ports.is_empty() && icmps.is_empty() {
        return vec![PortSpec::any()];
    }
    let mut out = Vec::new();
    for (i, rule) in to_ports.iter().enumerate() {
        let field = Field::Ports(i);
        let dns = dns_rules(rule, field, direction, action, error);
        if rule.ports.is_empty() {
            out.push(PortSpec::Range {
                protocol: 0,
                min: 0,
                max: u16::MAX,
                dns,
            });
            continue;
        }
        for (j, port) in rule.ports.iter().enumerate() {
            let field = Field::Port(i, j);
            let protocols = match protocols(port.protocol.as_deref()) {
                Ok(p) => p,
                Err(message) => {
                    error(&format!("{field}.protocol"), message);
                    continue;
                }
            };
            let value = port.port.clone().unwrap_or(PortValue::Number(0));
            if let Some(name) = value.name() {
                if port.end_port.is_some_and(|e| e != 0) {
                    error(&format!("{field}.endPort"), "needs a numeric port".into());
                    continue;
                }
                let protocol = (protocols.len() == 1).then(|| protocols[0]);
                out.push(PortSpec::Named {
                    name: name.to_ascii_lowercase(),
                    protocol,
                    dns: dns.clone(),
                });
                continue;
            }
            let Some(min) = value.number() else {
                error(
                    &format!("{field}.port"),
                    format!("{value} is not a port (0-65535 or a name)"),
                );
                continue;
            };
            let (min, max) = match port.end_port.filter(|e| *e != 0) {
                None if min == 0 => (0, u16::MAX),
                None => (min, min),
                Some(_) if min == 0 => {
                    error(&format!("{field}.endPort"), "needs a port".into());
                    continue;
                }
                Some(end) => match u16::try_from(end) {
                    Ok(end) if end >= min => (min, end),
                    _ => {
                        error(
                            &format!("{field}.endPort"),
                            format!("{end} is not a port from {min} to 65535"),
                        );
                        continue;
                    }
                },
            };
            for protocol in protocols {
                out.push(PortSpec::Range {
                    protocol,
                    min,
                    max,
                    dns: dns.clone(),
                });
            }
        }
    }
    for (i, rule) in icmps.iter().enumerate() {
        for (j, field) in rule.fields.iter().enumerate() {
            let path = Field::Icmp(i, j);
            let v6 = match field.family.as_deref() {
                None | Some("IPv4") => false,
                Some("IPv6") => true,
                Some(other) => {
                    error(
                        &format!("{path}.family"),
                        format!("{other:?} is not IPv4 or IPv6"),
                    );
                    continue;
                }
            };
            match crate::parse::icmp_type(v6, &field.icmp_type) {
                Ok(code) => out.push(PortSpec::Range {
                    protocol: if v6 { ICMPV6 } else { ICMP },
                    min: code.into(),
                    max: code.into(),
                    dns: None,
                }),
                Err(message) => error(&format!("{path}.type"), message),
            }
        }
    }
    out
}

/// Where in an element a problem is; formatted only when there is one.
#[derive(Clone, Copy)]
enum Field {
    /// `toPorts[i]`
    Ports(usize),
    /// `toPorts[i].ports[j]`
    Port(usize, usize),
    /// `icmps[i].fields[j]`
    Icmp(usize, usize),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Ports(i) => write!(f, "toPorts[{i}]"),
            Field::Port(i, j) => write!(f, "toPorts[{i}].ports[{j}]"),
            Field::Icmp(i, j) => write!(f, "icmps[{i}].fields[{j}]"),
        }
    }
}

/// `protocol`: absent or `ANY` -> TCP, UDP and SCTP.
fn protocols(protocol: Option<&str>) -> Result<Vec<u8>, String> {
    let Some(text) = protocol else {
        return Ok(vec![TCP, UDP, SCTP]);
    };
    Ok(match text.to_ascii_uppercase().as_str() {
        "ANY" | "" => vec![TCP, UDP, SCTP],
        "TCP" => vec![TCP],
        "UDP" => vec![UDP],
        "SCTP" => vec![SCTP],
        _ => return Err(format!("{text:?} is not TCP, UDP, SCTP or ANY")),
    })
}

/// `toPorts[i].rules`: the DNS rules (egress allow only); other L7 rules
/// are reported.
fn dns_rules(
    rule: &PortRule,
    field: Field,
    direction: PolicyDirection,
    action: Action,
    error: &mut dyn FnMut(&str, String),
) -> Option<DnsRules> {
    for (present, name) in [
        (rule.terminating_tls.is_some(), "terminatingTLS"),
        (rule.originating_tls.is_some(), "originatingTLS"),
        (rule.server_names.is_some(), "serverNames"),
        (rule.listener.is_some(), "listener"),
    ] {
        if present {
            error(
                &format!("{field}.{name}"),
                "not supported (no L7 proxy)".into(),
            );
        }
    }
    let rules = rule.rules.as_ref()?;
    if action == Action::Deny {
        error(
            &format!("{field}.rules"),
            "deny rules cannot have L7 rules".into(),
        );
        return None;
    }
    for (present, name) in [
        (rule_present(&rules.http), "http"),
        (rule_present(&rules.kafka), "kafka"),
        (rule_present(&rules.l7), "l7"),
        (rules.l7proto.is_some(), "l7proto"),
    ] {
        if present {
            error(
                &format!("{field}.rules.{name}"),
                "not supported (only DNS rules are enforced)".into(),
            );
        }
    }
    let dns = rules.dns.as_ref().filter(|d| !d.is_empty())?;
    if direction == PolicyDirection::Ingress {
        error(
            &format!("{field}.rules.dns"),
            "DNS rules apply to egress only".into(),
        );
        return None;
    }
    let mut allow = Vec::new();
    for (k, selector) in dns.iter().enumerate() {
        match (&selector.match_name, &selector.match_pattern) {
            (Some(name), None) => allow.push(DnsSelector::MatchName(canonical_dns(name))),
            (None, Some(pattern)) => allow.push(DnsSelector::MatchPattern(canonical_dns(pattern))),
            _ => error(
                &format!("{field}.rules.dns[{k}]"),
                "needs exactly one of matchName and matchPattern".into(),
            ),
        }
    }
    Some(canonical_dns_rules(allow))
}

fn rule_present(value: &Option<serde_json::Value>) -> bool {
    value.as_ref().is_some_and(|v| !v.is_null())
}

/// DNS rules in one order without repeats, so equal rule sets compare equal.
pub(super) fn canonical_dns_rules(mut allow: Vec<DnsSelector>) -> DnsRules {
    allow.sort_by(|a, b| dns_key(a).cmp(&dns_key(b)));
    allow.dedup();
    DnsRules { allow }
}

pub(super) fn dns_key(selector: &DnsSelector) -> (u8, &str) {
    match selector {
        DnsSelector::MatchName(name) => (0, name),
        DnsSelector::MatchPattern(pattern) => (1, pattern),
    }
}

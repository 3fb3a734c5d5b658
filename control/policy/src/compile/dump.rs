//! A stable text form of [`Compiled`]: golden tests compare it, the agent's
//! `--dump` prints it. One line per rule, DNS rule set, FQDN selector,
//! table entry, endpoint, ipcache entry, local identity and error, all in
//! the order the output holds them (which is sorted), so two compilations
//! of the same input print the same bytes.

use std::fmt::Write;

use sluice_tables::{Action, DnsSelector, Peer, PolicyEntry};

use super::ports::{ICMP, ICMPV6, SCTP, TCP, UDP};
use super::Compiled;

impl Compiled {
    /// The text form (sections `config`, `rules`, `fqdn selectors`,
    /// `dns rules`, `tables`, `endpoints`, `ipcache`, `local identities`,
    /// `errors`; empty sections are left out). Rules print as `r<n>`, DNS
    /// rule sets as `d<n>`, FQDN selectors as `f<n>`, tables as `t<n>`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let state = &self.state;
        let config = &state.config;
        let _ = writeln!(
            out,
            "config enforcement={} allow_localhost={} fqdn_max_ips_per_name={} fqdn_min_ttl_seconds={}",
            format!("{:?}", config.enforcement).to_lowercase(),
            config.allow_localhost,
            config.fqdn_max_ips_per_name,
            config.fqdn_min_ttl_seconds
        );
        section(&mut out, "rules", &state.rules, |out, i, r| {
            let name = if r.namespace.is_empty() {
                r.name.clone()
            } else {
                format!("{}/{}", r.namespace, r.name)
            };
            let _ = write!(out, "r{i} {} {name} {}", r.kind, r.path);
        });
        section(
            &mut out,
            "fqdn selectors",
            &state.fqdn_selectors,
            |out, i, s| {
                let _ = write!(out, "f{i} {}", dns_selector(s));
            },
        );
        section(&mut out, "dns rules", &state.dns_rules, |out, i, d| {
            let list: Vec<String> = d.allow.iter().map(dns_selector).collect();
            let _ = write!(out, "d{i} {}", list.join(", "));
        });
        section(&mut out, "tables", &state.tables, |out, i, t| {
            let _ = write!(
                out,
                "t{i} {}",
                if t.enforced {
                    "enforced"
                } else {
                    "not enforced"
                }
            );
            if let Some(rule) = t.default_rule {
                let _ = write!(out, " default r{rule}");
            }
            for entry in &t.entries {
                let _ = write!(out, "\n    {}", entry_text(entry));
            }
        });
        section(&mut out, "endpoints", &state.endpoints, |out, _, e| {
            let _ = write!(
                out,
                "{} ingress t{} egress t{}",
                e.endpoint, e.ingress, e.egress
            );
        });
        section(&mut out, "ipcache", &self.ipcache, |out, _, e| {
            match e.prefix_len {
                Some(len) => {
                    let _ = write!(out, "{}/{len} {}", e.ip, e.identity);
                }
                None => {
                    let _ = write!(out, "{} {}", e.ip, e.identity);
                }
            }
        });
        let mut locals: Vec<(&u32, &String)> =
            self.local_identities.iter().map(|(k, n)| (n, k)).collect();
        locals.sort();
        section(&mut out, "local identities", &locals, |out, _, (n, key)| {
            let _ = write!(out, "{n} {key}");
        });
        section(&mut out, "errors", &self.errors, |out, _, e| {
            let _ = write!(out, "{e}");
        });
        out
    }
}

fn section<T>(
    out: &mut String,
    title: &str,
    items: &[T],
    mut line: impl FnMut(&mut String, usize, &T),
) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}");
    for (i, item) in items.iter().enumerate() {
        out.push_str("  ");
        line(out, i, item);
        out.push('\n');
    }
}

fn dns_selector(selector: &DnsSelector) -> String {
    match selector {
        DnsSelector::MatchName(name) => format!("matchName {name}"),
        DnsSelector::MatchPattern(pattern) => format!("matchPattern {pattern}"),
    }
}

/// `allow identity 256 tcp 80 r3`, `deny any icmp 8 r1`, `allow fqdn f0 udp
/// 53 dns d0 r2`.
fn entry_text(entry: &PolicyEntry) -> String {
    let action = match entry.action {
        Action::Allow => "allow",
        Action::Deny => "deny ",
    };
    let peer = match entry.peer {
        Peer::Any => "any".to_string(),
        Peer::Identity(n) => format!("identity {n}"),
        Peer::Fqdn(n) => format!("fqdn f{n}"),
    };
    let protocol = match entry.protocol {
        0 => "any".to_string(),
        ICMP => "icmp".to_string(),
        ICMPV6 => "icmpv6".to_string(),
        TCP => "tcp".to_string(),
        UDP => "udp".to_string(),
        SCTP => "sctp".to_string(),
        other => format!("proto-{other}"),
    };
    let ports = if entry.protocol == 0 {
        String::new()
    } else if entry.port_min == 0 && entry.port_max == u16::MAX {
        " *".to_string()
    } else if entry.port_min == entry.port_max {
        format!(" {}", entry.port_min)
    } else {
        format!(" {}-{}", entry.port_min, entry.port_max)
    };
    let dns = entry.dns.map(|d| format!(" dns d{d}")).unwrap_or_default();
    format!("{action} {peer:<17} {protocol}{ports}{dns} r{}", entry.rule)
}

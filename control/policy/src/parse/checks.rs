//! Checks of single values shared by the Cilium and the Kubernetes policy
//! parsers: label keys and values, label selectors, ports, protocols, CIDR
//! prefixes, entities, names. Each answers why a value is wrong, in words
//! that do not need the field name (the caller adds the path).

use std::net::IpAddr;

use sluice_tables::Cidr;

use super::Problems;
use crate::model::{EndpointSelector, PortValue};

/// Label sources a Cilium selector key may name (`k8s:app`); a key without
/// one matches any source.
pub(crate) const LABEL_SOURCES: [&str; 3] = ["k8s", "any", "reserved"];

/// Reserved identities a `reserved:` selector key may name.
pub(crate) const RESERVED_NAMES: [&str; 10] = [
    "host",
    "world",
    "unmanaged",
    "health",
    "init",
    "remote-node",
    "kube-apiserver",
    "ingress",
    "world-ipv4",
    "world-ipv6",
];

/// `fromEntities` / `toEntities` values.
pub(crate) const ENTITIES: [&str; 13] = [
    "all",
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "host",
    "remote-node",
    "kube-apiserver",
    "init",
    "health",
    "unmanaged",
    "ingress",
    "none",
];

/// `toPorts[].ports[].protocol` values (Cilium's CRD enum also lists ICMP,
/// ICMPV6, VRRP and IGMP, which Sluice does not enforce as ports; ICMP goes
/// in `icmps`).
pub(crate) const CILIUM_PROTOCOLS: [&str; 4] = ["TCP", "UDP", "SCTP", "ANY"];

/// NetworkPolicy `ports[].protocol` values.
pub(crate) const K8S_PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// Label operators of a `matchExpressions` requirement.
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// A selector key in a Cilium policy: an optional source prefix
/// (`k8s:`, `any:`, `reserved:`), then a Kubernetes label key (for
/// `reserved:`, the name of a reserved identity).
pub(crate) fn cilium_label_key(key: &str) -> Result<(), String> {
    let Some((source, rest)) = key.split_once(':') else {
        return k8s_label_key(key);
    };
    if !LABEL_SOURCES.contains(&source) {
        return Err(format!(
            "{key:?} has the label source {source:?}; known sources: {}",
            LABEL_SOURCES.map(|s| format!("{s}:")).join(", ")
        ));
    }
    if source == "reserved" {
        if RESERVED_NAMES.contains(&rest) {
            return Ok(());
        }
        return Err(format!(
            "{key:?} is not a reserved identity (reserved:{})",
            RESERVED_NAMES.join(", reserved:")
        ));
    }
    match key_problem(rest) {
        Some(why) => Err(format!("{key:?} is not a label key: {why}")),
        None => Ok(()),
    }
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain of
/// at most 253 characters, the name 1-63 characters.
pub(crate) fn k8s_label_key(key: &str) -> Result<(), String> {
    match key_problem(key) {
        Some(why) => Err(format!("{key:?} is not a label key: {why}")),
        None => Ok(()),
    }
}

fn key_problem(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        Some("it has more than one '/'")
    } else if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        Some("its prefix (before '/') must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters")
    } else if name.is_empty() {
        Some("its name is empty")
    } else if !is_label_text(name) {
        Some("its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
    } else {
        None
    }
}

/// A label value: empty, or 1-63 letters, digits, `-`, `_`, `.`, starting
/// and ending with a letter or digit.
pub(crate) fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ))
    }
}

fn is_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain, as Kubernetes checks it.
fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.split('.').all(is_dns_label_text)
}

fn is_dns_label_text(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A namespace or Service name (an RFC 1123 label).
pub(crate) fn dns_label(name: &str) -> Result<(), String> {
    if is_dns_label_text(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// Checks a label selector: keys with `key_check`, values, operators.
pub(crate) fn selector(
    selector: &EndpointSelector,
    key_check: fn(&str) -> Result<(), String>,
    path: &str,
    out: &mut Problems,
) {
    for (key, value) in &selector.match_labels {
        let at = format!("{path}.matchLabels.{key}");
        if let Err(e) = key_check(key) {
            out.add(&at, e);
        }
        if let Err(e) = label_value(value) {
            out.add(&at, e);
        }
    }
    for (i, requirement) in selector.match_expressions.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        if let Err(e) = key_check(&requirement.key) {
            out.add(format!("{at}.key"), e);
        }
        let operator = requirement.operator.as_str();
        match operator {
            "In" | "NotIn" if requirement.values.is_empty() => {
                out.add(
                    format!("{at}.values"),
                    format!("operator {operator} needs values"),
                );
            }
            "Exists" | "DoesNotExist" if !requirement.values.is_empty() => {
                out.add(
                    format!("{at}.values"),
                    format!("operator {operator} takes no values"),
                );
            }
            _ if !OPERATORS.contains(&operator) => out.add(
                format!("{at}.operator"),
                format!("{operator:?} is not one of {}", OPERATORS.join(", ")),
            ),
            _ => {}
        }
        for (j, value) in requirement.values.iter().enumerate() {
            if let Err(e) = label_value(value) {
                out.add(format!("{at}.values[{j}]"), e);
            }
        }
    }
}

/// An IANA service name (RFC 6335 §5.1), the syntax of named ports: 1-15
/// letters, digits and `-`, at least one letter, no `-` at either end or
/// twice in a row. Kubernetes wants it lowercase; Cilium ignores case.
pub(crate) fn is_service_name(name: &str, any_case: bool) -> bool {
    let bytes = name.as_bytes();
    (1..=15).contains(&bytes.len())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || *b == b'-'
                || (any_case && b.is_ascii_uppercase())
        })
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// A Cilium port (`toPorts[].ports[].port`): a number 0-65535 or a named
/// port. Returns it canonical: names lowercase, as Cilium sanitizes them.
pub(crate) fn cilium_port(value: &PortValue) -> Result<PortValue, String> {
    if value.number().is_some() {
        return Ok(value.clone());
    }
    match value {
        PortValue::Text(name) if is_service_name(name, true) => {
            Ok(PortValue::Text(name.to_ascii_lowercase()))
        }
        _ => Err(format!("{value} is not a port (0-65535) or a port name")),
    }
}

/// A protocol name among `allowed`.
pub(crate) fn protocol(protocol: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&protocol) {
        Ok(())
    } else {
        Err(format!("{protocol:?} is not one of {}", allowed.join(", ")))
    }
}

/// A CIDR prefix `address/length`; with `bare_address`, an address alone
/// is the host prefix (/32, /128), as `fromCIDR` / `toCIDR` allow.
pub(crate) fn prefix(text: &str, bare_address: bool) -> Result<Cidr, String> {
    if let Some(cidr) = Cidr::parse(text) {
        return Ok(cidr);
    }
    if bare_address {
        if let Ok(addr) = text.parse::<IpAddr>() {
            let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Cidr { addr, prefix_len });
        }
        return Err(format!("{text:?} is not an address or a CIDR prefix"));
    }
    Err(format!("{text:?} is not a CIDR prefix (address/length)"))
}

/// A prefix with its host bits cleared (`10.1.2.3/8` -> `10.0.0.0/8`).
pub(crate) fn network(cidr: Cidr) -> Cidr {
    let addr = match cidr.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(cidr.prefix_len))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(cidr.prefix_len))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Cidr {
        addr,
        prefix_len: cidr.prefix_len,
    }
}

/// Whether `inner` lies inside `outer` (same family); `strict` also wants
/// it smaller (Kubernetes' ipBlock.except; Cilium allows equal).
pub(crate) fn covers(outer: Cidr, inner: Cidr, strict: bool) -> bool {
    let longer = if strict {
        inner.prefix_len > outer.prefix_len
    } else {
        inner.prefix_len >= outer.prefix_len
    };
    longer && outer.contains(inner.addr)
}

/// An entity name.
pub(crate) fn entity(name: &str) -> Result<(), String> {
    if ENTITIES.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an entity ({})",
            ENTITIES.join(", ")
        ))
    }
}

/// `a`, `a and b`, `a, b and c`.
pub(crate) fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_label_keys() {
        for ok in [
            "app",
            "k8s:app",
            "any:app.kubernetes.io/name",
            "k8s:io.kubernetes.pod.namespace",
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
            "reserved:host",
            "reserved:kube-apiserver",
        ] {
            assert_eq!(cilium_label_key(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            cilium_label_key("k9s:app").unwrap_err(),
            "\"k9s:app\" has the label source \"k9s\"; known sources: k8s:, any:, reserved:"
        );
        assert!(cilium_label_key("reserved:hostt").unwrap_err().starts_with(
            "\"reserved:hostt\" is not a reserved identity (reserved:host, reserved:world,"
        ));
        assert_eq!(
            cilium_label_key("k8s:-app").unwrap_err(),
            "\"k8s:-app\" is not a label key: its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        );
        assert_eq!(
            k8s_label_key("Example.com/app").unwrap_err(),
            "\"Example.com/app\" is not a label key: its prefix (before '/') must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters"
        );
        assert_eq!(
            k8s_label_key("a/b/c").unwrap_err(),
            "\"a/b/c\" is not a label key: it has more than one '/'"
        );
        assert_eq!(
            k8s_label_key("example.com/").unwrap_err(),
            "\"example.com/\" is not a label key: its name is empty"
        );
        assert!(k8s_label_key(&"a".repeat(63)).is_ok());
        assert!(k8s_label_key(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value(""), Ok(()));
        assert_eq!(label_value("web-1.a_b"), Ok(()));
        assert!(label_value("web ").is_err());
        assert!(label_value("_web").is_err());
        assert!(label_value(&"v".repeat(64)).is_err());
    }

    #[test]
    fn service_names() {
        for ok in ["http", "dns-tcp", "h2c", "a1", "serve-80-tcp"] {
            assert!(is_service_name(ok, false), "{ok}");
        }
        for bad in [
            "",
            "80",
            "-http",
            "http-",
            "dns--tcp",
            "sixteen-chars-xx",
            "a_b",
        ] {
            assert!(!is_service_name(bad, true), "{bad}");
        }
        assert!(!is_service_name("HTTP", false));
        assert!(is_service_name("HTTP", true));
    }

    #[test]
    fn ports_are_numbers_or_names() {
        assert_eq!(
            cilium_port(&PortValue::Text("80".into())),
            Ok(PortValue::Text("80".into()))
        );
        assert_eq!(cilium_port(&PortValue::Number(0)), Ok(PortValue::Number(0)));
        assert_eq!(
            cilium_port(&PortValue::Text("HTTP-Alt".into())),
            Ok(PortValue::Text("http-alt".into()))
        );
        assert_eq!(
            cilium_port(&PortValue::Text("99999".into())).unwrap_err(),
            "\"99999\" is not a port (0-65535) or a port name"
        );
        assert_eq!(
            cilium_port(&PortValue::Number(-1)).unwrap_err(),
            "-1 is not a port (0-65535) or a port name"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix("10.0.0.0/8", false).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(prefix("10.1.2.3", true).unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(
            prefix("2001:db8::1", true).unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(prefix("10.1.2.3", false).is_err());
        assert!(prefix("10.0.0.0/33", false).is_err());
        assert_eq!(
            network(prefix("10.1.2.3/8", false).unwrap()).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            network(prefix("0.0.0.0/0", false).unwrap()).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            network(prefix("2001:db8::1/32", false).unwrap()).to_string(),
            "2001:db8::/32"
        );
        let outer = prefix("10.0.0.0/8", false).unwrap();
        assert!(covers(outer, prefix("10.1.0.0/16", false).unwrap(), true));
        assert!(covers(outer, outer, false));
        assert!(!covers(outer, outer, true));
        assert!(!covers(outer, prefix("11.0.0.0/16", false).unwrap(), false));
        assert!(!covers(outer, prefix("0.0.0.0/0", false).unwrap(), false));
        assert!(!covers(outer, prefix("::/8", false).unwrap(), false));
    }

    #[test]
    fn join() {
        assert_eq!(join_and(&["a"]), "a");
        assert_eq!(join_and(&["a", "b"]), "a and b");
        assert_eq!(join_and(&["a", "b", "c"]), "a, b and c");
    }
}

//! Validation of one Cilium rule (`spec`, or an element of `specs`) by
//! Cilium's rules (`pkg/policy/api/rule_validation.go`), and refusal, with
//! a clear error, of what Sluice does not implement rather than ignoring it
//! (a silently ignored rule would allow or deny the wrong traffic). Every
//! problem is collected, not only the first.
//!
//! The rule is normalized the way Cilium sanitizes it: named ports and DNS
//! names lowercase (DNS names also without the trailing dot), `endPort: 0`
//! dropped (no range), and an empty `ingress` / `ingressDeny` / `egress` /
//! `egressDeny` list dropped (Cilium counts rules to decide whether a rule
//! has a direction, so an empty list is no section).

use serde_json::Value;

use super::checks::{self, CILIUM_PROTOCOLS};
use super::icmp::{icmp_family, icmp_type};
use super::Problems;
use crate::fqdn;
use crate::model::{
    CidrRule, EgressRule, EndpointSelector, FqdnSelector, IcmpRule, IngressRule, L7Rules,
    PolicyKind, PortProtocol, PortRule, Rule, ServiceRule,
};

/// Cilium's limit of ports in one `toPorts` entry.
const MAX_PORTS: usize = 40;
/// Cilium's limit of fields in one `icmps` entry.
const MAX_ICMP_FIELDS: usize = 40;

/// Checks (and normalizes) one rule of a policy of `kind`; `path` is where
/// the rule is in the object (`spec`, `specs[1]`).
pub(crate) fn check_rule(rule: &mut Rule, kind: PolicyKind, path: &str, out: &mut Problems) {
    match (&rule.endpoint_selector, &rule.node_selector) {
        (Some(_), Some(_)) => out.add(path, "endpointSelector and nodeSelector cannot both be set"),
        (None, None) => out.add(
            format!("{path}.endpointSelector"),
            "missing: every rule selects the endpoints it applies to",
        ),
        _ => {}
    }
    if rule.node_selector.is_some() {
        let problem = if kind == PolicyKind::CiliumNetworkPolicy {
            "a CiliumNetworkPolicy cannot have a nodeSelector (host policies are clusterwide; \
             Sluice does not support them)"
        } else {
            "host policies (nodeSelector) are not supported"
        };
        out.add(format!("{path}.nodeSelector"), problem);
    }
    if let Some(selector) = &rule.endpoint_selector {
        selector_of(selector, &format!("{path}.endpointSelector"), out);
    }
    let sections = [
        nonempty(&rule.ingress),
        nonempty(&rule.ingress_deny),
        nonempty(&rule.egress),
        nonempty(&rule.egress_deny),
    ];
    if !sections.contains(&true) {
        out.add(
            path,
            "the rule has no ingress, ingressDeny, egress or egressDeny rules, so it does nothing \
             (Cilium refuses it too)",
        );
    }
    for (i, r) in rule.ingress.iter_mut().flatten().enumerate() {
        ingress(r, false, &format!("{path}.ingress[{i}]"), out);
    }
    for (i, r) in rule.ingress_deny.iter_mut().flatten().enumerate() {
        ingress(r, true, &format!("{path}.ingressDeny[{i}]"), out);
    }
    for (i, r) in rule.egress.iter_mut().flatten().enumerate() {
        egress(r, false, &format!("{path}.egress[{i}]"), out);
    }
    for (i, r) in rule.egress_deny.iter_mut().flatten().enumerate() {
        egress(r, true, &format!("{path}.egressDeny[{i}]"), out);
    }
    // `ingress: []` is no ingress section (Cilium counts rules).
    none_if_empty(&mut rule.ingress);
    none_if_empty(&mut rule.ingress_deny);
    none_if_empty(&mut rule.egress);
    none_if_empty(&mut rule.egress_deny);
}

fn none_if_empty<T>(list: &mut Option<Vec<T>>) {
    if list.as_ref().is_some_and(Vec::is_empty) {
        *list = None;
    }
}

fn nonempty<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

fn selector_of(selector: &EndpointSelector, path: &str, out: &mut Problems) {
    checks::selector(selector, checks::cilium_label_key, path, out);
}

fn selectors(list: &Option<Vec<EndpointSelector>>, path: &str, out: &mut Problems) {
    for (i, selector) in list.iter().flatten().enumerate() {
        selector_of(selector, &format!("{path}[{i}]"), out);
    }
}

/// Cilium refuses rules that name two kinds of peers (`fromEndpoints` and
/// `fromCIDR`, ...): each kind goes in its own rule.
fn one_kind_of_peer(members: &[(&str, bool)], path: &str, out: &mut Problems) {
    let present: Vec<&str> = members
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if present.len() > 1 {
        out.add(
            path,
            format!(
                "{} cannot be combined in one rule (Cilium refuses this too); write one rule per \
                 kind of peer",
                checks::join_and(&present)
            ),
        );
    }
}

fn ingress(r: &mut IngressRule, deny: bool, path: &str, out: &mut Problems) {
    one_kind_of_peer(
        &[
            ("fromEndpoints", nonempty(&r.from_endpoints)),
            ("fromCIDR", nonempty(&r.from_cidr)),
            ("fromCIDRSet", nonempty(&r.from_cidr_set)),
            ("fromEntities", nonempty(&r.from_entities)),
        ],
        path,
        out,
    );
    selectors(&r.from_endpoints, &format!("{path}.fromEndpoints"), out);
    selectors(&r.from_requires, &format!("{path}.fromRequires"), out);
    cidrs(&r.from_cidr, &format!("{path}.fromCIDR"), out);
    cidr_sets(&r.from_cidr_set, &format!("{path}.fromCIDRSet"), out);
    entities(&r.from_entities, &format!("{path}.fromEntities"), out);
    if r.from_groups.is_some() {
        out.add(
            format!("{path}.fromGroups"),
            "fromGroups is not supported (no cloud provider integration)",
        );
    }
    if r.from_nodes.is_some() {
        out.add(
            format!("{path}.fromNodes"),
            "fromNodes is not supported (node selector labels are not implemented)",
        );
    }
    ports_and_icmps(&mut r.to_ports, &r.icmps, false, deny, path, out);
    authentication(&r.authentication, deny, path, out);
}

fn egress(r: &mut EgressRule, deny: bool, path: &str, out: &mut Problems) {
    one_kind_of_peer(
        &[
            ("toEndpoints", nonempty(&r.to_endpoints)),
            ("toCIDR", nonempty(&r.to_cidr)),
            ("toCIDRSet", nonempty(&r.to_cidr_set)),
            ("toEntities", nonempty(&r.to_entities)),
            ("toServices", nonempty(&r.to_services)),
            ("toFQDNs", nonempty(&r.to_fqdns)),
        ],
        path,
        out,
    );
    selectors(&r.to_endpoints, &format!("{path}.toEndpoints"), out);
    selectors(&r.to_requires, &format!("{path}.toRequires"), out);
    cidrs(&r.to_cidr, &format!("{path}.toCIDR"), out);
    cidr_sets(&r.to_cidr_set, &format!("{path}.toCIDRSet"), out);
    entities(&r.to_entities, &format!("{path}.toEntities"), out);
    for (i, service) in r.to_services.iter().flatten().enumerate() {
        to_service(service, &format!("{path}.toServices[{i}]"), out);
    }
    if let Some(fqdns) = &mut r.to_fqdns {
        if deny {
            out.add(
                format!("{path}.toFQDNs"),
                "deny rules cannot have toFQDNs (as in Cilium)",
            );
        } else {
            for (i, selector) in fqdns.iter_mut().enumerate() {
                fqdn_selector(selector, &format!("{path}.toFQDNs[{i}]"), out);
            }
        }
    }
    if r.to_groups.is_some() {
        out.add(
            format!("{path}.toGroups"),
            "toGroups is not supported (no cloud provider integration)",
        );
    }
    if r.to_nodes.is_some() {
        out.add(
            format!("{path}.toNodes"),
            "toNodes is not supported (node selector labels are not implemented)",
        );
    }
    ports_and_icmps(&mut r.to_ports, &r.icmps, true, deny, path, out);
    authentication(&r.authentication, deny, path, out);
}

fn cidrs(list: &Option<Vec<String>>, path: &str, out: &mut Problems) {
    for (i, text) in list.iter().flatten().enumerate() {
        if let Err(e) = checks::prefix(text, true) {
            out.add(format!("{path}[{i}]"), e);
        }
    }
}

fn cidr_sets(list: &Option<Vec<CidrRule>>, path: &str, out: &mut Problems) {
    for (i, rule) in list.iter().flatten().enumerate() {
        cidr_set(rule, &format!("{path}[{i}]"), out);
    }
}

fn cidr_set(rule: &CidrRule, path: &str, out: &mut Problems) {
    if rule.cidr_group_ref.is_some() {
        out.add(
            format!("{path}.cidrGroupRef"),
            "cidrGroupRef is not supported (CiliumCIDRGroup is not implemented)",
        );
    }
    if rule.cidr_group_selector.is_some() {
        out.add(
            format!("{path}.cidrGroupSelector"),
            "cidrGroupSelector is not supported (CiliumCIDRGroup is not implemented)",
        );
    }
    let outer = match &rule.cidr {
        None if rule.cidr_group_ref.is_none() && rule.cidr_group_selector.is_none() => {
            out.add(format!("{path}.cidr"), "missing");
            None
        }
        None => None,
        Some(text) => match checks::prefix(text, false) {
            Ok(cidr) => Some((text, cidr)),
            Err(e) => {
                out.add(format!("{path}.cidr"), e);
                None
            }
        },
    };
    for (i, except) in rule.except.iter().enumerate() {
        let at = format!("{path}.except[{i}]");
        match (checks::prefix(except, false), outer) {
            (Err(e), _) => out.add(at, e),
            (Ok(inner), Some((text, outer))) if !checks::covers(outer, inner, false) => {
                out.add(at, format!("{except:?} is not inside the cidr {text:?}"));
            }
            _ => {}
        }
    }
}

fn entities(list: &Option<Vec<String>>, path: &str, out: &mut Problems) {
    for (i, name) in list.iter().flatten().enumerate() {
        if let Err(e) = checks::entity(name) {
            out.add(format!("{path}[{i}]"), e);
        }
    }
}

fn to_service(service: &ServiceRule, path: &str, out: &mut Problems) {
    match (&service.k8s_service, &service.k8s_service_selector) {
        (None, None) => out.add(path, "one of k8sService or k8sServiceSelector is required"),
        (Some(_), Some(_)) => out.add(path, "k8sService and k8sServiceSelector cannot both be set"),
        _ => {}
    }
    if let Some(named) = &service.k8s_service {
        let at = format!("{path}.k8sService");
        if named.service_name.is_empty() {
            out.add(format!("{at}.serviceName"), "missing");
        } else if let Err(e) = checks::dns_label(&named.service_name) {
            out.add(format!("{at}.serviceName"), e);
        }
        if let Some(Err(e)) = named.namespace.as_deref().map(checks::dns_label) {
            out.add(format!("{at}.namespace"), e);
        }
    }
    if let Some(selected) = &service.k8s_service_selector {
        let at = format!("{path}.k8sServiceSelector");
        selector_of(&selected.selector, &format!("{at}.selector"), out);
        if let Some(Err(e)) = selected.namespace.as_deref().map(checks::dns_label) {
            out.add(format!("{at}.namespace"), e);
        }
    }
}

fn ports_and_icmps(
    to_ports: &mut Option<Vec<PortRule>>,
    icmps: &Option<Vec<IcmpRule>>,
    egress: bool,
    deny: bool,
    path: &str,
    out: &mut Problems,
) {
    if nonempty(to_ports) && nonempty(icmps) {
        out.add(
            path,
            "icmps and toPorts cannot be in the same rule (as in Cilium); write separate rules",
        );
    }
    for (i, rule) in to_ports.iter_mut().flatten().enumerate() {
        port_rule(rule, egress, deny, &format!("{path}.toPorts[{i}]"), out);
    }
    for (i, rule) in icmps.iter().flatten().enumerate() {
        icmp_rule(rule, &format!("{path}.icmps[{i}]"), out);
    }
}

fn port_rule(rule: &mut PortRule, egress: bool, deny: bool, path: &str, out: &mut Problems) {
    let proxied = [
        ("terminatingTLS", rule.terminating_tls.is_some()),
        ("originatingTLS", rule.originating_tls.is_some()),
        ("serverNames", rule.server_names.is_some()),
        ("listener", rule.listener.is_some()),
    ];
    for (field, set) in proxied {
        if set {
            let problem = if deny {
                format!("deny rules cannot have {field}")
            } else {
                format!("{field} is not supported yet (it needs an L7 proxy)")
            };
            out.add(format!("{path}.{field}"), problem);
        }
    }
    if rule.ports.len() > MAX_PORTS {
        out.add(
            format!("{path}.ports"),
            format!(
                "has {} ports; at most {MAX_PORTS} are allowed in one toPorts entry",
                rule.ports.len()
            ),
        );
    }
    for (i, port) in rule.ports.iter_mut().enumerate() {
        port_protocol(port, &format!("{path}.ports[{i}]"), out);
    }
    if let Some(l7) = &mut rule.rules {
        let at = format!("{path}.rules");
        if deny {
            out.add(at, "deny rules cannot have L7 rules (as in Cilium)");
        } else {
            l7_rules(l7, &rule.ports, egress, &at, out);
        }
    }
}

/// What a port turned out to be, for the `endPort` checks.
enum CheckedPort {
    /// Missing or invalid (already reported).
    Invalid,
    Number(u16),
    Name,
}

fn port_protocol(port: &mut PortProtocol, path: &str, out: &mut Problems) {
    let checked = match &port.port {
        None => {
            out.add(format!("{path}.port"), "missing (\"0\" means every port)");
            CheckedPort::Invalid
        }
        Some(value) => match checks::cilium_port(value) {
            Ok(canonical) => {
                let checked = canonical
                    .number()
                    .map_or(CheckedPort::Name, CheckedPort::Number);
                port.port = Some(canonical);
                checked
            }
            Err(e) => {
                out.add(format!("{path}.port"), e);
                CheckedPort::Invalid
            }
        },
    };
    if let Some(Err(e)) = port
        .protocol
        .as_deref()
        .map(|p| checks::protocol(p, &CILIUM_PROTOCOLS))
    {
        out.add(format!("{path}.protocol"), e);
    }
    if port.end_port == Some(0) {
        port.end_port = None;
    }
    let Some(end) = port.end_port else { return };
    let at = format!("{path}.endPort");
    if !(1..=65535).contains(&end) {
        out.add(at, format!("{end} is not a port (1-65535)"));
        return;
    }
    match checked {
        CheckedPort::Invalid => {}
        CheckedPort::Name => out.add(at, "endPort needs a numeric port, not a port name"),
        CheckedPort::Number(0) => {
            out.add(at, "endPort needs a port other than 0 (0 is every port)");
        }
        CheckedPort::Number(start) if end < i32::from(start) => {
            out.add(at, format!("endPort {end} is below port {start}"));
        }
        CheckedPort::Number(_) => {}
    }
}

fn l7_rules(
    rules: &mut L7Rules,
    ports: &[PortProtocol],
    egress: bool,
    path: &str,
    out: &mut Problems,
) {
    let unsupported = [
        ("http", rules.http.is_some()),
        ("kafka", rules.kafka.is_some()),
        ("l7proto", rules.l7proto.is_some()),
        ("l7", rules.l7.is_some()),
    ];
    for (field, set) in unsupported {
        if set {
            out.add(
                format!("{path}.{field}"),
                format!("L7 {field} rules are not supported yet (only dns)"),
            );
        }
    }
    let Some(dns) = &mut rules.dns else { return };
    let at = format!("{path}.dns");
    if !egress {
        out.add(&at, "DNS rules are only allowed on egress (as in Cilium)");
    }
    if ports.is_empty() {
        out.add(
            &at,
            "DNS rules need ports in the same toPorts entry (usually port \"53\"), as in Cilium",
        );
    }
    let numbers = ports.iter().filter_map(|p| p.port.as_ref()?.number());
    if numbers.clone().any(|n| n == 0) {
        out.add(
            &at,
            "DNS rules need specific ports, not port 0 (every port)",
        );
    }
    let ranged = ports.iter().any(|p| {
        let start = p.port.as_ref().and_then(|v| v.number()).map(i32::from);
        matches!((start, p.end_port), (Some(start), Some(end)) if end > start)
    });
    if ranged {
        out.add(
            &at,
            "DNS rules do not support port ranges (endPort), as in Cilium",
        );
    }
    for (i, selector) in dns.iter_mut().enumerate() {
        fqdn_selector(selector, &format!("{at}[{i}]"), out);
    }
}

fn fqdn_selector(selector: &mut FqdnSelector, path: &str, out: &mut Problems) {
    match (&selector.match_name, &selector.match_pattern) {
        (Some(_), Some(_)) => out.add(
            path,
            "matchName and matchPattern cannot both be set; write two selectors",
        ),
        (None, None) => out.add(path, "one of matchName or matchPattern is required"),
        _ => {}
    }
    if let Some(name) = &mut selector.match_name {
        match fqdn::normalize_name(name) {
            Ok(canonical) => *name = canonical,
            Err(e) => out.add(format!("{path}.matchName"), e),
        }
    }
    if let Some(pattern) = &mut selector.match_pattern {
        match fqdn::normalize_pattern(pattern) {
            Ok(canonical) => *pattern = canonical,
            Err(e) => out.add(format!("{path}.matchPattern"), e),
        }
    }
}

fn icmp_rule(rule: &IcmpRule, path: &str, out: &mut Problems) {
    if rule.fields.len() > MAX_ICMP_FIELDS {
        out.add(
            format!("{path}.fields"),
            format!(
                "has {} fields; at most {MAX_ICMP_FIELDS} are allowed in one icmps entry",
                rule.fields.len()
            ),
        );
    }
    for (i, field) in rule.fields.iter().enumerate() {
        let at = format!("{path}.fields[{i}]");
        match icmp_family(field.family.as_deref()) {
            Ok(v6) => {
                if let Err(e) = icmp_type(v6, &field.icmp_type) {
                    out.add(format!("{at}.type"), e);
                }
            }
            Err(e) => out.add(format!("{at}.family"), e),
        }
    }
}

/// Modes Cilium knows; only `disabled` is implemented (mutual
/// authentication needs SPIRE).
const AUTHENTICATION_MODES: [&str; 3] = ["disabled", "required", "test-always-fail"];

fn authentication(value: &Option<Value>, deny: bool, path: &str, out: &mut Problems) {
    let Some(value) = value else { return };
    let at = format!("{path}.authentication");
    if deny {
        out.add(at, "deny rules cannot have authentication (as in Cilium)");
        return;
    }
    let Some(fields) = value.as_object() else {
        out.add(at, "expected {mode: disabled}");
        return;
    };
    for key in fields.keys().filter(|k| *k != "mode") {
        out.add(&at, format!("unknown field `{key}`, expected `mode`"));
    }
    match fields.get("mode").map(|m| m.as_str()) {
        None => out.add(format!("{at}.mode"), "missing"),
        Some(Some("disabled")) => {}
        Some(Some(mode)) if AUTHENTICATION_MODES.contains(&mode) => out.add(
            format!("{at}.mode"),
            format!("authentication mode {mode:?} is not supported (mutual authentication is not implemented)"),
        ),
        Some(Some(mode)) => out.add(
            format!("{at}.mode"),
            format!("{mode:?} is not one of {}", AUTHENTICATION_MODES.join(", ")),
        ),
        Some(None) => out.add(format!("{at}.mode"), "expected a string"),
    }
}

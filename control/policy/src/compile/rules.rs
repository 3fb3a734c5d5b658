//! Policies -> rule units: every rule of every policy with its selectors
//! scoped and validated, its sections split into elements (one per
//! `ingress[i]`, `egressDeny[j]`, ...) with peers and ports in the
//! compiler's terms, and `toServices` resolved against the cluster's
//! Services. Anything wrong leaves out the smallest part it can (an
//! element, or a rule whose endpointSelector is bad) and is reported naming
//! the policy and the field.

use std::net::IpAddr;

use sluice_tables::{Action, Cidr, DnsSelector, PolicyDirection, RuleOrigin};

use super::ports::{port_specs, PortSpec};
use super::{ClusterService, CompileInput, LabelSet};
use crate::model::{
    CidrRule, EgressRule, EndpointSelector, FqdnSelector, IngressRule, Policy, PolicyKind,
    PortRule, Rule, ServiceRule,
};
use crate::selector::{
    peer_selector, subject_selector, Entity, Operator, Requirement, Scope, Selector,
    POD_NAMESPACE_KEY,
};

/// A CIDR peer: the addresses in `cidr` but in none of `except`. Prefixes
/// are canonical (host bits zero).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct CidrPeer {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
}

/// Who one element applies to, before identities are known.
#[derive(Clone, Debug, Default)]
pub(super) struct PeerSpec {
    /// No L3 field at all (only ports or ICMP types): every peer.
    pub any: bool,
    /// `fromEndpoints`/`toEndpoints` (scoped) and the selectors of the
    /// Services `toServices` names: the requirements of `fromRequires` /
    /// `toRequires` apply to these.
    pub endpoints: Vec<Selector>,
    pub cidrs: Vec<CidrPeer>,
    pub entities: Vec<Entity>,
    pub fqdns: Vec<DnsSelector>,
}

/// One `ingress[i]` / `ingressDeny[i]` / `egress[i]` / `egressDeny[i]`.
#[derive(Clone, Debug)]
pub(super) struct Element {
    /// Index into [`Normalized::origins`].
    pub origin: u32,
    pub action: Action,
    pub peers: PeerSpec,
    pub ports: Vec<PortSpec>,
}

impl Element {
    pub fn uses_named_ports(&self) -> bool {
        self.ports
            .iter()
            .any(|p| matches!(p, PortSpec::Named { .. }))
    }
}

/// A rule's side for one direction.
#[derive(Clone, Debug, Default)]
pub(super) struct DirectionRules {
    /// The rule has the section (`ingress` or `ingressDeny`, even empty):
    /// it selects the endpoint for this direction.
    pub present: bool,
    /// Present, and `enableDefaultDeny` for the direction is not false: the
    /// rule makes the endpoint default-deny.
    pub default_deny: bool,
    /// `fromRequires` / `toRequires` of every element, scoped.
    pub requires: Vec<Selector>,
    pub elements: Vec<Element>,
}

/// One rule of one policy.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    /// Index into [`Normalized::origins`]: the rule itself (`spec`,
    /// `specs[1]`), reported as the table's `default_rule`.
    pub origin: u32,
    pub subject: Selector,
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl Unit {
    pub fn direction(&self, direction: PolicyDirection) -> &DirectionRules {
        match direction {
            PolicyDirection::Ingress => &self.ingress,
            PolicyDirection::Egress => &self.egress,
        }
    }
}

/// Every policy's rules, in a stable order (policies by kind, namespace and
/// name; rules and elements as written).
#[derive(Clone, Debug, Default)]
pub(super) struct Normalized {
    pub units: Vec<Unit>,
    /// Every rule and element that may end up in the tables, in the same
    /// order, as (policy, path); the compiler keeps those it references
    /// ([`Normalized::origin`]).
    pub origins: Vec<(u32, String)>,
    /// The policies, in the order units name them.
    pub policies: Vec<(PolicyKind, String, String)>,
    pub errors: Vec<String>,
}

impl Normalized {
    /// The rule origin of `origins[id]`.
    pub fn origin(&self, id: u32) -> RuleOrigin {
        let (policy, path) = &self.origins[id as usize];
        let (kind, namespace, name) = &self.policies[*policy as usize];
        RuleOrigin {
            kind: kind.name().to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            path: path.clone(),
        }
    }
}

/// Normalizes every policy of `input`.
pub(super) fn normalize(input: &CompileInput<'_>) -> Normalized {
    let mut policies: Vec<&Policy> = input.policies.iter().collect();
    policies.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    let mut out = Normalized::default();
    for policy in policies {
        out.policies
            .push((policy.kind, policy.namespace.clone(), policy.name.clone()));
        let mut ctx = PolicyContext {
            index: (out.policies.len() - 1) as u32,
            policy,
            scope: Scope::of(policy),
            services: input.services,
            out: &mut out,
        };
        for (path, rule) in &policy.rules {
            ctx.rule(path, rule);
        }
    }
    out
}

struct PolicyContext<'a, 'o> {
    /// The policy's index in [`Normalized::policies`].
    index: u32,
    policy: &'a Policy,
    scope: Scope<'a>,
    services: &'a [ClusterService],
    out: &'o mut Normalized,
}

/// The fields of an ingress or egress element, seen the same way.
struct ElementFields<'a> {
    /// `from` or `to`.
    side: &'static str,
    endpoints: &'a [EndpointSelector],
    requires: &'a [EndpointSelector],
    cidr: &'a [String],
    cidr_set: &'a [CidrRule],
    entities: &'a [String],
    services: &'a [ServiceRule],
    fqdns: &'a [FqdnSelector],
    has_groups: bool,
    has_nodes: bool,
    to_ports: &'a [PortRule],
    icmps: &'a [crate::model::IcmpRule],
    authentication: Option<&'a serde_json::Value>,
}

impl<'a> ElementFields<'a> {
    fn ingress(rule: &'a IngressRule) -> Self {
        ElementFields {
            side: "from",
            endpoints: rule.from_endpoints.as_deref().unwrap_or_default(),
            requires: rule.from_requires.as_deref().unwrap_or_default(),
            cidr: rule.from_cidr.as_deref().unwrap_or_default(),
            cidr_set: rule.from_cidr_set.as_deref().unwrap_or_default(),
            entities: rule.from_entities.as_deref().unwrap_or_default(),
            services: &[],
            fqdns: &[],
            has_groups: rule.from_groups.is_some(),
            has_nodes: rule.from_nodes.as_ref().is_some_and(|n| !n.is_empty()),
            to_ports: rule.to_ports.as_deref().unwrap_or_default(),
            icmps: rule.icmps.as_deref().unwrap_or_default(),
            authentication: rule.authentication.as_ref(),
        }
    }

    fn egress(rule: &'a EgressRule) -> Self {
        ElementFields {
            side: "to",
            endpoints: rule.to_endpoints.as_deref().unwrap_or_default(),
            requires: rule.to_requires.as_deref().unwrap_or_default(),
            cidr: rule.to_cidr.as_deref().unwrap_or_default(),
            cidr_set: rule.to_cidr_set.as_deref().unwrap_or_default(),
            entities: rule.to_entities.as_deref().unwrap_or_default(),
            services: rule.to_services.as_deref().unwrap_or_default(),
            fqdns: rule.to_fqdns.as_deref().unwrap_or_default(),
            has_groups: rule.to_groups.is_some(),
            has_nodes: rule.to_nodes.as_ref().is_some_and(|n| !n.is_empty()),
            to_ports: rule.to_ports.as_deref().unwrap_or_default(),
            icmps: rule.icmps.as_deref().unwrap_or_default(),
            authentication: rule.authentication.as_ref(),
        }
    }

    /// Whether any L3 (peer) field is set; `*Requires` alone grants nothing.
    fn has_peers(&self) -> bool {
        !(self.endpoints.is_empty()
            && self.cidr.is_empty()
            && self.cidr_set.is_empty()
            && self.entities.is_empty()
            && self.services.is_empty()
            && self.fqdns.is_empty())
    }
}

/// The errors of one element; it is left out when there is any.
struct ElementErrors<'p> {
    path: &'p str,
    messages: Vec<String>,
}

impl ElementErrors<'_> {
    fn push(&mut self, field: &str, message: impl std::fmt::Display) {
        self.messages
            .push(format!("{}.{field}: {message}", self.path));
    }
}

impl PolicyContext<'_, '_> {
    fn error(&mut self, message: String) {
        let label = self.policy.label();
        self.out.errors.push(format!("{label}: {message}"));
    }

    fn origin(&mut self, path: String) -> u32 {
        self.out.origins.push((self.index, path));
        (self.out.origins.len() - 1) as u32
    }

    fn rule(&mut self, path: &str, rule: &Rule) {
        let Some(model) = rule.endpoint_selector.as_ref() else {
            if rule.node_selector.is_some() {
                self.error(format!(
                    "{path}.nodeSelector: host policies are not supported (no host firewall)"
                ));
            } else {
                self.error(format!("{path}.endpointSelector: missing"));
            }
            return;
        };
        let selector = match Selector::from_model(model) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("{path}.endpointSelector.{e}"));
                return;
            }
        };
        let selects_init = selector.has_reserved_key("init");
        let origin = self.origin(path.to_string());
        let default_deny = rule.enable_default_deny.as_ref();
        let mut ingress = DirectionRules {
            present: rule.ingress.is_some() || rule.ingress_deny.is_some(),
            ..DirectionRules::default()
        };
        ingress.default_deny =
            ingress.present && default_deny.and_then(|d| d.ingress) != Some(false);
        let mut egress = DirectionRules {
            present: rule.egress.is_some() || rule.egress_deny.is_some(),
            ..DirectionRules::default()
        };
        egress.default_deny = egress.present && default_deny.and_then(|d| d.egress) != Some(false);

        let sections_in = [
            ("ingress", Action::Allow, &rule.ingress),
            ("ingressDeny", Action::Deny, &rule.ingress_deny),
        ];
        for (section, action, elements) in sections_in {
            for (i, element) in elements.iter().flatten().enumerate() {
                let path = format!("{path}.{section}[{i}]");
                let fields = ElementFields::ingress(element);
                self.element(
                    path,
                    action,
                    PolicyDirection::Ingress,
                    &fields,
                    selects_init,
                    &mut ingress,
                );
            }
        }
        let sections_out = [
            ("egress", Action::Allow, &rule.egress),
            ("egressDeny", Action::Deny, &rule.egress_deny),
        ];
        for (section, action, elements) in sections_out {
            for (i, element) in elements.iter().flatten().enumerate() {
                let path = format!("{path}.{section}[{i}]");
                let fields = ElementFields::egress(element);
                self.element(
                    path,
                    action,
                    PolicyDirection::Egress,
                    &fields,
                    selects_init,
                    &mut egress,
                );
            }
        }
        self.out.units.push(Unit {
            origin,
            subject: subject_selector(&selector, self.scope),
            ingress,
            egress,
        });
    }

    fn element(
        &mut self,
        path: String,
        action: Action,
        direction: PolicyDirection,
        fields: &ElementFields<'_>,
        selects_init: bool,
        into: &mut DirectionRules,
    ) {
        let side = fields.side;
        let mut errors = ElementErrors {
            path: &path,
            messages: Vec::new(),
        };
        if fields.has_groups {
            errors.push(
                &format!("{side}Groups"),
                "not supported (cloud provider groups)",
            );
        }
        if fields.has_nodes {
            errors.push(&format!("{side}Nodes"), "not supported (node selectors)");
        }
        if let Some(mode) = fields.authentication.and_then(|a| a.get("mode")) {
            if mode.as_str() != Some("disabled") {
                errors.push(
                    "authentication.mode",
                    format!("{mode} is not supported (no mutual authentication)"),
                );
            }
        }
        if action == Action::Deny && !fields.fqdns.is_empty() {
            errors.push("toFQDNs", "deny rules cannot select DNS names");
        }

        let mut requires = Vec::new();
        for (j, model) in fields.requires.iter().enumerate() {
            match Selector::from_model(model) {
                Ok(s) => requires.push(peer_selector(&s, self.scope, selects_init)),
                Err(e) => errors
                    .messages
                    .push(format!("{path}.{side}Requires[{j}].{e}")),
            }
        }
        let mut peers = PeerSpec {
            any: !fields.has_peers(),
            ..PeerSpec::default()
        };
        let endpoints_field = if side == "from" {
            "fromEndpoints"
        } else {
            "toEndpoints"
        };
        for (j, model) in fields.endpoints.iter().enumerate() {
            match Selector::from_model(model) {
                Ok(s) => peers
                    .endpoints
                    .push(peer_selector(&s, self.scope, selects_init)),
                Err(e) => errors
                    .messages
                    .push(format!("{path}.{endpoints_field}[{j}].{e}")),
            }
        }
        let cidr_field = if side == "from" { "fromCIDR" } else { "toCIDR" };
        for (j, text) in fields.cidr.iter().enumerate() {
            match parse_prefix(text) {
                Some(cidr) => peers.cidrs.push(CidrPeer {
                    cidr,
                    except: Vec::new(),
                }),
                None => errors.push(
                    &format!("{cidr_field}[{j}]"),
                    format!("{text:?} is not an address or prefix"),
                ),
            }
        }
        let set_field = if side == "from" {
            "fromCIDRSet"
        } else {
            "toCIDRSet"
        };
        for (j, rule) in fields.cidr_set.iter().enumerate() {
            if let Some(peer) = cidr_rule(rule, &format!("{set_field}[{j}]"), &mut errors) {
                peers.cidrs.push(peer);
            }
        }
        let entities_field = if side == "from" {
            "fromEntities"
        } else {
            "toEntities"
        };
        for (j, name) in fields.entities.iter().enumerate() {
            match Entity::parse(name) {
                Some(entity) => peers.entities.push(entity),
                None => errors.push(
                    &format!("{entities_field}[{j}]"),
                    format!("unknown entity {name:?}"),
                ),
            }
        }
        for (j, service) in fields.services.iter().enumerate() {
            self.service(
                service,
                &format!("toServices[{j}]"),
                &mut peers,
                &mut errors,
            );
        }
        for (j, fqdn) in fields.fqdns.iter().enumerate() {
            if let Some(selector) = dns_selector(fqdn, &format!("toFQDNs[{j}]"), &mut errors) {
                peers.fqdns.push(selector);
            }
        }
        let ports = port_specs(
            fields.to_ports,
            fields.icmps,
            direction,
            action,
            &mut |field, message| errors.push(field, message),
        );

        if !errors.messages.is_empty() {
            for message in errors.messages {
                self.error(message);
            }
            return;
        }
        into.requires.extend(requires);
        // A completely empty element (`{}`) grants nothing; only what it
        // requires counts.
        if peers.any && fields.to_ports.is_empty() && fields.icmps.is_empty() {
            return;
        }
        let origin = self.origin(path);
        into.elements.push(Element {
            origin,
            action,
            peers,
            ports,
        });
    }

    /// `toServices[j]`: each matching Service with a selector adds that
    /// selector (in the Service's namespace) as an endpoint selector; one
    /// without a selector adds its backend addresses as /32 (/128) CIDRs.
    /// An absent namespace matches Services of every namespace, as in
    /// Cilium.
    fn service(
        &mut self,
        rule: &ServiceRule,
        field: &str,
        peers: &mut PeerSpec,
        errors: &mut ElementErrors<'_>,
    ) {
        let matching: Vec<&ClusterService> = match (&rule.k8s_service, &rule.k8s_service_selector) {
            (Some(named), None) => {
                if named.service_name.is_empty() {
                    errors.push(&format!("{field}.k8sService.serviceName"), "missing");
                    return;
                }
                self.services
                    .iter()
                    .filter(|s| {
                        s.name == named.service_name
                            && named
                                .namespace
                                .as_deref()
                                .is_none_or(|n| n.is_empty() || n == s.namespace)
                    })
                    .collect()
            }
            (None, Some(by_labels)) => {
                let selector = match Selector::from_model(&by_labels.selector) {
                    Ok(s) => s,
                    Err(e) => {
                        errors.messages.push(format!(
                            "{}.{field}.k8sServiceSelector.selector.{e}",
                            errors.path
                        ));
                        return;
                    }
                };
                self.services
                    .iter()
                    .filter(|s| {
                        by_labels
                            .namespace
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == s.namespace)
                            && selector.matches(&service_labels(s))
                    })
                    .collect()
            }
            _ => {
                errors.push(
                    field,
                    "needs exactly one of k8sService and k8sServiceSelector",
                );
                return;
            }
        };
        for service in matching {
            match service.selector.as_ref().filter(|s| !s.is_empty()) {
                Some(selector) => {
                    let mut requirements: Vec<Requirement> = selector
                        .iter()
                        .map(|(k, v)| Requirement::new(None, k, Operator::In, &[v]))
                        .collect();
                    requirements.push(Requirement::new(
                        Some("k8s"),
                        POD_NAMESPACE_KEY,
                        Operator::In,
                        &[&service.namespace],
                    ));
                    peers
                        .endpoints
                        .push(Selector::from_requirements(requirements));
                }
                None => {
                    let mut ips: Vec<IpAddr> = service.backend_ips.clone();
                    ips.sort();
                    ips.dedup();
                    peers.cidrs.extend(ips.into_iter().map(|ip| CidrPeer {
                        cidr: Cidr {
                            addr: ip,
                            prefix_len: full_length(ip),
                        },
                        except: Vec::new(),
                    }));
                }
            }
        }
    }
}

/// A Service's labels as Cilium labels (`k8s:key=value`), for
/// `k8sServiceSelector`.
fn service_labels(service: &ClusterService) -> LabelSet {
    service
        .labels
        .iter()
        .map(|(k, v)| format!("k8s:{k}={v}"))
        .collect()
}

fn cidr_rule(rule: &CidrRule, field: &str, errors: &mut ElementErrors<'_>) -> Option<CidrPeer> {
    if rule.cidr_group_ref.is_some() || rule.cidr_group_selector.is_some() {
        errors.push(
            field,
            "cidrGroupRef and cidrGroupSelector are not supported (no CiliumCIDRGroup)",
        );
        return None;
    }
    let Some(text) = rule.cidr.as_deref() else {
        errors.push(&format!("{field}.cidr"), "missing");
        return None;
    };
    let Some(cidr) = parse_prefix(text) else {
        errors.push(
            &format!("{field}.cidr"),
            format!("{text:?} is not a prefix"),
        );
        return None;
    };
    let mut except = Vec::new();
    for (k, text) in rule.except.iter().enumerate() {
        match parse_prefix(text) {
            Some(e) => except.push(e),
            None => {
                errors.push(
                    &format!("{field}.except[{k}]"),
                    format!("{text:?} is not a prefix"),
                );
                return None;
            }
        }
    }
    except.sort_by_key(|c| (c.addr, c.prefix_len));
    except.dedup();
    Some(CidrPeer { cidr, except })
}

fn dns_selector(
    selector: &FqdnSelector,
    field: &str,
    errors: &mut ElementErrors<'_>,
) -> Option<DnsSelector> {
    match (&selector.match_name, &selector.match_pattern) {
        (Some(name), None) => Some(DnsSelector::MatchName(canonical_dns(name))),
        (None, Some(pattern)) => Some(DnsSelector::MatchPattern(canonical_dns(pattern))),
        _ => {
            errors.push(field, "needs exactly one of matchName and matchPattern");
            None
        }
    }
}

/// A DNS name or pattern as the engine compares it: lowercase, without the
/// trailing dot.
pub(super) fn canonical_dns(text: &str) -> String {
    let lower = text.trim().to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        _ => lower,
    }
}

/// Reads `10.0.0.0/8`, `fd00::/64`, or a bare address (a full-length
/// prefix, as Cilium accepts in `fromCIDR`); host bits are cleared.
pub(super) fn parse_prefix(text: &str) -> Option<Cidr> {
    let cidr = match text.parse::<IpAddr>() {
        Ok(addr) => Cidr {
            addr,
            prefix_len: full_length(addr),
        },
        Err(_) => Cidr::parse(text)?,
    };
    Some(network(cidr))
}

pub(super) fn full_length(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `addr` with the bits past `prefix_len` cleared.
pub(super) fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

/// The prefix with its host bits cleared (`10.1.2.3/8` -> `10.0.0.0/8`).
pub(super) fn network(cidr: Cidr) -> Cidr {
    Cidr {
        addr: mask(cidr.addr, cidr.prefix_len),
        prefix_len: cidr.prefix_len,
    }
}

//! Rule units + identities -> direction tables.
//!
//! An endpoint's table for a direction depends only on which rules select
//! it (in order), whether it is enforced regardless of rules (mode
//! `always`, or an initializing endpoint), and, for ingress rules with named
//! ports, its own named ports. [`TableKey`] is exactly that, and each
//! distinct key is built once. Peer sets are computed once per element and
//! selector ([`TableBuilder`] caches them), so the cost is the size of the
//! output, not rules x identities x endpoints.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;

use sluice_tables::{
    Action, DirectionTable, DnsRules, DnsSelector, Peer, PolicyDirection, PolicyEntry,
};

use super::cidr::cidr_label;
use super::ports::{canonical_dns_rules, PortSpec};
use super::rules::{CidrPeer, Element, Unit};
use super::NamedPort;
use crate::selector::{Bitset, Entity, LabelIndex, Selector};

/// Every identity the tables may name: the cluster's, the reserved ones and
/// this compilation's local ones, by number.
pub(super) struct Universe {
    pub numbers: Vec<u32>,
    pub index: LabelIndex,
    /// The named ports of the pods behind each identity.
    pub named_ports: Vec<Vec<NamedPort>>,
    /// Identities some pod has (egress named ports resolve on those pods).
    pub has_pods: Bitset,
    /// Every pod's named ports (for peers that are not pods).
    pub all_named_ports: Vec<NamedPort>,
}

impl Universe {
    pub fn position(&self, number: u32) -> Option<usize> {
        self.numbers.binary_search(&number).ok()
    }
}

/// What selects one direction table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TableKey {
    pub direction: PolicyDirection,
    /// The units selecting the endpoint with a section for the direction,
    /// in order.
    pub units: Vec<u32>,
    /// Enforced even if no rule makes it so.
    pub forced: bool,
    /// The endpoint's own named ports, when an ingress rule uses a name.
    pub own_ports: Vec<NamedPort>,
}

/// Values numbered in first-seen order.
#[derive(Debug)]
pub(super) struct Interner<T> {
    pub values: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn new() -> Self {
        Interner {
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }

    fn id(&mut self, value: &T) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value.clone(), id);
        id
    }
}

/// The peers of one element as identities.
struct ElementPeers {
    any: bool,
    /// From endpoint selectors: narrowed by the requirements.
    endpoints: Bitset,
    /// From CIDRs and entities.
    others: Bitset,
    fqdns: Vec<u32>,
}

/// Builds tables; entries name rules by origin id and DNS rules and FQDN
/// selectors by their ids in [`TableBuilder::dns`] and
/// [`TableBuilder::fqdns`] until the compiler renumbers them.
pub(super) struct TableBuilder<'a> {
    units: &'a [Unit],
    universe: &'a Universe,
    selections: HashMap<Selector, Rc<Bitset>>,
    entities: HashMap<Entity, Option<Rc<Bitset>>>,
    cidrs: HashMap<CidrPeer, Rc<Bitset>>,
    elements: HashMap<(u32, bool, u32), Rc<ElementPeers>>,
    pub fqdns: Interner<DnsSelector>,
    pub dns: Interner<DnsRules>,
}

fn peer_key(peer: &Peer) -> (u8, u32) {
    match peer {
        Peer::Any => (0, 0),
        Peer::Identity(n) => (1, *n),
        Peer::Fqdn(n) => (2, *n),
    }
}

/// The order entries keep: deny before allow, then entries without DNS
/// rules before those with (an L4-only allow on the same port shadows DNS
/// rules, as in Cilium, and lookups take the first allow that matches),
/// then by peer, protocol, ports and rule.
fn entry_order(e: &PolicyEntry) -> (u8, bool, (u8, u32), u8, u16, u16, u32) {
    let action = match e.action {
        Action::Deny => 0,
        Action::Allow => 1,
    };
    (
        action,
        e.dns.is_some(),
        peer_key(&e.peer),
        e.protocol,
        e.port_min,
        e.port_max,
        e.rule,
    )
}

impl<'a> TableBuilder<'a> {
    pub fn new(units: &'a [Unit], universe: &'a Universe) -> Self {
        TableBuilder {
            units,
            universe,
            selections: HashMap::new(),
            entities: HashMap::new(),
            cidrs: HashMap::new(),
            elements: HashMap::new(),
            fqdns: Interner::new(),
            dns: Interner::new(),
        }
    }

    fn select(&mut self, selector: &Selector) -> Rc<Bitset> {
        if let Some(set) = self.selections.get(selector) {
            return set.clone();
        }
        let set = Rc::new(self.universe.index.select(selector));
        self.selections.insert(selector.clone(), set.clone());
        set
    }

    fn entity(&mut self, entity: Entity) -> Option<Rc<Bitset>> {
        let index = &self.universe.index;
        self.entities
            .entry(entity)
            .or_insert_with(|| entity.members(index).map(Rc::new))
            .clone()
    }

    /// The identities with `cidr:X` and none of `cidr:e`.
    fn cidr(&mut self, peer: &CidrPeer) -> Rc<Bitset> {
        if let Some(set) = self.cidrs.get(peer) {
            return set.clone();
        }
        let index = &self.universe.index;
        let mut set = index.with_label(&cidr_label((peer.cidr.addr, peer.cidr.prefix_len)));
        for e in &peer.except {
            set.subtract(&index.with_label(&cidr_label((e.addr, e.prefix_len))));
        }
        let set = Rc::new(set);
        self.cidrs.insert(peer.clone(), set.clone());
        set
    }

    fn element_peers(
        &mut self,
        unit: u32,
        direction: PolicyDirection,
        at: u32,
    ) -> Rc<ElementPeers> {
        let key = (unit, direction == PolicyDirection::Ingress, at);
        if let Some(peers) = self.elements.get(&key) {
            return peers.clone();
        }
        let units = self.units;
        let spec = &units[unit as usize].direction(direction).elements[at as usize].peers;
        let len = self.universe.numbers.len();
        let mut peers = ElementPeers {
            any: spec.any,
            endpoints: Bitset::empty(len),
            others: Bitset::empty(len),
            fqdns: Vec::new(),
        };
        for selector in &spec.endpoints {
            let set = self.select(selector);
            peers.endpoints.union_with(&set);
        }
        for cidr in &spec.cidrs {
            let set = self.cidr(cidr);
            peers.others.union_with(&set);
        }
        for &entity in &spec.entities {
            match self.entity(entity) {
                Some(set) => peers.others.union_with(&set),
                None => peers.any = true,
            }
        }
        for fqdn in &spec.fqdns {
            peers.fqdns.push(self.fqdns.id(fqdn));
        }
        let peers = Rc::new(peers);
        self.elements.insert(key, peers.clone());
        peers
    }

    /// The intersection of every requirement of `key`'s units, `None` when
    /// there is none.
    fn requirements(&mut self, key: &TableKey) -> Option<Bitset> {
        let units = self.units;
        let mut out: Option<Bitset> = None;
        for &u in &key.units {
            for selector in &units[u as usize].direction(key.direction).requires {
                let set = self.select(selector);
                match out.as_mut() {
                    Some(acc) => acc.intersect_with(&set),
                    None => out = Some((*set).clone()),
                }
            }
        }
        out
    }

    /// Builds the table for `key`.
    pub fn build(&mut self, key: &TableKey) -> DirectionTable {
        let units = self.units;
        let requires = self.requirements(key);
        let mut entries = Vec::new();
        for &u in &key.units {
            let rules = units[u as usize].direction(key.direction);
            for (at, element) in rules.elements.iter().enumerate() {
                let peers = self.element_peers(u, key.direction, at as u32);
                let list = self.peer_list(&peers, requires.as_ref());
                self.add_entries(key, element, &list, &mut entries);
            }
        }
        let enforcing = key
            .units
            .iter()
            .map(|&u| &units[u as usize])
            .find(|unit| unit.direction(key.direction).default_deny);
        DirectionTable {
            enforced: key.forced || enforcing.is_some(),
            default_rule: enforcing.map(|unit| unit.origin),
            entries: self.finish(entries),
        }
    }

    fn peer_list(&self, peers: &ElementPeers, requires: Option<&Bitset>) -> Vec<Peer> {
        if peers.any {
            return vec![Peer::Any];
        }
        let mut ids = peers.endpoints.clone();
        if let Some(requires) = requires {
            ids.intersect_with(requires);
        }
        ids.union_with(&peers.others);
        let mut out: Vec<Peer> = ids
            .iter()
            .map(|i| Peer::Identity(self.universe.numbers[i]))
            .collect();
        out.extend(peers.fqdns.iter().map(|&f| Peer::Fqdn(f)));
        out
    }

    /// The named ports a peer offers: on ingress the endpoint's own; on
    /// egress those of the pods behind the peer identity, or of every pod
    /// when the peer is not a pod.
    fn named_ports<'k>(&'k self, key: &'k TableKey, peer: &Peer) -> &'k [NamedPort] {
        if key.direction == PolicyDirection::Ingress {
            return &key.own_ports;
        }
        if let Peer::Identity(n) = peer {
            if let Some(at) = self.universe.position(*n) {
                if self.universe.has_pods.contains(at) {
                    return &self.universe.named_ports[at];
                }
            }
        }
        &self.universe.all_named_ports
    }

    fn add_entries(
        &mut self,
        key: &TableKey,
        element: &Element,
        peers: &[Peer],
        out: &mut Vec<PolicyEntry>,
    ) {
        for spec in &element.ports {
            match spec {
                PortSpec::Range {
                    protocol,
                    min,
                    max,
                    dns,
                } => {
                    let dns = dns.as_ref().map(|d| self.dns.id(d));
                    for peer in peers {
                        out.push(PolicyEntry {
                            peer: *peer,
                            protocol: *protocol,
                            port_min: *min,
                            port_max: *max,
                            action: element.action,
                            dns,
                            rule: element.origin,
                        });
                    }
                }
                PortSpec::Named {
                    name,
                    protocol,
                    dns,
                } => {
                    let dns = dns.as_ref().map(|d| self.dns.id(d));
                    for peer in peers {
                        let ports = self.named_ports(key, peer);
                        for port in ports.iter().filter(|p| {
                            p.name == *name && protocol.is_none_or(|want| want == p.protocol)
                        }) {
                            out.push(PolicyEntry {
                                peer: *peer,
                                protocol: port.protocol,
                                port_min: port.port,
                                port_max: port.port,
                                action: element.action,
                                dns,
                                rule: element.origin,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Sorts, drops repeats (keeping the first rule), drops DNS-restricted
    /// allows that an unrestricted allow of the same peer and ports shadows,
    /// and merges the DNS rules of allows with the same peer and ports (the
    /// engine checks one set per connection; Cilium allows a query any of
    /// them allows).
    fn finish(&mut self, mut entries: Vec<PolicyEntry>) -> Vec<PolicyEntry> {
        entries.sort_by_key(entry_order);
        entries.dedup_by(|b, a| {
            a.peer == b.peer
                && a.protocol == b.protocol
                && a.port_min == b.port_min
                && a.port_max == b.port_max
                && a.action == b.action
                && a.dns == b.dns
        });
        type Spot = ((u8, u32), u8, u16, u16);
        let spot =
            |e: &PolicyEntry| -> Spot { (peer_key(&e.peer), e.protocol, e.port_min, e.port_max) };
        let plain: std::collections::HashSet<Spot> = entries
            .iter()
            .filter(|e| e.action == Action::Allow && e.dns.is_none())
            .map(spot)
            .collect();
        let mut with_dns: BTreeMap<Spot, Vec<usize>> = BTreeMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for (at, e) in entries.iter().enumerate() {
            if e.action == Action::Allow && e.dns.is_some() {
                if !plain.contains(&spot(e)) {
                    with_dns.entry(spot(e)).or_default().push(at);
                }
            } else {
                out.push(e.clone());
            }
        }
        for group in with_dns.into_values() {
            let mut first = entries[group[0]].clone();
            if group.len() > 1 {
                let allow: Vec<DnsSelector> = group
                    .iter()
                    .filter_map(|&at| entries[at].dns)
                    .flat_map(|d| self.dns.values[d as usize].allow.clone())
                    .collect();
                first.dns = Some(self.dns.id(&canonical_dns_rules(allow)));
                first.rule = group
                    .iter()
                    .map(|&at| entries[at].rule)
                    .min()
                    .unwrap_or(first.rule);
            }
            out.push(first);
        }
        out.sort_by_key(entry_order);
        out
    }
}

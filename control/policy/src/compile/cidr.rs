//! CIDR rules -> local identities and ipcache entries.
//!
//! Every prefix a policy names (a `cidr` or an `except`) becomes an ipcache
//! prefix entry whose identity carries `cidr:Q` for each policy prefix Q
//! containing it, plus `reserved:world` (unless it lies inside the cluster's
//! pod CIDRs). A CIDR peer "X except E" then is simply the identities with
//! `cidr:X` and no `cidr:e`, and longest prefix match in the engine does the
//! rest.
//!
//! Pod addresses (with [`CidrMatch::pods`]) and node addresses (with
//! [`CidrMatch::nodes`]) inside a policy prefix get their own full-length
//! entry with an identity that keeps the pod's (node's) labels and adds the
//! `cidr:` labels, so both label selectors and CIDR selectors match them.
//! Without the option such an address keeps its own identity, which has no
//! `cidr:` label: CIDR rules do not match it (Cilium's default).
//!
//! [`CidrMatch::pods`]: super::CidrMatch
//! [`CidrMatch::nodes`]: super::CidrMatch

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use sluice_tables::policy::identity;
use sluice_tables::IpCacheEntry;

use super::rules::{full_length, mask};
use super::{CompileInput, LabelSet};

/// A canonical prefix (host bits clear), ordered.
pub(super) type Prefix = (IpAddr, u8);

/// The local identities of one compilation.
#[derive(Clone, Debug, Default)]
pub(super) struct LocalIdentities {
    /// (number, labels), by number.
    pub identities: Vec<(u32, LabelSet)>,
    /// Labels key -> number (`Compiled::local_identities`).
    pub numbers: BTreeMap<String, u32>,
    pub ipcache: Vec<IpCacheEntry>,
    /// (local identity, index into `CompileInput::pods`) for identities made
    /// from pod addresses: their named ports are those pods' ports.
    pub pods: Vec<(u32, usize)>,
}

/// The key a local identity is remembered by across generations: its
/// labels, sorted, joined with `;`.
pub fn labels_key(labels: &LabelSet) -> String {
    labels
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";")
}

/// The label of a policy prefix.
pub(super) fn cidr_label(prefix: Prefix) -> String {
    format!("cidr:{}/{}", prefix.0, prefix.1)
}

/// Finds the policy prefixes containing an address or prefix.
struct PrefixSet {
    set: HashSet<Prefix>,
    /// The lengths present per family, ascending.
    v4_lengths: Vec<u8>,
    v6_lengths: Vec<u8>,
}

impl PrefixSet {
    fn new(prefixes: &BTreeSet<Prefix>) -> PrefixSet {
        let lengths = |v4: bool| {
            let mut l: Vec<u8> = prefixes
                .iter()
                .filter(|p| p.0.is_ipv4() == v4)
                .map(|p| p.1)
                .collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        PrefixSet {
            v4_lengths: lengths(true),
            v6_lengths: lengths(false),
            set: prefixes.iter().copied().collect(),
        }
    }

    /// The policy prefixes containing `addr/len`, shortest first.
    fn containing(&self, addr: IpAddr, len: u8) -> Vec<Prefix> {
        let lengths = if addr.is_ipv4() {
            &self.v4_lengths
        } else {
            &self.v6_lengths
        };
        lengths
            .iter()
            .take_while(|l| **l <= len)
            .map(|l| (mask(addr, *l), *l))
            .filter(|p| self.set.contains(p))
            .collect()
    }
}

/// What one local identity is for.
#[derive(Default)]
struct Wanted {
    /// Its ipcache entries: prefixes, or whole addresses (`None`).
    entries: Vec<(IpAddr, Option<u8>)>,
    /// The pods (indexes into `CompileInput::pods`) whose addresses it has.
    pods: Vec<usize>,
}

/// Gathers the local identities for `prefixes` (the policy prefixes of the
/// rules that apply on this node).
pub(super) fn local_identities(
    input: &CompileInput<'_>,
    prefixes: &BTreeSet<Prefix>,
    labels_of: &HashMap<u32, &LabelSet>,
) -> LocalIdentities {
    let set = PrefixSet::new(prefixes);
    // Gathered first, numbered after.
    let mut wanted: BTreeMap<LabelSet, Wanted> = BTreeMap::new();

    // Addresses of pods and nodes keep their own identity for a full-length
    // policy prefix equal to them (or get a combined one below).
    let mut claimed: HashSet<IpAddr> = input
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    claimed.extend(input.nodes.iter().map(|(ip, _)| *ip));

    for &prefix in prefixes {
        if prefix.1 == full_length(prefix.0) && claimed.contains(&prefix.0) {
            continue;
        }
        let mut labels: LabelSet = set
            .containing(prefix.0, prefix.1)
            .into_iter()
            .map(cidr_label)
            .collect();
        let in_pod_cidr = input
            .pod_cidrs
            .iter()
            .any(|c| c.prefix_len <= prefix.1 && c.contains(prefix.0));
        if !in_pod_cidr {
            labels.insert("reserved:world".to_string());
        }
        wanted
            .entry(labels)
            .or_default()
            .entries
            .push((prefix.0, Some(prefix.1)));
    }

    let mut seen: HashSet<IpAddr> = HashSet::new();
    if input.cidr_match.pods {
        for (at, pod) in input.pods.iter().enumerate() {
            for &ip in &pod.ips {
                let containing = set.containing(ip, full_length(ip));
                if containing.is_empty() || !seen.insert(ip) {
                    continue;
                }
                let mut labels = labels_of
                    .get(&pod.identity)
                    .map_or_else(|| pod.labels.clone(), |l| (*l).clone());
                labels.extend(containing.into_iter().map(cidr_label));
                let slot = wanted.entry(labels).or_default();
                slot.entries.push((ip, None));
                if slot.pods.last() != Some(&at) {
                    slot.pods.push(at);
                }
            }
        }
    }
    if input.cidr_match.nodes {
        for &(ip, node_identity) in input.nodes {
            // The host's own addresses stay `host`: the engine recognizes
            // host traffic (allow_localhost) by that identity.
            if node_identity == identity::HOST {
                continue;
            }
            let containing = set.containing(ip, full_length(ip));
            if containing.is_empty() || !seen.insert(ip) {
                continue;
            }
            let mut labels = labels_of
                .get(&node_identity)
                .map(|l| (*l).clone())
                .unwrap_or_default();
            labels.extend(containing.into_iter().map(cidr_label));
            wanted.entry(labels).or_default().entries.push((ip, None));
        }
    }

    // Numbers: an identity keeps its number from the previous generation;
    // new ones take the lowest free numbers, in key order.
    let mut keyed: Vec<(String, LabelSet, Wanted)> = wanted
        .into_iter()
        .map(|(labels, wanted)| (labels_key(&labels), labels, wanted))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut taken: HashSet<u32> = labels_of.keys().copied().collect();
    let mut numbers: BTreeMap<String, u32> = BTreeMap::new();
    for (key, ..) in &keyed {
        if let Some(&n) = input.previous_local.get(key) {
            if n >= identity::FIRST_LOCAL && taken.insert(n) {
                numbers.insert(key.clone(), n);
            }
        }
    }
    let mut next = identity::FIRST_LOCAL;
    for (key, ..) in &keyed {
        if numbers.contains_key(key) {
            continue;
        }
        while taken.contains(&next) {
            next += 1;
        }
        taken.insert(next);
        numbers.insert(key.clone(), next);
    }

    let mut out = LocalIdentities::default();
    for (key, labels, Wanted { entries, pods }) in keyed {
        let number = numbers[&key];
        out.ipcache
            .extend(entries.into_iter().map(|(ip, prefix_len)| IpCacheEntry {
                ip,
                prefix_len,
                identity: number,
            }));
        out.pods.extend(pods.into_iter().map(|p| (number, p)));
        out.identities.push((number, labels));
    }
    out.identities.sort_by_key(|(n, _)| *n);
    out.ipcache
        .sort_by_key(|e| (e.ip, e.prefix_len.unwrap_or(full_length(e.ip))));
    out.numbers = numbers;
    out
}

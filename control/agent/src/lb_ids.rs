//! Stable numbers for services and backends. The engine's conntrack stores
//! `Service.id` and `Backend.id` with every balanced connection, so a number
//! must mean the same (service port, backend) for as long as it exists, also
//! across agent restarts: they are kept in `<state-dir>/lb-ids.json` like the
//! identities, and unused ones are released only after the source's first
//! full listing (see [`crate::desired::resolve`]).
//!
//! A released number is not handed out again at once: allocation continues
//! after the last number given (wrapping), so a connection that still carries
//! an old backend id is not sent to whatever backend took the number next.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_tables::Service;

use crate::persist;

/// A service port as compiled, before numbering: its key and the service with
/// `id` and every `Backend.id` still 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDraft {
    /// `namespace/name/port-name/PROTOCOL` (hostPorts: `hostport namespace/pod/...`).
    pub key: String,
    pub service: Service,
}

/// Key -> number, numbers from 1, continuing after the last one given.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Numbering {
    by_key: BTreeMap<String, u32>,
    /// The last number handed out; the next search starts after it.
    #[serde(default)]
    last: u32,
    #[serde(skip)]
    used: HashSet<u32>,
}

impl Numbering {
    fn rebuild_used(&mut self) {
        self.used = self.by_key.values().copied().collect();
    }

    /// The number of `key`, allocating one if it is new; `None` when every
    /// number is taken. The bool says whether something was allocated.
    fn assign(&mut self, key: &str) -> Option<(u32, bool)> {
        if let Some(n) = self.by_key.get(key) {
            return Some((*n, false));
        }
        if self.used.len() >= u32::MAX as usize - 1 {
            return None;
        }
        let mut candidate = self.last;
        loop {
            candidate = candidate.checked_add(1).unwrap_or(1);
            if !self.used.contains(&candidate) {
                break;
            }
        }
        self.by_key.insert(key.to_string(), candidate);
        self.used.insert(candidate);
        self.last = candidate;
        Some((candidate, true))
    }

    fn get(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// Releases every key not in `keep`; whether anything was released.
    fn retain(&mut self, keep: &BTreeSet<String>) -> bool {
        let before = self.by_key.len();
        let used = &mut self.used;
        self.by_key.retain(|k, n| {
            let kept = keep.contains(k);
            if !kept {
                used.remove(n);
            }
            kept
        });
        self.by_key.len() != before
    }
}

#[derive(Debug, thiserror::Error)]
#[error("service or backend id space is exhausted")]
pub struct LbIdsExhausted;

/// The numbers of service ports and backends, persisted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LbIds {
    services: Numbering,
    backends: Numbering,
    #[serde(skip)]
    path: Option<PathBuf>,
}

fn backend_key(service_id: u32, addr: std::net::IpAddr, port: u16) -> String {
    format!("{service_id}/{}", std::net::SocketAddr::new(addr, port))
}

impl LbIds {
    /// Numbers that live only in memory (golden tests, benchmarks).
    pub fn in_memory() -> LbIds {
        LbIds::default()
    }

    /// Loads the numbers from `path` (none when the file does not exist).
    pub fn open(path: PathBuf) -> anyhow::Result<LbIds> {
        let mut ids: LbIds = persist::load(&path)?;
        ids.services.rebuild_used();
        ids.backends.rebuild_used();
        ids.path = Some(path);
        Ok(ids)
    }

    /// Gives every service port and backend of `drafts` a number; whether
    /// anything new was allocated (the caller then saves).
    pub fn assign(&mut self, drafts: &[ServiceDraft]) -> Result<bool, LbIdsExhausted> {
        let mut changed = false;
        for draft in drafts {
            let (id, new) = self.services.assign(&draft.key).ok_or(LbIdsExhausted)?;
            changed |= new;
            for b in &draft.service.backends {
                let key = backend_key(id, b.addr, b.port);
                changed |= self.backends.assign(&key).ok_or(LbIdsExhausted)?.1;
            }
        }
        Ok(changed)
    }

    /// Releases the numbers of service ports and backends not in `drafts`;
    /// whether anything was released. Call only with a fully listed store.
    pub fn retain_used(&mut self, drafts: &[ServiceDraft]) -> bool {
        let mut services = BTreeSet::new();
        let mut backends = BTreeSet::new();
        for draft in drafts {
            services.insert(draft.key.clone());
            if let Some(id) = self.services.get(&draft.key) {
                for b in &draft.service.backends {
                    backends.insert(backend_key(id, b.addr, b.port));
                }
            }
        }
        let a = self.services.retain(&services);
        let b = self.backends.retain(&backends);
        a || b
    }

    /// The services of `drafts` with their numbers. A draft or backend without
    /// a number (allocation failed) is left out and reported.
    pub fn number(&self, drafts: Vec<ServiceDraft>, errors: &mut Vec<String>) -> Vec<Service> {
        let mut out = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let Some(id) = self.services.get(&draft.key) else {
                errors.push(format!(
                    "service {}: no id allocated; not served",
                    draft.key
                ));
                continue;
            };
            let mut service = draft.service;
            service.id = id;
            service.backends.retain_mut(|b| {
                match self.backends.get(&backend_key(id, b.addr, b.port)) {
                    Some(n) => {
                        b.id = n;
                        true
                    }
                    None => false,
                }
            });
            out.push(service);
        }
        out
    }

    /// Writes the numbers to the state file (no-op in memory).
    pub fn save(&self) -> anyhow::Result<()> {
        match &self.path {
            Some(path) => persist::store(path, self),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tables::{Backend, BackendState, L4Protocol, LbAlgorithm};

    fn draft(key: &str, backends: &[&str]) -> ServiceDraft {
        ServiceDraft {
            key: key.into(),
            service: Service {
                id: 0,
                name: key.into(),
                port_name: String::new(),
                protocol: L4Protocol::Tcp,
                frontends: Vec::new(),
                backends: backends
                    .iter()
                    .map(|a| Backend {
                        id: 0,
                        addr: a.parse().unwrap(),
                        port: 8080,
                        state: BackendState::Ready,
                        local: false,
                    })
                    .collect(),
                algorithm: LbAlgorithm::Random,
                affinity_timeout_s: None,
                external_traffic_local: false,
                internal_traffic_local: false,
                source_ranges: Vec::new(),
            },
        }
    }

    fn ids_of(services: &[Service]) -> Vec<(u32, Vec<u32>)> {
        services
            .iter()
            .map(|s| (s.id, s.backends.iter().map(|b| b.id).collect()))
            .collect()
    }

    #[test]
    fn ids_survive_a_restart_and_released_ones_are_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb-ids.json");
        let drafts = vec![
            draft("default/web/http/TCP", &["10.200.0.2", "10.200.0.3"]),
            draft("default/dns/dns/UDP", &["10.200.0.4"]),
        ];
        let mut a = LbIds::open(path.clone()).unwrap();
        assert!(a.assign(&drafts).unwrap());
        assert!(!a.assign(&drafts).unwrap());
        let mut errors = Vec::new();
        let first = a.number(drafts.clone(), &mut errors);
        assert_eq!(ids_of(&first), [(1, vec![1, 2]), (2, vec![3])]);
        a.save().unwrap();

        // Restart: the same objects in another order keep their numbers.
        let mut b = LbIds::open(path.clone()).unwrap();
        let reordered = vec![drafts[1].clone(), drafts[0].clone()];
        assert!(!b.assign(&reordered).unwrap());
        assert_eq!(
            ids_of(&b.number(reordered, &mut errors)),
            [(2, vec![3]), (1, vec![1, 2])]
        );

        // web loses a backend and gains one; dns goes away: the gone numbers
        // are released and new ones continue after the last one given.
        let next = vec![draft("default/web/http/TCP", &["10.200.0.3", "10.200.0.9"])];
        assert!(b.assign(&next).unwrap());
        assert!(b.retain_used(&next));
        assert!(!b.retain_used(&next));
        assert_eq!(
            ids_of(&b.number(next.clone(), &mut errors)),
            [(1, vec![2, 4])]
        );
        b.save().unwrap();
        let mut c = LbIds::open(path).unwrap();
        assert!(c
            .assign(&[draft("default/new/x/TCP", &["10.200.0.2"])])
            .unwrap());
        assert_eq!(
            ids_of(&c.number(
                vec![draft("default/new/x/TCP", &["10.200.0.2"])],
                &mut errors
            )),
            [(3, vec![5])]
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_draft_without_a_number_is_reported_not_served() {
        let ids = LbIds::in_memory();
        let mut errors = Vec::new();
        assert!(ids
            .number(vec![draft("default/web/http/TCP", &[])], &mut errors)
            .is_empty());
        assert_eq!(
            errors,
            ["service default/web/http/TCP: no id allocated; not served"]
        );
    }
}

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

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::{Deserialize, Serialize, Serializer};
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

/// A backend of one service port: (service id, address, port). In memory a
/// plain value (no string is built per lookup); in the state file the text
/// `id/address:port` (`id/[v6]:port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct BackendKey(u32, IpAddr, u16);

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, SocketAddr::new(self.1, self.2))
    }
}

impl Serialize for BackendKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::str::FromStr for BackendKey {
    type Err = String;

    fn from_str(text: &str) -> Result<BackendKey, String> {
        let parsed = text.split_once('/').and_then(|(id, addr)| {
            Some((id.parse::<u32>().ok()?, addr.parse::<SocketAddr>().ok()?))
        });
        match parsed {
            Some((id, addr)) => Ok(BackendKey(id, addr.ip(), addr.port())),
            None => Err(format!(
                "backend key {text:?} is not service-id/address:port"
            )),
        }
    }
}

/// Key -> number, numbers from 1, continuing after the last one given.
#[derive(Clone, Debug)]
struct Numbering<K> {
    by_key: HashMap<K, u32>,
    /// The last number handed out; the next search starts after it.
    last: u32,
    used: HashSet<u32>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Numbering<K> {
        Numbering {
            by_key: HashMap::new(),
            last: 0,
            used: HashSet::new(),
        }
    }
}

impl<K: Eq + Hash> Numbering<K> {
    fn new(by_key: HashMap<K, u32>, last: u32) -> Numbering<K> {
        let used = by_key.values().copied().collect();
        Numbering { by_key, last, used }
    }

    /// The number of `key`, allocating one if it is new; `None` when every
    /// number is taken. The bool says whether something was allocated.
    fn assign<Q>(&mut self, key: &Q) -> Option<(u32, bool)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
    {
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
        self.by_key.insert(key.to_owned(), candidate);
        self.used.insert(candidate);
        self.last = candidate;
        Some((candidate, true))
    }

    fn get<Q>(&self, key: &Q) -> Option<u32>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.by_key.get(key).copied()
    }

    /// Releases every key for which `keep` is false; whether anything was
    /// released.
    fn retain(&mut self, keep: impl Fn(&K) -> bool) -> bool {
        let before = self.by_key.len();
        let used = &mut self.used;
        self.by_key.retain(|k, n| {
            let kept = keep(k);
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
#[derive(Clone, Debug, Default)]
pub struct LbIds {
    services: Numbering<String>,
    backends: Numbering<BackendKey>,
    path: Option<PathBuf>,
}

/// One numbering as the state file holds it:
/// `{"by_key": {key: number}, "last": number}`.
#[derive(Default, Deserialize)]
struct StoredNumbering {
    by_key: HashMap<String, u32>,
    #[serde(default)]
    last: u32,
}

/// The state file as read: `{"services": ..., "backends": ...}`.
#[derive(Default, Deserialize)]
struct StoredLbIds {
    #[serde(default)]
    services: StoredNumbering,
    #[serde(default)]
    backends: StoredNumbering,
}

/// A numbering as the state file holds it, written straight from the
/// in-memory map (no string map is built first; JSON object order carries
/// no meaning).
struct SavedNumbering<'a, K>(&'a Numbering<K>);

impl<K: Serialize> Serialize for SavedNumbering<'_, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a, K: Serialize> {
            by_key: &'a HashMap<K, u32>,
            last: u32,
        }
        Shape {
            by_key: &self.0.by_key,
            last: self.0.last,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct SavedLbIds<'a> {
    services: SavedNumbering<'a, String>,
    backends: SavedNumbering<'a, BackendKey>,
}

impl LbIds {
    /// Numbers that live only in memory (golden tests, benchmarks).
    pub fn in_memory() -> LbIds {
        LbIds::default()
    }

    /// Loads the numbers from `path` (none when the file does not exist).
    pub fn open(path: PathBuf) -> anyhow::Result<LbIds> {
        let stored: StoredLbIds = persist::load(&path)?;
        let backends = stored
            .backends
            .by_key
            .into_iter()
            .map(|(k, n)| Ok((k.parse::<BackendKey>().map_err(anyhow::Error::msg)?, n)))
            .collect::<anyhow::Result<HashMap<_, _>>>()
            .with_context(|| format!("state file {} is corrupt", path.display()))?;
        Ok(LbIds {
            services: Numbering::new(stored.services.by_key, stored.services.last),
            backends: Numbering::new(backends, stored.backends.last),
            path: Some(path),
        })
    }

    /// Gives every service port and backend of `drafts` a number; whether
    /// anything new was allocated (the caller then saves).
    pub fn assign(&mut self, drafts: &[ServiceDraft]) -> Result<bool, LbIdsExhausted> {
        let mut changed = false;
        for draft in drafts {
            let (id, new) = self
                .services
                .assign(draft.key.as_str())
                .ok_or(LbIdsExhausted)?;
            changed |= new;
            for b in &draft.service.backends {
                let key = BackendKey(id, b.addr, b.port);
                changed |= self.backends.assign(&key).ok_or(LbIdsExhausted)?.1;
            }
        }
        Ok(changed)
    }

    /// Releases the numbers of service ports and backends not in `drafts`;
    /// whether anything was released. Call only with a fully listed store,
    /// after [`LbIds::assign`] of the same drafts.
    pub fn retain_used(&mut self, drafts: &[ServiceDraft]) -> bool {
        let mut services: HashSet<&str> = HashSet::with_capacity(drafts.len());
        let mut backends: HashSet<BackendKey> = HashSet::new();
        for draft in drafts {
            services.insert(&draft.key);
            if let Some(id) = self.services.get(draft.key.as_str()) {
                backends.extend(
                    draft
                        .service
                        .backends
                        .iter()
                        .map(|b| BackendKey(id, b.addr, b.port)),
                );
            }
        }
        // Every key in use has a number (assign ran first): equal counts
        // mean there is nothing to release.
        let a = services.len() != self.services.by_key.len()
            && self.services.retain(|k| services.contains(k.as_str()));
        let b = backends.len() != self.backends.by_key.len()
            && self.backends.retain(|k| backends.contains(k));
        a || b
    }

    /// The services of `drafts` with their numbers. A draft or backend without
    /// a number (allocation failed) is left out and reported.
    pub fn number(&self, drafts: Vec<ServiceDraft>, errors: &mut Vec<String>) -> Vec<Service> {
        let mut out = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let Some(id) = self.services.get(draft.key.as_str()) else {
                errors.push(format!(
                    "service {}: no id allocated; not served",
                    draft.key
                ));
                continue;
            };
            let mut service = draft.service;
            service.id = id;
            service.backends.retain_mut(|b| {
                match self.backends.get(&BackendKey(id, b.addr, b.port)) {
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

    /// Writes the numbers to the state file, compact (no-op in memory).
    pub fn save(&self) -> anyhow::Result<()> {
        match &self.path {
            Some(path) => persist::store_compact(
                path,
                &SavedLbIds {
                    services: SavedNumbering(&self.services),
                    backends: SavedNumbering(&self.backends),
                },
            ),
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
    fn the_state_file_keeps_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb-ids.json");
        // As earlier versions wrote it (indented, keys as text).
        let written = serde_json::json!({
            "services": {"by_key": {"default/web/http/TCP": 7}, "last": 7},
            "backends": {
                "by_key": {"7/10.200.0.2:8080": 3, "7/[fd00::2]:8080": 4},
                "last": 4,
            },
        });
        std::fs::write(&path, serde_json::to_string_pretty(&written).unwrap()).unwrap();
        let mut ids = LbIds::open(path.clone()).unwrap();
        let drafts = vec![draft("default/web/http/TCP", &["10.200.0.2", "fd00::2"])];
        assert!(!ids.assign(&drafts).unwrap());
        let mut errors = Vec::new();
        assert_eq!(ids_of(&ids.number(drafts, &mut errors)), [(7, vec![3, 4])]);
        ids.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains('\n'), "not compact: {text}");
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read, written);

        std::fs::write(&path, r#"{"backends": {"by_key": {"7/10.200.0.2": 3}}}"#).unwrap();
        let error = format!("{:#}", LbIds::open(path).unwrap_err());
        assert!(error.contains("7/10.200.0.2"), "{error}");
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

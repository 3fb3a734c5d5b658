//! Security identities: Cilium's reserved numbers and the allocator for
//! label-derived ones, persisted so numbers survive agent restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;
use crate::persist;

/// Cilium's reserved identities (pkg/identity/numericidentity.go), in order.
pub const RESERVED: [(u32, &str); 10] = [
    (1, "host"),
    (2, "world"),
    (3, "unmanaged"),
    (4, "health"),
    (5, "init"),
    (6, "remote-node"),
    (7, "kube-apiserver"),
    (8, "ingress"),
    (9, "world-ipv4"),
    (10, "world-ipv6"),
];

pub const HOST: u32 = 1;
pub const WORLD: u32 = 2;
pub const INIT: u32 = 5;
pub const REMOTE_NODE: u32 = 6;

/// First and last number of cluster-local, label-derived identities (Cilium's
/// CRD-mode range).
pub const FIRST_ALLOCATED: u32 = 256;
pub const LAST_ALLOCATED: u32 = 65535;

/// The key of a label set: its labels joined by `;` in sorted order.
pub fn key_of(labels: &LabelSet) -> String {
    labels.iter().cloned().collect::<Vec<_>>().join(";")
}

#[derive(Debug, thiserror::Error)]
#[error("identity space {FIRST_ALLOCATED}-{LAST_ALLOCATED} is exhausted")]
pub struct IdentitiesExhausted;

/// Label set -> number, for numbers from [`FIRST_ALLOCATED`]. A label set keeps
/// its number for as long as the state file lives, so restarts and relists
/// never renumber an endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdentityAllocator {
    by_labels: BTreeMap<String, u32>,
    /// The numbers in `by_labels`, kept beside it so that finding a free one
    /// does not walk every allocation.
    #[serde(skip)]
    used: BTreeSet<u32>,
    /// No number below this one is free (a lower bound of the lowest free one).
    #[serde(skip)]
    free_from: u32,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl IdentityAllocator {
    /// An allocator that lives only in memory (golden tests, benchmarks).
    pub fn in_memory() -> IdentityAllocator {
        IdentityAllocator::default()
    }

    /// Loads the allocations from `path` (empty when the file does not exist).
    pub fn open(path: PathBuf) -> anyhow::Result<IdentityAllocator> {
        let mut allocator: IdentityAllocator = persist::load(&path)?;
        allocator.used = allocator.by_labels.values().copied().collect();
        allocator.free_from = FIRST_ALLOCATED;
        allocator.path = Some(path);
        Ok(allocator)
    }

    /// The lowest free number from [`FIRST_ALLOCATED`]: the first gap in
    /// `used` at or above `free_from`.
    fn lowest_free(&self) -> Option<u32> {
        let mut candidate = self.free_from.max(FIRST_ALLOCATED);
        for &n in self.used.range(candidate..) {
            if n != candidate {
                break;
            }
            candidate = n.checked_add(1)?;
        }
        (candidate <= LAST_ALLOCATED).then_some(candidate)
    }

    /// The number for `labels`, allocating the lowest free one if it is new.
    /// Returns whether anything was allocated (the caller then saves).
    pub fn assign(&mut self, labels: &LabelSet) -> Result<(u32, bool), IdentitiesExhausted> {
        let key = key_of(labels);
        if let Some(id) = self.by_labels.get(&key) {
            return Ok((*id, false));
        }
        let id = self.lowest_free().ok_or(IdentitiesExhausted)?;
        self.by_labels.insert(key, id);
        self.used.insert(id);
        self.free_from = id + 1;
        Ok((id, true))
    }

    /// Releases the numbers of label sets no longer in use (Cilium's identity
    /// GC); returns whether anything was released. A label set that comes back
    /// later gets the lowest free number again, possibly a different one.
    pub fn retain_used(&mut self, used: &BTreeSet<LabelSet>) -> bool {
        let keys: BTreeSet<String> = used.iter().map(key_of).collect();
        let before = self.by_labels.len();
        let (numbers, free_from) = (&mut self.used, &mut self.free_from);
        self.by_labels.retain(|k, id| {
            let keep = keys.contains(k);
            if !keep {
                numbers.remove(id);
                *free_from = (*free_from).min(*id);
            }
            keep
        });
        self.by_labels.len() != before
    }

    pub fn get(&self, labels: &LabelSet) -> Option<u32> {
        self.by_labels.get(&key_of(labels)).copied()
    }

    /// Every allocated identity with its labels, by number.
    pub fn all(&self) -> Vec<(u32, Vec<String>)> {
        let mut out: Vec<(u32, Vec<String>)> = self
            .by_labels
            .iter()
            .map(|(k, id)| (*id, k.split(';').map(str::to_string).collect()))
            .collect();
        out.sort();
        out
    }

    /// Writes the allocations to the state file (no-op in memory).
    pub fn save(&self) -> anyhow::Result<()> {
        match &self.path {
            Some(path) => persist::store(path, self),
            None => Ok(()),
        }
    }
}

/// The labels of a reserved identity: `reserved:<name>`.
pub fn reserved_labels(id: u32) -> Option<String> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| format!("reserved:{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: &[&str]) -> LabelSet {
        labels.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reserved_numbers_match_cilium() {
        let names: Vec<&str> = RESERVED.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            names,
            [
                "host",
                "world",
                "unmanaged",
                "health",
                "init",
                "remote-node",
                "kube-apiserver",
                "ingress",
                "world-ipv4",
                "world-ipv6"
            ]
        );
        assert!(RESERVED
            .iter()
            .enumerate()
            .all(|(i, (n, _))| *n == i as u32 + 1));
        assert_eq!(reserved_labels(6).as_deref(), Some("reserved:remote-node"));
        assert_eq!(reserved_labels(11), None);
    }

    #[test]
    fn numbers_are_stable_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("sluice-id-{}", std::process::id()));
        let path = dir.join("identities.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut a = IdentityAllocator::open(path.clone()).unwrap();
        let web = set(&["k8s:app=web"]);
        let db = set(&["k8s:app=db"]);
        assert_eq!(a.assign(&web).unwrap(), (256, true));
        assert_eq!(a.assign(&db).unwrap(), (257, true));
        assert_eq!(a.assign(&web).unwrap(), (256, false));
        a.save().unwrap();
        let mut b = IdentityAllocator::open(path).unwrap();
        // Asked in the other order after the restart: same numbers.
        assert_eq!(b.assign(&db).unwrap(), (257, false));
        assert_eq!(b.assign(&web).unwrap(), (256, false));
        assert_eq!(b.assign(&set(&["k8s:app=x"])).unwrap(), (258, true));
        // Unused label sets are released; the others keep their numbers.
        let used = [web.clone(), set(&["k8s:app=x"])].into_iter().collect();
        assert!(b.retain_used(&used));
        assert_eq!(b.get(&db), None);
        assert_eq!(b.get(&web), Some(256));
        assert_eq!(b.assign(&set(&["k8s:app=y"])).unwrap(), (257, true));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn released_numbers_are_found_again_lowest_first() {
        let mut a = IdentityAllocator::in_memory();
        let sets: Vec<LabelSet> = (0..6).map(|i| set(&[&format!("k8s:app={i}")])).collect();
        for (i, s) in sets.iter().enumerate() {
            assert_eq!(a.assign(s).unwrap(), (FIRST_ALLOCATED + i as u32, true));
        }
        // Release 257 and 259.
        let kept = [&sets[0], &sets[2], &sets[4], &sets[5]]
            .into_iter()
            .cloned()
            .collect();
        assert!(a.retain_used(&kept));
        assert!(!a.retain_used(&kept));
        assert_eq!(a.assign(&set(&["k8s:app=x"])).unwrap(), (257, true));
        assert_eq!(a.assign(&set(&["k8s:app=y"])).unwrap(), (259, true));
        assert_eq!(a.assign(&set(&["k8s:app=z"])).unwrap(), (262, true));
        assert_eq!(a.assign(&sets[4]).unwrap(), (260, false));
        let numbers: Vec<u32> = a.all().into_iter().map(|(id, _)| id).collect();
        assert_eq!(numbers, [256, 257, 258, 259, 260, 261, 262]);
    }
}

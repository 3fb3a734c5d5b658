//! The object store: what the sources know of the cluster, by kind and key.
//!
//! Sources write into it through a [`StoreHandle`]; desired-state computation
//! reads a consistent copy ([`StoreHandle::snapshot`]). Every write bumps a
//! revision that the agent's main loop waits on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::objects::{Kind, Object, ObjectKey};

/// A consistent view of everything the sources delivered.
#[derive(Clone, Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Object>,
    /// Kinds whose first full listing has arrived.
    synced: BTreeSet<Kind>,
    /// Problems per origin (a manifest file, a watch), each naming what is wrong.
    errors: BTreeMap<String, Vec<String>>,
}

impl Store {
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Object> {
        self.objects.get(&ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Objects of one kind in key order (namespace, then name).
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects
            .range(
                ObjectKey {
                    kind,
                    namespace: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn is_synced(&self, kind: Kind) -> bool {
        self.synced.contains(&kind)
    }

    /// Whether every kind has had its first full listing.
    pub fn all_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    /// Current problems, each as `origin: message`, sorted.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .iter()
            .flat_map(|(origin, list)| list.iter().map(move |e| format!("{origin}: {e}")))
            .collect()
    }

    pub fn upsert(&mut self, object: Object) {
        self.objects.insert(object.key(), object);
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        self.objects.remove(key)
    }

    /// Replaces every object of `kind` with `objects` (a full listing) and
    /// marks the kind synced.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<Object>) {
        self.objects.retain(|k, _| k.kind != kind);
        for object in objects {
            debug_assert_eq!(object.kind(), kind);
            self.upsert(object);
        }
        self.synced.insert(kind);
    }

    /// Replaces every object of every kind (a source that always delivers the
    /// whole picture, like the manifest directory) and marks all kinds synced.
    pub fn replace_all(&mut self, objects: Vec<Object>) {
        self.objects.clear();
        for object in objects {
            self.upsert(object);
        }
        self.synced.extend(Kind::ALL);
    }

    pub fn set_errors(&mut self, origin: &str, errors: Vec<String>) {
        if errors.is_empty() {
            self.errors.remove(origin);
        } else {
            self.errors.insert(origin.to_string(), errors);
        }
    }

    /// Drops every error whose origin starts with `prefix` (a source resetting its own).
    pub fn clear_errors_under(&mut self, prefix: &str) {
        self.errors.retain(|origin, _| !origin.starts_with(prefix));
    }
}

/// Shared, cloneable access to the store with change notification.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    store: Arc<Mutex<Store>>,
    revision: watch::Sender<u64>,
}

impl Default for StoreHandle {
    fn default() -> Self {
        StoreHandle::new()
    }
}

impl StoreHandle {
    pub fn new() -> StoreHandle {
        StoreHandle {
            store: Arc::new(Mutex::new(Store::default())),
            revision: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the store under its lock and tells waiters once.
    pub fn update<R>(&self, change: impl FnOnce(&mut Store) -> R) -> R {
        let result = change(&mut self.lock());
        self.revision.send_modify(|r| *r += 1);
        result
    }

    /// A consistent copy for computing desired state.
    pub fn snapshot(&self) -> Store {
        self.lock().clone()
    }

    /// Answers a question about the store under its lock, without copying
    /// every object (status requests, sync checks).
    pub fn read<R>(&self, question: impl FnOnce(&Store) -> R) -> R {
        question(&self.lock())
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

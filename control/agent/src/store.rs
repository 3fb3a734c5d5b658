//! The object store: what the sources know of the cluster, by kind and key.
//!
//! Sources write into it through a [`StoreHandle`]; desired-state computation
//! reads a consistent snapshot ([`StoreHandle::snapshot`]): a shared pointer,
//! so taking one copies nothing; a write while a snapshot is still held copies
//! the index (objects themselves are shared, never copied). Every write bumps
//! a revision that the agent's main loop waits on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::objects::{Kind, Object, ObjectKey};

/// A consistent view of everything the sources delivered.
#[derive(Clone, Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Arc<Object>>,
    /// Kinds whose first full listing has arrived.
    synced: BTreeSet<Kind>,
    /// Problems per origin (a manifest file, a watch), each naming what is wrong.
    errors: BTreeMap<String, Vec<String>>,
}

impl Store {
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Object> {
        self.objects
            .get(&ObjectKey {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .map(|o| &**o)
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
            .map(|(_, o)| &**o)
    }

    /// Objects of one kind in key order, with their keys and as the shared
    /// values the store holds (callers that cache per object compare these
    /// with [`Arc::ptr_eq`]: an object is replaced, never changed in place).
    pub fn of_kind_shared(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Arc<Object>)> {
        self.objects
            .range(
                ObjectKey {
                    kind,
                    namespace: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(move |(k, _)| k.kind == kind)
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

    /// The problems recorded for one origin (empty when none).
    pub fn errors_of(&self, origin: &str) -> &[String] {
        self.errors.get(origin).map_or(&[], Vec::as_slice)
    }

    /// Whether the store holds exactly `objects` (the same shared values
    /// under the same keys): a re-read that found nothing new.
    pub fn same_objects(&self, objects: &BTreeMap<ObjectKey, Arc<Object>>) -> bool {
        self.objects.len() == objects.len()
            && self
                .objects
                .iter()
                .zip(objects)
                .all(|((k1, o1), (k2, o2))| k1 == k2 && Arc::ptr_eq(o1, o2))
    }

    pub fn upsert(&mut self, object: Object) {
        self.objects.insert(object.key(), Arc::new(object));
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<Object>> {
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

    /// Applies a source's changes: each key's new object, or `None` to remove it.
    pub fn apply(&mut self, changes: Vec<(ObjectKey, Option<Arc<Object>>)>) {
        for (key, object) in changes {
            match object {
                Some(object) => {
                    self.objects.insert(key, object);
                }
                None => {
                    self.objects.remove(&key);
                }
            }
        }
    }

    /// Replaces every object of every kind (a source that always delivers the
    /// whole picture, like the manifest directory) and marks all kinds synced.
    pub fn replace_all(&mut self, objects: BTreeMap<ObjectKey, Arc<Object>>) {
        self.objects = objects;
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
    store: Arc<Mutex<Arc<Store>>>,
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
            store: Arc::new(Mutex::new(Arc::new(Store::default()))),
            revision: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Store>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the store under its lock and tells waiters once.
    pub fn update<R>(&self, change: impl FnOnce(&mut Store) -> R) -> R {
        // Copies the index only while a snapshot of the old version is alive.
        let result = change(Arc::make_mut(&mut self.lock()));
        self.revision.send_modify(|r| *r += 1);
        result
    }

    /// A consistent, immutable view for computing desired state (no copy).
    pub fn snapshot(&self) -> Arc<Store> {
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

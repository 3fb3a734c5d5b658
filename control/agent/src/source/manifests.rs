//! The standalone source: a directory of Kubernetes YAML (or JSON) manifests,
//! multi-document files and `List` objects allowed, watched for additions,
//! edits and deletions (inotify through `notify`, plus a slow rescan as a
//! safety net).
//!
//! A document that does not parse, names an unknown kind or has an invalid
//! field is reported with its file, document number, object and field, and
//! skipped; every other document still applies. If the same object loaded
//! fine from that file before, its last good version stays in effect, so a
//! bad edit never half-removes anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Source;
use crate::objects::{CiliumPolicy, Kind, Object, ObjectKey};
use crate::store::StoreHandle;

/// How long changes are collected before the directory is re-read.
const SETTLE: Duration = Duration::from_millis(100);
/// Rescan period when no event arrives (covers missed inotify events).
const RESCAN: Duration = Duration::from_secs(5);

/// The result of reading the directory once.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    /// `file: document N (Kind ns/name): field: problem`.
    pub errors: Vec<String>,
}

/// Remembers the last good version of each object per file.
#[derive(Debug, Default)]
pub struct ManifestLoader {
    last_good: BTreeMap<(PathBuf, ObjectKey), Object>,
}

fn object_label(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn typed<T: DeserializeOwned>(doc: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Turns one JSON document into an object, or a message naming the field.
pub fn decode(doc: Value) -> Result<Object, String> {
    let Some(kind_name) = doc.get("kind").and_then(Value::as_str) else {
        return Err("kind: missing".into());
    };
    let Some(kind) = Kind::from_name(kind_name) else {
        return Err(format!(
            "kind: unknown kind {kind_name:?} (known: {})",
            Kind::ALL.map(Kind::name).join(", ")
        ));
    };
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != kind.api_version() {
        return Err(format!(
            "apiVersion: {kind_name} needs {:?}, found {api_version:?}",
            kind.api_version()
        ));
    }
    match doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
    {
        Some(name) if !name.is_empty() => {}
        _ => return Err("metadata.name: missing".into()),
    }
    if !kind.namespaced()
        && doc
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .is_some()
    {
        return Err(format!("metadata.namespace: {kind_name} is cluster-scoped"));
    }
    Ok(match kind {
        Kind::Namespace => Object::Namespace(typed(doc)?),
        Kind::Node => Object::Node(typed(doc)?),
        Kind::Pod => Object::Pod(typed(doc)?),
        Kind::Service => Object::Service(typed(doc)?),
        Kind::EndpointSlice => Object::EndpointSlice(typed(doc)?),
        Kind::NetworkPolicy => Object::NetworkPolicy(typed(doc)?),
        Kind::CiliumNetworkPolicy => Object::CiliumNetworkPolicy(typed::<CiliumPolicy>(doc)?),
        Kind::CiliumClusterwideNetworkPolicy => {
            Object::CiliumClusterwideNetworkPolicy(typed::<CiliumPolicy>(doc)?)
        }
    })
}

/// The key a document would have, when its kind and name are readable.
fn key_of(doc: &Value) -> Option<ObjectKey> {
    let kind = Kind::from_name(doc.get("kind")?.as_str()?)?;
    let meta = doc.get("metadata")?;
    Some(ObjectKey {
        kind,
        namespace: if kind.namespaced() {
            meta.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        },
        name: meta.get("name")?.as_str()?.to_string(),
    })
}

/// The manifest files in `dir`, sorted (hidden and editor temp files skipped).
pub fn manifest_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("read manifest directory {}", dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let manifest = name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
        if manifest && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl ManifestLoader {
    /// Reads every manifest in `dir` once.
    pub fn load(&mut self, dir: &Path) -> anyhow::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut seen: BTreeMap<ObjectKey, (PathBuf, Object)> = BTreeMap::new();
        let mut good: BTreeMap<(PathBuf, ObjectKey), Object> = BTreeMap::new();
        for file in manifest_files(dir)? {
            let shown = file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    loaded.errors.push(format!("{shown}: {e}"));
                    self.keep_last_good(&file, &mut good);
                    continue;
                }
            };
            for (index, doc) in documents(&text).into_iter().enumerate() {
                let number = index + 1;
                let doc = match doc {
                    Ok(Value::Null) => continue,
                    Ok(doc) => doc,
                    Err(e) => {
                        loaded
                            .errors
                            .push(format!("{shown}: document {number}: invalid YAML: {e}"));
                        // The objects of a document that cannot be read cannot be
                        // named: keep every last-good object of this file not seen again.
                        self.keep_last_good(&file, &mut good);
                        continue;
                    }
                };
                for (item_index, item) in list_items(doc).into_iter().enumerate() {
                    let at = match item_index {
                        0 if !item.1 => format!("document {number}"),
                        n => format!("document {number} item {n}"),
                    };
                    let doc = item.0;
                    let label = object_label(&doc);
                    let key = key_of(&doc);
                    match decode(doc) {
                        Ok(object) => {
                            let key = object.key();
                            if let Some((other, _)) = seen.get(&key) {
                                let other = other
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                loaded.errors.push(format!("{shown}: {at} ({label}): duplicate of the object in {other}; ignored"));
                                continue;
                            }
                            good.insert((file.clone(), key.clone()), object.clone());
                            seen.insert(key, (file.clone(), object));
                        }
                        Err(message) => {
                            loaded
                                .errors
                                .push(format!("{shown}: {at} ({label}): {message}"));
                            if let Some(key) = key {
                                if let Some(previous) =
                                    self.last_good.get(&(file.clone(), key.clone()))
                                {
                                    if let std::collections::btree_map::Entry::Vacant(slot) =
                                        seen.entry(key.clone())
                                    {
                                        good.insert((file.clone(), key), previous.clone());
                                        slot.insert((file.clone(), previous.clone()));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Objects kept from an unreadable document: add those not seen otherwise.
        for ((file, key), object) in &good {
            seen.entry(key.clone())
                .or_insert_with(|| (file.clone(), object.clone()));
        }
        loaded.objects = seen.into_values().map(|(_, o)| o).collect();
        self.last_good = good;
        Ok(loaded)
    }

    fn keep_last_good(&self, file: &Path, good: &mut BTreeMap<(PathBuf, ObjectKey), Object>) {
        for ((f, key), object) in &self.last_good {
            if f == file {
                good.entry((f.clone(), key.clone()))
                    .or_insert_with(|| object.clone());
            }
        }
    }
}

/// Splits a file into YAML documents (JSON is YAML), each as JSON.
fn documents(text: &str) -> Vec<Result<Value, String>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(v) => out.push(Ok(v)),
            Err(e) => {
                out.push(Err(e.to_string()));
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        }
    }
    out
}

/// A `v1 List` expands to its items (flagged `true`); anything else is itself.
fn list_items(doc: Value) -> Vec<(Value, bool)> {
    let is_list = doc.get("kind").and_then(Value::as_str) == Some("List");
    match (is_list, doc) {
        (true, Value::Object(mut map)) => match map.remove("items") {
            Some(Value::Array(items)) => items.into_iter().map(|i| (i, true)).collect(),
            _ => Vec::new(),
        },
        (_, doc) => vec![(doc, false)],
    }
}

/// The manifest-directory source.
#[derive(Debug)]
pub struct ManifestSource {
    dir: PathBuf,
}

impl ManifestSource {
    pub fn new(dir: PathBuf) -> ManifestSource {
        ManifestSource { dir }
    }

    fn reload(&self, loader: &mut ManifestLoader, store: &StoreHandle) {
        let origin = format!("manifests:{}", self.dir.display());
        match loader.load(&self.dir) {
            Ok(loaded) => {
                for e in &loaded.errors {
                    tracing::warn!("manifest: {e}");
                }
                store.update(|s| {
                    s.replace_all(loaded.objects);
                    s.set_errors(&origin, loaded.errors);
                });
            }
            Err(e) => {
                tracing::error!("{e:#}");
                store.update(|s| s.set_errors(&origin, vec![format!("{e:#}")]));
            }
        }
    }
}

impl Source for ManifestSource {
    fn describe(&self) -> String {
        format!("manifests:{}", self.dir.display())
    }

    fn run(
        self: Box<Self>,
        store: StoreHandle,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if event.is_ok() {
                        let _ = tx.send(());
                    }
                })
                .context("start watching the manifest directory")?;
            watcher
                .watch(&self.dir, notify::RecursiveMode::NonRecursive)
                .with_context(|| format!("watch {}", self.dir.display()))?;
            let mut loader = ManifestLoader::default();
            self.reload(&mut loader, &store);
            loop {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    got = rx.recv() => {
                        if got.is_none() {
                            return Ok(());
                        }
                        tokio::time::sleep(SETTLE).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = tokio::time::sleep(RESCAN) => {}
                }
                self.reload(&mut loader, &store);
            }
        })
    }
}

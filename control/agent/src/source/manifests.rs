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
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use foldhash::{HashMap, HashMapExt};
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

/// What one object key became in a re-read: the new object, or `None` when it
/// is gone.
pub type ObjectChange = (ObjectKey, Option<Arc<Object>>);

/// The result of re-reading the directory, as [`ManifestLoader::load_changes`]
/// gives it.
#[derive(Debug)]
pub enum Reload {
    /// Every object in effect, and the errors (after a load with errors,
    /// files added or removed, a duplicate: whatever the fast path does not
    /// cover).
    Full(Loaded),
    /// The objects that changed since the previous load; no file has an
    /// error now or had one then.
    Changes(Vec<ObjectChange>),
}

/// The result of reading the directory once.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every object in effect, by key; shared with the loader's cache, so an
    /// unchanged object is never copied.
    pub objects: BTreeMap<ObjectKey, Arc<Object>>,
    /// `file: document N (Kind ns/name): field: problem`.
    pub errors: Vec<String>,
}

/// One document (or `List` item) of a file as decoded, kept until the file
/// changes: re-reading a directory then parses only the files that changed.
#[derive(Debug)]
enum ParsedItem {
    /// A document that is not YAML; the stream stops there.
    InvalidYaml { number: usize, message: String },
    Decoded {
        /// `document N` or `document N item M`.
        at: String,
        label: String,
        /// The key the document names, when readable (for its last good version).
        key: Option<ObjectKey>,
        object: Result<(ObjectKey, Arc<Object>), String>,
    },
}

/// What the loader keeps of one file between loads.
#[derive(Debug, Default)]
struct FileState {
    /// The text as last read; `None` when it could not be read.
    text: Option<String>,
    items: Vec<ParsedItem>,
    /// The file's objects in effect after the last load, when they are not
    /// simply its decoded documents (a bad document, a duplicate, an
    /// unreadable file); `None` otherwise, so a clean file costs nothing extra.
    good: Option<BTreeMap<ObjectKey, Arc<Object>>>,
    /// During one load, for a file that changed: its objects in effect
    /// before, where a bad document finds its object's last good version.
    previous: Option<BTreeMap<ObjectKey, Arc<Object>>>,
}

impl FileState {
    fn parse(text: String) -> Vec<ParsedItem> {
        let mut items = Vec::new();
        for (index, doc) in documents(&text).into_iter().enumerate() {
            let number = index + 1;
            let doc = match doc {
                Ok(Value::Null) => continue,
                Ok(doc) => doc,
                Err(message) => {
                    items.push(ParsedItem::InvalidYaml { number, message });
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
                let object = decode(doc).map(|o| (o.key(), Arc::new(o)));
                items.push(ParsedItem::Decoded {
                    at,
                    label,
                    key,
                    object,
                });
            }
        }
        items
    }

    /// The objects in effect from this file after the last load.
    fn objects_in_effect(&self) -> BTreeMap<ObjectKey, Arc<Object>> {
        if let Some(good) = &self.good {
            return good.clone();
        }
        let mut out = BTreeMap::new();
        for item in &self.items {
            if let ParsedItem::Decoded {
                object: Ok((key, object)),
                ..
            } = item
            {
                out.insert(key.clone(), object.clone());
            }
        }
        out
    }

    /// Takes in the file's text as just read; parses it only if it changed.
    fn refresh(&mut self, read: Result<String, String>) -> Result<(), String> {
        let text = match read {
            Ok(text) if self.text.as_ref() == Some(&text) => return Ok(()),
            Ok(text) => Some(text),
            Err(e) if self.text.is_none() && self.previous.is_none() && self.good.is_some() => {
                // Still unreadable: its last good objects stay where they are.
                return Err(e);
            }
            Err(e) => {
                let previous = self.objects_in_effect();
                *self = FileState {
                    previous: Some(previous),
                    ..FileState::default()
                };
                return Err(e);
            }
        };
        let previous = self.objects_in_effect();
        let mut items = FileState::parse(text.clone().unwrap_or_default());
        // An object that reads the same as before keeps its shared value, so
        // whoever caches per object (the service compiler) sees it unchanged.
        for item in &mut items {
            if let ParsedItem::Decoded {
                object: Ok((key, object)),
                ..
            } = item
            {
                if let Some(old) = previous.get(key).filter(|old| **old == *object) {
                    *object = old.clone();
                }
            }
        }
        *self = FileState {
            text,
            items,
            good: None,
            previous: Some(previous),
        };
        Ok(())
    }

    /// Where a bad document looks up its object's last good version.
    fn last_good(&self) -> Option<&BTreeMap<ObjectKey, Arc<Object>>> {
        self.previous.as_ref().or(self.good.as_ref())
    }
}

/// The objects of a document that cannot be read cannot be named: keeps every
/// last-good object of the file not seen again.
fn keep_last_good<'a>(state: &'a FileState, good: &mut BTreeMap<&'a ObjectKey, &'a Arc<Object>>) {
    for (key, object) in state.last_good().into_iter().flatten() {
        good.entry(key).or_insert(object);
    }
}

/// The directory's files as just read: paths (sorted), their states, and
/// whether each could be read.
type Refreshed = (Vec<PathBuf>, Vec<FileState>, Vec<Result<(), String>>);

/// Remembers, per file, its decoded documents (parsed again only when the
/// file's text changes) and the last good version of each of its objects.
#[derive(Debug, Default)]
pub struct ManifestLoader {
    files: HashMap<PathBuf, FileState>,
    /// The files of the last load, sorted.
    paths: Vec<PathBuf>,
    /// After a load without any error: every object's file (an index into
    /// `paths`), so a re-read can pass on only what changed.
    owners: Option<HashMap<ObjectKey, usize>>,
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
    /// Reads every manifest in `dir` once; only files whose text changed
    /// since the last call are parsed again.
    pub fn load(&mut self, dir: &Path) -> anyhow::Result<Loaded> {
        let (paths, states, reads) = self.refresh(dir)?;
        Ok(self.assemble(paths, states, reads))
    }

    /// [`ManifestLoader::load`], answering with only the objects that changed
    /// when the directory had no error before and has none now and holds the
    /// same files: an edit of one file then costs that file, not the
    /// directory.
    pub fn load_changes(&mut self, dir: &Path) -> anyhow::Result<Reload> {
        let (paths, mut states, reads) = self.refresh(dir)?;
        match self.changes(&paths, &mut states, &reads) {
            Some(changes) => {
                for (path, state) in paths.into_iter().zip(states) {
                    self.files.insert(path, state);
                }
                Ok(Reload::Changes(changes))
            }
            None => Ok(Reload::Full(self.assemble(paths, states, reads))),
        }
    }

    /// Reads every file, parsing those whose text changed. Files gone from
    /// the directory are forgotten with their objects.
    fn refresh(&mut self, dir: &Path) -> anyhow::Result<Refreshed> {
        let paths = manifest_files(dir)?;
        let mut states: Vec<FileState> = paths
            .iter()
            .map(|p| self.files.remove(p).unwrap_or_default())
            .collect();
        self.files.clear();
        // Files are read and parsed on every core: the first load of a large
        // directory is mostly YAML parsing.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = paths.len().div_ceil(workers).max(1);
        let reads: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .zip(states.chunks_mut(chunk))
                .map(|(paths, states)| {
                    scope.spawn(move || {
                        paths
                            .iter()
                            .zip(states)
                            .map(|(path, state)| {
                                state.refresh(
                                    std::fs::read_to_string(path).map_err(|e| e.to_string()),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        Ok((paths, states, reads))
    }

    /// The objects that changed, when the last load and this one are free of
    /// errors and duplicates over the same files; `None` otherwise (then the
    /// whole directory is assembled again).
    fn changes(
        &mut self,
        paths: &[PathBuf],
        states: &mut [FileState],
        reads: &[Result<(), String>],
    ) -> Option<Vec<ObjectChange>> {
        let owners = self.owners.as_mut()?;
        if paths != self.paths.as_slice() || reads.iter().any(Result::is_err) {
            return None;
        }
        // Check every re-parsed file before changing anything.
        for (index, state) in states.iter().enumerate() {
            if state.previous.is_none() {
                continue; // not re-parsed
            }
            let mut keys = HashMap::with_capacity(state.items.len());
            for item in &state.items {
                let ParsedItem::Decoded {
                    object: Ok((key, _)),
                    ..
                } = item
                else {
                    return None;
                };
                let elsewhere = owners.get(key).is_some_and(|owner| *owner != index);
                if keys.insert(key, ()).is_some() || elsewhere {
                    return None;
                }
            }
        }
        let mut changes = Vec::new();
        for (index, state) in states.iter_mut().enumerate() {
            let Some(previous) = state.previous.take() else {
                continue;
            };
            let now = state.objects_in_effect();
            for key in previous.keys().filter(|k| !now.contains_key(*k)) {
                owners.remove(key);
                changes.push((key.clone(), None));
            }
            for (key, object) in now {
                if previous
                    .get(&key)
                    .is_some_and(|old| Arc::ptr_eq(old, &object))
                {
                    continue;
                }
                owners.insert(key.clone(), index);
                changes.push((key, Some(object)));
            }
        }
        Some(changes)
    }

    /// Every object in effect and every error, from files just refreshed.
    fn assemble(
        &mut self,
        paths: Vec<PathBuf>,
        states: Vec<FileState>,
        reads: Vec<Result<(), String>>,
    ) -> Loaded {
        let mut loaded = Loaded::default();
        // Key -> (file index, object): what is in effect, first file wins.
        let mut seen: HashMap<&ObjectKey, (usize, &Arc<Object>)> = HashMap::new();
        // Per file: its objects in effect, when that is not simply its
        // decoded documents.
        let mut irregular: Vec<Option<BTreeMap<&ObjectKey, &Arc<Object>>>> =
            Vec::with_capacity(paths.len());
        for (index, ((file, state), read)) in paths.iter().zip(&states).zip(&reads).enumerate() {
            let shown = file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let mut good: BTreeMap<&ObjectKey, &Arc<Object>> = BTreeMap::new();
            let mut clean = true;
            if let Err(e) = read {
                loaded.errors.push(format!("{shown}: {e}"));
                keep_last_good(state, &mut good);
                irregular.push(Some(good));
                continue;
            }
            for item in &state.items {
                let (at, label, key, object) = match item {
                    ParsedItem::InvalidYaml { number, message } => {
                        loaded.errors.push(format!(
                            "{shown}: document {number}: invalid YAML: {message}"
                        ));
                        keep_last_good(state, &mut good);
                        clean = false;
                        continue;
                    }
                    ParsedItem::Decoded {
                        at,
                        label,
                        key,
                        object,
                    } => (at, label, key, object),
                };
                match object {
                    Ok((key, object)) => {
                        if let Some((other, _)) = seen.get(key) {
                            let other = paths[*other]
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            loaded.errors.push(format!("{shown}: {at} ({label}): duplicate of the object in {other}; ignored"));
                            clean = false;
                            continue;
                        }
                        good.insert(key, object);
                        seen.insert(key, (index, object));
                    }
                    Err(message) => {
                        loaded
                            .errors
                            .push(format!("{shown}: {at} ({label}): {message}"));
                        clean = false;
                        let previous = key
                            .as_ref()
                            .and_then(|key| state.last_good().and_then(|g| g.get_key_value(key)));
                        if let Some((key, previous)) = previous {
                            if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(key)
                            {
                                good.insert(key, previous);
                                slot.insert((index, previous));
                            }
                        }
                    }
                }
            }
            irregular.push((!clean).then_some(good));
        }
        // Objects kept from an unreadable document: add those not seen otherwise.
        for (index, good) in irregular.iter().enumerate() {
            for (key, object) in good.iter().flatten() {
                seen.entry(key).or_insert((index, object));
            }
        }
        let clean = loaded.errors.is_empty() && irregular.iter().all(Option::is_none);
        self.owners = clean.then(|| {
            seen.iter()
                .map(|(key, (index, _))| ((*key).clone(), *index))
                .collect()
        });
        self.paths = paths.clone();
        loaded.objects = seen
            .into_iter()
            .map(|(key, (_, object))| (key.clone(), object.clone()))
            .collect();
        let goods: Vec<Option<BTreeMap<ObjectKey, Arc<Object>>>> = irregular
            .into_iter()
            .map(|g| g.map(|g| g.into_iter().map(|(k, o)| (k.clone(), o.clone())).collect()))
            .collect();
        for ((path, mut state), good) in paths.into_iter().zip(states).zip(goods) {
            state.good = good;
            state.previous = None;
            self.files.insert(path, state);
        }
        loaded
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
        match loader.load_changes(&self.dir) {
            Ok(Reload::Changes(changes)) => {
                // Nothing changed and nothing to clear (an unreadable
                // directory's error may still be there): nobody is woken.
                let settled = store.read(|s| s.all_synced() && s.errors_of(&origin).is_empty());
                if !changes.is_empty() || !settled {
                    store.update(|s| {
                        s.apply(changes);
                        s.set_errors(&origin, Vec::new());
                    });
                }
            }
            Ok(Reload::Full(loaded)) => {
                for e in &loaded.errors {
                    tracing::warn!("manifest: {e}");
                }
                // A rescan that found nothing new wakes nobody: every
                // recompute at 10k services costs real CPU.
                let unchanged = store.read(|s| {
                    s.errors_of(&origin) == loaded.errors.as_slice()
                        && s.all_synced()
                        && s.same_objects(&loaded.objects)
                });
                if !unchanged {
                    store.update(|s| {
                        s.replace_all(loaded.objects);
                        s.set_errors(&origin, loaded.errors);
                    });
                }
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

//! The manifest-directory source: edits, deletions and bad input, both on the
//! loader and through the watching source with a real directory.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_agent::objects::{Kind, Object};
use sluice_agent::source::manifests::{ManifestLoader, ManifestSource, Reload};
use sluice_agent::source::Source;
use sluice_agent::store::{Store, StoreHandle};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-manifests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pod(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\n\
         spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

fn app_of(store: &Store, name: &str) -> Option<String> {
    match store.get(Kind::Pod, "default", name) {
        Some(Object::Pod(p)) => p.metadata.labels.as_ref()?.get("app").cloned(),
        _ => None,
    }
}

fn load(loader: &mut ManifestLoader, dir: &Path) -> Store {
    let loaded = loader.load(dir).unwrap();
    let mut store = Store::default();
    store.replace_all(loaded.objects);
    store.set_errors("m", loaded.errors);
    store
}

#[test]
fn a_bad_edit_keeps_the_last_good_object_and_names_file_object_and_field() {
    let dir = temp_dir("edit");
    std::fs::write(
        dir.join("a.yaml"),
        format!("{}---\n{}", pod("one", "v1"), pod("two", "v1")),
    )
    .unwrap();
    let mut loader = ManifestLoader::default();
    let store = load(&mut loader, &dir);
    assert_eq!(app_of(&store, "one").as_deref(), Some("v1"));
    assert!(store.errors().is_empty(), "{:?}", store.errors());

    // Edit: "one" gets an invalid field, "two" a valid change.
    let broken = pod("one", "v2").replace(
        "containers: [{name: c, image: busybox}]",
        "containers: [{name: c, image: busybox, ports: [{containerPort: x}]}]",
    );
    std::fs::write(
        dir.join("a.yaml"),
        format!("{broken}---\n{}", pod("two", "v2")),
    )
    .unwrap();
    let store = load(&mut loader, &dir);
    assert_eq!(
        app_of(&store, "one").as_deref(),
        Some("v1"),
        "last good version kept"
    );
    assert_eq!(
        app_of(&store, "two").as_deref(),
        Some("v2"),
        "the rest applies"
    );
    let errors = store.errors().join("\n");
    assert!(
        errors.contains(
            "a.yaml: document 1 (Pod default/one): spec.containers[0].ports[0].containerPort:"
        ),
        "{errors}"
    );

    // Broken YAML in the whole file: both objects stay as they were.
    std::fs::write(dir.join("a.yaml"), "apiVersion: v1\nkind: [Pod\n").unwrap();
    let store = load(&mut loader, &dir);
    assert_eq!(app_of(&store, "one").as_deref(), Some("v1"));
    assert_eq!(app_of(&store, "two").as_deref(), Some("v2"));
    assert!(store
        .errors()
        .join("\n")
        .contains("a.yaml: document 1: invalid YAML"));

    // Deleting the file deletes its objects.
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    let store = load(&mut loader, &dir);
    assert!(store.is_empty());
    assert!(store.errors().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Only files whose text changed are parsed again; an unchanged file keeps
/// its errors, the last good versions of its bad objects and its duplicates
/// exactly as when it was last parsed.
#[test]
fn unchanged_files_keep_their_errors_and_last_good_objects_across_loads() {
    let dir = temp_dir("cache");
    std::fs::write(dir.join("a.yaml"), pod("one", "v1")).unwrap();
    std::fs::write(dir.join("b.yaml"), pod("three", "v1")).unwrap();
    let mut loader = ManifestLoader::default();
    let store = load(&mut loader, &dir);
    assert_eq!(app_of(&store, "one").as_deref(), Some("v1"));

    // a.yaml goes bad; then only b.yaml changes, twice, with a.yaml untouched.
    let broken = pod("one", "v2").replace(
        "image: busybox",
        "image: busybox, ports: [{containerPort: x}]",
    );
    std::fs::write(dir.join("a.yaml"), &broken).unwrap();
    for round in ["v2", "v3"] {
        let _ = load(&mut loader, &dir);
        std::fs::write(dir.join("b.yaml"), pod("three", round)).unwrap();
        let store = load(&mut loader, &dir);
        assert_eq!(app_of(&store, "one").as_deref(), Some("v1"), "{round}");
        assert_eq!(app_of(&store, "three").as_deref(), Some(round));
        let errors = store.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(
                "a.yaml: document 1 (Pod default/one): spec.containers[0].ports[0].containerPort:"
            ),
            "{errors:?}"
        );
    }

    // A duplicate in a later file is reported on every load, also unchanged.
    std::fs::write(dir.join("c.yaml"), pod("three", "dup")).unwrap();
    for _ in 0..2 {
        let store = load(&mut loader, &dir);
        assert_eq!(app_of(&store, "three").as_deref(), Some("v3"));
        assert!(store.errors().iter().any(|e| e.contains("c.yaml: document 1 (Pod default/three): duplicate of the object in b.yaml; ignored")), "{:?}", store.errors());
    }
    // b.yaml stops defining it: the copy in c.yaml takes over.
    std::fs::write(dir.join("b.yaml"), pod("four", "v1")).unwrap();
    let store = load(&mut loader, &dir);
    assert_eq!(app_of(&store, "three").as_deref(), Some("dup"));

    // Invalid YAML keeps a.yaml's objects, also on the loads after it.
    std::fs::write(dir.join("a.yaml"), pod("one", "v4")).unwrap();
    assert_eq!(
        app_of(&load(&mut loader, &dir), "one").as_deref(),
        Some("v4")
    );
    std::fs::write(dir.join("a.yaml"), "apiVersion: v1\nkind: [Pod\n").unwrap();
    for _ in 0..2 {
        let store = load(&mut loader, &dir);
        assert_eq!(app_of(&store, "one").as_deref(), Some("v4"));
        assert!(store
            .errors()
            .join("\n")
            .contains("a.yaml: document 1: invalid YAML"));
    }
    // Fixed: the new version applies and the error is gone.
    std::fs::write(dir.join("a.yaml"), pod("one", "v5")).unwrap();
    let store = load(&mut loader, &dir);
    assert_eq!(app_of(&store, "one").as_deref(), Some("v5"));
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every object of `store` by key, for comparing two stores.
fn objects_of(store: &Store) -> Vec<(String, Object)> {
    Kind::ALL
        .iter()
        .flat_map(|&kind| store.of_kind_shared(kind))
        .map(|(key, object)| (key.to_string(), (**object).clone()))
        .collect()
}

fn shared_pod(store: &Store, name: &str) -> std::sync::Arc<Object> {
    store
        .of_kind_shared(Kind::Pod)
        .find(|(key, _)| key.name == name)
        .map(|(_, object)| object.clone())
        .unwrap()
}

/// Re-reads passed on as changes only give the store what a full load of the
/// same history gives, and fall back to a full load where changes alone
/// cannot say it (errors, duplicates, files added or removed).
#[test]
fn changes_only_reloads_give_what_full_loads_give() {
    let dir = temp_dir("changes");
    let mut full = ManifestLoader::default();
    let mut incremental = ManifestLoader::default();
    let mut store = Store::default();
    // Applies one directory state both ways; whether it came as changes.
    let mut step = |store: &mut Store, what: &str| -> bool {
        let expected = load(&mut full, &dir);
        let as_changes = match incremental.load_changes(&dir).unwrap() {
            Reload::Changes(changes) => {
                store.apply(changes);
                true
            }
            Reload::Full(loaded) => {
                store.replace_all(loaded.objects);
                store.set_errors("m", loaded.errors);
                false
            }
        };
        assert_eq!(objects_of(store), objects_of(&expected), "{what}");
        assert_eq!(store.errors(), expected.errors(), "{what}");
        as_changes
    };
    let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();

    write(
        "a.yaml",
        format!("{}---\n{}", pod("one", "v1"), pod("two", "v1")),
    );
    write("b.yaml", pod("three", "v1"));
    assert!(!step(&mut store, "first load"));
    let one = shared_pod(&store, "one");
    write(
        "a.yaml",
        format!("{}---\n{}", pod("one", "v1"), pod("two", "v2")),
    );
    assert!(step(&mut store, "edit of two"));
    // "one" reads the same: it keeps its shared value.
    assert!(std::sync::Arc::ptr_eq(&one, &shared_pod(&store, "one")));
    write(
        "a.yaml",
        format!("{}---\n{}", pod("one", "v1"), pod("five", "v1")),
    );
    assert!(step(&mut store, "two replaced by five"));
    assert!(step(&mut store, "nothing changed"));
    write(
        "b.yaml",
        format!("{}---\n{}", pod("three", "v1"), pod("one", "dup")),
    );
    assert!(!step(&mut store, "duplicate of one"));
    write("b.yaml", pod("three", "v2"));
    assert!(!step(&mut store, "duplicate gone"));
    write("b.yaml", pod("three", "v3"));
    assert!(step(&mut store, "edit after a clean load"));
    write(
        "a.yaml",
        pod("one", "v1").replace(
            "image: busybox",
            "image: busybox, ports: [{containerPort: x}]",
        ),
    );
    assert!(!step(&mut store, "bad document"));
    write("a.yaml", pod("one", "v6"));
    assert!(!step(&mut store, "fixed"));
    write(
        "a.yaml",
        format!("{}---\n{}", pod("one", "v6"), pod("three", "moved")),
    );
    write("b.yaml", pod("seven", "v1"));
    assert!(!step(&mut store, "three moves to a.yaml"));
    write("c.yaml", pod("eight", "v1"));
    assert!(!step(&mut store, "file added"));
    std::fs::remove_file(dir.join("c.yaml")).unwrap();
    assert!(!step(&mut store, "file removed"));
    write("b.yaml", pod("seven", "v2"));
    assert!(step(&mut store, "edit after the files settled"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn wait_for(store: &StoreHandle, what: &str, check: impl Fn(&Store) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check(&store.snapshot()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "timed out waiting for {what}; store errors: {:?}",
        store.snapshot().errors()
    );
}

#[test]
fn the_source_follows_additions_edits_and_deletions() {
    let dir = temp_dir("watch");
    let store = StoreHandle::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let source = Box::new(ManifestSource::new(dir.clone()));
    assert!(source.describe().starts_with("manifests:"));
    let task = runtime.spawn(source.run(store.clone(), stop_rx));

    wait_for(&store, "the first listing", |s| s.all_synced());
    std::fs::write(dir.join("p.yaml"), pod("web", "a")).unwrap();
    wait_for(&store, "an added file", |s| {
        app_of(s, "web").as_deref() == Some("a")
    });
    std::fs::write(dir.join("p.yaml"), pod("web", "b")).unwrap();
    wait_for(&store, "an edit", |s| {
        app_of(s, "web").as_deref() == Some("b")
    });
    std::fs::write(
        dir.join("q.yml"),
        "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n",
    )
    .unwrap();
    wait_for(&store, "an error for an unknown kind", |s| {
        s.errors()
            .iter()
            .any(|e| e.contains("q.yml: document 1 (Gizmo g): kind: unknown kind \"Gizmo\""))
    });
    std::fs::remove_file(dir.join("p.yaml")).unwrap();
    wait_for(&store, "a deletion", |s| app_of(s, "web").is_none());

    stop_tx.send(true).unwrap();
    runtime.block_on(task).unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

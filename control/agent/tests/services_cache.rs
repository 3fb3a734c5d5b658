//! The service compiler's cache: compiling through a cache that saw earlier
//! versions of the store gives exactly what compiling from scratch gives,
//! after an EndpointSlice edit, a Pod edit or a new Pod (selector-derived
//! endpoints), a removed Service and a change of the node's addresses.

use std::net::IpAddr;
use std::path::Path;

use serde_json::json;
use sluice_agent::objects::Kind;
use sluice_agent::services::{compile, compile_cached, CompileCache, Compiled, NodeView};
use sluice_agent::source::manifests::{decode, ManifestLoader};
use sluice_agent::store::Store;

/// The golden `services` case: Services with slices, selector-derived
/// endpoints, hostPorts and frontend conflicts.
fn golden_store() -> Store {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/services/manifests");
    let loaded = ManifestLoader::default().load(&dir).unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut store = Store::default();
    store.replace_all(loaded.objects);
    store
}

/// Compiles through `cache` and checks the result against a fresh compilation.
fn check(store: &Store, node: NodeView<'_>, cache: &mut CompileCache) -> Compiled {
    let cached = compile_cached(store, node, cache);
    assert_eq!(cached, compile(store, node));
    cached
}

fn upsert(store: &mut Store, doc: serde_json::Value) {
    store.upsert(decode(doc).unwrap());
}

#[test]
fn cached_compilation_equals_compiling_from_scratch() {
    let config = Default::default();
    let addrs: Vec<IpAddr> = vec![
        "192.168.254.1".parse().unwrap(),
        "fd00:254::1".parse().unwrap(),
    ];
    let node = NodeView {
        node_name: "node-a",
        addrs: &addrs,
        config: &config,
    };
    let mut store = golden_store();
    let mut cache = CompileCache::default();
    let first = check(&store, node, &mut cache);
    assert!(first.drafts.len() > 5, "{first:?}");
    assert_eq!(check(&store, node, &mut cache), first);

    // An EndpointSlice edit: web's IPv4 backend moves.
    upsert(
        &mut store,
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-v4", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.200.0.99"], "nodeName": "node-a"}],
        }),
    );
    let edited = check(&store, node, &mut cache);
    assert_ne!(edited, first);

    // A Pod selected by api (no EndpointSlice) changes its address, and a new
    // one appears: api's selector-derived backends follow both.
    upsert(
        &mut store,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-1", "namespace": "default", "labels": {"app": "api"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x",
                     "ports": [{"name": "web", "containerPort": 8000}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.200.0.71"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }),
    );
    let moved = check(&store, node, &mut cache);
    assert_ne!(moved, edited);
    upsert(
        &mut store,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-9", "namespace": "default", "labels": {"app": "api"}},
            "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "x",
                     "ports": [{"name": "web", "containerPort": 8000}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.201.0.79"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }),
    );
    let added = check(&store, node, &mut cache);
    assert_ne!(added, moved);

    // A Service goes away.
    let service_key = store
        .of_kind_shared(Kind::Service)
        .next()
        .map(|(key, _)| key.clone())
        .unwrap();
    store.remove(&service_key);
    let removed = check(&store, node, &mut cache);
    assert_ne!(removed, added);

    // The node's addresses change: NodePorts and hostPorts move.
    let fewer = &addrs[..1];
    let other_node = NodeView {
        addrs: fewer,
        ..node
    };
    assert_ne!(check(&store, other_node, &mut cache), removed);
}

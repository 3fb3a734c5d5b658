//! Tests of the Kubernetes source (`KubeSource`) against a TEST DOUBLE of the
//! Kubernetes API: this is a test double of the API server, not a real one; no
//! real API server can run on this machine. The double
//! (`support/kube_api_double.rs`) serves LIST and WATCH for the eight watched
//! resources over plain HTTP on a loopback port, and lets each test change
//! objects while the watch is open, send bookmarks, force `410 Gone` and drop
//! connections. What it cannot show is how a real API server's quirks
//! (pagination, watch cache, RBAC, TLS) interact with the source.

#[path = "support/kube_api_double.rs"]
mod kube_api_double;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_api_double::{ApiDouble, Close, Gone};
use serde_json::{json, Value};
use sluice_agent::objects::{Kind, Object};
use sluice_agent::source::kube::KubeSource;
use sluice_agent::source::Source;
use sluice_agent::store::{Store, StoreHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// The source running against the double, with a record of every error the
/// store has shown (errors that come and go would otherwise be missed).
struct Running {
    store: StoreHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    seen_errors: Arc<Mutex<BTreeSet<String>>>,
    recorder: JoinHandle<()>,
}

impl Running {
    fn start(source: KubeSource) -> Running {
        let store = StoreHandle::new();
        let (stop, stop_rx) = watch::channel(false);
        let seen_errors = Arc::new(Mutex::new(BTreeSet::new()));
        let recorder = {
            let store = store.clone();
            let seen = seen_errors.clone();
            let mut changes = store.subscribe();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let errors = store.snapshot().errors();
                    seen.lock().unwrap().extend(errors);
                }
            })
        };
        let task = tokio::spawn(Box::new(source).run(store.clone(), stop_rx));
        Running {
            store,
            stop,
            task,
            seen_errors,
            recorder,
        }
    }

    /// Waits until `check` holds for the store; fails the test after [`WAIT`].
    async fn until(&self, what: &str, check: impl Fn(&Store) -> bool) -> std::sync::Arc<Store> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let store = self.store.snapshot();
            if check(&store) {
                return store;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for: {what}\nstore: {}\nerrors: {:#?}",
                    summary(&store),
                    store.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn seen_errors(&self) -> Vec<String> {
        self.seen_errors.lock().unwrap().iter().cloned().collect()
    }

    /// Stops the source and checks that `run` ends, and ends well.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run ends when stop fires")
            .expect("run does not panic");
        result.expect("run returns Ok on stop");
        self.recorder.abort();
    }
}

/// Waits until `check` holds for the double; fails the test after [`WAIT`].
async fn until_double(what: &str, double: &ApiDouble, check: impl Fn(&ApiDouble) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(double) {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `Kind ns/name` of every object, in store order.
fn summary(store: &Store) -> String {
    Kind::ALL
        .iter()
        .flat_map(|&kind| store.of_kind(kind).map(|o| o.key().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names (`ns/name` or `name`) of the objects of one kind.
fn names(store: &Store, kind: Kind) -> Vec<String> {
    store
        .of_kind(kind)
        .map(|o| {
            let key = o.key();
            if key.namespace.is_empty() {
                key.name
            } else {
                format!("{}/{}", key.namespace, key.name)
            }
        })
        .collect()
}

fn has_pod(store: &Store, namespace: &str, name: &str) -> bool {
    store.get(Kind::Pod, namespace, name).is_some()
}

fn pod_ip(store: &Store, namespace: &str, name: &str) -> Option<String> {
    match store.get(Kind::Pod, namespace, name)? {
        Object::Pod(pod) => pod.status.as_ref()?.pod_ip.clone(),
        _ => None,
    }
}

fn pod(namespace: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "labels": {"app": name}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "main", "image": "busybox",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A pod whose `containerPort` is a string: not a valid `Pod`.
fn bad_pod(namespace: &str, name: &str) -> Value {
    let mut pod = pod(namespace, name, "10.0.0.99");
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
    pod
}

/// One or two objects of every kind.
fn seed(double: &ApiDouble) {
    double.apply(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    );
    double.apply(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": {"team": "shop"}}}),
    );
    double.apply(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
               "spec": {"podCIDR": "10.0.0.0/24"},
               "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}}),
    );
    double.apply("pods", pod("default", "web-1", "10.0.0.11"));
    double.apply("pods", pod("shop", "cart-1", "10.0.0.12"));
    double.apply(
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web-1"},
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                   "targetPort": 80}]}}),
    );
    double.apply(
        "endpointslices",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-abc", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.11"], "conditions": {"ready": true}}],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
    );
    double.apply(
        "networkpolicies",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-all", "namespace": "shop"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    );
    double.apply(
        "ciliumnetworkpolicies",
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "allow-web", "namespace": "default"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "web-1"}},
                        "ingress": [{"fromEndpoints": [{}]}]}}),
    );
    double.apply(
        "ciliumclusterwidenetworkpolicies",
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "host-fw"},
               "specs": [{"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]}]}),
    );
}

async fn started(double: &ApiDouble) -> Running {
    let running = Running::start(KubeSource::from_client(double.client()));
    running.until("every kind synced", |s| s.all_synced()).await;
    // Every kind is past its listing and watching.
    for (plural, ..) in kube_api_double::RESOURCES {
        until_double(&format!("{plural} watched"), double, |d| {
            d.open_watches(plural) == 1
        })
        .await;
    }
    running
}

/// (1) The first listing of every kind lands in the store and every kind is
/// marked synced; the watches start from the listings' resourceVersion. Also
/// exercises the kubeconfig-file constructor.
#[tokio::test]
async fn initial_list_of_every_kind_lands_and_syncs() {
    let double = ApiDouble::start().await;
    seed(&double);
    let list_rv = double.revision().to_string();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, double.kubeconfig()).unwrap();
    let source = KubeSource::from_kubeconfig(&kubeconfig).await.unwrap();
    assert_eq!(source.describe(), "kubernetes");

    let running = Running::start(source);
    let store = running.until("every kind synced", |s| s.all_synced()).await;

    assert_eq!(names(&store, Kind::Namespace), ["default", "shop"]);
    assert_eq!(names(&store, Kind::Node), ["node-a"]);
    assert_eq!(names(&store, Kind::Pod), ["default/web-1", "shop/cart-1"]);
    assert_eq!(names(&store, Kind::Service), ["default/web"]);
    assert_eq!(names(&store, Kind::EndpointSlice), ["default/web-abc"]);
    assert_eq!(names(&store, Kind::NetworkPolicy), ["shop/deny-all"]);
    assert_eq!(
        names(&store, Kind::CiliumNetworkPolicy),
        ["default/allow-web"]
    );
    assert_eq!(
        names(&store, Kind::CiliumClusterwideNetworkPolicy),
        ["host-fw"]
    );
    assert_eq!(store.len(), 10);
    assert!(store.errors().is_empty(), "{:?}", store.errors());

    // Decoded into the typed objects, fields intact.
    assert_eq!(
        pod_ip(&store, "default", "web-1").as_deref(),
        Some("10.0.0.11")
    );
    let Some(Object::Service(service)) = store.get(Kind::Service, "default", "web") else {
        panic!("service missing");
    };
    assert_eq!(
        service.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.10")
    );
    let Some(Object::CiliumNetworkPolicy(policy)) =
        store.get(Kind::CiliumNetworkPolicy, "default", "allow-web")
    else {
        panic!("policy missing");
    };
    assert_eq!(
        policy.rest["spec"]["endpointSelector"]["matchLabels"]["app"],
        "web-1"
    );
    let Some(Object::CiliumClusterwideNetworkPolicy(policy)) =
        store.get(Kind::CiliumClusterwideNetworkPolicy, "", "host-fw")
    else {
        panic!("clusterwide policy missing");
    };
    assert!(policy.rest["specs"].is_array());

    // One LIST then one WATCH per resource, from the LIST's resourceVersion,
    // with bookmarks asked for.
    for (plural, ..) in kube_api_double::RESOURCES {
        until_double(&format!("{plural} watched"), &double, |d| {
            d.open_watches(plural) == 1
        })
        .await;
        assert_eq!(double.lists(plural), 1, "{plural}");
        let watches = double.watches(plural);
        assert_eq!(watches.len(), 1, "{plural}");
        assert_eq!(
            watches[0].resource_version.as_deref(),
            Some(&*list_rv),
            "{plural}"
        );
        assert!(watches[0].bookmarks, "{plural}: {}", watches[0].query);
    }
    running.stop().await;
}

/// (2) Adds, modifies and deletes while the watch is open show up in the
/// store, through the watch (no re-list).
#[tokio::test]
async fn add_modify_delete_during_watch() {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;

    double.apply("pods", pod("default", "web-2", "10.0.0.21"));
    double.apply("pods", pod("default", "web-1", "10.0.0.111"));
    double.delete("pods", "shop", "cart-1");
    double.delete("namespaces", "", "shop");
    double.apply(
        "ciliumclusterwidenetworkpolicies",
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "second"}, "spec": {"nodeSelector": {}}}),
    );
    double.delete("ciliumnetworkpolicies", "default", "allow-web");

    let store = running
        .until("watch events applied", |s| {
            has_pod(s, "default", "web-2")
                && pod_ip(s, "default", "web-1").as_deref() == Some("10.0.0.111")
                && !has_pod(s, "shop", "cart-1")
                && names(s, Kind::Namespace) == ["default"]
                && names(s, Kind::CiliumClusterwideNetworkPolicy) == ["host-fw", "second"]
                && names(s, Kind::CiliumNetworkPolicy).is_empty()
        })
        .await;
    assert_eq!(names(&store, Kind::Pod), ["default/web-1", "default/web-2"]);
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    for plural in ["pods", "namespaces", "ciliumnetworkpolicies"] {
        assert_eq!(double.lists(plural), 1, "{plural} was re-listed");
        assert_eq!(double.watches(plural).len(), 1, "{plural} watch restarted");
    }
    running.stop().await;
}

/// (3) Bookmarks are accepted: after a bookmark the next watch resumes from
/// the bookmark's resourceVersion (not from the last object's), without a
/// re-list, and events after it still arrive.
#[tokio::test]
async fn bookmark_moves_the_resume_point() {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;
    let listed_at = double.watches("pods")[0].resource_version.clone().unwrap();

    let bookmark = double.bookmark("pods");
    assert!(bookmark.to_string() != listed_at);
    double.drop_watches("pods", Close::Clean);
    until_double("pods watch resumed", &double, |d| {
        d.watches("pods").len() == 2
    })
    .await;

    let resumed = &double.watches("pods")[1];
    assert_eq!(
        resumed.resource_version.as_deref(),
        Some(&*bookmark.to_string()),
        "the watch must resume from the bookmark"
    );
    assert!(resumed.bookmarks);
    assert_eq!(
        double.lists("pods"),
        1,
        "a bookmark must not cause a re-list"
    );

    // The bookmark was not taken for an object, and the resumed watch works.
    double.apply("pods", pod("default", "after-bookmark", "10.0.0.30"));
    let store = running
        .until("pod after bookmark", |s| {
            has_pod(s, "default", "after-bookmark")
        })
        .await;
    assert_eq!(store.of_kind(Kind::Pod).count(), 3);
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    running.stop().await;
}

/// The scenario of (4): while the source is not told, `web-1` is deleted and
/// `new-1` is created, then history is compacted so the watch cannot resume.
async fn gone_forces_relist(how: Gone, on_open_streams: bool) {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;
    let last_seen = double.watches("pods")[0].resource_version.clone().unwrap();

    double.pause("pods");
    double.delete("pods", "default", "web-1");
    double.apply("pods", pod("default", "new-1", "10.0.0.41"));
    double.expire("pods", how, on_open_streams);

    let store = running
        .until("re-listed after 410", |s| {
            !has_pod(s, "default", "web-1") && has_pod(s, "default", "new-1")
        })
        .await;
    assert_eq!(names(&store, Kind::Pod), ["default/new-1", "shop/cart-1"]);
    assert!(store.is_synced(Kind::Pod));
    assert_eq!(double.lists("pods"), 2, "exactly one re-list");

    let watches = double.watches("pods");
    if !on_open_streams {
        // The resume from the stale resourceVersion is what met the 410.
        assert_eq!(watches[1].resource_version.as_deref(), Some(&*last_seen));
    }
    // The watch after the re-list starts from the new listing.
    let relisted_at = double.revision().to_string();
    until_double("watch after re-list", &double, |d| {
        d.watches("pods")
            .last()
            .is_some_and(|w| w.resource_version.as_deref() == Some(&*relisted_at))
            && d.open_watches("pods") == 1
    })
    .await;

    // The 410 was reported while it lasted, and cleared by the re-list.
    let seen = running.seen_errors();
    assert!(
        seen.iter()
            .any(|e| e.starts_with("kubernetes/Pod: ") && e.contains("too old resource version")),
        "{seen:?}"
    );
    let store = running
        .until("errors cleared", |s| s.errors().is_empty())
        .await;

    // Live events flow again after the re-list.
    double.apply("pods", pod("default", "new-2", "10.0.0.42"));
    running
        .until("pod after re-list", |s| has_pod(s, "default", "new-2"))
        .await;
    drop(store);
    running.stop().await;
}

/// (4a) `410 Gone` as the HTTP status of the resumed watch request. kube's
/// watcher alone would retry the stale resourceVersion forever; the source
/// must re-list.
#[tokio::test]
async fn http_410_on_watch_request_relists() {
    gone_forces_relist(Gone::HttpStatus, false).await;
}

/// (4b) `410 Gone` as an `ERROR` watch event on the resumed watch, the way a
/// real API server answers a compacted resourceVersion.
#[tokio::test]
async fn error_event_410_on_resumed_watch_relists() {
    gone_forces_relist(Gone::ErrorEvent, false).await;
}

/// (4c) `410 Gone` as an `ERROR` watch event on the watch already open.
#[tokio::test]
async fn error_event_410_on_open_watch_relists() {
    gone_forces_relist(Gone::ErrorEvent, true).await;
}

/// (5) The double ends the watch stream: the source reconnects, resuming from
/// the last resourceVersion it saw (no re-list), and gets what happened
/// meanwhile.
#[tokio::test]
async fn dropped_watch_resumes_from_last_seen_version() {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;

    // Move the source's resume point past the listing with a live event.
    let last_seen = double.apply("pods", pod("default", "web-3", "10.0.0.13"));
    running
        .until("live pod", |s| has_pod(s, "default", "web-3"))
        .await;

    double.pause("pods");
    double.apply("pods", pod("default", "while-away", "10.0.0.51"));
    double.delete("pods", "shop", "cart-1");
    double.drop_watches("pods", Close::Clean);

    let store = running
        .until("events from while away", |s| {
            has_pod(s, "default", "while-away") && !has_pod(s, "shop", "cart-1")
        })
        .await;
    assert_eq!(
        names(&store, Kind::Pod),
        ["default/web-1", "default/web-3", "default/while-away"]
    );
    let watches = double.watches("pods");
    assert_eq!(watches.len(), 2);
    assert_eq!(
        watches[1].resource_version.as_deref(),
        Some(&*last_seen.to_string()),
        "resume from the last event seen"
    );
    assert_eq!(
        double.lists("pods"),
        1,
        "a clean reconnect must not re-list"
    );
    assert!(
        running.seen_errors().is_empty(),
        "{:?}",
        running.seen_errors()
    );
    running.stop().await;
}

/// (5b) The connection is torn down in the middle of the chunked body: kube
/// treats the cut as a resumable end of stream, so the source reconnects from
/// the last resourceVersion it saw, without a re-list or an error, and gets
/// what happened meanwhile.
#[tokio::test]
async fn abruptly_dropped_connection_resumes() {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;
    let last_seen = double.watches("pods")[0].resource_version.clone().unwrap();

    double.pause("pods");
    double.apply("pods", pod("default", "while-away", "10.0.0.51"));
    double.delete("pods", "default", "web-1");
    double.drop_watches("pods", Close::Abrupt);

    running
        .until("events from while away", |s| {
            has_pod(s, "default", "while-away") && !has_pod(s, "default", "web-1")
        })
        .await;
    until_double("pods watched again", &double, |d| {
        d.open_watches("pods") == 1
    })
    .await;
    let watches = double.watches("pods");
    assert_eq!(watches.len(), 2);
    assert_eq!(watches[1].resource_version.as_deref(), Some(&*last_seen));
    assert_eq!(double.lists("pods"), 1);
    assert!(
        running.seen_errors().is_empty(),
        "{:?}",
        running.seen_errors()
    );

    double.apply("pods", pod("default", "later", "10.0.0.52"));
    running
        .until("live pod after reconnect", |s| {
            has_pod(s, "default", "later")
        })
        .await;
    running.stop().await;
}

/// (6) An object that does not decode yields an error naming the object and
/// the field; the rest still applies. In a listing it is skipped; as a watch
/// event the previous good version stays; fixing or deleting it clears it.
#[tokio::test]
async fn undecodable_object_is_named_and_skipped() {
    let double = ApiDouble::start().await;
    seed(&double);
    double.apply("pods", bad_pod("default", "broken"));
    let running = started(&double).await;

    let store = running.store.snapshot();
    assert_eq!(names(&store, Kind::Pod), ["default/web-1", "shop/cart-1"]);
    assert!(store.is_synced(Kind::Pod));
    let errors = store.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("kubernetes/Pod: Pod default/broken: ")
            && errors[0].contains("spec.containers[0].ports[0].containerPort")
            && errors[0].contains("eighty"),
        "{errors:?}"
    );

    // A good object turning bad during the watch: error, old version kept,
    // other events still apply.
    double.apply("pods", bad_pod("shop", "cart-1"));
    double.apply("pods", pod("default", "web-2", "10.0.0.21"));
    let store = running
        .until("second bad object reported", |s| {
            s.errors().len() == 2 && has_pod(s, "default", "web-2")
        })
        .await;
    assert!(
        store
            .errors()
            .iter()
            .any(|e| e.starts_with("kubernetes/Pod: Pod shop/cart-1: ")
                && e.contains("spec.containers[0].ports[0].containerPort")),
        "{:?}",
        store.errors()
    );
    assert_eq!(
        pod_ip(&store, "shop", "cart-1").as_deref(),
        Some("10.0.0.12")
    );

    // Fixed and deleted: both errors go.
    double.apply("pods", pod("default", "broken", "10.0.0.60"));
    double.delete("pods", "shop", "cart-1");
    let store = running
        .until("errors cleared", |s| {
            s.errors().is_empty() && has_pod(s, "default", "broken")
        })
        .await;
    assert_eq!(
        names(&store, Kind::Pod),
        ["default/broken", "default/web-1", "default/web-2"]
    );
    running.stop().await;
}

/// Cilium CRDs not installed (404 on list) block nothing: both kinds are
/// synced empty with an error saying so; installing the CRD later is picked
/// up and clears the error.
#[tokio::test]
async fn missing_cilium_crds_sync_empty_and_are_retried() {
    let double = ApiDouble::start().await;
    seed(&double);
    double.set_served("ciliumnetworkpolicies", false);
    double.set_served("ciliumclusterwidenetworkpolicies", false);

    let running = Running::start(KubeSource::from_client(double.client()));
    let store = running.until("every kind synced", |s| s.all_synced()).await;
    assert!(names(&store, Kind::CiliumNetworkPolicy).is_empty());
    assert!(names(&store, Kind::CiliumClusterwideNetworkPolicy).is_empty());
    assert_eq!(names(&store, Kind::Pod), ["default/web-1", "shop/cart-1"]);
    let errors = running
        .until("both CRD errors", |s| s.errors().len() == 2)
        .await
        .errors();
    assert!(
        errors[0].starts_with("kubernetes/CiliumClusterwideNetworkPolicy: cilium.io/v2/ciliumclusterwidenetworkpolicies is not served")
            && errors[0].contains("CRD not installed"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(
            "kubernetes/CiliumNetworkPolicy: cilium.io/v2/ciliumnetworkpolicies is not served"
        ),
        "{errors:?}"
    );

    // The CRD gets installed: the retry lists it.
    double.set_served("ciliumnetworkpolicies", true);
    let store = running
        .until("installed CRD listed", |s| {
            names(s, Kind::CiliumNetworkPolicy) == ["default/allow-web"]
        })
        .await;
    let errors = store.errors();
    assert!(
        errors.len() == 1 && errors[0].starts_with("kubernetes/CiliumClusterwideNetworkPolicy: "),
        "{errors:?}"
    );
    running.stop().await;
}

/// A built-in kind that fails to list is not marked synced: the agent must
/// not act as if the cluster had no pods. It is retried and recovers.
#[tokio::test]
async fn failing_builtin_kind_is_not_synced_until_listed() {
    let double = ApiDouble::start().await;
    seed(&double);
    double.set_served("pods", false);

    let running = Running::start(KubeSource::from_client(double.client()));
    let store = running
        .until("pod list error reported", |s| {
            s.errors().iter().any(|e| e.starts_with("kubernetes/Pod: "))
                && Kind::ALL
                    .iter()
                    .filter(|k| **k != Kind::Pod)
                    .all(|k| s.is_synced(*k))
        })
        .await;
    assert!(!store.is_synced(Kind::Pod));
    assert!(!store.all_synced());

    double.set_served("pods", true);
    let store = running
        .until("pods listed", |s| s.all_synced() && s.errors().is_empty())
        .await;
    assert_eq!(names(&store, Kind::Pod), ["default/web-1", "shop/cart-1"]);
    running.stop().await;
}

/// Failing lists are retried with a growing backoff (kube's default: 0.8 s
/// doubling, jitter adding up to 100%), not at a fixed short interval: in the
/// 5.2 s after the first failed list, retries come at [0.8, 1.6) s and
/// [2.4, 4.8) s, and the next not before 5.6 s, so exactly three lists. A
/// backoff that reset on every retry would list at least four times.
#[tokio::test]
async fn failing_list_backs_off_exponentially() {
    let double = ApiDouble::start().await;
    double.set_served("ciliumclusterwidenetworkpolicies", false);
    let running = Running::start(KubeSource::from_client(double.client()));
    until_double("first list", &double, |d| {
        d.lists("ciliumclusterwidenetworkpolicies") == 1
    })
    .await;
    let first = double.requests("ciliumclusterwidenetworkpolicies")[0].at;
    let window = Duration::from_millis(5200);
    tokio::time::sleep_until((first + window).into()).await;
    let lists: Vec<Duration> = double
        .requests("ciliumclusterwidenetworkpolicies")
        .iter()
        .filter(|r| !r.watch && r.at <= first + window)
        .map(|r| r.at - first)
        .collect();
    assert_eq!(lists.len(), 3, "list attempts at {lists:?}");
    running.stop().await;
}

/// The desired state of `store` for a node `node-a` on which default/web-1
/// and shop/cart-1 run.
fn desired_of(store: &Store) -> sluice_agent::desired::Desired {
    use sluice_agent::attachments::Attachments;
    use sluice_agent::desired::{pod_cidrs, resolve, NodeConfig};
    use sluice_api::agent::{host_ifname, Attachment, PodRef, RegisteredEndpoint};
    use sluice_tables::MacAddr;

    let config = NodeConfig {
        node_name: "node-a".into(),
        cluster_name: "default".into(),
        gateway_mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
        mtu: 1500,
        veth_queues: 1,
        pod_cidrs: Vec::new(),
        uplink: None,
        services: Default::default(),
        lb: Default::default(),
        policy: Default::default(),
    };
    let mut attachments = Attachments::in_memory();
    for (i, (namespace, name)) in [("default", "web-1"), ("shop", "cart-1")]
        .iter()
        .enumerate()
    {
        let attachment = Attachment {
            container_id: format!("c{i}"),
            ifname: "eth0".into(),
        };
        let pod = PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        attachments
            .allocate(
                &attachment,
                Some(pod),
                "/proc/1/ns/net",
                &pod_cidrs(store, &config),
            )
            .unwrap();
        attachments.register(RegisteredEndpoint {
            host_ifname: host_ifname(&attachment),
            attachment,
            host_ifindex: 10 + i as u32,
            container_mac: MacAddr([2, 0, 0, 0, 0, 10 + i as u8]),
        });
    }
    resolve(
        store,
        &attachments,
        &config,
        &mut sluice_agent::identity::IdentityAllocator::in_memory(),
        &mut sluice_agent::lb_ids::LbIds::in_memory(),
    )
    .unwrap()
}

/// The `Kind namespace/name` of every rule origin in the compiled state.
fn rule_policies(desired: &sluice_agent::desired::Desired) -> BTreeSet<String> {
    desired
        .state
        .policy
        .rules
        .iter()
        .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name))
        .collect()
}

/// A NetworkPolicy and a CiliumNetworkPolicy delivered by the API (listed,
/// then changed through the watch) reach the desired state: compiled into
/// the local endpoints' tables and listed with what they select; the
/// clusterwide host policy (nodeSelector) is reported, not applied.
#[tokio::test]
async fn policies_from_the_api_reach_the_desired_state() {
    let double = ApiDouble::start().await;
    seed(&double);
    let running = started(&double).await;
    let desired = desired_of(&running.store.snapshot());

    let listed: Vec<(String, usize, Vec<String>, usize)> = desired
        .policies
        .iter()
        .map(|p| {
            let name = if p.namespace.is_empty() {
                p.name.clone()
            } else {
                format!("{}/{}", p.namespace, p.name)
            };
            (name, p.rules, p.endpoints.clone(), p.errors.len())
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "shop/deny-all".to_string(),
                1,
                vec!["shop/cart-1".to_string()],
                0
            ),
            (
                "default/allow-web".to_string(),
                1,
                vec!["default/web-1".to_string()],
                0
            ),
            ("host-fw".to_string(), 0, vec![], 1),
        ]
    );
    assert!(
        desired.errors.iter().any(|e| e
            .starts_with("CiliumClusterwideNetworkPolicy host-fw: specs[0]")
            && e.contains("nodeSelector")),
        "{:?}",
        desired.errors
    );
    assert_eq!(
        rule_policies(&desired),
        BTreeSet::from([
            "CiliumNetworkPolicy default/allow-web".to_string(),
            "NetworkPolicy shop/deny-all".to_string(),
        ])
    );
    let policy = &desired.state.policy;
    let tables_of = |endpoint: &str| {
        let e = policy
            .endpoints
            .iter()
            .find(|e| e.endpoint == endpoint)
            .unwrap_or_else(|| panic!("{endpoint} has no tables: {policy:#?}"));
        (
            policy.tables[e.ingress as usize].clone(),
            policy.tables[e.egress as usize].clone(),
        )
    };
    // deny-all: cart-1 default-deny on ingress, nothing allowed; egress free.
    let (ingress, egress) = tables_of("shop/cart-1");
    assert!(
        ingress.enforced && ingress.entries.is_empty(),
        "{ingress:?}"
    );
    assert!(!egress.enforced);
    // allow-web: web-1 takes everything from namespace default.
    let (ingress, _) = tables_of("default/web-1");
    assert!(
        ingress.enforced && !ingress.entries.is_empty(),
        "{ingress:?}"
    );

    // The CNP turns into a deny through the watch; the next desired state
    // has the deny entry, the NetworkPolicy deleted leaves cart-1 free.
    double.apply(
        "ciliumnetworkpolicies",
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "allow-web", "namespace": "default"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "web-1"}},
                        "ingressDeny": [{"fromEntities": ["world"]}]}}),
    );
    double.delete("networkpolicies", "shop", "deny-all");
    let store = running
        .until("policy changes applied", |s| {
            s.of_kind(Kind::NetworkPolicy).count() == 0
                && matches!(
                    s.get(Kind::CiliumNetworkPolicy, "default", "allow-web"),
                    Some(Object::CiliumNetworkPolicy(p)) if p.rest["spec"].get("ingressDeny").is_some()
                )
        })
        .await;
    let desired = desired_of(&store);
    assert_eq!(
        rule_policies(&desired),
        BTreeSet::from(["CiliumNetworkPolicy default/allow-web".to_string()])
    );
    let policy = &desired.state.policy;
    let web = policy
        .endpoints
        .iter()
        .find(|e| e.endpoint == "default/web-1")
        .unwrap();
    let ingress = &policy.tables[web.ingress as usize];
    assert!(
        ingress
            .entries
            .iter()
            .any(|e| e.action == sluice_tables::Action::Deny
                && e.peer == sluice_tables::Peer::Identity(2)),
        "{ingress:?}"
    );
    assert!(!policy
        .endpoints
        .iter()
        .any(|e| e.endpoint == "shop/cart-1" && policy.tables[e.ingress as usize].enforced));
    running.stop().await;
}

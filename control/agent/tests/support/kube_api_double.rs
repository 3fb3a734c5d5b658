//! A TEST DOUBLE of the Kubernetes API server.
//!
//! This is a test double of the API server, not a real one; no real API
//! server can run on this machine. It speaks just enough of the API, over
//! plain HTTP/1.1 on a loopback port, for kube-rs's watcher to list and watch
//! the kinds the agent reads:
//!
//! * `GET <collection>` (LIST): a `<Kind>List` with `metadata.resourceVersion`
//!   (no pagination: `limit` is ignored and no `continue` token is sent);
//! * `GET <collection>?watch=true&resourceVersion=N&allowWatchBookmarks=true`
//!   (WATCH): newline-delimited `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`
//!   events, replaying the resource's event log after `N`, then live events;
//! * `410 Gone` for a watch from a resource version older than the last
//!   [`ApiDouble::expire`], answered in the way the test chose ([`Gone`]);
//! * `404 page not found` (plain text, as a real API server answers) for a
//!   resource that is not served (a CRD that is not installed).
//!
//! Like etcd, one revision counter is shared by all resources; each resource
//! keeps its own event log. Every request is recorded so tests can assert on
//! what the client asked for (e.g. the resourceVersion a watch resumes from).

#![allow(dead_code)] // Each test binary uses a different part of the double.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::channel::mpsc;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = UnsyncBoxBody<Bytes, io::Error>;
type Chunk = Result<Frame<Bytes>, io::Error>;

/// The resources the double serves: (plural, collection path, apiVersion, kind, namespaced).
pub const RESOURCES: [(&str, &str, &str, &str, bool); 8] = [
    ("namespaces", "/api/v1/namespaces", "v1", "Namespace", false),
    ("nodes", "/api/v1/nodes", "v1", "Node", false),
    ("pods", "/api/v1/pods", "v1", "Pod", true),
    ("services", "/api/v1/services", "v1", "Service", true),
    (
        "endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        true,
    ),
    (
        "networkpolicies",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
        true,
    ),
    (
        "ciliumnetworkpolicies",
        "/apis/cilium.io/v2/ciliumnetworkpolicies",
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        true,
    ),
    (
        "ciliumclusterwidenetworkpolicies",
        "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
        "cilium.io/v2",
        "CiliumClusterwideNetworkPolicy",
        false,
    ),
];

/// How a watch from an expired (compacted) resource version is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// The watch request itself is answered `410 Gone` with a `Status` body.
    HttpStatus,
    /// The watch request is answered `200`, then an `ERROR` watch event with a
    /// `Status` of code 410 ("too old resource version"), then end of stream:
    /// what a real API server does.
    ErrorEvent,
}

/// How open watch streams are ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// A clean end of the chunked body (like a server-side watch timeout).
    Clean,
    /// The connection is torn down in the middle of the body.
    Abrupt,
}

/// One request the double received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The plural resource name (`pods`), or the raw path if unknown.
    pub resource: String,
    pub watch: bool,
    /// The `resourceVersion` query parameter, if any.
    pub resource_version: Option<String>,
    /// Whether `allowWatchBookmarks=true` was asked for.
    pub bookmarks: bool,
    pub query: String,
    pub at: std::time::Instant,
}

struct Watcher {
    tx: mpsc::UnboundedSender<Chunk>,
    bookmarks: bool,
}

impl Watcher {
    fn send(&self, line: &Value) -> bool {
        let mut text = serde_json::to_string(line).expect("json");
        text.push('\n');
        self.tx
            .unbounded_send(Ok(Frame::data(Bytes::from(text))))
            .is_ok()
    }
}

struct Resource {
    path: &'static str,
    api_version: &'static str,
    kind: &'static str,
    namespaced: bool,
    served: bool,
    objects: BTreeMap<(String, String), Value>,
    /// (revision, event type, object) in revision order.
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from a resource version below this are gone.
    compacted: u64,
    gone: Gone,
    /// While set, live events are logged but not pushed to open watches.
    paused: bool,
    watchers: Vec<Watcher>,
}

impl Resource {
    fn push(&mut self, event: &'static str, object: &Value) {
        if self.paused {
            return;
        }
        let line = json!({"type": event, "object": object});
        self.watchers.retain(|w| w.send(&line));
    }

    fn status(&self, code: u16, reason: &str, message: String) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        })
    }
}

struct State {
    revision: u64,
    resources: BTreeMap<&'static str, Resource>,
    requests: Vec<Recorded>,
}

/// The double: a loopback HTTP server plus handles to change what it serves.
pub struct ApiDouble {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ApiDouble {
    /// Starts serving on a fresh loopback port, every resource served and empty.
    pub async fn start() -> ApiDouble {
        let resources = RESOURCES
            .iter()
            .map(|&(plural, path, api_version, kind, namespaced)| {
                (
                    plural,
                    Resource {
                        path,
                        api_version,
                        kind,
                        namespaced,
                        served: true,
                        objects: BTreeMap::new(),
                        log: Vec::new(),
                        compacted: 0,
                        gone: Gone::ErrorEvent,
                        paused: false,
                        watchers: Vec::new(),
                    },
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            revision: 1,
            resources,
            requests: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        ApiDouble {
            addr,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to the double over plain HTTP.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// A kubeconfig file content pointing at the double.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: double\n  context:\n    \
             cluster: double\n    user: tester\ncurrent-context: double\n",
            self.url()
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current revision (the resourceVersion a LIST would answer).
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its new
    /// resourceVersion. The object is stored as given apart from
    /// `metadata.resourceVersion`, so it need not be valid for its kind.
    pub fn apply(&self, plural: &str, mut object: Value) -> u64 {
        let mut state = self.lock();
        state.revision += 1;
        let rv = state.revision;
        let resource = state.resources.get_mut(plural).expect("known resource");
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = object_key(&object);
        let event = if resource.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        resource.objects.insert(key, object.clone());
        resource.log.push((rv, event, object.clone()));
        resource.push(event, &object);
        rv
    }

    /// Deletes an object (`DELETED`); returns the deletion's resourceVersion.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> u64 {
        let mut state = self.lock();
        state.revision += 1;
        let rv = state.revision;
        let resource = state.resources.get_mut(plural).expect("known resource");
        let mut object = resource
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {plural} {namespace}/{name} to delete"));
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        resource.log.push((rv, "DELETED", object.clone()));
        resource.push("DELETED", &object);
        rv
    }

    /// Serves (a CRD is installed) or answers 404 (not installed).
    pub fn set_served(&self, plural: &str, served: bool) {
        let mut state = self.lock();
        let resource = state.resources.get_mut(plural).expect("known resource");
        resource.served = served;
        if !served {
            resource.watchers.clear();
        }
    }

    /// Holds live events back from the open watches of `plural` (they stay
    /// in the log, so a resumed watch replays them).
    pub fn pause(&self, plural: &str) {
        self.lock()
            .resources
            .get_mut(plural)
            .expect("known resource")
            .paused = true;
    }

    /// Ends every open watch of `plural` and resumes live delivery.
    pub fn drop_watches(&self, plural: &str, how: Close) {
        let mut state = self.lock();
        let resource = state.resources.get_mut(plural).expect("known resource");
        for watcher in resource.watchers.drain(..) {
            if how == Close::Abrupt {
                let _ = watcher.tx.unbounded_send(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "test double drops the connection",
                )));
            }
        }
        resource.paused = false;
    }

    /// Compacts `plural`'s history: watches from any resourceVersion older
    /// than now are gone (answered as `how` says). With `on_open_streams`,
    /// open watches get an `ERROR` 410 event first (whatever `how` is);
    /// otherwise they are just closed, so the client's resume meets the 410.
    pub fn expire(&self, plural: &str, how: Gone, on_open_streams: bool) {
        let mut state = self.lock();
        let revision = state.revision;
        let resource = state.resources.get_mut(plural).expect("known resource");
        resource.compacted = revision;
        resource.gone = how;
        let status = resource.status(
            410,
            "Expired",
            format!("too old resource version: (compacted at {revision})"),
        );
        for watcher in resource.watchers.drain(..) {
            if on_open_streams {
                watcher.send(&json!({"type": "ERROR", "object": status}));
            }
        }
        resource.paused = false;
    }

    /// Sends a `BOOKMARK` to the open watches of `plural` that asked for
    /// bookmarks, at a revision one past the current one (as if something
    /// elsewhere in the cluster had changed). Returns that revision.
    pub fn bookmark(&self, plural: &str) -> u64 {
        let mut state = self.lock();
        state.revision += 1;
        let rv = state.revision;
        let resource = state.resources.get_mut(plural).expect("known resource");
        let line = json!({
            "type": "BOOKMARK",
            "object": {
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": {"resourceVersion": rv.to_string()},
            },
        });
        resource.watchers.retain(|w| !w.bookmarks || w.send(&line));
        rv
    }

    /// Watch streams of `plural` currently open (as far as the double knows).
    pub fn open_watches(&self, plural: &str) -> usize {
        let mut state = self.lock();
        let resource = state.resources.get_mut(plural).expect("known resource");
        resource.watchers.retain(|w| !w.tx.is_closed());
        resource.watchers.len()
    }

    /// Every request for `plural`, in arrival order.
    pub fn requests(&self, plural: &str) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.resource == plural)
            .cloned()
            .collect()
    }

    pub fn lists(&self, plural: &str) -> usize {
        self.requests(plural).iter().filter(|r| !r.watch).count()
    }

    pub fn watches(&self, plural: &str) -> Vec<Recorded> {
        self.requests(plural)
            .into_iter()
            .filter(|r| r.watch)
            .collect()
    }
}

fn object_key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().expect("metadata.name").to_string(),
    )
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handle(&state, request);
                async move { Ok::<_, Infallible>(response) }
            });
            // Errors here are clients going away mid-stream; nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(body).expect("json")))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("response")
}

/// What a real API server answers for the path of a group/resource it does
/// not serve (a CRD that is not installed): plain text, not a `Status`.
fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from_static(b"404 page not found\n"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("response")
}

fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let watch = params
        .get("watch")
        .is_some_and(|v| *v == "true" || *v == "1");
    let resource_version = params.get("resourceVersion").map(|v| v.to_string());
    let bookmarks = params.get("allowWatchBookmarks") == Some(&"true");

    let plural = state
        .resources
        .iter()
        .find(|(_, r)| r.path == path)
        .map(|(plural, _)| *plural);
    state.requests.push(Recorded {
        resource: plural.map_or_else(|| path.clone(), str::to_string),
        watch,
        resource_version: resource_version.clone(),
        bookmarks,
        query: query.clone(),
        at: std::time::Instant::now(),
    });
    let Some(plural) = plural else {
        return not_found();
    };
    let revision = state.revision;
    let resource = state.resources.get_mut(plural).expect("known resource");
    if !resource.served || request.method() != hyper::Method::GET {
        return not_found();
    }

    if !watch {
        let items: Vec<&Value> = resource.objects.values().collect();
        return full(
            StatusCode::OK,
            &json!({
                "apiVersion": resource.api_version,
                "kind": format!("{}List", resource.kind),
                "metadata": {"resourceVersion": revision.to_string()},
                "items": items,
            }),
        );
    }

    // WATCH. "" or "0" means "from any point": synthetic ADDED for everything.
    let from: Option<u64> = match resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse().unwrap_or(0)),
    };
    if let Some(from) = from.filter(|from| *from < resource.compacted) {
        let status = resource.status(
            410,
            "Expired",
            format!("too old resource version: {from} ({})", resource.compacted),
        );
        if resource.gone == Gone::HttpStatus {
            return full(StatusCode::GONE, &status);
        }
        let (tx, rx) = mpsc::unbounded();
        let watcher = Watcher { tx, bookmarks };
        watcher.send(&json!({"type": "ERROR", "object": status}));
        drop(watcher); // end of stream after the error, as the API server does
        return streaming(rx);
    }

    let (tx, rx) = mpsc::unbounded();
    let watcher = Watcher { tx, bookmarks };
    match from {
        None => {
            for object in resource.objects.values() {
                watcher.send(&json!({"type": "ADDED", "object": object}));
            }
        }
        Some(from) => {
            for (rv, event, object) in &resource.log {
                if *rv > from {
                    watcher.send(&json!({"type": event, "object": object}));
                }
            }
        }
    }
    resource.watchers.push(watcher);
    streaming(rx)
}

fn streaming(rx: mpsc::UnboundedReceiver<Chunk>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(rx).boxed_unsync())
        .expect("response")
}

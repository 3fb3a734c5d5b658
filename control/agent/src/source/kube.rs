//! The Kubernetes source: one kube-rs watcher per watched [`Kind`], writing
//! into the [`StoreHandle`].
//!
//! # Semantics
//!
//! * Every kind is watched cluster-wide with `kube::runtime::watcher` in its
//!   list-then-watch mode. A listing (`InitApply`... `InitDone`) is buffered
//!   and lands as one [`Store::replace_kind`] at `InitDone`, so a re-list
//!   replaces the kind atomically: objects deleted while the source was
//!   disconnected disappear, and the kind is marked synced.
//! * `Apply` upserts, `Delete` removes.
//! * Bookmarks are requested; the watcher resumes from the newest resource
//!   version it saw (object or bookmark) when a watch stream simply ends
//!   (server timeout, dropped connection).
//! * Any watcher error restarts that kind's watcher from a fresh listing after
//!   a backoff ([`WatchStreamExt::default_backoff`]: 0.8 s doubling to 30 s,
//!   with jitter). This covers `410 Gone` in both forms: as an `ERROR` watch
//!   event (kube's watcher re-lists by itself) and as an HTTP 410 answer to the
//!   watch request (kube's watcher would retry the same stale resource version
//!   forever, so the restart is what makes it re-list).
//! * Errors are kept in the store under the origin `kubernetes/<Kind>`: the
//!   last watch error (cleared when a listing completes again) and one line
//!   per object that does not decode into our types.
//! * An object that does not decode (naming kind, namespace/name and the
//!   field) is skipped: the store keeps what it had for it (nothing, or the
//!   last version that decoded, also across a re-list) until it decodes again
//!   or is deleted. The other objects apply normally.
//! * A Cilium CRD that is not installed (the list answers 404) does not block
//!   anything: the kind is marked synced with no objects, the error says the
//!   CRD looks missing, and the list is retried with the backoff, so
//!   installing the CRD later is picked up. Built-in kinds never get this
//!   treatment: a 404 for pods means something else is wrong, and the agent
//!   should not act as if the cluster had no pods.
//!
//! Objects are watched as [`DynamicObject`] and decoded into the typed
//! [`Object`] one by one, so a single bad object cannot fail a whole listing.
//! Known limit: an object whose `metadata` itself is malformed fails the
//! listing (or the watch event) it arrives in; the API server validates
//! metadata, so this only happens with a broken server.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use ::kube::api::{Api, ApiResource, DynamicObject};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::Client;
use anyhow::Context as _;
use futures::stream::{BoxStream, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::objects::{CiliumPolicy, Kind, Object, ObjectKey};
use crate::source::Source;
use crate::store::{Store, StoreHandle};

/// Group and version of Cilium's policy CRDs.
const CILIUM_GROUP: &str = "cilium.io";
const CILIUM_VERSION: &str = "v2";

/// Watches the Kubernetes API. See the module docs for the semantics.
pub struct KubeSource {
    client: Client,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource").finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Uses an existing client (tests, or a caller with its own config).
    pub fn from_client(client: Client) -> KubeSource {
        KubeSource { client }
    }

    /// Builds the client from a kube config. Must run inside a tokio runtime.
    pub fn from_config(config: ::kube::Config) -> anyhow::Result<KubeSource> {
        let client = Client::try_from(config).context("building the Kubernetes client")?;
        Ok(KubeSource::from_client(client))
    }

    /// The usual discovery: `KUBECONFIG` or `~/.kube/config` if present,
    /// otherwise the in-cluster service account.
    pub async fn from_env() -> anyhow::Result<KubeSource> {
        let config = ::kube::Config::infer()
            .await
            .context("finding a Kubernetes config (kubeconfig or in-cluster service account)")?;
        KubeSource::from_config(config)
    }

    /// Uses the current context of the kubeconfig file at `path`.
    pub async fn from_kubeconfig(path: impl AsRef<Path>) -> anyhow::Result<KubeSource> {
        let path = path.as_ref();
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config =
            ::kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?;
        KubeSource::from_config(config)
    }
}

impl Source for KubeSource {
    fn describe(&self) -> String {
        "kubernetes".to_string()
    }

    fn run(
        self: Box<Self>,
        store: StoreHandle,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        let client = self.client;
        Box::pin(async move {
            // All watchers live inside this one future: dropping it (or
            // `stop`) ends every watch, nothing is left running behind.
            let watches =
                Kind::ALL.map(|kind| watch_kind(client.clone(), kind, store.clone(), stop.clone()));
            futures::future::join_all(watches).await;
            Ok(())
        })
    }
}

/// The API resource behind each kind.
fn api_resource(kind: Kind) -> ApiResource {
    let cilium = |kind: &str, plural: &str| ApiResource {
        group: CILIUM_GROUP.into(),
        version: CILIUM_VERSION.into(),
        api_version: format!("{CILIUM_GROUP}/{CILIUM_VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    match kind {
        Kind::Namespace => ApiResource::erase::<Namespace>(&()),
        Kind::Node => ApiResource::erase::<Node>(&()),
        Kind::Pod => ApiResource::erase::<Pod>(&()),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        Kind::CiliumNetworkPolicy => cilium("CiliumNetworkPolicy", "ciliumnetworkpolicies"),
        Kind::CiliumClusterwideNetworkPolicy => cilium(
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
        ),
    }
}

/// Whether the kind comes from a CRD that may legitimately be absent.
fn is_optional_crd(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy
    )
}

type WatchItem = Result<Event<DynamicObject>, watcher::Error>;

/// One kind's watch events, restarting from a fresh listing after any error,
/// with kube's default backoff between attempts.
fn kind_events(kind: Kind, client: Client) -> impl Stream<Item = WatchItem> + Send {
    let api: Api<DynamicObject> = Api::all_with(client, &api_resource(kind));
    let config = watcher::Config::default();
    let fresh = move || watcher::watcher(api.clone(), config.clone()).boxed();
    futures::stream::unfold(None::<BoxStream<'static, WatchItem>>, move |current| {
        let fresh = fresh.clone();
        async move {
            let mut inner = current.unwrap_or_else(&fresh);
            loop {
                match inner.next().await {
                    // `Init` only marks the start of a listing, which the
                    // consumer infers from `InitApply`/`InitDone`. It is
                    // dropped because the watcher emits it *before* it
                    // lists, and the backoff resets on every `Ok`: a list
                    // that keeps failing would otherwise be retried at the
                    // minimum delay forever.
                    Some(Ok(Event::Init)) => continue,
                    Some(Ok(event)) => return Some((Ok(event), Some(inner))),
                    // Drop this watcher: once the backoff has passed, the
                    // next poll starts over with a listing.
                    Some(Err(err)) => return Some((Err(err), None)),
                    // kube's watcher never ends; if it did, start over.
                    None => inner = fresh(),
                }
            }
        }
    })
    .default_backoff()
}

async fn watch_kind(
    client: Client,
    kind: Kind,
    store: StoreHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = std::pin::pin!(kind_events(kind, client));
    let mut state = KindWatch::new(kind, store);
    loop {
        tokio::select! {
            biased;
            // A closed stop channel counts as stop (the owner is gone).
            _ = stop.wait_for(|stop| *stop) => return,
            event = events.next() => match event {
                Some(event) => state.handle(event),
                // The stream above never ends (the backoff never gives up).
                None => return,
            },
        }
    }
}

/// A listing in progress.
#[derive(Default)]
struct Listing {
    objects: Vec<Object>,
    undecodable: BTreeMap<ObjectKey, String>,
}

/// One kind's view of its watch: the listing in progress and its errors.
struct KindWatch {
    kind: Kind,
    origin: String,
    store: StoreHandle,
    listing: Option<Listing>,
    /// Objects currently failing to decode, with the message naming them.
    undecodable: BTreeMap<ObjectKey, String>,
    /// The last watch error, until a listing completes again.
    watch_error: Option<String>,
}

impl KindWatch {
    fn new(kind: Kind, store: StoreHandle) -> KindWatch {
        KindWatch {
            kind,
            origin: format!("kubernetes/{kind}"),
            store,
            listing: None,
            undecodable: BTreeMap::new(),
            watch_error: None,
        }
    }

    fn errors(&self) -> Vec<String> {
        self.watch_error
            .iter()
            .chain(self.undecodable.values())
            .cloned()
            .collect()
    }

    fn publish_errors(&self, store: &mut Store) {
        store.set_errors(&self.origin, self.errors());
    }

    fn handle(&mut self, event: WatchItem) {
        let kind = self.kind;
        match event {
            Ok(Event::Init) => self.listing = Some(Listing::default()),
            Ok(Event::InitApply(object)) => {
                let listing = self.listing.get_or_insert_with(Listing::default);
                match decode(kind, object) {
                    Ok(object) => listing.objects.push(object),
                    Err((key, error)) => {
                        tracing::warn!("{}: {error}", self.origin);
                        listing.undecodable.insert(key, error);
                    }
                }
            }
            Ok(Event::InitDone) => {
                let Listing {
                    mut objects,
                    undecodable,
                } = self.listing.take().unwrap_or_default();
                self.undecodable = undecodable;
                let recovered = self.watch_error.take().is_some();
                let count = objects.len();
                self.store.update(|store| {
                    // Keep the last good version of objects that no longer decode.
                    objects.extend(
                        self.undecodable
                            .keys()
                            .filter_map(|key| store.get(kind, &key.namespace, &key.name).cloned()),
                    );
                    store.replace_kind(kind, objects);
                    self.publish_errors(store);
                });
                if recovered {
                    tracing::info!("{}: listed {count} objects, watch recovered", self.origin);
                } else {
                    tracing::debug!("{}: listed {count} objects", self.origin);
                }
            }
            Ok(Event::Apply(object)) => match decode(kind, object) {
                Ok(object) => {
                    self.undecodable.remove(&object.key());
                    self.store.update(|store| {
                        store.upsert(object);
                        self.publish_errors(store);
                    });
                }
                Err((key, error)) => {
                    tracing::warn!("{}: {error}", self.origin);
                    self.undecodable.insert(key, error);
                    self.store.update(|store| self.publish_errors(store));
                }
            },
            Ok(Event::Delete(object)) => {
                // By key, not by decoding: an undecodable object can be deleted too.
                let key = object_key(kind, &object.metadata);
                self.undecodable.remove(&key);
                self.store.update(|store| {
                    store.remove(&key);
                    self.publish_errors(store);
                });
            }
            Err(error) => {
                // A listing cut short is worthless; the next one starts over.
                self.listing = None;
                let missing_crd = is_optional_crd(kind) && is_not_found(&error);
                let message = if missing_crd {
                    let resource = api_resource(kind);
                    format!(
                        "{}/{} is not served by the API server (CRD not installed?); \
                         treating it as empty and retrying: {error}",
                        resource.api_version, resource.plural
                    )
                } else {
                    format!("watch failed, re-listing after backoff: {error}")
                };
                tracing::warn!("{}: {message}", self.origin);
                self.watch_error = Some(message);
                if missing_crd {
                    self.undecodable.clear();
                }
                self.store.update(|store| {
                    if missing_crd {
                        store.replace_kind(kind, Vec::new());
                    }
                    self.publish_errors(store);
                });
            }
        }
    }
}

/// Whether the error is the API answering 404 to the list (resource not served).
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(::kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// Where an object of `kind` lives, as [`Object::key`] computes it.
fn object_key(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::of(kind, meta)
}

/// Decodes a watched object into our typed [`Object`], or names the object
/// and the field that failed.
fn decode(kind: Kind, object: DynamicObject) -> Result<Object, (ObjectKey, String)> {
    let DynamicObject {
        mut metadata, data, ..
    } = object;
    let key = object_key(kind, &metadata);
    let fail = |error: String| Err((key.clone(), format!("{key}: {error}")));

    let mut fields = match data {
        Value::Object(fields) => fields,
        Value::Null => Map::new(),
        _ => return fail("object is not a JSON map".into()),
    };
    // Type information is implied by the kind.
    fields.remove("apiVersion");
    fields.remove("kind");
    if is_optional_crd(kind) {
        // Cilium writes per-node enforcement status into the policy objects;
        // it is not policy, and keeping it would churn the store.
        fields.remove("status");
    }
    // Bulky, changes on every write, and nothing reads it.
    metadata.managed_fields = None;
    match serde_json::to_value(&metadata) {
        Ok(metadata) => fields.insert("metadata".into(), metadata),
        Err(error) => return fail(format!("cannot re-encode metadata: {error}")),
    };
    let value = Value::Object(fields);

    let object = match kind {
        Kind::Namespace => typed(value).map(Object::Namespace),
        Kind::Node => typed(value).map(Object::Node),
        Kind::Pod => typed(value).map(Object::Pod),
        Kind::Service => typed(value).map(Object::Service),
        Kind::EndpointSlice => typed(value).map(Object::EndpointSlice),
        Kind::NetworkPolicy => typed(value).map(Object::NetworkPolicy),
        Kind::CiliumNetworkPolicy => typed::<CiliumPolicy>(value).map(Object::CiliumNetworkPolicy),
        Kind::CiliumClusterwideNetworkPolicy => {
            typed::<CiliumPolicy>(value).map(Object::CiliumClusterwideNetworkPolicy)
        }
    };
    match object {
        Ok(object) => Ok(object),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." {
                fail(format!("cannot decode: {inner}"))
            } else {
                fail(format!("cannot decode field `{path}`: {inner}"))
            }
        }
    }
}

fn typed<T: DeserializeOwned>(
    value: Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(json: Value) -> DynamicObject {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn decode_names_object_and_field() {
        let object = dynamic(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]},
        }));
        let (key, error) = decode(Kind::Pod, object).unwrap_err();
        assert_eq!(key.to_string(), "Pod shop/web");
        assert!(error.starts_with("Pod shop/web: "), "{error}");
        assert!(
            error.contains("spec.containers[0].ports[0].containerPort"),
            "{error}"
        );
    }

    #[test]
    fn decode_cilium_policy_keeps_spec_drops_type_and_status() {
        let object = dynamic(serde_json::json!({
                "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                "metadata": {"name": "p", "namespace": "n", "resourceVersion": "3",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": {"endpointSelector": {}},
                "status": {"nodes": {}},
        }));
        let Object::CiliumNetworkPolicy(policy) =
            decode(Kind::CiliumNetworkPolicy, object).unwrap()
        else {
            panic!("wrong kind");
        };
        assert_eq!(policy.metadata.name.as_deref(), Some("p"));
        assert_eq!(policy.metadata.managed_fields, None);
        assert_eq!(
            policy.rest.keys().collect::<Vec<_>>(),
            vec!["spec"],
            "{:?}",
            policy.rest
        );
    }
}

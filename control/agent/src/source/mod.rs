//! Where the agent learns about the cluster. Two implementations behind one
//! trait: the Kubernetes API (kube-rs watchers) and a directory of manifests.
//! Both write into the [`StoreHandle`]; neither computes desired state.

pub mod kube;
pub mod manifests;

use crate::store::StoreHandle;

/// A source of cluster objects. `run` returns only on a fatal error or when
/// `stop` fires; transient problems (an API hiccup, a bad manifest) are put in
/// the store's errors and retried.
pub trait Source: Send {
    /// For status: `kubernetes` or `manifests:<dir>`.
    fn describe(&self) -> String;

    fn run(
        self: Box<Self>,
        store: StoreHandle,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
}

//! What the agent knows to name the two ends of a flow, built once per
//! desired-state generation: local endpoints (by address and by veth
//! ifindex), every pod's address with its namespace and name, the ipcache
//! (longest prefix match, as the engine decides identities), identity labels,
//! and the UID of every policy object (for Hubble's policy labels).

use std::collections::HashMap;
use std::net::IpAddr;

use sluice_tables::policy::identity;
use sluice_tables::IpCache;

use crate::desired::{pod_ips, Desired};
use crate::objects::{Kind, Object};
use crate::store::Store;

/// One end of a flow as Hubble shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Endpoint id: the node-side veth's ifindex for a local endpoint (Sluice
    /// numbers endpoints by their interface), 0 for anything else.
    pub endpoint_id: u32,
    pub identity: u32,
    pub namespace: String,
    pub pod_name: String,
    /// The identity's labels, sorted (`k8s:app=web`, `reserved:world-ipv4`).
    pub labels: Vec<String>,
}

/// Flow enrichment's view of one generation.
#[derive(Debug, Default)]
pub struct FlowContext {
    pub node_name: String,
    /// The generation this was built from: Hubble's policy `revision`.
    pub generation: u64,
    /// Pods (local and remote) by address.
    pods: HashMap<IpAddr, (String, String)>,
    /// Local endpoints by address: (endpoint id, identity).
    local_by_ip: HashMap<IpAddr, (u32, u32)>,
    /// Veth ifindexes of local endpoints.
    local_ifindexes: HashMap<u32, IpAddr>,
    ipcache: Option<IpCache>,
    labels: HashMap<u32, Vec<String>>,
    /// (kind, namespace, name) -> metadata.uid.
    policy_uids: HashMap<(String, String, String), String>,
}

impl FlowContext {
    pub fn build(
        desired: &Desired,
        store: &Store,
        node_name: &str,
        generation: u64,
    ) -> FlowContext {
        let mut ctx = FlowContext {
            node_name: node_name.to_string(),
            generation,
            ..Default::default()
        };
        for info in &desired.identities {
            let mut labels = info.labels.clone();
            labels.sort();
            ctx.labels.insert(info.id, labels);
        }
        for object in store.of_kind(Kind::Pod) {
            let Object::Pod(pod) = object else { continue };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            for ip in pod_ips(pod) {
                ctx.pods
                    .insert(ip, (namespace.to_string(), name.to_string()));
            }
        }
        for endpoint in &desired.state.endpoints {
            let ips = endpoint
                .ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(endpoint.ipv6.map(IpAddr::V6));
            for ip in ips {
                ctx.local_by_ip
                    .insert(ip, (endpoint.ifindex, endpoint.identity));
                ctx.local_ifindexes.insert(endpoint.ifindex, ip);
                // A local endpoint whose pod is known is named by it; one
                // without (a plain container) by its attachment name.
                if let Some((namespace, name)) = endpoint.name.split_once('/') {
                    ctx.pods
                        .entry(ip)
                        .or_insert_with(|| (namespace.to_string(), name.to_string()));
                }
            }
        }
        // The desired state's ipcache was accepted by the engine built the same
        // way; a conflict here would have been refused there too.
        ctx.ipcache = IpCache::build(&desired.state.ipcache).ok();
        for kind in [
            Kind::NetworkPolicy,
            Kind::CiliumNetworkPolicy,
            Kind::CiliumClusterwideNetworkPolicy,
        ] {
            for object in store.of_kind(kind) {
                let meta = object.metadata();
                if let Some(uid) = &meta.uid {
                    let key = object.key();
                    ctx.policy_uids.insert(
                        (kind.name().to_string(), key.namespace, key.name),
                        uid.clone(),
                    );
                }
            }
        }
        ctx
    }

    /// The identity the engine gives `ip`: a local endpoint's, else the
    /// ipcache's longest match, else world-ipv4 / world-ipv6.
    pub fn identity_of(&self, ip: IpAddr) -> u32 {
        if let Some((_, id)) = self.local_by_ip.get(&ip) {
            return *id;
        }
        match &self.ipcache {
            Some(cache) => cache.identity_of(ip),
            None => match ip {
                IpAddr::V4(_) => identity::WORLD_IPV4,
                IpAddr::V6(_) => identity::WORLD_IPV6,
            },
        }
    }

    /// Hubble's endpoint for `ip`.
    pub fn peer(&self, ip: IpAddr) -> Peer {
        let identity = self.identity_of(ip);
        let (namespace, pod_name) = self.pods.get(&ip).cloned().unwrap_or_default();
        Peer {
            endpoint_id: self.local_by_ip.get(&ip).map_or(0, |(id, _)| *id),
            identity,
            namespace,
            pod_name,
            labels: self.labels.get(&identity).cloned().unwrap_or_default(),
        }
    }

    /// Hubble's endpoint for the sender of a frame that arrived on
    /// `ingress_ifindex`: the local endpoint behind that veth when `ip` is
    /// none of the known addresses (an IPv6 link-local source, a spoofed
    /// source), as Hubble names the endpoint a frame came from; else
    /// [`FlowContext::peer`].
    pub fn sender(&self, ip: IpAddr, ingress_ifindex: u32) -> Peer {
        if !self.local_by_ip.contains_key(&ip) && !self.pods.contains_key(&ip) {
            if let Some(own) = self.local_ifindexes.get(&ingress_ifindex) {
                return self.peer(*own);
            }
        }
        self.peer(ip)
    }

    /// Whether `ip` is a local endpoint's address.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local_by_ip.contains_key(&ip)
    }

    /// Whether `ifindex` is a local endpoint's veth.
    pub fn is_endpoint_interface(&self, ifindex: u32) -> bool {
        self.local_ifindexes.contains_key(&ifindex)
    }

    /// The metadata.uid of a policy object, when known.
    pub fn policy_uid(&self, kind: &str, namespace: &str, name: &str) -> Option<&str> {
        self.policy_uids
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .map(String::as_str)
    }
}

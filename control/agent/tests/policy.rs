//! Network policy in the desired state: parses cached per object (and the
//! result equal to computing from scratch), invalid policies left out whole
//! and reported, local (CIDR) identity numbers stable across generations,
//! and the namespace-name label every namespace carries.

use std::path::Path;

use serde_json::json;
use sluice_agent::attachments::Attachments;
use sluice_agent::desired::{pod_cidrs, resolve, resolve_cached, Desired, NodeConfig};
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::objects::{Kind, ObjectKey};
use sluice_agent::policy::PolicyCache;
use sluice_agent::services::CompileCache;
use sluice_agent::source::manifests::{decode, ManifestLoader};
use sluice_agent::store::Store;
use sluice_api::agent::{host_ifname, Attachment, PodRef, RegisteredEndpoint};
use sluice_tables::policy::identity::FIRST_LOCAL;
use sluice_tables::{MacAddr, Peer};

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/policy")
}

/// The golden `policy` case's objects.
fn golden_store() -> Store {
    let loaded = ManifestLoader::default()
        .load(&golden_dir().join("manifests"))
        .unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut store = Store::default();
    store.replace_all(loaded.objects);
    store
}

fn config() -> NodeConfig {
    NodeConfig {
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
    }
}

/// x/a, x/b and y/c wired on this node (as in the golden case).
fn attachments(store: &Store, config: &NodeConfig) -> Attachments {
    let mut attachments = Attachments::in_memory();
    for (i, (namespace, name)) in [("x", "a"), ("x", "b"), ("y", "c")].iter().enumerate() {
        let attachment = Attachment {
            container_id: format!("c-{namespace}{name}"),
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
                &pod_cidrs(store, config),
            )
            .unwrap();
        assert!(attachments.register(RegisteredEndpoint {
            host_ifname: host_ifname(&attachment),
            attachment,
            host_ifindex: 11 + i as u32,
            container_mac: MacAddr([2, 0, 0, 0, 0, 11 + i as u8]),
        }));
    }
    attachments
}

/// The agent's long-lived state between generations.
struct Agent {
    ids: IdentityAllocator,
    lb_ids: LbIds,
    services: CompileCache,
    policy: PolicyCache,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            ids: IdentityAllocator::in_memory(),
            lb_ids: LbIds::in_memory(),
            services: CompileCache::default(),
            policy: PolicyCache::default(),
        }
    }

    /// The next generation, checked against computing it without any of
    /// the policy cache's parses or compilation (from the same identity and
    /// id numbers, so only the caching can make a difference).
    fn checked_generation(&mut self, store: &Store, attachments: &Attachments) -> Desired {
        let mut ids = self.ids.clone();
        let mut lb_ids = self.lb_ids.clone();
        let mut policy = self.policy.numbering_only();
        let cached = self.generation(store, attachments);
        let scratch = resolve_cached(
            store,
            attachments,
            &config(),
            &mut ids,
            &mut lb_ids,
            &mut CompileCache::default(),
            &mut policy,
        )
        .unwrap();
        assert_eq!(cached, scratch);
        assert_eq!(
            policy.parses(),
            store.of_kind(Kind::NetworkPolicy).count() as u64
                + store.of_kind(Kind::CiliumNetworkPolicy).count() as u64
                + store.of_kind(Kind::CiliumClusterwideNetworkPolicy).count() as u64
        );
        cached
    }

    fn generation(&mut self, store: &Store, attachments: &Attachments) -> Desired {
        resolve_cached(
            store,
            attachments,
            &config(),
            &mut self.ids,
            &mut self.lb_ids,
            &mut self.services,
            &mut self.policy,
        )
        .unwrap()
    }
}

/// The generation a fresh agent computes.
fn from_scratch(store: &Store, attachments: &Attachments) -> Desired {
    resolve(
        store,
        attachments,
        &config(),
        &mut IdentityAllocator::in_memory(),
        &mut LbIds::in_memory(),
    )
    .unwrap()
}

fn upsert(store: &mut Store, doc: serde_json::Value) {
    store.upsert(decode(doc).unwrap());
}

fn local_identities(desired: &Desired) -> Vec<(u32, Vec<String>)> {
    desired
        .identities
        .iter()
        .filter(|i| i.id >= FIRST_LOCAL)
        .map(|i| (i.id, i.labels.clone()))
        .collect()
}

#[test]
fn cached_policy_equals_computing_from_scratch_and_parses_only_changed_objects() {
    let mut store = golden_store();
    let attachments = attachments(&store, &config());
    let mut agent = Agent::new();
    let first = agent.checked_generation(&store, &attachments);
    assert_eq!(first, from_scratch(&store, &attachments));
    assert!(!first.state.policy.tables.is_empty(), "{first:#?}");
    assert_eq!(agent.policy.parses(), 4);
    assert_eq!(agent.policy.compilations(), 1);

    // Nothing changed: nothing parsed or compiled again.
    assert_eq!(agent.generation(&store, &attachments), first);
    assert_eq!(agent.policy.parses(), 4);
    assert_eq!(agent.policy.compilations(), 1);

    // One policy edited: only it is parsed again; the result is what a
    // fresh agent computes.
    upsert(
        &mut store,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "ping-from-y"},
               "spec": {"endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}}],
                                     "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}}),
    );
    let edited = agent.checked_generation(&store, &attachments);
    assert_eq!(agent.policy.parses(), 5);
    assert_eq!(agent.policy.compilations(), 2);
    assert_ne!(edited.state.policy, first.state.policy);

    // A new pod (not a policy): no parse, a compilation, still equal.
    upsert(
        &mut store,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "d", "namespace": "y", "labels": {"pod": "d"}},
               "spec": {"nodeName": "node-b", "containers": []},
               "status": {"podIPs": [{"ip": "10.210.1.6"}]}}),
    );
    let with_pod = agent.checked_generation(&store, &attachments);
    assert_eq!(agent.policy.parses(), 5);
    assert_eq!(agent.policy.compilations(), 3);
    assert!(with_pod.identities.len() > first.identities.len());

    // A removed policy is gone from the listing and the rules.
    store.remove(&ObjectKey {
        kind: Kind::NetworkPolicy,
        namespace: "y".into(),
        name: "allow-x".into(),
    });
    let removed = agent.checked_generation(&store, &attachments);
    assert!(!removed.policies.iter().any(|p| p.name == "allow-x"));
    assert!(!removed
        .state
        .policy
        .rules
        .iter()
        .any(|r| r.name == "allow-x"));
    assert_eq!(agent.policy.parses(), 5);
}

#[test]
fn an_invalid_policy_is_left_out_whole_and_reported() {
    let store = golden_store();
    let attachments = attachments(&store, &config());
    let desired = Agent::new().generation(&store, &attachments);
    let broken = desired
        .policies
        .iter()
        .find(|p| p.name == "broken")
        .expect("the invalid policy is listed");
    assert_eq!(broken.rules, 0);
    assert!(broken.endpoints.is_empty());
    assert!(!broken.errors.is_empty());
    for e in &broken.errors {
        assert!(e.contains("CiliumNetworkPolicy x/broken"), "{e}");
        assert!(
            desired.errors.contains(e),
            "{e} not in {:?}",
            desired.errors
        );
    }
    assert!(
        broken
            .errors
            .iter()
            .any(|e| e.contains("spec.ingress[1].toPorts[0].ports[0].port")),
        "{:?}",
        broken.errors
    );
    // Its valid first rule (ingress from every pod of x to x/a) is not
    // applied either: no rule of it reached the tables.
    assert!(!desired
        .state
        .policy
        .rules
        .iter()
        .any(|r| r.name == "broken"));
    // The valid policies are listed with what they select.
    let web = desired.policies.iter().find(|p| p.name == "web").unwrap();
    assert_eq!((web.rules, web.errors.len()), (2, 0));
    assert_eq!(web.endpoints, ["x/a", "x/b"]);
    let knp = desired
        .policies
        .iter()
        .find(|p| p.name == "allow-x")
        .unwrap();
    assert_eq!(knp.endpoints, ["y/c"]);
}

#[test]
fn local_identity_numbers_stay_stable_across_generations() {
    let mut store = golden_store();
    // A world prefix whose identity sorts first: a fresh numbering would
    // give the next one its number once it is gone.
    upsert(
        &mut store,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "extra", "namespace": "x"},
               "spec": {"endpointSelector": {"matchLabels": {"pod": "a"}},
                        "egress": [{"toCIDR": ["1.0.0.0/8"]}]}}),
    );
    let attachments = attachments(&store, &config());
    let mut agent = Agent::new();
    let first = agent.generation(&store, &attachments);
    let before = local_identities(&first);
    let world_prefix = vec!["cidr:1.0.0.0/8".to_string(), "reserved:world".to_string()];
    assert!(before.iter().any(|(_, l)| *l == world_prefix), "{before:?}");
    assert!(before
        .iter()
        .all(|(id, labels)| *id >= FIRST_LOCAL && labels.iter().any(|l| l.starts_with("cidr:"))));

    store.remove(&ObjectKey {
        kind: Kind::CiliumNetworkPolicy,
        namespace: "x".into(),
        name: "extra".into(),
    });
    let second = agent.generation(&store, &attachments);
    let after = local_identities(&second);
    assert_eq!(after.len(), before.len() - 1, "{before:?} -> {after:?}");
    for (id, labels) in &after {
        let earlier = before.iter().find(|(_, l)| l == labels);
        assert_eq!(
            earlier.map(|(n, _)| n),
            Some(id),
            "{labels:?} renumbered: {before:?} -> {after:?}"
        );
    }
    // A fresh agent numbers them otherwise: the stability is the cache's.
    assert_ne!(local_identities(&from_scratch(&store, &attachments)), after);
    // The ipcache points at the kept numbers.
    let node_b_cidr = second
        .state
        .ipcache
        .iter()
        .find(|e| e.ip.to_string() == "10.210.1.0" && e.prefix_len == Some(24))
        .expect("node-b's pod CIDR is a policy prefix");
    let (expected, _) = before
        .iter()
        .find(|(_, l)| *l == ["cidr:10.210.0.0/16", "cidr:10.210.1.0/24"])
        .unwrap();
    assert_eq!(node_b_cidr.identity, *expected);
    // A new prefix gets a number no kept identity has.
    upsert(
        &mut store,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "extra", "namespace": "x"},
               "spec": {"endpointSelector": {"matchLabels": {"pod": "a"}},
                        "egress": [{"toCIDR": ["2.0.0.0/8"]}]}}),
    );
    let third = local_identities(&agent.generation(&store, &attachments));
    let (new_id, _) = third
        .iter()
        .find(|(_, l)| l[0] == "cidr:2.0.0.0/8")
        .unwrap();
    assert!(!after.iter().any(|(id, _)| id == new_id), "{third:?}");
    for kept in &after {
        assert!(third.contains(kept), "{kept:?} lost in {third:?}");
    }
}

#[test]
fn namespaces_carry_their_name_label_for_namespace_selectors() {
    let store = golden_store();
    let attachments = attachments(&store, &config());
    let desired = Agent::new().generation(&store, &attachments);
    // Namespace x's manifest has no kubernetes.io/metadata.name label.
    let xa = desired.endpoints.iter().find(|e| e.name == "x/a").unwrap();
    assert!(
        xa.labels.contains(
            &"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x".to_string()
        ),
        "{:?}",
        xa.labels
    );
    // So y/c's ingress (namespaceSelector kubernetes.io/metadata.name: x)
    // allows x/a's identity on its named port 8080.
    let policy = &desired.state.policy;
    let yc = policy
        .endpoints
        .iter()
        .find(|e| e.endpoint == "y/c")
        .expect("y/c has tables");
    let ingress = &policy.tables[yc.ingress as usize];
    assert!(ingress.enforced);
    assert!(
        ingress
            .entries
            .iter()
            .any(|e| e.peer == Peer::Identity(xa.identity)
                && e.protocol == 6
                && (e.port_min, e.port_max) == (8080, 8080)),
        "{ingress:#?}"
    );
}

//! `TracePolicy` and `ListPolicies` through the agent's socket, in process:
//! an agent core on the golden `policy` case (plus a Service in front of
//! x/b), its server on a temporary socket, and requests as the CLI sends
//! them. The verdicts come from the same lookup the engine runs.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use sluice_agent::attachments::Attachments;
use sluice_agent::core::AgentCore;
use sluice_agent::desired::{pod_cidrs, NodeConfig};
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::source::manifests::{decode, ManifestLoader};
use sluice_agent::store::{Store, StoreHandle};
use sluice_api::agent::{
    host_ifname, AgentRequest, AgentResponse, Attachment, DirectionTrace, ErrorKind, PodRef,
    PolicyTrace, RegisteredEndpoint, Request, TraceDecision, TraceProtocol, TraceRequest,
};
use sluice_tables::MacAddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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

/// The golden `policy` objects, and a Service `x/web` (10.96.0.10, TCP
/// 8000 -> 80 and 8001 -> 81) whose backend is x/b's address.
fn store() -> Store {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/policy/manifests");
    let loaded = ManifestLoader::default().load(&dir).unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut store = Store::default();
    store.replace_all(loaded.objects);
    store.upsert(
        decode(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 80},
                {"name": "alt", "port": 8001, "protocol": "TCP", "targetPort": 81}]}}))
        .unwrap(),
    );
    store.upsert(
        decode(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "x",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.210.0.3"], "nodeName": "node-a"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                      {"name": "alt", "port": 81, "protocol": "TCP"}]}))
        .unwrap(),
    );
    store
}

struct Agent {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start() -> Agent {
        let store = store();
        let config = config();
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
                    &pod_cidrs(&store, &config),
                )
                .unwrap();
            assert!(attachments.register(RegisteredEndpoint {
                host_ifname: host_ifname(&attachment),
                attachment,
                host_ifindex: 11 + i as u32,
                container_mac: MacAddr([2, 0, 0, 0, 0, 11 + i as u8]),
            }));
        }
        let handle = StoreHandle::new();
        handle.update(|s| *s = store);
        let core: Arc<AgentCore> = AgentCore::new(
            config,
            "test".into(),
            handle,
            attachments,
            IdentityAllocator::in_memory(),
            LbIds::in_memory(),
        );
        core.recompute();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let server = sluice_agent::server::serve(core, &socket).await.unwrap();
        Agent {
            socket,
            _dir: dir,
            server,
        }
    }

    async fn ask(&self, request: AgentRequest) -> AgentResponse {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut line = serde_json::to_vec(&Request::new(request)).unwrap();
        line.push(b'\n');
        writer.write_all(&line).await.unwrap();
        let mut answer = String::new();
        BufReader::new(reader).read_line(&mut answer).await.unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    async fn trace(
        &self,
        src: &str,
        dst: &str,
        dport: Option<u16>,
        protocol: TraceProtocol,
    ) -> PolicyTrace {
        let request = AgentRequest::TracePolicy {
            trace: TraceRequest {
                src: src.into(),
                dst: dst.into(),
                dport,
                protocol,
            },
        };
        match self.ask(request).await {
            AgentResponse::PolicyTrace { trace } => trace,
            other => panic!("{src} -> {dst}: {other:?}"),
        }
    }
}

/// (decision, `kind ns/name path` of the deciding rule).
fn decided(d: &Option<DirectionTrace>) -> (TraceDecision, String) {
    let d = d.as_ref().expect("direction looked up");
    let rule = d.rule.as_ref().map_or(String::new(), |r| {
        format!("{} {}/{} {}", r.kind, r.namespace, r.name, r.path)
    });
    (d.decision, rule)
}

#[tokio::test]
async fn traces_answer_allowed_and_denied_with_the_deciding_rule() {
    let agent = Agent::start().await;

    // x/a -> x/b:80: both directions allowed, each by its rule.
    let t = agent
        .trace("x/a", "x/b", Some(80), TraceProtocol::Tcp)
        .await;
    assert!(t.allowed, "{t:#?}");
    assert_eq!(t.src.endpoint.as_deref(), Some("x/a"));
    assert_eq!(t.paths.len(), 1);
    let path = &t.paths[0];
    assert_eq!((path.protocol, path.port), (6, 80));
    assert_eq!(
        decided(&path.egress),
        (
            TraceDecision::Allowed,
            "CiliumNetworkPolicy x/web specs[1].egress[0]".into()
        )
    );
    assert_eq!(
        decided(&path.ingress),
        (
            TraceDecision::Allowed,
            "CiliumNetworkPolicy x/web specs[0].ingress[0]".into()
        )
    );

    // x/a -> x/b:81: no allow rule on x/b's ingress; the policies that
    // select x/b are named.
    let t = agent
        .trace("x/a", "x/b", Some(81), TraceProtocol::Tcp)
        .await;
    assert!(!t.allowed);
    let ingress = t.paths[0].ingress.as_ref().unwrap();
    assert_eq!(ingress.decision, TraceDecision::NoAllowRule);
    assert_eq!(ingress.decision.drop_reason(), Some("policy_denied"));
    assert_eq!(
        ingress.selected_by,
        [
            "CiliumNetworkPolicy x/web",
            "CiliumClusterwideNetworkPolicy ping-from-y"
        ]
    );
    assert!(t.paths[0].egress.as_ref().unwrap().decision.allows());

    // From the world to x/b:80: the deny rule wins over nothing else.
    let t = agent
        .trace("world", "x/b", Some(80), TraceProtocol::Tcp)
        .await;
    assert!(!t.allowed);
    assert_eq!(t.src.identity, 9);
    assert!(t.paths[0].egress.is_none());
    assert_eq!(
        decided(&t.paths[0].ingress),
        (
            TraceDecision::Denied,
            "CiliumNetworkPolicy x/web specs[0].ingressDeny[0]".into()
        )
    );
    // An outside address resolves through the ipcache like the engine does.
    let t = agent
        .trace("8.8.8.8", "x/b", Some(80), TraceProtocol::Tcp)
        .await;
    assert_eq!(
        (t.src.identity, decided(&t.paths[0].ingress).0),
        (9, TraceDecision::Denied)
    );

    // y/c pings x/a: allowed by the clusterwide policy's ICMP rule; y/c's
    // egress is not enforced. Its address is covered by a CIDR rule, so its
    // identity is the local one that carries its labels and the CIDR's.
    let t = agent.trace("y/c", "x/a", None, TraceProtocol::Icmp).await;
    assert!(t.allowed, "{t:#?}");
    assert!(t.src.identity >= 1 << 24, "{:?}", t.src);
    assert_eq!((t.paths[0].protocol, t.paths[0].port), (1, 8));
    assert_eq!(decided(&t.paths[0].egress).0, TraceDecision::NotEnforced);
    assert_eq!(
        decided(&t.paths[0].ingress),
        (
            TraceDecision::Allowed,
            "CiliumClusterwideNetworkPolicy /ping-from-y spec.ingress[0]".into()
        )
    );

    // The host reaches x/b with --allow-localhost=always.
    let t = agent
        .trace("host", "x/b", Some(9999), TraceProtocol::Tcp)
        .await;
    assert!(t.allowed);
    assert_eq!(t.src.identity, 1);
    assert_eq!(
        decided(&t.paths[0].ingress).0,
        TraceDecision::AllowedLocalhost
    );

    // Through the Service: policy sees the backend port (80 allowed), not
    // the frontend's 8000; 8001 -> 81 is denied.
    let t = agent
        .trace("x/a", "10.96.0.10", Some(8000), TraceProtocol::Tcp)
        .await;
    assert_eq!(t.service.as_deref(), Some("x/web"));
    assert_eq!(t.paths.len(), 1);
    assert_eq!(t.paths[0].dst.endpoint.as_deref(), Some("x/b"));
    assert_eq!(t.paths[0].port, 80);
    assert!(t.allowed, "{t:#?}");
    let t = agent
        .trace("x/a", "10.96.0.10", Some(8001), TraceProtocol::Tcp)
        .await;
    assert_eq!(t.paths[0].port, 81);
    assert!(!t.allowed);

    // Unknown peers and missing ports are errors naming what was asked.
    let answer = agent
        .ask(AgentRequest::TracePolicy {
            trace: TraceRequest {
                src: "x/nope".into(),
                dst: "x/b".into(),
                dport: Some(80),
                protocol: TraceProtocol::Tcp,
            },
        })
        .await;
    assert!(
        matches!(&answer, AgentResponse::Error { kind: ErrorKind::Invalid, message }
            if message.contains("--src \"x/nope\"")),
        "{answer:?}"
    );
    let answer = agent
        .ask(AgentRequest::TracePolicy {
            trace: TraceRequest {
                src: "x/a".into(),
                dst: "x/b".into(),
                dport: None,
                protocol: TraceProtocol::Udp,
            },
        })
        .await;
    assert!(
        matches!(&answer, AgentResponse::Error { message, .. } if message.contains("--dport is needed for udp")),
        "{answer:?}"
    );
    agent.server.abort();
}

#[tokio::test]
async fn policy_listing_names_rules_endpoints_and_errors() {
    let agent = Agent::start().await;
    let AgentResponse::Policies { policies } = agent.ask(AgentRequest::ListPolicies).await else {
        panic!("not a policy list");
    };
    let rows: Vec<(String, String, usize, Vec<String>, usize)> = policies
        .iter()
        .map(|p| {
            (
                p.kind.clone(),
                format!("{}/{}", p.namespace, p.name),
                p.rules,
                p.endpoints.clone(),
                p.errors.len(),
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rows,
        [
            (
                "NetworkPolicy".into(),
                "y/allow-x".into(),
                1,
                s(&["y/c"]),
                0
            ),
            (
                "CiliumNetworkPolicy".into(),
                "x/broken".into(),
                0,
                s(&[]),
                1
            ),
            (
                "CiliumNetworkPolicy".into(),
                "x/web".into(),
                2,
                s(&["x/a", "x/b"]),
                0
            ),
            (
                "CiliumClusterwideNetworkPolicy".into(),
                "/ping-from-y".into(),
                1,
                s(&["x/a", "x/b"]),
                0
            ),
        ]
    );
    agent.server.abort();
}

//! The agent's side of the engine API, against a scripted peer on a unix
//! socket. This peer is a test double of sluice-engine (the real engine's side
//! is tested in tests/tests/engine_api.rs and the lab tests); a double is
//! needed here to speak another protocol version and to refuse on purpose.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_agent::attachments::Attachments;
use sluice_agent::core::AgentCore;
use sluice_agent::desired::NodeConfig;
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::objects::Object;
use sluice_agent::store::StoreHandle;
use sluice_api::engine::{AgentToEngine, EngineToAgent, Outcome, ENGINE_PROTOCOL_VERSION};
use sluice_tables::{Cidr, MacAddr};

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "n".into(),
        cluster_name: "default".into(),
        gateway_mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
        mtu: 1500,
        veth_queues: 1,
        pod_cidrs: vec![Cidr::parse("10.1.0.0/24").unwrap()],
        uplink: None,
        services: Default::default(),
        lb: Default::default(),
        policy: Default::default(),
    }
}

fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-ec-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

struct Peer {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Peer {
    fn accept(listener: &UnixListener) -> Peer {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Peer {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn recv(&mut self) -> AgentToEngine {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn send(&mut self, message: &EngineToAgent) {
        let mut line = serde_json::to_vec(message).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).unwrap();
    }
}

fn pod(name: &str, ip: &str) -> Object {
    Object::Pod(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "status": {"podIPs": [{"ip": ip}]}
        }))
        .unwrap(),
    )
}

fn start(
    name: &str,
) -> (
    tokio::runtime::Runtime,
    Arc<AgentCore>,
    StoreHandle,
    UnixListener,
) {
    let path = socket_path(name);
    let listener = UnixListener::bind(&path).unwrap();
    let store = StoreHandle::new();
    let core = AgentCore::new(
        config(),
        "test".into(),
        store.clone(),
        Attachments::in_memory(),
        IdentityAllocator::in_memory(),
        LbIds::in_memory(),
    );
    core.recompute();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(sluice_agent::engine_client::run(
        core.clone(),
        path,
        "test-agent".into(),
    ));
    (runtime, core, store, listener)
}

fn wait(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn snapshot_then_deltas_generations_continue_above_the_engine_and_a_refused_delta_resyncs() {
    let (_rt, core, store, listener) = start("sync");
    let mut peer = Peer::accept(&listener);
    assert!(
        matches!(peer.recv(), AgentToEngine::Hello { protocol, .. } if protocol == ENGINE_PROTOCOL_VERSION)
    );
    // The engine already runs generation 41 from an earlier agent.
    peer.send(&EngineToAgent::Welcome {
        protocol: ENGINE_PROTOCOL_VERSION,
        engine: "double".into(),
        applied_generation: 41,
    });
    let first = match peer.recv() {
        AgentToEngine::Snapshot { generation, state } => {
            assert!(
                generation > 41,
                "generation {generation} not above the engine's 41"
            );
            assert!(state.ipcache.is_empty());
            generation
        }
        other => panic!("expected a snapshot, got {other:?}"),
    };
    peer.send(&EngineToAgent::Ack {
        generation: first,
        outcome: Outcome::Applied,
    });
    wait("the ack to be recorded", || {
        core.engine_view().acked_generation == first
    });

    // A pod appears: a delta on top of the acked generation.
    store.update(|s| s.upsert(pod("a", "10.9.0.5")));
    core.recompute();
    let second = match peer.recv() {
        AgentToEngine::Delta {
            generation,
            base,
            changes,
        } => {
            assert_eq!(base, first);
            assert_eq!(generation, first + 1);
            let text = serde_json::to_string(&changes).unwrap();
            assert!(
                text.contains("upsert_ip_cache") && text.contains("10.9.0.5"),
                "{text}"
            );
            generation
        }
        other => panic!("expected a delta, got {other:?}"),
    };
    // The engine refuses it: the agent must fall back to a full snapshot.
    peer.send(&EngineToAgent::Ack {
        generation: second,
        outcome: Outcome::Refused {
            reason: "base does not match".into(),
        },
    });
    match peer.recv() {
        AgentToEngine::Snapshot { generation, state } => {
            assert_eq!(generation, second);
            assert_eq!(state.ipcache.len(), 1);
        }
        other => panic!("expected a snapshot after the refusal, got {other:?}"),
    }
    assert_eq!(
        core.engine_view().refusal.as_deref(),
        Some("base does not match")
    );
    peer.send(&EngineToAgent::Ack {
        generation: second,
        outcome: Outcome::Applied,
    });
    wait("in sync", || {
        let v = core.engine_view();
        v.acked_generation == second && v.refusal.is_none()
    });
}

#[test]
fn a_version_mismatch_is_a_clear_error_on_the_agent_side() {
    let (_rt, core, _store, listener) = start("version");
    let mut peer = Peer::accept(&listener);
    let _hello = peer.recv();
    peer.send(&EngineToAgent::Welcome {
        protocol: ENGINE_PROTOCOL_VERSION + 1,
        engine: "future engine".into(),
        applied_generation: 0,
    });
    wait("the mismatch to be recorded", || {
        core.engine_view().refusal.is_some()
    });
    let reason = core.engine_view().refusal.unwrap();
    assert!(
        reason.contains("version mismatch")
            && reason.contains(&format!("version {ENGINE_PROTOCOL_VERSION}"))
            && reason.contains(&format!("version {}", ENGINE_PROTOCOL_VERSION + 1)),
        "{reason}"
    );
    assert!(!core.engine_view().connected);

    // And the engine's own refusal is shown as it said it.
    let mut peer = Peer::accept(&listener);
    let _hello = peer.recv();
    peer.send(&EngineToAgent::Refused {
        reason:
            "engine API version mismatch: the engine speaks version 1, the peer speaks version 7"
                .into(),
    });
    wait("the refusal", || {
        core.engine_view()
            .refusal
            .is_some_and(|r| r.contains("peer speaks version 7"))
    });
}

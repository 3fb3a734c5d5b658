//! The agent's events client against a test engine-events server: a real
//! unix socket speaking Sluice's own events protocol (`sluice_api::events`,
//! newline JSON; this is our protocol, not Hubble's or Cilium's). The real
//! engine's side is tested with the engine; a double here can start late,
//! go away, and speak another protocol version on purpose.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_agent::attachments::Attachments;
use sluice_agent::core::AgentCore;
use sluice_agent::desired::NodeConfig;
use sluice_agent::flows::HubEvent;
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::objects::Object;
use sluice_agent::store::StoreHandle;
use sluice_api::events::{
    CtState, EngineEvent, EngineFlow, FlowKind, FlowTuple, FlowVerdict, LostEvents, LostSource,
    EVENTS_PROTOCOL_VERSION,
};
use sluice_tables::{Cidr, MacAddr};

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node1".into(),
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

struct Agent {
    core: Arc<AgentCore>,
    path: PathBuf,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

/// An agent knowing one pod (web, 10.2.0.7, on another node) whose events
/// client is already trying to reach a socket nobody serves yet.
fn agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine-events.sock");
    let store = StoreHandle::new();
    store.update(|s| {
        s.upsert(Object::Pod(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                "status": {"podIPs": [{"ip": "10.2.0.7"}]}
            }))
            .unwrap(),
        ))
    });
    let core = AgentCore::new(
        config(),
        "test".into(),
        store,
        Attachments::in_memory(),
        IdentityAllocator::in_memory(),
        LbIds::in_memory(),
    );
    core.recompute();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(sluice_agent::events_client::run(core.clone(), path.clone()));
    Agent {
        core,
        path,
        _dir: dir,
        _runtime: runtime,
    }
}

struct Engine {
    stream: UnixStream,
}

impl Engine {
    fn accept(listener: &UnixListener) -> Engine {
        let (stream, _) = listener.accept().unwrap();
        Engine { stream }
    }

    fn send(&mut self, event: &EngineEvent) {
        let mut line = serde_json::to_vec(event).unwrap();
        line.push(b'\n');
        self.stream.write_all(&line).unwrap();
    }

    fn hello(&mut self, protocol: u32) {
        self.send(&EngineEvent::Hello {
            protocol,
            engine: "test-engine".into(),
            epoch_unix_ns: 0,
        });
    }
}

fn listen(path: &PathBuf) -> UnixListener {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).unwrap()
}

fn flow_event(time_unix_ns: u64) -> EngineEvent {
    EngineEvent::Flow(Box::new(EngineFlow {
        time_unix_ns,
        worker: 0,
        kind: FlowKind::Trace,
        verdict: FlowVerdict::Forwarded,
        drop_reason: None,
        ingress_ifindex: 2,
        ingress_ifname: "eth0".into(),
        egress_ifindex: Some(2),
        egress_ifname: "eth0".into(),
        from_uplink: true,
        to_uplink: true,
        len: 60,
        ct: CtState::New,
        original: Some(FlowTuple {
            src: "192.168.1.50".parse().unwrap(),
            dst: "10.2.0.7".parse().unwrap(),
            src_port: 50000,
            dst_port: 443,
            protocol: 6,
        }),
        translated: None,
        tcp_flags: 0x02,
        icmp: None,
        service: None,
        policy: None,
        dns: None,
    }))
}

fn wait(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn flow_times(agent: &Agent) -> Vec<String> {
    agent
        .core
        .flows
        .buffered()
        .iter()
        .filter_map(|e| match e {
            HubEvent::Flow(f) => Some(f.time.clone()),
            HubEvent::Lost(_) => None,
        })
        .collect()
}

#[test]
fn the_client_waits_for_the_engine_reads_events_and_reconnects() {
    let agent = agent();
    // No engine for a while: the agent keeps running and retrying.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!agent.core.flows.status().engine_events_connected);
    let listener = listen(&agent.path);

    let mut engine = Engine::accept(&listener);
    engine.hello(EVENTS_PROTOCOL_VERSION);
    engine.send(&flow_event(1_000));
    engine.send(&EngineEvent::Lost(LostEvents {
        source: LostSource::PerfEventRingBuffer,
        num_events_lost: 3,
        worker: Some(0),
        time_unix_ns: 1_500,
    }));
    engine.send(&EngineEvent::Stats(serde_json::json!({"forwarded": 42})));
    wait("the first flow", || flow_times(&agent).len() == 1);
    wait("the engine's lost report", || {
        agent.core.flows.buffered().len() == 2
    });
    wait("the stats", || agent.core.flows.latest_stats().is_some());
    assert_eq!(agent.core.flows.latest_stats().unwrap()["forwarded"], 42);
    assert!(agent.core.flows.status().engine_events_connected);
    assert_eq!(
        agent.core.flows.lost_totals(),
        [(LostSource::PerfEventRingBuffer, 3)]
    );
    // Enriched with the agent's state: the pod behind the address.
    let first = match &agent.core.flows.buffered()[0] {
        HubEvent::Flow(f) => f.clone(),
        other => panic!("{other:?}"),
    };
    let destination = first.destination.as_ref().unwrap();
    assert_eq!(
        (
            destination.namespace.as_str(),
            destination.pod_name.as_str()
        ),
        ("shop", "web")
    );
    assert_eq!(first.node_name, "node1");
    // The engine's report stays where it was among the flows.
    assert!(matches!(
        &agent.core.flows.buffered()[1],
        HubEvent::Lost(l) if l.num_events_lost == 3
    ));

    // The engine restarts: the agent reconnects and reads on.
    drop(engine);
    let mut engine = Engine::accept(&listener);
    engine.hello(EVENTS_PROTOCOL_VERSION);
    engine.send(&flow_event(2_000));
    wait("the flow after the reconnect", || {
        flow_times(&agent).len() == 2
    });
    assert_eq!(
        flow_times(&agent),
        [1_000, 2_000].map(sluice_api::hubble::format_time)
    );
}

#[test]
fn an_engine_speaking_another_protocol_is_left() {
    let agent = agent();
    let listener = listen(&agent.path);
    let mut engine = Engine::accept(&listener);
    engine.hello(EVENTS_PROTOCOL_VERSION + 1);
    // Whatever follows is not read as this protocol's events: the agent
    // hangs up, so the engine's side reads end of file.
    let _ = engine.stream.write_all(b"");
    engine
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = String::new();
    let n = BufReader::new(&engine.stream).read_line(&mut rest).unwrap();
    assert_eq!(n, 0, "the agent wrote {rest:?}");
    // It tries again later; a matching engine is then read.
    let mut engine = Engine::accept(&listener);
    engine.hello(EVENTS_PROTOCOL_VERSION);
    engine.send(&flow_event(3_000));
    wait("the flow from the matching engine", || {
        flow_times(&agent).len() == 1
    });
}

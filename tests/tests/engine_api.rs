//! The engine's agent API, end to end: the real `sluice-engine` in a lab node
//! namespace, this test acting as the agent over `--api-socket` with the
//! `sluice_api` framing, real ping between pod namespaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_api::engine::{AgentToEngine, EngineToAgent, Outcome, ENGINE_PROTOCOL_VERSION};
use sluice_api::{read_message, write_message, Change};
use sluice_lab::command::is_root;
use sluice_lab::{parse_ping, EngineOptions, Lab, LabSpec};
use sluice_tests::engine_view::{open_ports, xdp_prog_id};

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "skipping {test}: lab tests need root");
    false
}

/// A two-pod lab whose engine has an API socket and, with `state_file`, the
/// lab's state file too.
fn api_lab(state_file: bool) -> Lab {
    let lab = Lab::new(LabSpec::engine(2).with_static_pods()).expect("lab up");
    lab.start_engine(&EngineOptions {
        state_file,
        api_socket: true,
        ..EngineOptions::default()
    })
    .expect("engine starts (build it with cargo build --release -p sluice-engine)");
    lab
}

/// This test's side of an agent connection.
struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Agent {
    fn connect(lab: &Lab) -> Agent {
        let path = lab.api_socket();
        let stream = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Agent {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn ask(&mut self, message: &AgentToEngine) -> EngineToAgent {
        write_message(&mut self.writer, message).unwrap();
        read_message(&mut self.reader)
            .expect("an answer from the engine")
            .expect("an answer, not a closed connection")
    }

    fn hello_as(&mut self, protocol: u32, agent: &str) -> EngineToAgent {
        self.ask(&AgentToEngine::Hello {
            protocol,
            agent: agent.into(),
        })
    }

    /// Hello with our version; returns the applied generation from the Welcome.
    fn hello(&mut self) -> u64 {
        match self.hello_as(ENGINE_PROTOCOL_VERSION, "engine-api-test") {
            EngineToAgent::Welcome {
                protocol,
                engine,
                applied_generation,
            } => {
                assert_eq!(protocol, ENGINE_PROTOCOL_VERSION);
                assert!(engine.starts_with("sluice-engine "), "{engine}");
                applied_generation
            }
            other => panic!("expected a Welcome, got {other:?}"),
        }
    }

    /// The engine closed the connection.
    fn assert_closed(mut self) {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => {}
            Ok(_) => panic!("expected the engine to close the connection, got {rest:?}"),
            Err(e) => panic!("expected the engine to close the connection: {e}"),
        }
    }
}

fn applied(generation: u64) -> EngineToAgent {
    EngineToAgent::Ack {
        generation,
        outcome: Outcome::Applied,
    }
}

fn refused_reason(answer: &EngineToAgent) -> &str {
    match answer {
        EngineToAgent::Ack {
            outcome: Outcome::Refused { reason },
            ..
        }
        | EngineToAgent::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn v4(lab: &Lab, pod: usize) -> IpAddr {
    lab.pod(pod).unwrap().ipv4.into()
}

fn v6(lab: &Lab, pod: usize) -> IpAddr {
    lab.pod(pod).unwrap().ipv6.into()
}

fn reaches(lab: &Lab, from: usize, to: usize) -> bool {
    [v4(lab, to), v6(lab, to)]
        .into_iter()
        .all(|addr| lab.ping(from, addr, 2).unwrap().all_received())
}

fn unreachable(lab: &Lab, from: usize, to: usize) -> bool {
    [v4(lab, to), v6(lab, to)]
        .into_iter()
        .all(|addr| lab.ping(from, addr, 2).unwrap().received == 0)
}

fn port_names(stats: &Value) -> Vec<String> {
    open_ports(stats)
        .into_iter()
        .map(|(name, _, _)| name)
        .collect()
}

/// One command on the stats socket (`stats` or `reload`).
fn stats_command(socket: &Path, command: &str) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

#[test]
fn an_agent_drives_the_engine_through_the_api_socket() {
    if !root_or_skip("an_agent_drives_the_engine_through_the_api_socket") {
        return;
    }
    let lab = api_lab(false);
    let state = lab.node_state();
    let lxc2 = lab.pod(2).unwrap().node_ifname.clone();

    // Without --state the engine starts empty and waits.
    let stats = lab.engine_stats().unwrap();
    let api = &stats["api"];
    assert_eq!(api["socket"], lab.api_socket().display().to_string());
    assert_eq!(api["connected"], false);
    assert_eq!(api["agent"], Value::Null);
    assert_eq!(api["applied_generation"], 0);
    assert_eq!(api["last_refusal"], Value::Null);
    assert_eq!(stats["endpoints"], 0);
    assert!(stats["ports"].as_array().unwrap().is_empty(), "{stats}");
    assert_eq!(lab.ping(1, v4(&lab, 2), 1).unwrap().received, 0);
    let mode = std::fs::metadata(lab.api_socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // `reload` has no file to re-read.
    let answer = stats_command(&lab.stats_socket(), "reload");
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("--state"),
        "{answer}"
    );

    // Hello, then the snapshot.
    let mut agent = Agent::connect(&lab);
    assert_eq!(agent.hello(), 0);
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["connected"], true);
    assert_eq!(stats["api"]["agent"], "engine-api-test");
    assert_eq!(
        agent.ask(&AgentToEngine::Snapshot {
            generation: 1,
            state: state.clone(),
        }),
        applied(1)
    );
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["applied_generation"], 1);
    assert_eq!(stats["endpoints"], 2);
    assert_eq!(port_names(&stats), ["lxc1", "lxc2"], "{stats}");
    assert!(
        reaches(&lab, 1, 2),
        "pod1 -> pod2 after the snapshot\n{}",
        lab.engine_log_tail(20)
    );

    // A delta removing pod2's endpoint: pod2 is cut off, its interface detached.
    let remove = AgentToEngine::Delta {
        generation: 2,
        base: 1,
        changes: vec![Change::RemoveEndpoint {
            ifname: lxc2.clone(),
        }],
    };
    assert_eq!(agent.ask(&remove), applied(2));
    assert!(unreachable(&lab, 1, 2), "pod2 still reachable");
    let stats = lab.engine_stats().unwrap();
    assert_eq!(port_names(&stats), ["lxc1"], "{stats}");

    // A delta on a stale base is refused; the state stays.
    let stale = AgentToEngine::Delta {
        generation: 3,
        base: 1,
        changes: vec![Change::UpsertEndpoint {
            endpoint: state.endpoints[1].clone(),
        }],
    };
    let answer = agent.ask(&stale);
    let reason = refused_reason(&answer).to_string();
    assert!(
        matches!(answer, EngineToAgent::Ack { generation: 3, .. }),
        "{answer:?}"
    );
    assert!(
        reason.contains("base 1") && reason.contains("applied generation 2"),
        "{reason}"
    );
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["last_refusal"], reason.as_str());
    assert_eq!(stats["api"]["applied_generation"], 2);
    assert_eq!(stats["endpoints"], 1);

    // Another protocol version is refused naming both; that connection
    // replaced ours, which the engine closed.
    let mut stranger = Agent::connect(&lab);
    let answer = stranger.hello_as(ENGINE_PROTOCOL_VERSION + 41, "agent-from-the-future");
    let reason = refused_reason(&answer).to_string();
    assert!(
        matches!(answer, EngineToAgent::Refused { .. }),
        "{answer:?}"
    );
    assert!(
        reason.contains(&format!("version {ENGINE_PROTOCOL_VERSION}"))
            && reason.contains(&format!("version {}", ENGINE_PROTOCOL_VERSION + 41)),
        "{reason}"
    );
    stranger.assert_closed();
    agent.assert_closed();

    // Reconnect, put pod2 back, disconnect: forwarding goes on.
    let mut agent = Agent::connect(&lab);
    assert_eq!(agent.hello(), 2);
    let readd = AgentToEngine::Delta {
        generation: 3,
        base: 2,
        changes: vec![Change::UpsertEndpoint {
            endpoint: state.endpoints[1].clone(),
        }],
    };
    assert_eq!(agent.ask(&readd), applied(3));
    drop(agent);
    std::thread::sleep(Duration::from_millis(200));
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["connected"], false, "{}", stats["api"]);
    assert_eq!(stats["api"]["applied_generation"], 3);
    assert_eq!(port_names(&stats), ["lxc1", "lxc2"], "{stats}");
    assert!(
        reaches(&lab, 1, 2) && reaches(&lab, 2, 1),
        "forwarding stopped with the agent gone\n{}",
        lab.engine_log_tail(20)
    );

    // A restarted agent resends the same state while a fast ping runs: not one
    // echo is lost, and no socket or program is opened again.
    let before = lab.engine_stats().unwrap();
    let programs: Vec<u64> = ["lxc1", "lxc2"]
        .iter()
        .map(|i| xdp_prog_id(&lab, i))
        .collect();
    let mut agent = Agent::connect(&lab);
    assert_eq!(agent.hello(), 3);
    let to = v4(&lab, 2).to_string();
    let ping = std::thread::scope(|scope| {
        let pinging = scope.spawn(|| {
            lab.exec_timeout(
                1,
                &[
                    "ping", "-4", "-n", "-q", "-c", "60", "-i", "0.05", "-W", "1", &to,
                ],
                Duration::from_secs(20),
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        for generation in 4..=6 {
            assert_eq!(
                agent.ask(&AgentToEngine::Snapshot {
                    generation,
                    state: state.clone(),
                }),
                applied(generation)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        pinging.join().unwrap()
    });
    let result = parse_ping(&ping.stdout).unwrap();
    assert_eq!(result.sent, 60, "{ping:?}");
    assert_eq!(
        result.received,
        60,
        "echoes lost during the resync: {ping:?}\n{}",
        lab.engine_log_tail(20)
    );
    let after = lab.engine_stats().unwrap();
    assert_eq!(after["api"]["applied_generation"], 6);
    assert!(
        after["generation"].as_u64() > before["generation"].as_u64(),
        "the snapshots were not published: {} -> {}",
        before["generation"],
        after["generation"]
    );
    assert_eq!(
        open_ports(&after),
        open_ports(&before),
        "a resync with the same state opened sockets again"
    );
    let programs_after: Vec<u64> = ["lxc1", "lxc2"]
        .iter()
        .map(|i| xdp_prog_id(&lab, i))
        .collect();
    assert_eq!(
        programs_after, programs,
        "a resync with the same state attached programs again"
    );
}

#[test]
fn the_state_file_serves_until_an_agent_replaces_it_and_reload_goes_back_to_it() {
    if !root_or_skip("the_state_file_serves_until_an_agent_replaces_it_and_reload_goes_back_to_it")
    {
        return;
    }
    let lab = api_lab(true);
    assert!(reaches(&lab, 1, 2), "the state file is not served");
    let mut agent = Agent::connect(&lab);
    assert_eq!(agent.hello(), 0, "a file state is no agent generation");
    let mut without_pod2 = lab.node_state();
    without_pod2.endpoints.truncate(1);
    assert_eq!(
        agent.ask(&AgentToEngine::Snapshot {
            generation: 1,
            state: without_pod2,
        }),
        applied(1)
    );
    assert!(unreachable(&lab, 1, 2), "the agent's state is not served");

    // A conflicting snapshot is refused naming the endpoints; the state stays.
    let mut conflicting = lab.node_state();
    conflicting.endpoints[1].ipv4 = conflicting.endpoints[0].ipv4;
    let answer = agent.ask(&AgentToEngine::Snapshot {
        generation: 2,
        state: conflicting.clone(),
    });
    let reason = refused_reason(&answer);
    assert!(
        reason.contains(&conflicting.endpoints[0].name)
            && reason.contains(&conflicting.endpoints[1].name),
        "{reason}"
    );
    assert_eq!(lab.engine_stats().unwrap()["endpoints"], 1);

    // `reload` puts the file's state back and forgets the agent generation,
    // so the agent's next delta is refused (it will send a snapshot).
    let answer = stats_command(&lab.stats_socket(), "reload");
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(reaches(&lab, 1, 2), "reload did not restore the file state");
    let stats = lab.engine_stats().unwrap();
    assert_eq!(stats["api"]["applied_generation"], 0);
    let answer = agent.ask(&AgentToEngine::Delta {
        generation: 3,
        base: 1,
        changes: vec![],
    });
    assert!(refused_reason(&answer).contains("base 1"), "{answer:?}");
    assert!(reaches(&lab, 1, 2));
}

#[test]
fn the_engine_refuses_to_start_without_a_state_file_or_an_api_socket() {
    // No lab and no root needed: the engine refuses before touching anything.
    let engine = sluice_lab::find_engine().expect("engine binary");
    let out = std::process::Command::new(&engine)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", engine.display()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--state") && stderr.contains("--api-socket"),
        "{stderr}"
    );
}

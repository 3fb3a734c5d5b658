//! The agent's Hubble socket over a real unix socket in a temp dir: which
//! buffered flows a request selects (last N, first N, since/until,
//! whitelist/blacklist), lost-event reports, following new flows, a lagging
//! follower, bad requests, and the socket's mode.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_agent::flows::FlowHub;
use sluice_api::events::{LostEvents, LostSource};
use sluice_api::hubble::{format_time, Flow, GetFlowsResponse, Ip};

/// 2026-11-18T11:06:40Z
const T0: u64 = 1_795_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

struct Server {
    hub: Arc<FlowHub>,
    path: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

fn flow(second: u64, verdict: &str, source: &str) -> Flow {
    Flow {
        time: format_time(T0 + second * SECOND),
        verdict: verdict.into(),
        ip: Some(Ip {
            source: source.into(),
            destination: "10.1.0.9".into(),
            ip_version: "IPv4".into(),
            ..Default::default()
        }),
        flow_type: "L3_L4".into(),
        node_name: "node1".into(),
        ..Default::default()
    }
}

/// Flows at seconds 1..=5: 1, 3, 5 forwarded from 10.1.0.1; 2, 4 dropped
/// from 10.1.0.2.
fn server() -> Server {
    let hub = Arc::new(FlowHub::new(100));
    for s in 1..=5 {
        if s % 2 == 1 {
            hub.push(flow(s, "FORWARDED", "10.1.0.1"));
        } else {
            hub.push(flow(s, "DROPPED", "10.1.0.2"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubble.sock");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(sluice_agent::hubble_server::serve(
            hub.clone(),
            "node1".into(),
            &path,
        ))
        .unwrap();
    Server {
        hub,
        path,
        _dir: dir,
        runtime,
    }
}

struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    fn request(server: &Server, request: serde_json::Value) -> Client {
        let mut stream = UnixStream::connect(&server.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        stream.write_all(&line).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// The next line, or None at the end of the stream.
    fn next(&mut self) -> Option<GetFlowsResponse> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        (n > 0).then(|| serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
    }

    fn all(mut self) -> Vec<GetFlowsResponse> {
        let mut out = Vec::new();
        while let Some(r) = self.next() {
            out.push(r);
        }
        out
    }
}

/// The seconds of the flows in `answer` (lost reports as their count, negated).
fn seconds(answer: &[GetFlowsResponse]) -> Vec<i64> {
    answer
        .iter()
        .map(|r| match (&r.flow, &r.lost_events) {
            (Some(f), None) => {
                let t = sluice_api::hubble::parse_time(&f.time).unwrap();
                ((t - T0) / SECOND) as i64
            }
            (None, Some(l)) => -(l.num_events_lost as i64),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn ask(server: &Server, request: serde_json::Value) -> Vec<i64> {
    seconds(&Client::request(server, request).all())
}

#[test]
fn number_selects_the_last_or_the_first_flows() {
    let s = server();
    assert_eq!(ask(&s, json!({"protocol": 1})), [1, 2, 3, 4, 5]);
    assert_eq!(ask(&s, json!({"protocol": 1, "number": 2})), [4, 5]);
    assert_eq!(
        ask(&s, json!({"protocol": 1, "number": 2, "first": true})),
        [1, 2]
    );
    assert_eq!(
        ask(&s, json!({"protocol": 1, "number": 50})),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn since_and_until_bound_the_answer() {
    let s = server();
    let at = |sec: u64| format_time(T0 + sec * SECOND);
    assert_eq!(
        ask(&s, json!({"protocol": 1, "since": at(2)})),
        [2, 3, 4, 5]
    );
    assert_eq!(ask(&s, json!({"protocol": 1, "until": at(3)})), [1, 2, 3]);
    assert_eq!(
        ask(
            &s,
            json!({"protocol": 1, "since": at(2), "until": at(4), "number": 2})
        ),
        [3, 4]
    );
}

#[test]
fn whitelist_and_blacklist_filter_the_answer() {
    let s = server();
    assert_eq!(
        ask(
            &s,
            json!({"protocol": 1, "whitelist": [{"verdict": ["DROPPED"]}]})
        ),
        [2, 4]
    );
    assert_eq!(
        ask(
            &s,
            json!({"protocol": 1, "blacklist": [{"verdict": ["DROPPED"]}]})
        ),
        [1, 3, 5]
    );
    // Whitelist filters are OR-ed; within one filter fields are AND-ed.
    assert_eq!(
        ask(
            &s,
            json!({"protocol": 1, "whitelist": [
                {"verdict": ["DROPPED"], "source_ip": ["10.1.0.1"]},
                {"source_ip": ["10.1.0.1"]}
            ], "number": 2})
        ),
        [3, 5]
    );
}

#[test]
fn every_line_carries_node_name_and_time() {
    let s = server();
    let answer = Client::request(&s, json!({"protocol": 1, "number": 1})).all();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].node_name, "node1");
    assert_eq!(answer[0].time, format_time(T0 + 5 * SECOND));
    assert_eq!(answer[0].flow.as_ref().unwrap().verdict, "FORWARDED");
}

#[test]
fn lost_events_are_reported_where_they_happened() {
    let s = server();
    s.hub.record_lost(LostEvents {
        source: LostSource::PerfEventRingBuffer,
        num_events_lost: 7,
        worker: Some(1),
        time_unix_ns: T0 + 5 * SECOND,
    });
    s.hub.push(flow(6, "FORWARDED", "10.1.0.1"));
    let answer = Client::request(&s, json!({"protocol": 1, "number": 2})).all();
    assert_eq!(seconds(&answer), [5, -7, 6]);
    let lost = answer[1].lost_events.as_ref().unwrap();
    assert_eq!(lost.source, "PERF_EVENT_RING_BUFFER");
    assert_eq!(lost.cpu.unwrap().value, 1);
}

#[test]
fn follow_streams_new_matching_flows() {
    let s = server();
    let mut client = Client::request(
        &s,
        json!({"protocol": 1, "number": 1, "follow": true, "whitelist": [{"verdict": ["FORWARDED"]}]}),
    );
    assert_eq!(seconds(&[client.next().unwrap()]), [5]);
    // The server has subscribed once the buffered answer was written.
    s.hub.push(flow(6, "DROPPED", "10.1.0.2"));
    s.hub.push(flow(7, "FORWARDED", "10.1.0.1"));
    assert_eq!(seconds(&[client.next().unwrap()]), [7]);
    s.hub.push(flow(8, "FORWARDED", "10.1.0.1"));
    assert_eq!(seconds(&[client.next().unwrap()]), [8]);
}

#[test]
fn a_follower_that_half_closes_after_its_request_keeps_receiving() {
    let s = server();
    let mut client = Client::request(&s, json!({"protocol": 1, "number": 1, "follow": true}));
    client
        .reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(seconds(&[client.next().unwrap()]), [5]);
    std::thread::sleep(Duration::from_millis(100));
    s.hub.push(flow(6, "FORWARDED", "10.1.0.1"));
    assert_eq!(seconds(&[client.next().unwrap()]), [6]);
}

#[test]
fn a_lagging_follower_is_told_how_many_flows_it_missed() {
    let s = server();
    let mut client = Client::request(&s, json!({"protocol": 1, "number": 1, "follow": true}));
    assert_eq!(seconds(&[client.next().unwrap()]), [5]);
    // Not reading: the socket buffer fills, the server blocks writing and
    // falls behind the live stream.
    let pushed = 3 * sluice_agent::flows::LIVE_CAPACITY as u64;
    for n in 0..pushed {
        s.hub.push(flow(10 + n, "FORWARDED", "10.1.0.1"));
    }
    let mut flows = 0u64;
    let mut lost = 0u64;
    while flows + lost < pushed {
        let r = client.next().expect("the stream continues");
        match (r.flow, r.lost_events) {
            (Some(_), None) => flows += 1,
            (None, Some(l)) => {
                assert_eq!(l.source, "HUBBLE_RING_BUFFER");
                lost += l.num_events_lost;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(lost > 0, "no lost_events after {pushed} unread flows");
    assert_eq!(flows + lost, pushed);
    let counted: u64 = s
        .hub
        .lost_totals()
        .iter()
        .filter(|(source, _)| *source == LostSource::HubbleRingBuffer)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted, lost);
}

#[test]
fn a_bad_request_gets_one_error_line_naming_the_field() {
    let s = server();
    let answer = Client::request(&s, json!({"protocol": 1, "since": "yesterday"})).all();
    assert_eq!(answer.len(), 1, "{answer:?}");
    let error = answer[0].error.as_deref().unwrap();
    assert!(
        error.contains("since") && error.contains("yesterday"),
        "{error}"
    );
    assert!(answer[0].flow.is_none());

    let answer = Client::request(&s, json!({"protocol": 1, "number": -3})).all();
    let error = answer[0].error.as_deref().unwrap();
    assert!(error.contains("number"), "{error}");

    let answer = Client::request(&s, json!({"protocol": 9})).all();
    let error = answer[0].error.as_deref().unwrap();
    assert!(error.contains("protocol 9"), "{error}");

    let answer = Client::request(
        &s,
        json!({"protocol": 1, "whitelist": [{}, {"source_ip": ["not-an-ip"]}]}),
    )
    .all();
    let error = answer[0].error.as_deref().unwrap();
    assert!(error.contains("whitelist[1]"), "{error}");
}

#[test]
fn the_socket_is_private_to_its_owner() {
    let s = server();
    let mode = std::fs::metadata(&s.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(s.runtime);
}

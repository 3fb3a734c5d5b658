//! The real consumer for `bench flows --consumer agent`: sluice-agent itself reads the
//! engine's events socket (`--engine-events-socket`), turns every event into a Hubble
//! flow and keeps its ring buffer; what it got is read from its Prometheus endpoint
//! (`hubble_flows_processed_total`, `hubble_lost_events_total{source}`), served on the
//! node namespace's loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::super::labkit::within_netns;
use crate::Lab;

/// Where the agent serves `/metrics`, inside the node namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9962";
/// The agent's ring of Hubble flows (Cilium's default `--hubble-event-buffer-capacity`).
const BUFFER_CAPACITY: usize = 4095;

/// The agent's flow counters at one instant (monotonic; windows are differences).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentCounts {
    /// Sum of `hubble_flows_processed_total` over its labels.
    pub flows: u64,
    /// `hubble_lost_events_total` by its `source` label.
    pub lost: BTreeMap<String, u64>,
}

impl AgentCounts {
    /// `self - earlier`, per counter.
    pub fn since(&self, earlier: &AgentCounts) -> AgentCounts {
        AgentCounts {
            flows: self.flows.saturating_sub(earlier.flows),
            lost: self
                .lost
                .iter()
                .map(|(source, &n)| {
                    let before = earlier.lost.get(source).copied().unwrap_or(0);
                    (source.clone(), n.saturating_sub(before))
                })
                .collect(),
        }
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Reads the two families from a Prometheus text exposition.
    pub fn parse(text: &str) -> Result<AgentCounts> {
        let mut counts = AgentCounts::default();
        let mut saw_flows = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let value = || -> Result<u64> {
                let v: f64 = value
                    .parse()
                    .with_context(|| format!("metrics: {name}: value {value:?}"))?;
                Ok(v as u64)
            };
            match name {
                "hubble_flows_processed_total" => {
                    saw_flows = true;
                    counts.flows += value()?;
                }
                "hubble_lost_events_total" => {
                    let source = label(labels, "source")
                        .with_context(|| format!("metrics: {line:?} has no source label"))?;
                    *counts.lost.entry(source.to_string()).or_insert(0) += value()?;
                }
                _ => {}
            }
        }
        // Before the first flow a counter family may have no series yet: zero is right
        // then, but a document without the family's HELP means another exporter.
        ensure!(
            saw_flows || text.contains("hubble_flows_processed"),
            "metrics: no hubble_flows_processed family (is this the agent's /metrics?)"
        );
        Ok(counts)
    }
}

/// The value of `key` in a Prometheus label set `a="x",b="y"`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Restarts the lab's agent with flow observation on (it reads `events.sock`) and its
/// metrics on [`METRICS_ADDR`], and waits until it is in sync with the engine again.
pub fn start(lab: &Lab) -> Result<()> {
    let addr: SocketAddr = METRICS_ADDR.parse()?;
    lab.stop_agent()?;
    let args = lab.observe_agent_args(BUFFER_CAPACITY, Some(addr));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_agent_with(&args)?;
    lab.wait_in_sync(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match scrape(lab) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err.context("the agent's metrics did not answer within 10 s"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `GET /metrics` from the agent, parsed.
pub fn scrape(lab: &Lab) -> Result<AgentCounts> {
    let body = within_netns(lab.node_netns(), || {
        let mut stream = TcpStream::connect_timeout(&METRICS_ADDR.parse()?, Duration::from_secs(2))
            .with_context(|| format!("connecting to the agent's metrics at {METRICS_ADDR}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    })?;
    let Some((head, text)) = body.split_once("\r\n\r\n") else {
        bail!("metrics: no HTTP header end in {} bytes", body.len());
    };
    ensure!(
        head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200"),
        "metrics: {}",
        head.lines().next().unwrap_or("")
    );
    AgentCounts::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP hubble_flows_processed Flows processed.\n\
        # TYPE hubble_flows_processed counter\n\
        hubble_flows_processed_total{type=\"Trace\",subtype=\"to-endpoint\",verdict=\"FORWARDED\"} 120\n\
        hubble_flows_processed_total{type=\"Drop\",subtype=\"\",verdict=\"DROPPED\"} 3\n\
        # HELP hubble_lost_events Lost events.\n\
        hubble_lost_events_total{source=\"PERF_EVENT_RING_BUFFER\"} 7000\n\
        hubble_lost_events_total{source=\"OBSERVER_EVENTS_QUEUE\"} 5\n\
        hubble_drop_total{reason=\"POLICY_DENIED\",protocol=\"TCP\"} 3\n";

    #[test]
    fn parses_flows_and_lost_by_source() {
        let c = AgentCounts::parse(TEXT).unwrap();
        assert_eq!(c.flows, 123);
        assert_eq!(c.lost["PERF_EVENT_RING_BUFFER"], 7000);
        assert_eq!(c.lost["OBSERVER_EVENTS_QUEUE"], 5);
        assert_eq!(c.lost_total(), 7005);
        let earlier = AgentCounts {
            flows: 100,
            lost: BTreeMap::from([("PERF_EVENT_RING_BUFFER".to_string(), 1000)]),
        };
        let window = c.since(&earlier);
        assert_eq!(window.flows, 23);
        assert_eq!(window.lost["PERF_EVENT_RING_BUFFER"], 6000);
        assert_eq!(window.lost["OBSERVER_EVENTS_QUEUE"], 5);
    }

    #[test]
    fn rejects_other_documents_and_bad_values() {
        assert!(AgentCounts::parse("up 1\n").is_err());
        let empty = "# HELP hubble_flows_processed Flows processed.\n";
        assert_eq!(AgentCounts::parse(empty).unwrap(), AgentCounts::default());
        let bad = "hubble_flows_processed_total{type=\"Trace\"} many\n";
        let err = AgentCounts::parse(bad).unwrap_err().to_string();
        assert!(err.contains("hubble_flows_processed_total"), "{err}");
        let unlabelled = "hubble_flows_processed_total 1\nhubble_lost_events_total 2\n";
        assert!(AgentCounts::parse(unlabelled).is_err());
        assert_eq!(label("a=\"x\", source=\"Y\"", "source"), Some("Y"));
    }
}

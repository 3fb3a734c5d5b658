//! Reads the engine's events socket (`sluice-engine --events-socket`, see
//! `sluice_api::events`): checks `Hello`'s protocol, then takes `Flow`,
//! `Lost` and `Stats` lines until the engine goes away, and reconnects with
//! backoff (the agent runs fine without an engine; it just sees no flows).
//!
//! Reading never waits for enrichment: flows go into a bounded intake queue
//! drained by one enrichment task; a flow that does not fit is counted and
//! reported as lost with source `OBSERVER_EVENTS_QUEUE` (Hubble's name for
//! the queue between the monitor and the observer), so a slow consumer costs
//! events, never the engine's socket buffer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use sluice_api::events::{
    EngineEvent, EngineFlow, LostEvents, LostSource, EVENTS_PROTOCOL_VERSION,
};
use sluice_api::MAX_MESSAGE_BYTES;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::core::AgentCore;
use crate::desired::Desired;
use crate::flows::context::FlowContext;
use crate::flows::enrich::enrich;
use crate::flows::FlowHub;

/// Flows waiting for enrichment.
pub const INTAKE_CAPACITY: usize = 16384;
/// First and longest wait between connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the intake queue carries: flows, and the engine's lost-event
/// reports in their place among them (so the ring shows a gap where it was).
#[derive(Debug)]
pub enum IntakeItem {
    Flow(Box<EngineFlow>),
    Lost(LostEvents),
}

/// The reading side of the intake queue: never waits, counts what does not fit.
#[derive(Debug)]
pub struct Intake {
    tx: mpsc::Sender<IntakeItem>,
    dropped: u64,
}

impl Intake {
    pub fn new(tx: mpsc::Sender<IntakeItem>) -> Intake {
        Intake { tx, dropped: 0 }
    }

    /// Queues `flow`, or counts it lost when the queue is full (or its
    /// reader is gone).
    pub fn offer(&mut self, flow: Box<EngineFlow>) {
        if self.tx.try_send(IntakeItem::Flow(flow)).is_err() {
            self.dropped += 1;
        }
    }

    /// Queues the engine's report behind the flows before it; with the queue
    /// full it goes to `hub` at once (out of place, but never uncounted).
    pub fn offer_lost(&mut self, lost: LostEvents, hub: &FlowHub) {
        if let Err(e) = self.tx.try_send(IntakeItem::Lost(lost)) {
            if let IntakeItem::Lost(lost) = e.into_inner() {
                hub.record_lost(lost);
            }
        }
    }

    /// Reports the flows dropped since the last report to `hub`.
    pub fn report_lost(&mut self, hub: &FlowHub) {
        if self.dropped > 0 {
            hub.record_lost(LostEvents {
                source: LostSource::ObserverEventsQueue,
                num_events_lost: std::mem::take(&mut self.dropped),
                worker: None,
                time_unix_ns: now_unix_ns(),
            });
        }
    }
}

/// Runs until the process ends: the enrichment task, and the connection
/// loop with backoff.
pub async fn run(core: Arc<AgentCore>, socket: PathBuf) {
    let (tx, rx) = mpsc::channel(INTAKE_CAPACITY);
    let enrichment = tokio::spawn(enrich_loop(core.clone(), rx));
    let mut intake = Intake::new(tx);
    let mut backoff = BACKOFF_MIN;
    let mut logged_absent = false;
    loop {
        let result = session(&core.flows, &socket, &mut intake, &mut backoff).await;
        core.flows.set_engine_events_connected(false);
        intake.report_lost(&core.flows);
        if let Err(e) = result {
            let absent = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    )
                })
            });
            if !absent || !logged_absent {
                tracing::warn!("engine events: {e:#}");
            }
            logged_absent = absent;
        }
        if enrichment.is_finished() {
            tracing::error!("flow enrichment stopped; not reading engine events any more");
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: Hello, then events until end of file or an error.
async fn session(
    hub: &FlowHub,
    socket: &Path,
    intake: &mut Intake,
    backoff: &mut Duration,
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connect to the engine's events socket {}", socket.display()))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut hello_seen = false;
    let mut malformed = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .await
            .context("read from the engine's events socket")?;
        if n == 0 {
            if hello_seen {
                tracing::info!("the engine closed its events socket");
                return Ok(());
            }
            bail!("the engine closed its events socket before Hello");
        }
        if line.len() > MAX_MESSAGE_BYTES {
            bail!("the engine sent an oversized event ({} bytes)", line.len());
        }
        let event: EngineEvent = match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(e) if hello_seen => {
                malformed += 1;
                if malformed == 1 {
                    tracing::warn!("malformed engine event skipped: {e}: {:?}", line.trim_end());
                }
                continue;
            }
            Err(e) => bail!("expected Hello from the engine's events socket: {e}: {line:?}"),
        };
        match event {
            EngineEvent::Hello {
                protocol, engine, ..
            } => {
                if protocol != EVENTS_PROTOCOL_VERSION {
                    bail!(
                        "the engine's events protocol is {protocol}, this agent speaks {EVENTS_PROTOCOL_VERSION}"
                    );
                }
                tracing::info!(%engine, "reading engine events");
                hello_seen = true;
                *backoff = BACKOFF_MIN;
                hub.set_engine_events_connected(true);
            }
            _ if !hello_seen => bail!("the engine's events socket did not start with Hello"),
            EngineEvent::Flow(flow) => {
                intake.offer(flow);
            }
            EngineEvent::Lost(lost) => intake.offer_lost(lost, hub),
            EngineEvent::Stats(stats) => {
                hub.set_stats(stats);
                // Once a second: a natural moment to report intake losses.
                intake.report_lost(hub);
            }
        }
    }
}

/// The enrichment context, rebuilt when the desired state changes.
struct ContextCache {
    desired: Option<Arc<Desired>>,
    number: u64,
    context: FlowContext,
}

impl ContextCache {
    fn current(&mut self, core: &AgentCore) -> &FlowContext {
        let generation = core.current();
        let fresh = self.number == generation.number
            && self
                .desired
                .as_ref()
                .is_some_and(|d| Arc::ptr_eq(d, &generation.desired));
        if !fresh {
            let store = core.store.snapshot();
            self.context = FlowContext::build(
                &generation.desired,
                &store,
                &core.config.node_name,
                generation.number,
            );
            self.desired = Some(generation.desired);
            self.number = generation.number;
        }
        &self.context
    }
}

/// Turns queued engine flows into Hubble flows in the hub, in order.
pub async fn enrich_loop(core: Arc<AgentCore>, mut rx: mpsc::Receiver<IntakeItem>) {
    let mut cache = ContextCache {
        desired: None,
        number: 0,
        context: FlowContext::default(),
    };
    while let Some(item) = rx.recv().await {
        match item {
            IntakeItem::Flow(event) => {
                let context = cache.current(&core);
                for flow in enrich(&event, context) {
                    core.flows.push(flow);
                }
            }
            IntakeItem::Lost(lost) => core.flows.record_lost(lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::events::{CtState, FlowKind, FlowVerdict};

    fn engine_flow(n: u64) -> Box<EngineFlow> {
        Box::new(EngineFlow {
            time_unix_ns: n,
            worker: 0,
            kind: FlowKind::Trace,
            verdict: FlowVerdict::Forwarded,
            drop_reason: None,
            ingress_ifindex: 1,
            ingress_ifname: String::new(),
            egress_ifindex: None,
            egress_ifname: String::new(),
            from_uplink: false,
            to_uplink: false,
            len: 64,
            ct: CtState::New,
            original: None,
            translated: None,
            tcp_flags: 0,
            icmp: None,
            service: None,
            policy: None,
            dns: None,
        })
    }

    #[test]
    fn a_full_intake_counts_and_reports_lost_events_without_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut intake = Intake::new(tx);
        for n in 0..5 {
            intake.offer(engine_flow(n));
        }
        let hub = FlowHub::new(10);
        intake.report_lost(&hub);
        assert_eq!(hub.lost_totals(), [(LostSource::ObserverEventsQueue, 3)]);
        // Reported once; the queue kept the first two.
        intake.report_lost(&hub);
        assert_eq!(hub.lost_totals(), [(LostSource::ObserverEventsQueue, 3)]);
        // The engine's own report does not fit either: counted at once.
        intake.offer_lost(
            LostEvents {
                source: LostSource::PerfEventRingBuffer,
                num_events_lost: 9,
                worker: Some(1),
                time_unix_ns: 5,
            },
            &hub,
        );
        assert_eq!(
            hub.lost_totals(),
            [
                (LostSource::PerfEventRingBuffer, 9),
                (LostSource::ObserverEventsQueue, 3)
            ]
        );
        for expected in [0, 1] {
            match rx.try_recv().unwrap() {
                IntakeItem::Flow(f) => assert_eq!(f.time_unix_ns, expected),
                other => panic!("{other:?}"),
            }
        }
        assert!(rx.try_recv().is_err());
    }
}

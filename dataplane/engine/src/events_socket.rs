//! The events socket (`--events-socket`): the events thread drains the
//! workers' flow queues and serves newline-delimited JSON
//! ([`sluice_api::events::EngineEvent`]) to every connected subscriber:
//! `Hello` on connect, then `Flow` lines, `Lost` reports and, once a second,
//! `Stats` (the stats socket's `stats` document).
//!
//! The thread never waits for a subscriber: sockets are non-blocking, each
//! subscriber has a bounded buffer, and a line that does not fit is dropped
//! for that subscriber and reported to it as `Lost` (source
//! `ObserverEventsQueue`) once its buffer has room again. Events the workers
//! could not queue are reported to everyone as `Lost` (source
//! `PerfEventRingBuffer`, per worker) from the deltas of the workers'
//! `events_lost` counters.
//!
//! Workers build events only while at least one subscriber is connected
//! ([`crate::flow_record::EventQueues::set_subscribers`]).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use sluice_api::events::{EngineEvent, LostEvents, LostSource, EVENTS_PROTOCOL_VERSION};

use crate::events::Resolver;
use crate::stats::EngineShared;

/// Tuning of the events thread.
#[derive(Clone, Copy, Debug)]
pub struct EventsOptions {
    /// How often the queues are drained while someone subscribes.
    pub drain_every: Duration,
    /// How long the thread waits for a first subscriber between checks of
    /// its stop flag.
    pub idle_wait: Duration,
    /// Bytes of lines a subscriber may have waiting; beyond, its events are
    /// dropped and counted.
    pub subscriber_buffer: usize,
    /// How often `Stats` is sent.
    pub stats_every: Duration,
}

impl Default for EventsOptions {
    fn default() -> EventsOptions {
        EventsOptions {
            drain_every: Duration::from_millis(5),
            idle_wait: Duration::from_millis(100),
            subscriber_buffer: 4 << 20,
            stats_every: Duration::from_secs(1),
        }
    }
}

/// Room beyond `subscriber_buffer` for the lines that are not events
/// (`Hello`, `Lost`, `Stats`): a subscriber that lost events learns it.
const CONTROL_SLACK: usize = 256 << 10;

const LISTENER: Token = Token(0);

/// The serving thread; stops it and removes the socket when dropped.
#[derive(Debug)]
pub struct EventsServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventsServer {
    /// Binds `path` (mode 0600, replacing a stale file) and serves it on a
    /// thread. `epoch` is the engine's monotonic epoch (records' time base).
    pub fn serve(
        path: &Path,
        shared: Arc<EngineShared>,
        epoch: Instant,
        options: EventsOptions,
    ) -> std::io::Result<EventsServer> {
        let listener = crate::api::bind_private(path)?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let epoch_unix_ns = wall.saturating_sub(epoch.elapsed().as_nanos() as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let mut thread = EventsThread {
            poll: Poll::new()?,
            listener,
            resolver: Resolver::new(Arc::clone(&shared), epoch_unix_ns),
            lost_seen: shared.counters.iter().map(|c| c.events_lost()).collect(),
            shared,
            subscribers: Vec::new(),
            epoch_unix_ns,
            options,
            stop: Arc::clone(&stop),
        };
        thread
            .poll
            .registry()
            .register(&mut thread.listener, LISTENER, Interest::READABLE)?;
        let worker_cores = thread.shared.info.cores.clone();
        let handle = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                pin_off_worker_cores(&worker_cores);
                thread.run()
            })?;
        Ok(EventsServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(handle),
        })
    }
}

impl Drop for EventsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connected subscriber and the lines waiting for it.
struct Subscriber {
    stream: UnixStream,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    /// Events dropped since the last `Lost` report to it.
    lost: u64,
}

impl Subscriber {
    fn waiting(&self) -> usize {
        self.pending.len() - self.written
    }

    /// Queues `line` if it fits within `limit` waiting bytes.
    fn offer(&mut self, line: &[u8], limit: usize) -> bool {
        if self.waiting() + line.len() > limit {
            return false;
        }
        self.pending.extend_from_slice(line);
        true
    }

    /// [`offer`](Self::offer), first writing what the socket takes when the
    /// buffer is full: a burst fills the kernel's socket buffer before
    /// anything is dropped.
    fn offer_or_flush(&mut self, line: &[u8], limit: usize) -> bool {
        self.offer(line, limit) || (self.flush().is_ok() && self.offer(line, limit))
    }

    /// Writes what the socket takes now; Err when the subscriber is gone.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.written < self.pending.len() {
            match self.stream.write(&self.pending[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
        } else if self.written > self.pending.len() / 2 {
            self.pending.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

struct EventsThread {
    poll: Poll,
    listener: UnixListener,
    shared: Arc<EngineShared>,
    resolver: Resolver,
    subscribers: Vec<Subscriber>,
    /// Each worker's `events_lost` counter at the last report.
    lost_seen: Vec<u64>,
    epoch_unix_ns: u64,
    options: EventsOptions,
    stop: Arc<AtomicBool>,
}

fn line(event: &EngineEvent) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

impl EventsThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(8);
        let mut last_stats: Option<Instant> = None;
        let mut backlog = false;
        while !self.stop.load(Ordering::Relaxed) {
            let wait = if backlog {
                Duration::ZERO
            } else if self.subscribers.is_empty() {
                self.options.idle_wait
            } else {
                self.options.drain_every
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!("events socket: epoll: {e}");
                    std::thread::sleep(wait);
                }
            }
            self.accept();
            self.resolver.refresh();
            backlog = self.drain();
            self.report_worker_losses();
            if !self.subscribers.is_empty()
                && last_stats.is_none_or(|t| t.elapsed() >= self.options.stats_every)
            {
                last_stats = Some(Instant::now());
                let stats = line(&EngineEvent::Stats(self.shared.report_json()));
                for subscriber in &mut self.subscribers {
                    // A snapshot: when it does not fit, the next one will.
                    subscriber.offer(&stats, self.options.subscriber_buffer + CONTROL_SLACK);
                }
            }
            self.flush();
        }
        self.shared.events.set_subscribers(0);
    }

    /// Takes every pending connection and greets it.
    fn accept(&mut self) {
        let before = self.subscribers.len();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let mut subscriber = Subscriber {
                        stream,
                        pending: Vec::new(),
                        written: 0,
                        lost: 0,
                    };
                    subscriber.offer(
                        &line(&EngineEvent::Hello {
                            protocol: EVENTS_PROTOCOL_VERSION,
                            engine: self.shared.info.version.to_string(),
                            epoch_unix_ns: self.epoch_unix_ns,
                        }),
                        CONTROL_SLACK,
                    );
                    self.subscribers.push(subscriber);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("events socket: accept: {e}");
                    break;
                }
            }
        }
        if self.subscribers.len() != before {
            tracing::debug!(
                subscribers = self.subscribers.len(),
                "events subscriber connected"
            );
            self.shared.events.set_subscribers(self.subscribers.len());
        }
    }

    /// Moves what the workers queued to the subscribers; true when a queue
    /// was not emptied (drain again without waiting).
    fn drain(&mut self) -> bool {
        let mut backlog = false;
        let shared = Arc::clone(&self.shared);
        for queue in shared.events.queues() {
            // At most one queue's worth per round, so that the other queues,
            // the losses and the flush are not starved.
            let mut taken = 0;
            while taken < queue.capacity() {
                let Some(record) = queue.pop() else {
                    break;
                };
                taken += 1;
                if self.subscribers.is_empty() {
                    // Queued just before the last subscriber left.
                    continue;
                }
                for flow in self.resolver.flows(&record) {
                    let bytes = line(&EngineEvent::Flow(Box::new(flow)));
                    for subscriber in &mut self.subscribers {
                        if !subscriber.offer_or_flush(&bytes, self.options.subscriber_buffer) {
                            subscriber.lost += 1;
                            self.shared.events.add_subscriber_lost(1);
                        }
                    }
                }
            }
            backlog |= taken == queue.capacity();
        }
        backlog
    }

    /// Reports events the workers could not queue since the last report.
    fn report_worker_losses(&mut self) {
        for (worker, seen) in self.lost_seen.iter_mut().enumerate() {
            let now = self.shared.counters[worker].events_lost();
            if now <= *seen {
                continue;
            }
            let lost = now - *seen;
            *seen = now;
            let report = line(&EngineEvent::Lost(LostEvents {
                source: LostSource::PerfEventRingBuffer,
                num_events_lost: lost,
                worker: Some(worker as u32),
                time_unix_ns: unix_now_ns(),
            }));
            for subscriber in &mut self.subscribers {
                subscriber.offer(&report, self.options.subscriber_buffer + CONTROL_SLACK);
            }
        }
    }

    /// Writes to every subscriber what its socket takes; drops those that
    /// are gone; tells those that lost events how many, once they have room.
    fn flush(&mut self) {
        let before = self.subscribers.len();
        let limit = self.options.subscriber_buffer;
        self.subscribers.retain_mut(|subscriber| {
            if subscriber.flush().is_err() {
                return false;
            }
            // Once it has drained half its buffer: a subscriber that stays
            // stuck is not sent a report per round.
            if subscriber.lost > 0 && subscriber.waiting() <= limit / 2 {
                let report = line(&EngineEvent::Lost(LostEvents {
                    source: LostSource::ObserverEventsQueue,
                    num_events_lost: subscriber.lost,
                    worker: None,
                    time_unix_ns: unix_now_ns(),
                }));
                if subscriber.offer(&report, limit + CONTROL_SLACK) {
                    subscriber.lost = 0;
                    return subscriber.flush().is_ok();
                }
            }
            true
        });
        if self.subscribers.len() != before {
            tracing::debug!(
                subscribers = self.subscribers.len(),
                "events subscriber left"
            );
            self.shared.events.set_subscribers(self.subscribers.len());
        }
    }
}

/// Keeps the events thread off the workers' cores: it runs on the first core
/// no worker is pinned to (where the control side and the agent live), so
/// serialising and writing events never takes time from packet work. When
/// the workers use every core it stays unpinned.
fn pin_off_worker_cores(worker_cores: &[usize]) {
    let spare = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|core| !worker_cores.contains(&core.id));
    if let Some(core) = spare {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(
                core = core.id,
                "events thread: could not pin to a spare core"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MonitorAggregation;
    use crate::counters::LocalCounters;
    use crate::events::tests::{new_connection, shared_with_ports, tables_with};
    use crate::flow_record::{emit, FrameFate, PassContext};
    use sluice_api::events::{FlowKind, FlowVerdict};
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream as StdStream;

    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-events-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.sock")
    }

    fn options() -> EventsOptions {
        EventsOptions {
            drain_every: Duration::from_millis(2),
            idle_wait: Duration::from_millis(10),
            subscriber_buffer: 4 << 20,
            stats_every: Duration::from_millis(200),
        }
    }

    /// Reads lines until `want` says stop; fails after 10 s.
    fn read_until(
        reader: &mut BufReader<StdStream>,
        mut want: impl FnMut(&EngineEvent) -> bool,
    ) -> Vec<EngineEvent> {
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no wanted event in 20 s; saw {} lines, last {:?}",
                seen.len(),
                seen.last()
            );
            let mut text = String::new();
            let n = reader
                .read_line(&mut text)
                .expect("an events line within 10 s");
            assert!(n > 0, "the engine closed the events socket; saw {seen:?}");
            let event: EngineEvent = serde_json::from_str(&text).unwrap();
            let done = want(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn push_new_connections(shared: &EngineShared, count: usize) -> LocalCounters {
        let mut local = LocalCounters::default();
        let pass = PassContext {
            worker: 0,
            generation: 0,
            time_ns: 42,
            level: MonitorAggregation::Medium,
        };
        let queue = shared.events.queue(0).unwrap();
        for _ in 0..count {
            emit(
                queue,
                &pass,
                4,
                74,
                FrameFate::Forwarded { egress_ifindex: 5 },
                &new_connection(),
                &mut local,
            );
        }
        local
    }

    #[test]
    fn a_subscriber_reads_hello_flows_lost_reports_and_stats() {
        let shared = shared_with_ports(tables_with(&[("deny", "d"), ("allow-web", "a")]));
        let path = socket_path("protocol");
        let server =
            EventsServer::serve(&path, Arc::clone(&shared), Instant::now(), options()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!shared.events.observing(), "nobody subscribes yet");
        let mut reader = BufReader::new(StdStream::connect(&path).unwrap());
        let hello = read_until(&mut reader, |_| true);
        assert!(
            matches!(
                hello[0],
                EngineEvent::Hello {
                    protocol: EVENTS_PROTOCOL_VERSION,
                    ..
                }
            ),
            "{hello:?}"
        );
        wait_for("workers to be told to observe", || {
            shared.events.observing()
        });

        // A new allowed connection: its policy verdict and its trace.
        let mut local = push_new_connections(&shared, 1);
        assert_eq!(local.events_emitted, 2);
        let seen = read_until(
            &mut reader,
            |e| matches!(e, EngineEvent::Flow(f) if f.kind == FlowKind::Trace),
        );
        let flows: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Flow(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(flows.len(), 2, "{seen:?}");
        assert_eq!(flows[0].kind, FlowKind::PolicyVerdict);
        assert_eq!(
            flows[0]
                .policy
                .as_ref()
                .and_then(|p| p.egress_allowed_by.as_ref())
                .map(|r| r.name.as_str()),
            Some("allow-web")
        );
        assert_eq!(flows[1].verdict, FlowVerdict::Forwarded);
        assert_eq!(flows[1].service.as_deref(), Some("shop/web"));

        // Losses in a worker's queue are reported per worker.
        local.events_lost = 5;
        shared.counters[0].publish(&mut local);
        let seen = read_until(&mut reader, |e| matches!(e, EngineEvent::Lost(_)));
        let Some(EngineEvent::Lost(lost)) = seen.last() else {
            unreachable!()
        };
        assert_eq!(
            (lost.source, lost.num_events_lost, lost.worker),
            (LostSource::PerfEventRingBuffer, 5, Some(0))
        );

        // Stats: the stats socket's document, with the events counters.
        let seen = read_until(&mut reader, |e| matches!(e, EngineEvent::Stats(_)));
        let Some(EngineEvent::Stats(stats)) = seen.last() else {
            unreachable!()
        };
        assert_eq!(stats["totals"]["events_emitted"], 2);
        assert_eq!(stats["totals"]["events_lost"], 5);
        assert_eq!(stats["events"]["subscribers"], 1);
        assert_eq!(stats["events"]["monitor_aggregation"], "medium");
        assert!(stats["drops"].is_array() && stats["workers"].is_array());

        drop(reader);
        wait_for("the subscriber to be dropped", || {
            !shared.events.observing()
        });
        drop(server);
        assert!(!path.exists(), "the socket is removed");
    }

    #[test]
    fn a_subscriber_that_never_reads_loses_events_without_stopping_the_others() {
        let shared = shared_with_ports(tables_with(&[("deny", "d"), ("allow-web", "a")]));
        let path = socket_path("slow");
        let small = EventsOptions {
            subscriber_buffer: 16 << 10,
            ..options()
        };
        let _server =
            EventsServer::serve(&path, Arc::clone(&shared), Instant::now(), small).unwrap();
        let stuck = StdStream::connect(&path).unwrap();
        let mut reader = BufReader::new(StdStream::connect(&path).unwrap());
        read_until(&mut reader, |e| matches!(e, EngineEvent::Hello { .. }));
        wait_for("both subscribers", || shared.events.subscribers() == 2);

        // Far more than the stuck one's socket and buffer take (each record
        // is two ~700-byte lines); the queue holds 64 records, so push in
        // rounds and let the reader keep up.
        let mut flows = 0usize;
        for _ in 0..40 {
            let local = push_new_connections(&shared, 50);
            assert_eq!(local.events_lost, 0, "the queue is drained in time");
            let want = flows + 100;
            read_until(&mut reader, |e| {
                if matches!(e, EngineEvent::Flow(_)) {
                    flows += 1;
                }
                flows >= want
            });
        }
        assert_eq!(flows, 4000, "the reading subscriber got every event");
        let lost = shared.events.subscriber_lost();
        assert!(
            lost > 0,
            "the stuck subscriber's events were dropped and counted"
        );

        // When the stuck one finally reads, it learns how many it lost.
        let mut stuck = BufReader::new(stuck);
        let mut received = 0u64;
        let seen = read_until(&mut stuck, |e| {
            if matches!(e, EngineEvent::Flow(_)) {
                received += 1;
            }
            matches!(e, EngineEvent::Lost(l) if l.source == LostSource::ObserverEventsQueue)
        });
        let Some(EngineEvent::Lost(report)) = seen.last() else {
            unreachable!()
        };
        assert_eq!(report.num_events_lost, lost);
        assert_eq!(
            received + lost,
            4000,
            "every event is either delivered or reported lost"
        );
        assert_eq!(
            serde_json::to_value(shared.report()).unwrap()["events"]["subscriber_lost"],
            lost
        );
    }
}

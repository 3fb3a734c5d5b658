//! The consumer of `bench flows`: one subscriber on the engine's events socket that
//! reads and parses every line into [`EngineEvent`], as the agent's events client does,
//! and counts what it got. It runs on its own thread in the bench process (not pinned),
//! so its CPU time competes with the generator and the engine like an agent's would.

use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use sluice_api::events::{EngineEvent, LostSource, EVENTS_PROTOCOL_VERSION};

/// What the subscriber has read so far (monotonic; windows are differences).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberCounts {
    /// `Flow` lines.
    pub flows: u64,
    /// `Lost` lines, and the events they report lost, by source.
    pub lost_reports: u64,
    pub lost_perf_ring: u64,
    pub lost_observer_queue: u64,
    /// `Stats` lines (one a second).
    pub stats: u64,
    /// Bytes read, newlines included.
    pub bytes: u64,
    /// Lines that did not parse as an [`EngineEvent`].
    pub parse_errors: u64,
}

impl SubscriberCounts {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &SubscriberCounts) -> SubscriberCounts {
        SubscriberCounts {
            flows: self.flows.saturating_sub(earlier.flows),
            lost_reports: self.lost_reports.saturating_sub(earlier.lost_reports),
            lost_perf_ring: self.lost_perf_ring.saturating_sub(earlier.lost_perf_ring),
            lost_observer_queue: self
                .lost_observer_queue
                .saturating_sub(earlier.lost_observer_queue),
            stats: self.stats.saturating_sub(earlier.stats),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            parse_errors: self.parse_errors.saturating_sub(earlier.parse_errors),
        }
    }

    /// Events the engine reported lost, all sources.
    pub fn lost_reported(&self) -> u64 {
        self.lost_perf_ring + self.lost_observer_queue
    }
}

/// The reading thread's counters, shared with the measuring thread.
#[derive(Debug, Default)]
struct Shared {
    flows: AtomicU64,
    lost_reports: AtomicU64,
    lost_perf_ring: AtomicU64,
    lost_observer_queue: AtomicU64,
    stats: AtomicU64,
    bytes: AtomicU64,
    parse_errors: AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> SubscriberCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SubscriberCounts {
            flows: get(&self.flows),
            lost_reports: get(&self.lost_reports),
            lost_perf_ring: get(&self.lost_perf_ring),
            lost_observer_queue: get(&self.lost_observer_queue),
            stats: get(&self.stats),
            bytes: get(&self.bytes),
            parse_errors: get(&self.parse_errors),
        }
    }

    /// Counts one line read from the socket.
    fn count_line(&self, line: &str) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match serde_json::from_str::<EngineEvent>(line) {
            Ok(EngineEvent::Flow(_)) => add(&self.flows, 1),
            Ok(EngineEvent::Lost(lost)) => {
                add(&self.lost_reports, 1);
                match lost.source {
                    LostSource::PerfEventRingBuffer => {
                        add(&self.lost_perf_ring, lost.num_events_lost)
                    }
                    // The engine names only these two; a Hubble ring loss cannot come
                    // from it, but counting it with the queue keeps nothing hidden.
                    LostSource::ObserverEventsQueue | LostSource::HubbleRingBuffer => {
                        add(&self.lost_observer_queue, lost.num_events_lost)
                    }
                }
            }
            Ok(EngineEvent::Stats(_)) => add(&self.stats, 1),
            // A second Hello would be a protocol error; count it as one.
            Ok(EngineEvent::Hello { .. }) | Err(_) => add(&self.parse_errors, 1),
        }
    }
}

/// A connected subscriber; [`Subscriber::stop`] (or drop) disconnects it.
#[derive(Debug)]
pub struct Subscriber {
    stream: UnixStream,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<Result<()>>>,
}

impl Subscriber {
    /// Connects to `socket` (retrying until `timeout`), reads and checks the `Hello`
    /// line, then reads the rest on a thread, pinned to `cpu` when given (the
    /// control side's core: a deployed agent does not share the workers' cores).
    pub fn connect(socket: &Path, timeout: Duration, cpu: Option<usize>) -> Result<Subscriber> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(err) if Instant::now() >= deadline => {
                    return Err(err).with_context(|| {
                        format!("connecting to the events socket {}", socket.display())
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone()?);
        let mut hello = String::new();
        reader
            .read_line(&mut hello)
            .with_context(|| format!("reading Hello from {}", socket.display()))?;
        check_hello(&hello)?;
        stream.set_read_timeout(None)?;
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("events-subscriber".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu);
                }
                read_lines(reader, &thread_shared)
            })
            .context("starting the subscriber thread")?;
        Ok(Subscriber {
            stream,
            shared,
            reader: Some(handle),
        })
    }

    pub fn counts(&self) -> SubscriberCounts {
        self.shared.snapshot()
    }

    /// Disconnects and returns the final counts; an error if reading had failed.
    pub fn stop(mut self) -> Result<SubscriberCounts> {
        self.disconnect()?;
        Ok(self.shared.snapshot())
    }

    fn disconnect(&mut self) -> Result<()> {
        let _ = self.stream.shutdown(Shutdown::Both);
        match self.reader.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| anyhow!("the subscriber thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.disconnect();
    }
}

/// Fails unless `line` is a `Hello` of our protocol version.
pub fn check_hello(line: &str) -> Result<()> {
    ensure!(
        !line.is_empty(),
        "the events socket closed before sending Hello"
    );
    match serde_json::from_str::<EngineEvent>(line.trim_end()) {
        Ok(EngineEvent::Hello { protocol, .. }) => {
            ensure!(
                protocol == EVENTS_PROTOCOL_VERSION,
                "events Hello: field protocol is {protocol}, this benchmark speaks \
                 {EVENTS_PROTOCOL_VERSION}"
            );
            Ok(())
        }
        Ok(other) => bail!("events socket: the first line is not Hello but {other:?}"),
        Err(err) => bail!("events Hello: not an EngineEvent ({err}): {line:?}"),
    }
}

/// Reads lines until EOF (the engine went away or [`Subscriber::stop`] shut the socket).
fn read_lines(mut reader: BufReader<UnixStream>, shared: &Shared) -> Result<()> {
    let mut line = String::with_capacity(1024);
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(read) => {
                shared.bytes.fetch_add(read as u64, Ordering::Relaxed);
                shared.count_line(line.trim_end());
            }
            // Not UTF-8: the line is lost to parsing, the stream goes on.
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                shared.parse_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => return Err(err).context("reading the events socket"),
        }
    }
}

/// Best effort: an unpinned reader only makes the measurement noisier.
fn pin_current_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::events::{CtState, EngineFlow, FlowKind, FlowVerdict, LostEvents};
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    fn line(event: &EngineEvent) -> String {
        serde_json::to_string(event).unwrap() + "\n"
    }

    fn hello(protocol: u32) -> EngineEvent {
        EngineEvent::Hello {
            protocol,
            engine: "test".into(),
            epoch_unix_ns: 5,
        }
    }

    fn flow() -> EngineEvent {
        EngineEvent::Flow(Box::new(EngineFlow {
            time_unix_ns: 1,
            worker: 0,
            kind: FlowKind::Trace,
            verdict: FlowVerdict::Forwarded,
            drop_reason: None,
            ingress_ifindex: 2,
            ingress_ifname: "lxc1".into(),
            egress_ifindex: Some(3),
            egress_ifname: "lxc2".into(),
            from_uplink: false,
            to_uplink: false,
            len: 60,
            ct: CtState::New,
            original: None,
            translated: None,
            tcp_flags: 0,
            icmp: None,
            service: None,
            policy: None,
            dns: None,
        }))
    }

    fn lost(source: LostSource, n: u64) -> EngineEvent {
        EngineEvent::Lost(LostEvents {
            source,
            num_events_lost: n,
            worker: Some(0),
            time_unix_ns: 9,
        })
    }

    #[test]
    fn hello_is_checked() {
        check_hello(&line(&hello(EVENTS_PROTOCOL_VERSION))).unwrap();
        let err = check_hello(&line(&hello(EVENTS_PROTOCOL_VERSION + 1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field protocol is"), "{err}");
        assert!(check_hello("").is_err());
        assert!(check_hello(&line(&flow())).is_err());
        assert!(check_hello("not json\n").is_err());
    }

    /// A test server speaking the engine's events protocol (ours, api/src/events.rs).
    #[test]
    fn counts_every_kind_of_line_from_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-flows-sub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut text = line(&hello(EVENTS_PROTOCOL_VERSION));
            for _ in 0..3 {
                text.push_str(&line(&flow()));
            }
            text.push_str(&line(&lost(LostSource::PerfEventRingBuffer, 40)));
            text.push_str(&line(&lost(LostSource::ObserverEventsQueue, 2)));
            text.push_str(&line(&EngineEvent::Stats(
                serde_json::json!({"totals": {"rx_packets": 1}}),
            )));
            text.push_str("{\"kind\":\"nonsense\"}\n");
            conn.write_all(text.as_bytes()).unwrap();
            text.len() as u64
        });
        let subscriber = Subscriber::connect(&path, Duration::from_secs(5), None).unwrap();
        let written = server.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while subscriber.counts().parse_errors == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let counts = subscriber.stop().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(counts.flows, 3);
        assert_eq!(counts.lost_reports, 2);
        assert_eq!(counts.lost_perf_ring, 40);
        assert_eq!(counts.lost_observer_queue, 2);
        assert_eq!(counts.lost_reported(), 42);
        assert_eq!(counts.stats, 1);
        assert_eq!(counts.parse_errors, 1);
        let hello_len = line(&hello(EVENTS_PROTOCOL_VERSION)).len() as u64;
        assert_eq!(counts.bytes, written - hello_len);
        let later = SubscriberCounts {
            flows: 10,
            ..counts
        };
        assert_eq!(later.since(&counts).flows, 7);
        assert_eq!(later.since(&counts).lost_reported(), 0);
    }
}

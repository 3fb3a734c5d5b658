//! The engine side of the agent API (`sluice_api::engine`): a unix socket on
//! which one agent at a time sends the desired node state, a snapshot first and
//! then deltas, each answered with an ack.
//!
//! The protocol ([`serve_connection`]) reaches the dataplane only through
//! [`Dataplane`], so it is tested without XDP; the engine implements that trait
//! on its reconciler (control.rs), which attaches and detaches only the
//! interfaces that changed. A newer connection replaces the current one: a
//! restarted agent always gets in. When the agent goes away nothing is undone;
//! the engine keeps forwarding on the last state it applied.

use std::io::BufReader;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use sluice_api::engine::{
    version_mismatch, AgentToEngine, EngineToAgent, Outcome, ENGINE_PROTOCOL_VERSION,
};
use sluice_api::{apply_changes, read_message, write_message, FramingError};
use sluice_tables::{NodeState, Tables};

/// How long the engine waits for an agent to take an answer off the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's name and version as its Welcome gives them.
pub fn engine_name() -> String {
    format!("sluice-engine {}", env!("CARGO_PKG_VERSION"))
}

/// What the protocol needs from the engine. Called with the dataplane locked,
/// one message at a time.
pub trait Dataplane {
    /// The agent generation the engine runs on; 0 when it runs on no agent's
    /// state (empty, or the --state file).
    fn applied_generation(&self) -> u64;
    /// The node state the engine runs on (the base of the next delta).
    fn state(&self) -> &NodeState;
    /// Serves `tables`, built from `state`: attaches the interfaces that are new
    /// or changed, publishes the tables, detaches the interfaces that are gone.
    /// Not refusable: an interface that cannot be attached is shown as down.
    fn apply(&mut self, generation: u64, state: NodeState, tables: Tables);
    /// Builds the tables for `state`. The engine reuses what did not change
    /// since the tables it serves (Maglev tables), so a one-service delta does
    /// not rebuild every service.
    fn build_tables(&self, state: NodeState) -> Result<Tables, sluice_tables::EndpointError> {
        Tables::build(state)
    }
}

/// The `api` object of the engine's stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApiStatus {
    /// The socket agents connect to; null without --api-socket.
    pub socket: Option<String>,
    /// An agent is connected and was welcomed.
    pub connected: bool,
    /// The connected agent, as its Hello names it.
    pub agent: Option<String>,
    /// The agent generation the engine runs on (0: none).
    pub applied_generation: u64,
    /// Why the latest refused message (hello, snapshot, delta, malformed) was
    /// refused; null again once a later state is applied.
    pub last_refusal: Option<String>,
    /// The connection allowed to act; older ones stop at their next message.
    #[serde(skip)]
    session: u64,
    /// That connection has not ended yet.
    #[serde(skip)]
    session_open: bool,
}

/// The API's state as the stats socket shows it; shared by the accept thread,
/// the connection threads and the reconciler (a reload resets the generation).
#[derive(Debug, Default)]
pub struct ApiBoard {
    status: Mutex<ApiStatus>,
}

impl ApiBoard {
    fn lock(&self) -> MutexGuard<'_, ApiStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> ApiStatus {
        self.lock().clone()
    }

    fn set_socket(&self, path: &Path) {
        self.lock().socket = Some(path.display().to_string());
    }

    /// Makes a new connection the only one allowed to act; returns its id.
    pub fn begin_session(&self) -> u64 {
        let mut status = self.lock();
        status.session += 1;
        status.session_open = true;
        status.connected = false;
        status.agent = None;
        status.session
    }

    pub fn is_current(&self, session: u64) -> bool {
        self.lock().session == session
    }

    /// Whether the current connection is still open.
    fn session_open(&self) -> bool {
        self.lock().session_open
    }

    fn welcomed(&self, session: u64, agent: &str) {
        let mut status = self.lock();
        if status.session == session {
            status.connected = true;
            status.agent = Some(agent.to_string());
        }
    }

    fn refused(&self, session: u64, reason: &str) {
        let mut status = self.lock();
        if status.session == session {
            status.last_refusal = Some(reason.to_string());
        }
    }

    fn ended(&self, session: u64) {
        let mut status = self.lock();
        if status.session == session {
            status.session_open = false;
            status.connected = false;
            status.agent = None;
        }
    }

    /// The engine now runs on agent generation `generation` (0 after a reload
    /// from the state file).
    pub fn set_applied(&self, generation: u64) {
        let mut status = self.lock();
        status.applied_generation = generation;
        if generation != 0 {
            status.last_refusal = None;
        }
    }
}

/// What happens to the connection after an answer.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// One agent connection's protocol state.
struct Session<'a, D> {
    id: u64,
    dataplane: &'a Mutex<D>,
    board: &'a ApiBoard,
    /// Set by an accepted Hello.
    agent: Option<String>,
}

fn kind(message: &AgentToEngine) -> &'static str {
    match message {
        AgentToEngine::Hello { .. } => "hello",
        AgentToEngine::Snapshot { .. } => "snapshot",
        AgentToEngine::Delta { .. } => "delta",
    }
}

impl<D: Dataplane> Session<'_, D> {
    /// Answers one message; `None` when a newer connection has replaced this one
    /// (the message is ignored and the connection ends).
    fn handle(&mut self, message: AgentToEngine) -> Option<(EngineToAgent, Next)> {
        let mut dataplane = self.dataplane.lock().unwrap_or_else(|e| e.into_inner());
        // Checked with the dataplane locked: once a newer connection exists, an
        // older one changes nothing (it may still have messages buffered).
        if !self.board.is_current(self.id) {
            return None;
        }
        let dataplane = &mut *dataplane;
        let answer = match (&self.agent, message) {
            (None, AgentToEngine::Hello { protocol, agent }) => {
                if protocol != ENGINE_PROTOCOL_VERSION {
                    return Some(self.refuse_connection(version_mismatch(
                        "the engine",
                        ENGINE_PROTOCOL_VERSION,
                        protocol,
                    )));
                }
                let applied_generation = dataplane.applied_generation();
                tracing::info!(
                    session = self.id,
                    %agent,
                    applied_generation,
                    "agent connected"
                );
                self.board.welcomed(self.id, &agent);
                self.agent = Some(agent);
                (
                    EngineToAgent::Welcome {
                        protocol: ENGINE_PROTOCOL_VERSION,
                        engine: engine_name(),
                        applied_generation,
                    },
                    Next::Continue,
                )
            }
            (None, other) => {
                return Some(self.refuse_connection(format!(
                    "expected a hello as the first message, got a {}",
                    kind(&other)
                )));
            }
            (Some(_), AgentToEngine::Hello { .. }) => {
                return Some(self.refuse_connection(
                    "a second hello on one connection; expected a snapshot or a delta".into(),
                ));
            }
            (Some(_), AgentToEngine::Snapshot { generation, state }) => {
                let outcome = self.snapshot(dataplane, generation, state);
                (self.ack(generation, outcome), Next::Continue)
            }
            (
                Some(_),
                AgentToEngine::Delta {
                    generation,
                    base,
                    changes,
                },
            ) => {
                let outcome = self.delta(dataplane, generation, base, &changes);
                (self.ack(generation, outcome), Next::Continue)
            }
        };
        Some(answer)
    }

    fn snapshot(&self, dataplane: &mut D, generation: u64, state: NodeState) -> Result<(), String> {
        let applied = dataplane.applied_generation();
        if generation <= applied {
            return Err(format!(
                "snapshot generation {generation} is not greater than the applied generation {applied}"
            ));
        }
        let tables = dataplane
            .build_tables(state.clone())
            .map_err(|e| format!("snapshot generation {generation}: {e}"))?;
        let endpoints = state.endpoints.len();
        dataplane.apply(generation, state, tables);
        self.board.set_applied(generation);
        tracing::info!(generation, endpoints, "snapshot applied");
        Ok(())
    }

    /// Applies `changes` on the engine's state, only on top of `base`.
    fn delta(
        &self,
        dataplane: &mut D,
        generation: u64,
        base: u64,
        changes: &[sluice_api::Change],
    ) -> Result<(), String> {
        let applied = dataplane.applied_generation();
        if applied == 0 {
            return Err(format!(
                "delta base {base} does not match: the engine has applied no agent generation \
                 yet (applied generation 0); send a snapshot"
            ));
        }
        if base != applied {
            return Err(format!(
                "delta base {base} does not match the applied generation {applied}; send a snapshot"
            ));
        }
        if generation <= applied {
            return Err(format!(
                "delta generation {generation} is not greater than the applied generation {applied}"
            ));
        }
        let state = apply_changes(dataplane.state(), changes)
            .map_err(|e| format!("delta generation {generation}: {e}"))?;
        let tables = dataplane
            .build_tables(state.clone())
            .map_err(|e| format!("delta generation {generation}: {e}"))?;
        dataplane.apply(generation, state, tables);
        self.board.set_applied(generation);
        tracing::info!(generation, base, changes = changes.len(), "delta applied");
        Ok(())
    }

    fn ack(&self, generation: u64, outcome: Result<(), String>) -> EngineToAgent {
        let outcome = match outcome {
            Ok(()) => Outcome::Applied,
            Err(reason) => {
                tracing::warn!(session = self.id, generation, "refused: {reason}");
                self.board.refused(self.id, &reason);
                Outcome::Refused { reason }
            }
        };
        EngineToAgent::Ack {
            generation,
            outcome,
        }
    }

    fn refuse_connection(&self, reason: String) -> (EngineToAgent, Next) {
        tracing::warn!(session = self.id, "agent connection refused: {reason}");
        self.board.refused(self.id, &reason);
        (EngineToAgent::Refused { reason }, Next::Close)
    }
}

/// Serves one agent connection until it closes, is refused, or is replaced.
/// Never panics on what the peer sends.
pub fn serve_connection<D: Dataplane>(
    stream: UnixStream,
    session: u64,
    dataplane: &Mutex<D>,
    board: &ApiBoard,
) {
    let mut session = Session {
        id: session,
        dataplane,
        board,
        agent: None,
    };
    let end = match stream.try_clone() {
        Ok(reader) => {
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            converse(&mut session, &mut BufReader::new(reader), &mut &stream)
        }
        Err(e) => format!("could not clone the connection: {e}"),
    };
    let _ = stream.shutdown(Shutdown::Both);
    board.ended(session.id);
    tracing::info!(
        session = session.id,
        agent = session.agent.as_deref().unwrap_or("-"),
        "agent disconnected: {end}"
    );
}

/// The message loop; returns why it ended.
fn converse<D: Dataplane>(
    session: &mut Session<'_, D>,
    reader: &mut BufReader<UnixStream>,
    writer: &mut impl std::io::Write,
) -> String {
    const REPLACED: &str = "replaced by a newer connection";
    loop {
        let read = read_message::<AgentToEngine>(reader);
        // A replaced connection was shut down by the accept thread: whatever
        // it reads now, it ends.
        if matches!(read, Err(_) | Ok(None)) && !session.board.is_current(session.id) {
            return REPLACED.into();
        }
        let message = match read {
            Ok(Some(message)) => message,
            Ok(None) => return "the agent closed the connection".into(),
            Err(e @ (FramingError::Malformed { .. } | FramingError::TooLarge)) => {
                let (answer, _) = session.refuse_connection(e.to_string());
                let _ = write_message(writer, &answer);
                return format!("refused: {e}");
            }
            Err(e) => return e.to_string(),
        };
        let Some((answer, next)) = session.handle(message) else {
            return REPLACED.into();
        };
        if let Err(e) = write_message(writer, &answer) {
            return format!("could not answer: {e}");
        }
        if next == Next::Close {
            return "closed after refusing the connection".into();
        }
    }
}

/// The listening API socket; removes its path when dropped.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    board: Arc<ApiBoard>,
    stop: Arc<AtomicBool>,
    /// The current agent connection, closed when a newer one arrives.
    active: Arc<Mutex<Option<UnixStream>>>,
}

impl ApiServer {
    /// Binds `path` with mode 0600 (replacing a stale file) and serves agents
    /// on a thread, one at a time.
    pub fn serve<D: Dataplane + Send + 'static>(
        path: &Path,
        dataplane: Arc<Mutex<D>>,
        board: Arc<ApiBoard>,
    ) -> std::io::Result<ApiServer> {
        let listener = bind_private(path)?;
        board.set_socket(path);
        let stop = Arc::new(AtomicBool::new(false));
        let active: Arc<Mutex<Option<UnixStream>>> = Arc::default();
        {
            let (board, stop, active) = (board.clone(), stop.clone(), active.clone());
            std::thread::Builder::new()
                .name("api-socket".into())
                .spawn(move || accept_loop(listener, dataplane, board, stop, active))?;
        }
        tracing::info!(socket = %path.display(), "waiting for an agent");
        Ok(ApiServer {
            path: path.to_path_buf(),
            board,
            stop,
            active,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    /// Closes the agent connection (it changes nothing more), stops accepting
    /// and removes the socket file.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.board.begin_session();
        if let Some(stream) = lock(&self.active).take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the accept thread, which sees `stop` and returns.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds under a temporary name, restricts it to the owner, then renames it
/// into place: no moment exists in which another user could connect.
pub(crate) fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    for stale in [path, temporary.as_path()] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(listener)
}

fn accept_loop<D: Dataplane + Send + 'static>(
    listener: UnixListener,
    dataplane: Arc<Mutex<D>>,
    board: Arc<ApiBoard>,
    stop: Arc<AtomicBool>,
    active: Arc<Mutex<Option<UnixStream>>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("api socket: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let clone = match stream.try_clone() {
            Ok(clone) => clone,
            Err(e) => {
                tracing::warn!("api socket: clone connection: {e}");
                continue;
            }
        };
        let replacing = board.session_open();
        let session = board.begin_session();
        if let Some(old) = lock(&active).replace(clone) {
            if replacing {
                tracing::info!(
                    session,
                    "a new agent connection replaces the current one; closing the old one"
                );
            }
            let _ = old.shutdown(Shutdown::Both);
        }
        tracing::info!(session, "agent connection accepted");
        let (dataplane, board) = (dataplane.clone(), board.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("api-agent-{session}"))
            .spawn(move || serve_connection(stream, session, &dataplane, &board));
        if let Err(e) = spawned {
            tracing::error!("api socket: cannot start a connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::Ipv4Addr;
    use std::os::unix::fs::FileTypeExt;
    use std::thread::JoinHandle;

    use sluice_api::Change;
    use sluice_tables::{Endpoint, Gateway, MacAddr};

    /// Records what the protocol applies, without XDP.
    #[derive(Debug)]
    struct FakeDataplane {
        generation: u64,
        state: NodeState,
        /// (generation, endpoints in the tables) per apply, in order.
        applied: Vec<(u64, usize)>,
    }

    impl FakeDataplane {
        fn new() -> Arc<Mutex<FakeDataplane>> {
            Arc::new(Mutex::new(FakeDataplane {
                generation: 0,
                state: NodeState::empty(),
                applied: Vec::new(),
            }))
        }
    }

    impl Dataplane for FakeDataplane {
        fn applied_generation(&self) -> u64 {
            self.generation
        }
        fn state(&self) -> &NodeState {
            &self.state
        }
        fn apply(&mut self, generation: u64, state: NodeState, tables: Tables) {
            self.applied.push((generation, tables.endpoints.len()));
            self.generation = generation;
            self.state = state;
        }
    }

    fn endpoint(i: u8) -> Endpoint {
        Endpoint {
            name: format!("default/pod{i}"),
            ifindex: 100 + u32::from(i),
            ifname: format!("lxc{i}"),
            mac: MacAddr([2, 0, 0, 0, 0, i]),
            ipv4: Some(Ipv4Addr::new(10, 200, 0, 10 + i)),
            ipv6: None,
            identity: 0,
        }
    }

    fn state(pods: &[u8]) -> NodeState {
        NodeState {
            gateway: Gateway {
                mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
                ipv4: "10.200.0.1".parse().unwrap(),
                ipv6: "fe80::1".parse().unwrap(),
            },
            endpoints: pods.iter().map(|&i| endpoint(i)).collect(),
            ..NodeState::empty()
        }
    }

    /// The test's end of a connection.
    struct Agent {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
        serving: Option<JoinHandle<()>>,
    }

    impl Agent {
        fn over(stream: UnixStream) -> Agent {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Agent {
                reader: BufReader::new(stream.try_clone().unwrap()),
                writer: stream,
                serving: None,
            }
        }

        /// A connection served by `serve_connection` on a thread, as a new session.
        fn connect(dataplane: &Arc<Mutex<FakeDataplane>>, board: &Arc<ApiBoard>) -> Agent {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let session = board.begin_session();
            let (dataplane, board) = (dataplane.clone(), board.clone());
            let mut agent = Agent::over(ours);
            agent.serving = Some(std::thread::spawn(move || {
                serve_connection(theirs, session, &dataplane, &board)
            }));
            agent
        }

        fn send(&mut self, message: &AgentToEngine) {
            write_message(&mut self.writer, message).unwrap();
        }

        fn send_raw(&mut self, line: &str) {
            self.writer.write_all(line.as_bytes()).unwrap();
        }

        fn receive(&mut self) -> Option<EngineToAgent> {
            read_message(&mut self.reader).expect("an answer within 5 s")
        }

        fn ask(&mut self, message: &AgentToEngine) -> EngineToAgent {
            self.send(message);
            self.receive().expect("an answer, not a closed connection")
        }

        fn hello(&mut self) -> EngineToAgent {
            self.ask(&AgentToEngine::Hello {
                protocol: ENGINE_PROTOCOL_VERSION,
                agent: "test-agent".into(),
            })
        }

        /// The engine closed the connection: EOF, and its thread ended.
        fn assert_closed(mut self) {
            let mut rest = String::new();
            let n = self.reader.read_line(&mut rest).unwrap();
            assert_eq!(n, 0, "expected the engine to close, got {rest:?}");
            if let Some(thread) = self.serving.take() {
                thread.join().unwrap();
            }
        }

        fn close(mut self) {
            self.writer.shutdown(Shutdown::Both).unwrap();
            if let Some(thread) = self.serving.take() {
                thread.join().unwrap();
            }
        }
    }

    fn snapshot(generation: u64, pods: &[u8]) -> AgentToEngine {
        AgentToEngine::Snapshot {
            generation,
            state: state(pods),
        }
    }

    fn applied(generation: u64) -> EngineToAgent {
        EngineToAgent::Ack {
            generation,
            outcome: Outcome::Applied,
        }
    }

    /// The reason of a refused ack for `generation`.
    fn refused_ack(answer: EngineToAgent, generation: u64) -> String {
        match answer {
            EngineToAgent::Ack {
                generation: g,
                outcome: Outcome::Refused { reason },
            } if g == generation => reason,
            other => panic!("expected a refused ack for {generation}, got {other:?}"),
        }
    }

    fn refused(answer: EngineToAgent) -> String {
        match answer {
            EngineToAgent::Refused { reason } => reason,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    fn setup() -> (Arc<Mutex<FakeDataplane>>, Arc<ApiBoard>) {
        (FakeDataplane::new(), Arc::new(ApiBoard::default()))
    }

    #[test]
    fn a_hello_is_welcomed_with_the_engine_and_the_applied_generation() {
        let (dataplane, board) = setup();
        lock(&dataplane).generation = 7;
        let mut agent = Agent::connect(&dataplane, &board);
        assert_eq!(
            agent.hello(),
            EngineToAgent::Welcome {
                protocol: ENGINE_PROTOCOL_VERSION,
                engine: format!("sluice-engine {}", env!("CARGO_PKG_VERSION")),
                applied_generation: 7,
            }
        );
        let status = board.status();
        assert!(status.connected);
        assert_eq!(status.agent.as_deref(), Some("test-agent"));
        agent.close();
        let status = board.status();
        assert!(!status.connected && status.agent.is_none(), "{status:?}");
    }

    #[test]
    fn another_protocol_version_is_refused_naming_both_and_the_connection_closed() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        let reason = refused(agent.ask(&AgentToEngine::Hello {
            protocol: ENGINE_PROTOCOL_VERSION + 1,
            agent: "future-agent".into(),
        }));
        assert_eq!(
            reason,
            version_mismatch(
                "the engine",
                ENGINE_PROTOCOL_VERSION,
                ENGINE_PROTOCOL_VERSION + 1
            )
        );
        assert!(
            reason.contains(&format!("version {ENGINE_PROTOCOL_VERSION}"))
                && reason.contains(&format!("version {}", ENGINE_PROTOCOL_VERSION + 1)),
            "{reason}"
        );
        agent.assert_closed();
        let status = board.status();
        assert!(!status.connected);
        assert_eq!(status.last_refusal.as_deref(), Some(reason.as_str()));
    }

    #[test]
    fn anything_but_a_hello_first_is_refused_naming_the_hello_and_closed() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        let reason = refused(agent.ask(&snapshot(1, &[1])));
        assert_eq!(
            reason,
            "expected a hello as the first message, got a snapshot"
        );
        agent.assert_closed();
        assert!(lock(&dataplane).applied.is_empty());

        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        let reason = refused(agent.hello());
        assert!(reason.contains("second hello"), "{reason}");
        agent.assert_closed();
    }

    #[test]
    fn a_snapshot_is_built_applied_then_acked() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(3, &[1, 2])), applied(3));
        {
            let dp = lock(&dataplane);
            assert_eq!(dp.applied, vec![(3, 2)]);
            assert_eq!(dp.state, state(&[1, 2]));
        }
        assert_eq!(board.status().applied_generation, 3);
        // A snapshot replaces the whole state.
        assert_eq!(agent.ask(&snapshot(4, &[3])), applied(4));
        assert_eq!(lock(&dataplane).state, state(&[3]));
        agent.close();
    }

    #[test]
    fn a_snapshot_that_is_not_newer_is_refused_and_the_state_kept() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(5, &[1])), applied(5));
        for generation in [5, 4] {
            let reason = refused_ack(agent.ask(&snapshot(generation, &[2])), generation);
            assert_eq!(
                reason,
                format!(
                    "snapshot generation {generation} is not greater than the applied generation 5"
                )
            );
            assert_eq!(
                board.status().last_refusal.as_deref(),
                Some(reason.as_str())
            );
        }
        let dp = lock(&dataplane);
        assert_eq!(dp.applied, vec![(5, 1)]);
        assert_eq!(dp.state, state(&[1]));
        drop(dp);
        agent.close();
    }

    #[test]
    fn a_conflicting_snapshot_is_refused_naming_the_endpoints_and_the_state_kept() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(1, &[1])), applied(1));
        let mut conflicting = state(&[1, 2]);
        conflicting.endpoints[1].ipv4 = conflicting.endpoints[0].ipv4;
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Snapshot {
                generation: 2,
                state: conflicting,
            }),
            2,
        );
        assert!(
            reason.starts_with("snapshot generation 2: ")
                && reason.contains("default/pod1")
                && reason.contains("default/pod2")
                && reason.contains("10.200.0.11"),
            "{reason}"
        );
        assert_eq!(lock(&dataplane).state, state(&[1]));
        assert_eq!(board.status().applied_generation, 1);
        // The connection stays usable, and a later state clears the refusal.
        assert_eq!(agent.ask(&snapshot(3, &[1, 2])), applied(3));
        assert_eq!(board.status().last_refusal, None);
        agent.close();
    }

    #[test]
    fn a_delta_applies_on_its_base() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(1, &[1, 2])), applied(1));
        let delta = AgentToEngine::Delta {
            generation: 2,
            base: 1,
            changes: vec![
                Change::RemoveEndpoint {
                    ifname: "lxc2".into(),
                },
                Change::UpsertEndpoint {
                    endpoint: endpoint(3),
                },
                Change::SetMtu { mtu: 9000 },
            ],
        };
        assert_eq!(agent.ask(&delta), applied(2));
        let mut expected = state(&[1, 3]);
        expected.mtu = 9000;
        let dp = lock(&dataplane);
        assert_eq!(dp.state, expected);
        assert_eq!(dp.applied, vec![(1, 2), (2, 2)]);
        drop(dp);
        assert_eq!(board.status().applied_generation, 2);
        agent.close();
    }

    #[test]
    fn a_delta_on_another_base_is_refused_naming_both_generations() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        // Before any snapshot there is no base to apply a delta on.
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Delta {
                generation: 1,
                base: 0,
                changes: vec![],
            }),
            1,
        );
        assert!(
            reason.contains("base 0") && reason.contains("send a snapshot"),
            "{reason}"
        );
        assert_eq!(agent.ask(&snapshot(2, &[1, 2])), applied(2));
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Delta {
                generation: 6,
                base: 5,
                changes: vec![Change::RemoveEndpoint {
                    ifname: "lxc2".into(),
                }],
            }),
            6,
        );
        assert_eq!(
            reason,
            "delta base 5 does not match the applied generation 2; send a snapshot"
        );
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Delta {
                generation: 2,
                base: 2,
                changes: vec![],
            }),
            2,
        );
        assert!(reason.contains("not greater"), "{reason}");
        let dp = lock(&dataplane);
        assert_eq!(dp.state, state(&[1, 2]));
        assert_eq!(dp.generation, 2);
        assert_eq!(dp.applied.len(), 1);
        drop(dp);
        agent.close();
    }

    #[test]
    fn a_delta_that_does_not_apply_or_conflicts_is_refused_and_the_state_kept() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(1, &[1, 2])), applied(1));
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Delta {
                generation: 2,
                base: 1,
                changes: vec![
                    Change::SetMtu { mtu: 9000 },
                    Change::RemoveEndpoint {
                        ifname: "lxc9".into(),
                    },
                ],
            }),
            2,
        );
        assert_eq!(
            reason,
            "delta generation 2: change 1: no endpoint on interface lxc9 to remove"
        );
        let mut thief = endpoint(3);
        thief.ipv4 = endpoint(1).ipv4;
        let reason = refused_ack(
            agent.ask(&AgentToEngine::Delta {
                generation: 3,
                base: 1,
                changes: vec![Change::UpsertEndpoint { endpoint: thief }],
            }),
            3,
        );
        assert!(
            reason.starts_with("delta generation 3: ") && reason.contains("default/pod3"),
            "{reason}"
        );
        let dp = lock(&dataplane);
        assert_eq!(dp.state, state(&[1, 2]));
        assert_eq!(dp.generation, 1);
        drop(dp);
        // The base is still 1.
        let delta = AgentToEngine::Delta {
            generation: 4,
            base: 1,
            changes: vec![Change::RemoveEndpoint {
                ifname: "lxc1".into(),
            }],
        };
        assert_eq!(agent.ask(&delta), applied(4));
        assert_eq!(lock(&dataplane).state, state(&[2]));
        agent.close();
    }

    #[test]
    fn malformed_json_is_refused_and_the_connection_closed() {
        let (dataplane, board) = setup();
        // Before the hello.
        let mut agent = Agent::connect(&dataplane, &board);
        agent.send_raw("{not json\n");
        let reason = refused(agent.receive().unwrap());
        assert!(reason.starts_with("malformed message"), "{reason}");
        agent.assert_closed();
        // After it, with a state applied: the state stays.
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(1, &[1])), applied(1));
        for garbage in [
            "{\"type\":\"snapshot\",\"generation\":2}\n",
            "{\"type\":\"launch\"}\n",
            "[]\n",
        ] {
            let mut agent = Agent::connect(&dataplane, &board);
            agent.hello();
            agent.send_raw(garbage);
            let reason = refused(agent.receive().unwrap());
            assert!(
                reason.starts_with("malformed message"),
                "{garbage}: {reason}"
            );
            agent.assert_closed();
        }
        assert_eq!(lock(&dataplane).state, state(&[1]));
        assert_eq!(lock(&dataplane).applied.len(), 1);
    }

    #[test]
    fn a_disconnected_agent_leaves_the_state_applied() {
        let (dataplane, board) = setup();
        let mut agent = Agent::connect(&dataplane, &board);
        agent.hello();
        assert_eq!(agent.ask(&snapshot(1, &[1, 2])), applied(1));
        agent.close();
        let status = board.status();
        assert!(!status.connected);
        assert_eq!(status.applied_generation, 1);
        let dp = lock(&dataplane);
        assert_eq!(dp.applied, vec![(1, 2)]);
        assert_eq!(dp.state, state(&[1, 2]));
        drop(dp);
        // A reconnecting agent is told where the engine stands.
        let mut agent = Agent::connect(&dataplane, &board);
        match agent.hello() {
            EngineToAgent::Welcome {
                applied_generation, ..
            } => assert_eq!(applied_generation, 1),
            other => panic!("{other:?}"),
        }
        agent.close();
    }

    #[test]
    fn an_older_connection_changes_nothing_once_a_newer_one_exists() {
        let (dataplane, board) = setup();
        let mut old = Agent::connect(&dataplane, &board);
        old.hello();
        let mut new = Agent::connect(&dataplane, &board);
        new.hello();
        // The old connection's next message is ignored and the connection ends.
        old.send(&snapshot(1, &[1]));
        old.assert_closed();
        assert!(lock(&dataplane).applied.is_empty());
        let status = board.status();
        assert!(status.connected, "the old connection's end hid the new one");
        assert_eq!(new.ask(&snapshot(1, &[2])), applied(1));
        new.close();
    }

    fn socket_path(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-api-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("api.sock")
    }

    #[test]
    fn the_socket_is_private_replaces_a_stale_file_and_goes_with_the_server() {
        let path = socket_path("private");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let (dataplane, board) = setup();
        let server = ApiServer::serve(&path, dataplane, board.clone()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            board.status().socket.as_deref(),
            Some(path.to_str().unwrap())
        );
        let mut agent = Agent::over(UnixStream::connect(&path).unwrap());
        assert!(matches!(agent.hello(), EngineToAgent::Welcome { .. }));
        drop(server);
        assert!(!path.exists());
        // The connection was closed with the server.
        agent.assert_closed();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_new_connection_replaces_the_old_one_which_is_closed() {
        let path = socket_path("replace");
        let (dataplane, board) = setup();
        let server = ApiServer::serve(&path, dataplane.clone(), board.clone()).unwrap();
        let mut first = Agent::over(UnixStream::connect(&path).unwrap());
        first.hello();
        assert_eq!(first.ask(&snapshot(1, &[1])), applied(1));
        let mut second = Agent::over(UnixStream::connect(&path).unwrap());
        let welcome = second.ask(&AgentToEngine::Hello {
            protocol: ENGINE_PROTOCOL_VERSION,
            agent: "restarted-agent".into(),
        });
        assert!(
            matches!(
                welcome,
                EngineToAgent::Welcome {
                    applied_generation: 1,
                    ..
                }
            ),
            "{welcome:?}"
        );
        first.assert_closed();
        assert_eq!(
            board.status().agent.as_deref(),
            Some("restarted-agent"),
            "{:?}",
            board.status()
        );
        assert_eq!(second.ask(&snapshot(2, &[1, 2])), applied(2));
        assert_eq!(lock(&dataplane).applied, vec![(1, 1), (2, 2)]);
        drop(server);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

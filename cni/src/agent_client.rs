//! The agent's side of a CNI call: one request, one answer per connection over
//! its unix socket ([`sluice_api::agent`]).

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_api::agent::{
    AgentRequest, AgentResponse, AgentStatus, Allocation, Attachment, ErrorKind,
    RegisteredEndpoint, Request,
};
use sluice_api::{read_message, write_message, FramingError};

use crate::error::CniError;

/// For quick questions (allocate, release, check, status, gc).
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(20);
/// Register is answered once the engine has acked a generation serving the
/// endpoint; kubelet's runtime request timeout is 2 min for the whole ADD.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the Sluice agent at {socket}: {source}")]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the Sluice agent at {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: FramingError,
    },
    #[error("the Sluice agent at {socket} closed the connection without answering")]
    NoAnswer { socket: PathBuf },
    #[error("the Sluice agent answered {what} to {asked}")]
    Unexpected { asked: &'static str, what: String },
    #[error("the Sluice agent refused {asked} ({kind:?}): {message}")]
    Refused {
        asked: &'static str,
        kind: ErrorKind,
        message: String,
    },
}

impl AgentError {
    /// The CNI error for ADD, DEL, CHECK and GC: an unreachable or not-ready
    /// agent is transient (11); exhaustion is 100; other refusals 101.
    pub fn into_cni(self) -> CniError {
        let text = self.to_string();
        match self {
            AgentError::Unreachable { .. }
            | AgentError::Io { .. }
            | AgentError::NoAnswer { .. } => CniError::TryAgain(text),
            AgentError::Refused { kind, .. } => match kind {
                ErrorKind::Exhausted => CniError::Exhausted(text),
                ErrorKind::NotReady => CniError::TryAgain(text),
                ErrorKind::VersionMismatch
                | ErrorKind::Invalid
                | ErrorKind::UnknownAttachment
                | ErrorKind::Internal => CniError::AgentRefused(text),
            },
            AgentError::Unexpected { .. } => CniError::AgentProtocol(text),
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, AgentError::Unreachable { .. })
    }
}

#[derive(Clone, Debug)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> AgentClient {
        AgentClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and reads its answer; an `Error` answer becomes
    /// [`AgentError::Refused`].
    pub fn call(&self, body: AgentRequest, timeout: Duration) -> Result<AgentResponse, AgentError> {
        let asked = request_name(&body);
        let stream =
            UnixStream::connect(&self.socket).map_err(|source| AgentError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let io = |source: FramingError| AgentError::Io {
            socket: self.socket.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| io(e.into()))?;
        let mut writer = &stream;
        write_message(&mut writer, &Request::new(body)).map_err(io)?;
        let mut reader = BufReader::new(&stream);
        match read_message::<AgentResponse>(&mut reader).map_err(io)? {
            None => Err(AgentError::NoAnswer {
                socket: self.socket.clone(),
            }),
            Some(AgentResponse::Error { kind, message }) => Err(AgentError::Refused {
                asked,
                kind,
                message,
            }),
            Some(answer) => Ok(answer),
        }
    }

    pub fn allocate(
        &self,
        attachment: Attachment,
        pod: Option<sluice_api::agent::PodRef>,
        netns: String,
    ) -> Result<Allocation, AgentError> {
        match self.call(
            AgentRequest::Allocate {
                attachment,
                pod,
                netns,
            },
            SHORT_TIMEOUT,
        )? {
            AgentResponse::Allocated { allocation } => Ok(allocation),
            other => Err(unexpected("allocate", &other)),
        }
    }

    /// Returns the generation that serves the endpoint.
    pub fn register(&self, endpoint: RegisteredEndpoint) -> Result<u64, AgentError> {
        match self.call(AgentRequest::Register { endpoint }, REGISTER_TIMEOUT)? {
            AgentResponse::Registered { generation } => Ok(generation),
            other => Err(unexpected("register", &other)),
        }
    }

    /// Whether the agent held the attachment.
    pub fn release(&self, attachment: Attachment) -> Result<bool, AgentError> {
        match self.call(AgentRequest::Release { attachment }, SHORT_TIMEOUT)? {
            AgentResponse::Released { released } => Ok(released),
            other => Err(unexpected("release", &other)),
        }
    }

    pub fn check(&self, attachment: Attachment) -> Result<Allocation, AgentError> {
        match self.call(AgentRequest::Check { attachment }, SHORT_TIMEOUT)? {
            AgentResponse::Checked { allocation } => Ok(allocation),
            other => Err(unexpected("check", &other)),
        }
    }

    /// The attachments released.
    pub fn gc(&self, valid: Vec<Attachment>) -> Result<Vec<Attachment>, AgentError> {
        match self.call(AgentRequest::Gc { valid }, SHORT_TIMEOUT)? {
            AgentResponse::GcDone { released } => Ok(released),
            other => Err(unexpected("gc", &other)),
        }
    }

    pub fn status(&self) -> Result<AgentStatus, AgentError> {
        match self.call(AgentRequest::Status, SHORT_TIMEOUT)? {
            AgentResponse::Status { status } => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }
}

fn request_name(body: &AgentRequest) -> &'static str {
    match body {
        AgentRequest::Allocate { .. } => "allocate",
        AgentRequest::Register { .. } => "register",
        AgentRequest::Release { .. } => "release",
        AgentRequest::Check { .. } => "check",
        AgentRequest::Gc { .. } => "gc",
        AgentRequest::Status => "status",
        AgentRequest::ListEndpoints => "list_endpoints",
        AgentRequest::ListIdentities => "list_identities",
        AgentRequest::ListServices => "list_services",
        AgentRequest::ListPolicies => "list_policies",
        AgentRequest::TracePolicy { .. } => "trace_policy",
    }
}

fn unexpected(asked: &'static str, answer: &AgentResponse) -> AgentError {
    let text = serde_json::to_string(answer).unwrap_or_else(|_| format!("{answer:?}"));
    AgentError::Unexpected {
        asked,
        what: text.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A one-shot agent answering `answer` to whatever it is asked, returning the request.
    fn one_shot(answer: AgentResponse) -> (PathBuf, std::thread::JoinHandle<Request>, TempDir) {
        let dir = TempDir::new();
        let path = dir.0.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let request: Request = serde_json::from_str(&line).unwrap();
            let mut writer = &stream;
            write_message(&mut writer, &answer).unwrap();
            request
        });
        (path, handle, dir)
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "sluice-cni-agent-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn release_round_trip_carries_the_protocol_version() {
        let (path, agent, _dir) = one_shot(AgentResponse::Released { released: true });
        assert!(AgentClient::new(&path).release(attachment()).unwrap());
        let request = agent.join().unwrap();
        assert_eq!(request.protocol, sluice_api::agent::AGENT_PROTOCOL_VERSION);
        assert_eq!(
            request.body,
            AgentRequest::Release {
                attachment: attachment()
            }
        );
    }

    #[test]
    fn refusals_map_to_cni_codes() {
        for (kind, code) in [
            (ErrorKind::Exhausted, 100),
            (ErrorKind::NotReady, 11),
            (ErrorKind::Invalid, 101),
            (ErrorKind::VersionMismatch, 101),
        ] {
            let (path, agent, _dir) = one_shot(AgentResponse::Error {
                kind,
                message: "no".into(),
            });
            let err = AgentClient::new(&path)
                .allocate(attachment(), None, "/proc/1/ns/net".into())
                .unwrap_err();
            agent.join().unwrap();
            assert_eq!(err.into_cni().code(), code, "{kind:?}");
        }
    }

    #[test]
    fn a_wrong_answer_is_a_protocol_error_and_no_agent_is_try_again() {
        let (path, agent, _dir) = one_shot(AgentResponse::Registered { generation: 1 });
        let err = AgentClient::new(&path).release(attachment()).unwrap_err();
        agent.join().unwrap();
        assert_eq!(err.into_cni().code(), 105);

        let err = AgentClient::new("/nonexistent/sluice/agent.sock")
            .status()
            .unwrap_err();
        assert!(err.is_unreachable());
        let cni = err.into_cni();
        assert_eq!(cni.code(), 11);
        assert!(cni.to_string().contains("/nonexistent/sluice/agent.sock"));
    }
}

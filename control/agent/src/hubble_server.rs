//! The agent's Hubble socket (`--hubble-socket`, mode 0600): Hubble's
//! `GetFlows` over newline-delimited JSON (see `sluice_api::hubble`). Per
//! connection the client writes one `GetFlowsRequest` line; the agent answers
//! with `GetFlowsResponse` lines: the buffered flows the request selects
//! (with the lost-event reports among them), then, with `follow`, every new
//! matching flow until the client goes away. A follower that falls behind
//! the live stream gets a `lost_events` line with source
//! `HUBBLE_RING_BUFFER` and continues. A bad request gets one line with
//! `error` naming the field.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sluice_api::events::{LostEvents, LostSource};
use sluice_api::hubble::{
    format_time, Flow, FlowQuery, GetFlowsRequest, GetFlowsResponse, Int32Value, LostEvent,
};
use sluice_api::MAX_MESSAGE_BYTES;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use crate::flows::{FlowHub, HubEvent};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A flow line without copying the flow (the same JSON as a
/// `GetFlowsResponse` with `flow` set).
#[derive(Serialize)]
struct FlowLine<'a> {
    flow: &'a Flow,
    node_name: &'a str,
    time: &'a str,
}

/// Hubble's `LostEvent` for a lost-events record.
pub fn lost_event(lost: &LostEvents) -> LostEvent {
    LostEvent {
        source: match lost.source {
            LostSource::PerfEventRingBuffer => "PERF_EVENT_RING_BUFFER",
            LostSource::ObserverEventsQueue => "OBSERVER_EVENTS_QUEUE",
            LostSource::HubbleRingBuffer => "HUBBLE_RING_BUFFER",
        }
        .into(),
        num_events_lost: lost.num_events_lost,
        cpu: lost.worker.map(|w| Int32Value {
            value: i32::try_from(w).unwrap_or(i32::MAX),
        }),
    }
}

/// Binds the socket (replacing a stale file, mode 0600) and serves until the
/// task is dropped.
pub async fn serve(
    hub: Arc<FlowHub>,
    node_name: String,
    path: &Path,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    let node_name: Arc<str> = node_name.into();
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let hub = hub.clone();
                    let node_name = node_name.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(&hub, &node_name, stream).await {
                            tracing::debug!("hubble socket client: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!("hubble socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// The request on `line`, checked; the error names the field.
pub fn parse_request(line: &str) -> Result<FlowQuery, String> {
    let mut de = serde_json::Deserializer::from_str(line);
    let request: GetFlowsRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("observe request: {}", e.inner())
        } else {
            format!("observe request {path}: {}", e.inner())
        }
    })?;
    request.compile()
}

struct Answer<'a> {
    out: BufWriter<OwnedWriteHalf>,
    node_name: &'a str,
    line: Vec<u8>,
}

impl Answer<'_> {
    async fn write(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).await?;
        Ok(())
    }

    async fn flow(&mut self, flow: &Flow) -> anyhow::Result<()> {
        let line = FlowLine {
            flow,
            node_name: self.node_name,
            time: &flow.time,
        };
        self.write(&line).await
    }

    async fn lost(&mut self, lost: &LostEvents) -> anyhow::Result<()> {
        let response = GetFlowsResponse {
            lost_events: Some(lost_event(lost)),
            node_name: self.node_name.to_string(),
            time: format_time(lost.time_unix_ns),
            ..Default::default()
        };
        self.write(&response).await
    }

    async fn error(&mut self, message: String) -> anyhow::Result<()> {
        let response = GetFlowsResponse {
            error: Some(message),
            node_name: self.node_name.to_string(),
            time: format_time(now_unix_ns()),
            ..Default::default()
        };
        self.write(&response).await?;
        self.out.flush().await?;
        Ok(())
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn handle(hub: &FlowHub, node_name: &str, stream: UnixStream) -> anyhow::Result<()> {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut answer = Answer {
        out: BufWriter::new(writer),
        node_name,
        line: Vec::new(),
    };
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut reader)
            .take(MAX_MESSAGE_BYTES as u64)
            .read_line(&mut line),
    )
    .await;
    match read {
        Err(_) => {
            return answer
                .error("observe request: none arrived in time".into())
                .await
        }
        Ok(result) => {
            result.context("read the observe request")?;
        }
    }
    let query = match parse_request(&line) {
        Ok(query) => query,
        Err(message) => return answer.error(message).await,
    };

    let (buffered, mut live) = hub.snapshot_and_follow();
    let selected = query.select(&buffered, |event| match event {
        HubEvent::Flow(flow) => Some(flow.as_ref()),
        HubEvent::Lost(_) => None,
    });
    for event in selected {
        match event {
            HubEvent::Flow(flow) => answer.flow(flow).await?,
            HubEvent::Lost(lost) => answer.lost(lost).await?,
        }
    }
    answer.out.flush().await?;
    drop(buffered);
    if !query.follow {
        return Ok(());
    }

    // Following: new events until `until` has passed or the client goes
    // away. A client may half-close after its request (end of file on our
    // side, then we stop listening to it); one that closed altogether is
    // found by the next write failing, or by an error reading.
    let mut probe = [0u8; 1];
    let mut listening = true;
    loop {
        let event = tokio::select! {
            event = live.recv() => event,
            read = reader.read(&mut probe), if listening => {
                match read {
                    Ok(0) => listening = false,
                    Ok(_) => {}
                    Err(_) => return Ok(()),
                }
                continue;
            }
        };
        match event {
            Ok(HubEvent::Flow(flow)) => {
                if query.past_until(&flow) {
                    break;
                }
                if query.matches(&flow) {
                    answer.flow(&flow).await?;
                }
            }
            Ok(HubEvent::Lost(lost)) => answer.lost(&lost).await?,
            Err(RecvError::Lagged(n)) => {
                hub.count_lost(LostSource::HubbleRingBuffer, n);
                answer
                    .lost(&LostEvents {
                        source: LostSource::HubbleRingBuffer,
                        num_events_lost: n,
                        worker: None,
                        time_unix_ns: now_unix_ns(),
                    })
                    .await?;
            }
            Err(RecvError::Closed) => break,
        }
        if live.is_empty() {
            answer.out.flush().await?;
        }
    }
    answer.out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let err = parse_request(r#"{"protocol": 1, "number": "ten"}"#).unwrap_err();
        assert!(
            err.starts_with("observe request number: invalid type"),
            "{err}"
        );
        let err = parse_request(r#"{"protocol": 1, "since": "yesterday"}"#).unwrap_err();
        assert!(err.contains("since") && err.contains("yesterday"), "{err}");
        let err = parse_request(r#"{"protocol": 7}"#).unwrap_err();
        assert!(err.contains("protocol 7"), "{err}");
        let err = parse_request("not json").unwrap_err();
        assert!(err.starts_with("observe request"), "{err}");
        let query = parse_request(r#"{"protocol": 1, "number": 3, "follow": true}"#).unwrap();
        assert_eq!((query.number, query.follow), (3, true));
    }

    #[test]
    fn lost_events_use_hubbles_source_names() {
        let lost = lost_event(&LostEvents {
            source: LostSource::PerfEventRingBuffer,
            num_events_lost: 5,
            worker: Some(2),
            time_unix_ns: 0,
        });
        assert_eq!(
            serde_json::to_value(&lost).unwrap(),
            serde_json::json!({"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": 5, "cpu": {"value": 2}})
        );
    }
}

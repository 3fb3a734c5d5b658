//! Keeps the engine in sync: connects to its API socket (retrying while it is
//! away), checks the protocol version, sends a full snapshot, then one delta
//! per new generation, waiting for each ack. The engine keeps forwarding on
//! its last state while this side is gone; after a reconnect the snapshot is
//! applied by the engine as a difference, so unchanged endpoints are untouched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sluice_api::engine::{
    version_mismatch, AgentToEngine, EngineToAgent, Outcome, ENGINE_PROTOCOL_VERSION,
};
use sluice_api::{diff_states, MAX_MESSAGE_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::core::AgentCore;
use crate::desired::Desired;

const RETRY: Duration = Duration::from_millis(300);
/// How long one ack may take (attaching many interfaces takes a while).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

struct Connection {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Connection {
    async fn send(&mut self, message: &AgentToEngine) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .context("write to the engine")?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<EngineToAgent> {
        let mut line = String::new();
        let n = tokio::time::timeout(ACK_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .context("the engine did not answer in time")?
            .context("read from the engine")?;
        if n == 0 {
            bail!("the engine closed the connection");
        }
        if line.len() > MAX_MESSAGE_BYTES {
            bail!("the engine sent an oversized message");
        }
        serde_json::from_str(&line)
            .with_context(|| format!("malformed message from the engine: {line:?}"))
    }
}

/// Runs until the process ends: connect, sync, follow.
pub async fn run(core: Arc<AgentCore>, socket: PathBuf, agent_name: String) {
    let mut logged_absent = false;
    loop {
        match session(&core, &socket, &agent_name).await {
            Ok(()) => {}
            Err(e) => {
                let absent = e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(
                            io.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        )
                    })
                });
                if !absent || !logged_absent {
                    tracing::warn!("engine connection: {e:#}");
                }
                logged_absent = absent;
            }
        }
        core.update_engine(|v| v.connected = false);
        tokio::time::sleep(RETRY).await;
    }
}

async fn session(core: &AgentCore, socket: &PathBuf, agent_name: &str) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connect to the engine at {}", socket.display()))?;
    let (reader, writer) = stream.into_split();
    let mut conn = Connection {
        reader: BufReader::new(reader),
        writer,
    };
    conn.send(&AgentToEngine::Hello {
        protocol: ENGINE_PROTOCOL_VERSION,
        agent: agent_name.to_string(),
    })
    .await?;
    let (engine, applied) = match conn.recv().await? {
        EngineToAgent::Welcome {
            protocol,
            engine,
            applied_generation,
        } => {
            if protocol != ENGINE_PROTOCOL_VERSION {
                let message = version_mismatch("the agent", ENGINE_PROTOCOL_VERSION, protocol);
                core.update_engine(|v| v.refusal = Some(message.clone()));
                bail!(message);
            }
            (engine, applied_generation)
        }
        EngineToAgent::Refused { reason } => {
            core.update_engine(|v| v.refusal = Some(reason.clone()));
            bail!("the engine refused the connection: {reason}");
        }
        other => bail!("expected Welcome from the engine, got {other:?}"),
    };
    tracing::info!(%engine, applied, "connected to the engine");
    core.raise_generation_above(applied);
    core.update_engine(|v| {
        v.connected = true;
        v.engine = Some(engine.clone());
        v.acked_generation = applied;
    });

    let mut desired = core.subscribe_desired();
    // What the engine runs on, as far as this connection knows (the
    // generation's shared value: nothing is copied per ack).
    let mut engine_state: Option<(u64, Arc<Desired>)> = None;
    loop {
        let current = desired.borrow_and_update().clone();
        let message = match &engine_state {
            Some((base, state)) if *base < current.number => Some(AgentToEngine::Delta {
                generation: current.number,
                base: *base,
                changes: diff_states(&state.state, &current.desired.state),
            }),
            Some(_) => None,
            None => Some(AgentToEngine::Snapshot {
                generation: current.number,
                state: current.desired.state.clone(),
            }),
        };
        if let Some(message) = message {
            let is_snapshot = matches!(message, AgentToEngine::Snapshot { .. });
            conn.send(&message).await?;
            match conn.recv().await? {
                EngineToAgent::Ack {
                    generation,
                    outcome,
                } if generation == current.number => match outcome {
                    Outcome::Applied => {
                        engine_state = Some((generation, current.desired.clone()));
                        core.update_engine(|v| {
                            v.acked_generation = generation;
                            v.refusal = None;
                        });
                    }
                    Outcome::Refused { reason } => {
                        tracing::error!(
                            generation,
                            "the engine refused generation {generation}: {reason}"
                        );
                        core.update_engine(|v| v.refusal = Some(reason));
                        if is_snapshot {
                            // Nothing to build on; wait for the next change and send it whole.
                            engine_state = None;
                            if !idle(&mut conn, &mut desired, core).await? {
                                return Ok(());
                            }
                        } else {
                            // Resync from scratch.
                            engine_state = None;
                        }
                        continue;
                    }
                },
                EngineToAgent::Refused { reason } => {
                    core.update_engine(|v| v.refusal = Some(reason.clone()));
                    bail!("the engine refused: {reason}");
                }
                other => bail!("unexpected answer from the engine: {other:?}"),
            }
            continue;
        }
        if !idle(&mut conn, &mut desired, core).await? {
            return Ok(());
        }
    }
}

/// Waits for the next generation while watching the connection: the engine
/// sends nothing unsolicited but `Refused`, so end of file or an error here
/// means it went away, and the agent must stop reporting it connected (and
/// reconnect to send a restarted engine its snapshot) without waiting for a
/// change to send. `Ok(false)` when the desired state's sender is gone.
async fn idle(
    conn: &mut Connection,
    desired: &mut tokio::sync::watch::Receiver<crate::core::Generation>,
    core: &AgentCore,
) -> anyhow::Result<bool> {
    // fill_buf is cancel safe: when the generation changes first, nothing is lost.
    let readable = tokio::select! {
        changed = desired.changed() => return Ok(changed.is_ok()),
        buffered = conn.reader.fill_buf() => buffered.map(|b| b.len()),
    };
    match readable.context("read from the engine")? {
        0 => bail!("the engine closed the connection"),
        _ => match conn.recv().await? {
            EngineToAgent::Refused { reason } => {
                core.update_engine(|v| v.refusal = Some(reason.clone()));
                bail!("the engine refused: {reason}");
            }
            other => bail!("unexpected message from the engine while idle: {other:?}"),
        },
    }
}

//! The agent's unix socket: one request and one response per connection,
//! for the CNI plugin (allocate, register, release, check, gc, status) and
//! the CLI (status, endpoint, identity, service and policy lists, policy
//! traces).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_api::agent::{
    host_ifname, AgentRequest, AgentResponse, AgentStatus, Allocation, ErrorKind, FlowsStatus,
    IpAssignment, Request, AGENT_PROTOCOL_VERSION,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::attachments::AttachmentRecord;
use crate::core::AgentCore;
use crate::desired::pod_cidrs;
use crate::ipam::{gateway_ipv4, IpamError, GATEWAY_IPV6};

/// How long Register waits for the engine to serve a new interface.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Release waits for the engine to drop one (best effort).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

fn error(kind: ErrorKind, message: impl Into<String>) -> AgentResponse {
    AgentResponse::Error {
        kind,
        message: message.into(),
    }
}

/// Binds the socket (replacing a stale file) and serves until the task is dropped.
pub async fn serve(
    core: Arc<AgentCore>,
    path: &Path,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let core = core.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(core, stream).await {
                            tracing::debug!("agent socket client: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!("agent socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn handle(core: Arc<AgentCore>, stream: UnixStream) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .context("no request in time")??;
    let response = match serde_json::from_str::<serde_json::Value>(&line) {
        Err(e) => error(ErrorKind::Invalid, format!("malformed request: {e}")),
        Ok(value) => {
            let protocol = value.get("protocol").and_then(serde_json::Value::as_u64);
            if protocol != Some(u64::from(AGENT_PROTOCOL_VERSION)) {
                error(
                    ErrorKind::VersionMismatch,
                    format!(
                        "agent API version mismatch: the agent speaks version {AGENT_PROTOCOL_VERSION}, \
                         the request says {}; use a sluice-cni and sluice CLI from the same release",
                        protocol.map_or("none".to_string(), |p| p.to_string())
                    ),
                )
            } else {
                match serde_json::from_value::<Request>(value) {
                    Ok(request) => answer(&core, request.body).await,
                    Err(e) => error(ErrorKind::Invalid, format!("malformed request: {e}")),
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    writer.write_all(&out).await?;
    Ok(())
}

fn allocation_of(core: &AgentCore, record: &AttachmentRecord) -> Allocation {
    let cidrs = core.store.read(|store| pod_cidrs(store, &core.config));
    Allocation {
        attachment: record.attachment.clone(),
        ipv4: record.ipv4.map(|ip| IpAssignment {
            address: IpAddr::V4(ip),
            prefix_len: 32,
            gateway: cidrs
                .ipv4
                .as_ref()
                .and_then(gateway_ipv4)
                .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), IpAddr::V4),
        }),
        ipv6: record.ipv6.map(|ip| IpAssignment {
            address: IpAddr::V6(ip),
            prefix_len: 128,
            gateway: IpAddr::V6(GATEWAY_IPV6),
        }),
        mtu: core.config.mtu,
        queues: core.config.veth_queues,
        host_ifname: record.host_ifname.clone(),
        registered: record.registered.clone(),
    }
}

/// Saves the attachments; a failure is an error to the caller, who must not
/// report success for a change that a restart would forget.
fn save(core: &AgentCore) -> Result<(), Box<AgentResponse>> {
    core.attachments()
        .save()
        .map_err(|e| Box::new(error(ErrorKind::Internal, format!("{e:#}"))))
}

async fn answer(core: &Arc<AgentCore>, request: AgentRequest) -> AgentResponse {
    match request {
        AgentRequest::Allocate {
            attachment,
            pod,
            netns,
        } => {
            if attachment.container_id.is_empty() || attachment.ifname.is_empty() {
                return error(
                    ErrorKind::Invalid,
                    "attachment: container_id and ifname must not be empty",
                );
            }
            let cidrs = core.store.read(|store| pod_cidrs(store, &core.config));
            let record = {
                let mut attachments = core.attachments();
                match attachments.allocate(&attachment, pod, &netns, &cidrs) {
                    Ok(record) => record.clone(),
                    Err(e @ IpamError::Exhausted { .. }) => {
                        return error(ErrorKind::Exhausted, e.to_string())
                    }
                    Err(e @ IpamError::NoPodCidr) => {
                        return error(ErrorKind::NotReady, e.to_string())
                    }
                }
            };
            if let Err(e) = save(core) {
                core.attachments().release(&attachment);
                return *e;
            }
            core.recompute();
            AgentResponse::Allocated {
                allocation: allocation_of(core, &record),
            }
        }
        AgentRequest::Register { endpoint } => {
            let expected = host_ifname(&endpoint.attachment);
            if endpoint.host_ifname != expected {
                return error(
                    ErrorKind::Invalid,
                    format!(
                        "register: host_ifname {:?} is not the attachment's {expected:?}",
                        endpoint.host_ifname
                    ),
                );
            }
            if !core.attachments().register(endpoint.clone()) {
                return error(
                    ErrorKind::UnknownAttachment,
                    format!(
                        "register: no allocation for {}/{}",
                        endpoint.attachment.container_id, endpoint.attachment.ifname
                    ),
                );
            }
            if let Err(e) = save(core) {
                return *e;
            }
            let generation = core.recompute();
            if core.wait_acked(generation, REGISTER_TIMEOUT).await {
                AgentResponse::Registered { generation }
            } else {
                let view = core.engine_view();
                let why = match (view.connected, view.refusal) {
                    (false, _) => "the engine is not connected".to_string(),
                    (true, Some(reason)) => format!("the engine refused the state: {reason}"),
                    (true, None) => {
                        format!("the engine did not ack generation {generation} in time")
                    }
                };
                error(
                    ErrorKind::NotReady,
                    format!("endpoint {} is not served: {why}", endpoint.host_ifname),
                )
            }
        }
        AgentRequest::Release { attachment } => {
            let released = core.attachments().release(&attachment);
            if released {
                if let Err(e) = save(core) {
                    return *e;
                }
                let generation = core.recompute();
                if core.engine_view().connected {
                    core.wait_acked(generation, RELEASE_TIMEOUT).await;
                }
            }
            AgentResponse::Released { released }
        }
        AgentRequest::Check { attachment } => {
            let record = core.attachments().get(&attachment).cloned();
            match record {
                Some(record) => AgentResponse::Checked {
                    allocation: allocation_of(core, &record),
                },
                None => error(
                    ErrorKind::UnknownAttachment,
                    format!(
                        "no attachment {}/{}",
                        attachment.container_id, attachment.ifname
                    ),
                ),
            }
        }
        AgentRequest::Gc { valid } => {
            let released = core.attachments().retain_valid(&valid);
            if !released.is_empty() {
                if let Err(e) = save(core) {
                    return *e;
                }
                let generation = core.recompute();
                if core.engine_view().connected {
                    core.wait_acked(generation, RELEASE_TIMEOUT).await;
                }
            }
            AgentResponse::GcDone { released }
        }
        AgentRequest::Status => AgentResponse::Status {
            status: status(core),
        },
        AgentRequest::ListEndpoints => AgentResponse::Endpoints {
            endpoints: core.current().desired.endpoints.clone(),
        },
        AgentRequest::ListIdentities => AgentResponse::Identities {
            identities: core.current().desired.identities.clone(),
        },
        AgentRequest::ListServices => {
            let current = core.current();
            AgentResponse::Services {
                services: current.desired.state.services.clone(),
                lb: current.desired.state.lb.clone(),
            }
        }
        AgentRequest::ListPolicies => AgentResponse::Policies {
            policies: core.current().desired.policies.clone(),
        },
        AgentRequest::TracePolicy { trace } => {
            let current = core.current();
            let store = core.store.snapshot();
            match crate::policy_trace::trace(&current.desired, &store, &trace) {
                Ok(trace) => AgentResponse::PolicyTrace { trace },
                Err(e) => error(ErrorKind::Invalid, format!("trace: {e}")),
            }
        }
    }
}

pub fn status(core: &AgentCore) -> AgentStatus {
    let current = core.current();
    let view = core.engine_view();
    let (mut source_errors, source_synced) = core
        .store
        .read(|store| (store.errors(), store.all_synced()));
    source_errors.extend(current.desired.errors.iter().cloned());
    AgentStatus {
        agent: format!("sluice-agent {}", env!("CARGO_PKG_VERSION")),
        node: core.config.node_name.clone(),
        source: core.source.clone(),
        source_synced,
        engine_connected: view.connected,
        engine: view.engine,
        desired_generation: current.number,
        acked_generation: view.acked_generation,
        engine_error: view.refusal,
        endpoints: current.desired.state.endpoints.len(),
        identities: current
            .desired
            .identities
            .iter()
            .filter(|i| !i.reserved)
            .count(),
        ipcache_entries: current.desired.state.ipcache.len(),
        services: current.desired.state.services.len(),
        pod_cidrs: current
            .desired
            .pod_cidrs
            .list()
            .iter()
            .map(|c| c.to_string())
            .collect(),
        source_errors,
        flows: Some(flows_status(&core.flows.status())),
    }
}

fn flows_status(hub: &crate::flows::FlowHubStatus) -> FlowsStatus {
    FlowsStatus {
        flows_seen: hub.flows_seen,
        buffered: hub.buffered,
        capacity: hub.capacity,
        lost: hub.lost.clone(),
        last_flow_unix_ns: hub.last_flow_unix_ns,
        engine_events_connected: hub.engine_events_connected,
    }
}

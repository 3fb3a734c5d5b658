//! Commands answered by the agent: status, endpoint, identity, service and
//! policy lists, policy traces.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use sluice_api::agent::{
    AgentRequest, AgentResponse, EndpointInfo, IdentityInfo, PolicyInfo, PolicyTrace, Request,
    TraceRequest,
};
use sluice_api::{read_message, write_message};

/// Sends one request to the agent and returns its answer; an agent error is an error here.
pub fn ask(socket: &Path, request: AgentRequest) -> anyhow::Result<AgentResponse> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to the agent at {} (is sluice-agent running? set --agent-socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut writer = stream.try_clone()?;
    write_message(&mut writer, &Request::new(request))?;
    let mut reader = BufReader::new(stream);
    match read_message::<AgentResponse>(&mut reader)? {
        Some(AgentResponse::Error { kind, message }) => bail!("agent: {message} ({kind:?})"),
        Some(answer) => Ok(answer),
        None => bail!("the agent closed the connection without answering"),
    }
}

pub fn endpoints(socket: &Path) -> anyhow::Result<Vec<EndpointInfo>> {
    match ask(socket, AgentRequest::ListEndpoints)? {
        AgentResponse::Endpoints { endpoints } => Ok(endpoints),
        other => bail!("unexpected answer to endpoint list: {other:?}"),
    }
}

pub fn services(
    socket: &Path,
) -> anyhow::Result<(Vec<sluice_tables::Service>, sluice_tables::LbConfig)> {
    match ask(socket, AgentRequest::ListServices)? {
        AgentResponse::Services { services, lb } => Ok((services, lb)),
        other => bail!("unexpected answer to service list: {other:?}"),
    }
}

pub fn identities(socket: &Path) -> anyhow::Result<Vec<IdentityInfo>> {
    match ask(socket, AgentRequest::ListIdentities)? {
        AgentResponse::Identities { identities } => Ok(identities),
        other => bail!("unexpected answer to identity list: {other:?}"),
    }
}

pub fn policies(socket: &Path) -> anyhow::Result<Vec<PolicyInfo>> {
    match ask(socket, AgentRequest::ListPolicies)? {
        AgentResponse::Policies { policies } => Ok(policies),
        other => bail!("unexpected answer to policy get: {other:?}"),
    }
}

pub fn trace_policy(socket: &Path, trace: TraceRequest) -> anyhow::Result<PolicyTrace> {
    match ask(socket, AgentRequest::TracePolicy { trace })? {
        AgentResponse::PolicyTrace { trace } => Ok(trace),
        other => bail!("unexpected answer to policy trace: {other:?}"),
    }
}

pub fn print_endpoints(list: &[EndpointInfo]) {
    println!(
        "{:<28} {:<10} {:<16} {:<24} {:>8} {:<16} LABELS",
        "ENDPOINT", "STATE", "IPV4", "IPV6", "IDENTITY", "HOST-IF"
    );
    let opt = |v: Option<std::net::IpAddr>| v.map_or("-".to_string(), |ip| ip.to_string());
    for e in list {
        println!(
            "{:<28} {:<10} {:<16} {:<24} {:>8} {:<16} {}",
            e.name,
            e.state,
            opt(e.ipv4),
            opt(e.ipv6),
            e.identity,
            e.host_ifname.as_deref().unwrap_or("-"),
            e.labels.join(",")
        );
    }
}

/// Where an identity number comes from: Cilium's reserved ones, the
/// cluster's label-derived ones, or node-local ones (CIDR rules, from 1<<24).
pub fn identity_scope(id: u32) -> &'static str {
    if id >= sluice_tables::policy::identity::FIRST_LOCAL {
        "local"
    } else if id < 256 {
        "reserved"
    } else {
        "cluster"
    }
}

pub fn print_identities(list: &[IdentityInfo]) {
    println!(
        "{:>8} {:<8} {:>9} {:>5}  LABELS",
        "ID", "SCOPE", "ENDPOINTS", "IPS"
    );
    for i in list {
        println!(
            "{:>8} {:<8} {:>9} {:>5}  {}",
            i.id,
            identity_scope(i.id),
            i.endpoints,
            i.ips,
            i.labels.join(" ")
        );
    }
}

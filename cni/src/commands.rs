//! The CNI commands, from a parsed environment and config to a result.
//!
//! ADD: check that CNI_IFNAME is free in the container -> Allocate -> wire the
//! veth pair -> Register -> result. A failure after Allocate deletes whatever
//! was wired and Releases the attachment, so a failed ADD leaves no veth,
//! address or endpoint behind (and the runtime's DEL after it is a no-op).
//!
//! DEL: delete the host veth (found by [`host_ifname`], so neither CNI_NETNS
//! nor the agent is needed for that), then Release. Both steps are idempotent.
//! If the veth cannot be deleted DEL fails without releasing, so the address is
//! not handed to another pod while the old veth may still hold it. If the agent
//! cannot be reached DEL still deletes the veth but answers 11 (try again
//! later): succeeding would leak the address for good, since nothing else
//! would ever release it; the runtime retries DEL until the agent is back.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;
use sluice_api::agent::{host_ifname, Allocation, Attachment, ErrorKind, RegisteredEndpoint};

use crate::agent_client::{AgentClient, AgentError};
use crate::config::{self, NetConf};
use crate::env::{self, Command, Env};
use crate::error::{CniError, ErrorReply};
use crate::log::Log;
use crate::netns::NetError;
use crate::result::{self, AddResult, Interface, IpConfig, Route};
use crate::version::LATEST;
use crate::wiring::{self, WireError, WireSpec};

/// What one invocation prints and how it exits.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub stdout: Option<String>,
    pub exit_code: i32,
}

/// The binary's main: the process environment and stdin, the reply on stdout.
pub fn main() -> i32 {
    let mut log = Log::new();
    let get = |name: &str| std::env::var(name).ok();
    let mut stdin = std::io::stdin().lock();
    let reply = run(&get, &mut stdin, &mut log);
    if let Some(text) = &reply.stdout {
        let mut out = std::io::stdout().lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .and_then(|_| out.flush())
            .is_err()
        {
            log.line("cannot write the reply to stdout");
            return 1;
        }
    }
    reply.exit_code
}

/// One invocation, with the environment read through `get`.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &mut dyn Read, log: &mut Log) -> Reply {
    // Without CNI_COMMAND nobody is driving us (a person at a terminal):
    // answer without waiting for stdin.
    if get("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        log.line(format_args!(
            "CNI plugin sluice-cni {}; CNI protocol versions supported: {}",
            env!("CARGO_PKG_VERSION"),
            crate::version::SUPPORTED_VERSIONS.join(", ")
        ));
        let error =
            CniError::InvalidEnv("required environment variables missing: CNI_COMMAND".into());
        return failure(LATEST.as_str(), &error, log);
    }
    let mut raw = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut raw) {
        let error = CniError::Io(format!(
            "cannot read the network configuration from stdin: {e}"
        ));
        return failure(LATEST.as_str(), &error, log);
    }
    let hint = config::version_hint(&raw);
    let reply_version = hint.clone().unwrap_or_else(|| LATEST.as_str().to_string());
    let command = match env::command(get) {
        Ok(command) => command,
        Err(error) => return failure(&reply_version, &error, log),
    };

    if command == Command::Version {
        return success(Some(result::version_reply(hint.as_deref())));
    }
    match execute(get, &raw, log) {
        Ok(output) => success(output),
        Err(error) => failure(&reply_version, &error, log),
    }
}

fn success(output: Option<Value>) -> Reply {
    Reply {
        stdout: output.map(|v| v.to_string()),
        exit_code: 0,
    }
}

fn failure(version: &str, error: &CniError, log: &mut Log) -> Reply {
    log.line(format_args!("error {}: {error}", error.code()));
    let reply = ErrorReply::new(version, error);
    Reply {
        stdout: Some(serde_json::to_string(&reply).unwrap_or_default()),
        exit_code: 1,
    }
}

fn execute(
    get: &dyn Fn(&str) -> Option<String>,
    raw: &[u8],
    log: &mut Log,
) -> Result<Option<Value>, CniError> {
    let env = env::parse(get)?;
    let attachment = if env.container_id.is_empty() {
        String::new()
    } else {
        format!("{}/{}", env.container_id, env.ifname)
    };
    log.set_context(env.command.as_str(), &attachment);
    let conf = config::parse(raw)?;
    if let Some(path) = &conf.log_file {
        log.open_file(path);
    }
    let agent = AgentClient::new(&conf.agent_socket);
    match env.command {
        Command::Add => add(&env, &conf, &agent, log).map(Some),
        Command::Del => del(&env, &agent, log).map(|()| None),
        Command::Check => {
            require(&conf, env.command, conf.version.allows_check(), "0.4.0")?;
            check(&env, &conf, &agent, log).map(|()| None)
        }
        Command::Status => {
            require(
                &conf,
                env.command,
                conf.version.allows_status_and_gc(),
                "1.1.0",
            )?;
            status(&agent).map(|()| None)
        }
        Command::Gc => {
            require(
                &conf,
                env.command,
                conf.version.allows_status_and_gc(),
                "1.1.0",
            )?;
            gc(&conf, &agent, log).map(|()| None)
        }
        Command::Version => Ok(Some(result::version_reply(Some(conf.version.as_str())))),
    }
}

fn require(
    conf: &NetConf,
    command: Command,
    allowed: bool,
    needs: &'static str,
) -> Result<(), CniError> {
    if allowed {
        Ok(())
    } else {
        Err(CniError::CommandNotInVersion {
            version: conf.version.to_string(),
            command: command.as_str(),
            needs,
        })
    }
}

/// CNI_NETNS problems are the environment's (4); the rest is wiring (103).
fn net_error(error: NetError) -> CniError {
    match error {
        NetError::OpenNetns { .. } | NetError::EnterNetns { .. } => {
            CniError::InvalidEnv(format!("invalid CNI_NETNS: {error}"))
        }
        other => CniError::Netlink(other.to_string()),
    }
}

fn wire_error(error: WireError) -> CniError {
    match error {
        WireError::Exists { .. } => CniError::InterfaceExists(error.to_string()),
        WireError::Before(e) => net_error(e),
        WireError::Failed { .. } => CniError::Netlink(error.to_string()),
    }
}

fn spec_of(allocation: &Allocation, env: &Env) -> WireSpec {
    WireSpec {
        host_ifname: allocation.host_ifname.clone(),
        container_ifname: env.ifname.clone(),
        netns_path: env.netns.clone(),
        mtu: allocation.mtu,
        queues: allocation.queues,
        ipv4: allocation.ipv4.clone(),
        ipv6: allocation.ipv6.clone(),
    }
}

/// Releases after a failed ADD; says how it went for the error message.
fn release_after_failure(agent: &AgentClient, attachment: &Attachment, log: &mut Log) -> String {
    match agent.release(attachment.clone()) {
        Ok(_) => "released the attachment at the agent".into(),
        Err(e) => {
            log.line(format_args!("release after the failed ADD: {e}"));
            format!("could not release the attachment at the agent (the runtime's DEL will): {e}")
        }
    }
}

fn add(env: &Env, conf: &NetConf, agent: &AgentClient, log: &mut Log) -> Result<Value, CniError> {
    let attachment = env.attachment();
    // A prevResult we could not extend fails now, before anything is made.
    AddResult::default().to_json(conf.version, conf.prev_result.as_ref())?;
    // Checked before the agent hands anything out, so a runtime's mistaken
    // second ADD cannot make us release a live pod's addresses.
    if wiring::container_interface_exists(&env.netns, &env.ifname).map_err(net_error)? {
        return Err(CniError::InterfaceExists(format!(
            "interface {} already exists in {}",
            env.ifname, env.netns
        )));
    }

    let allocation = agent
        .allocate(attachment.clone(), env.args.pod.clone(), env.netns.clone())
        .map_err(AgentError::into_cni)?;
    let addresses: Vec<String> = allocation
        .ipv4
        .iter()
        .chain(allocation.ipv6.iter())
        .map(|a| result::cidr(a.address, a.prefix_len))
        .collect();
    log.line(format_args!(
        "allocated {} mtu {} host veth {}",
        addresses.join(" "),
        allocation.mtu,
        allocation.host_ifname
    ));
    let spec = spec_of(&allocation, env);
    let expected_host = host_ifname(&attachment);
    let unusable = if allocation.attachment != attachment {
        Some(format!(
            "the agent answered for attachment {:?}, not {:?}",
            allocation.attachment, attachment
        ))
    } else if allocation.host_ifname != expected_host {
        Some(format!(
            "the agent names the host veth {}, the plugin derives {expected_host}: agent and plugin are out of step",
            allocation.host_ifname
        ))
    } else {
        spec.validate()
            .err()
            .map(|m| format!("the agent's allocation is unusable: {m}"))
    };
    if let Some(message) = unusable {
        let note = release_after_failure(agent, &attachment, log);
        return Err(CniError::AgentProtocol(message).context(note));
    }

    let wired = match wiring::wire(&spec) {
        Ok(wired) => wired,
        Err(e) => {
            let note = release_after_failure(agent, &attachment, log);
            return Err(wire_error(e).context(note));
        }
    };
    log.line(format_args!(
        "wired {} (ifindex {}) <-> {} in {}",
        spec.host_ifname, wired.host_ifindex, env.ifname, env.netns
    ));

    let endpoint = RegisteredEndpoint {
        attachment: attachment.clone(),
        host_ifname: spec.host_ifname.clone(),
        host_ifindex: wired.host_ifindex,
        container_mac: wired.container_mac,
    };
    match agent.register(endpoint) {
        Ok(generation) => log.line(format_args!(
            "registered, served in generation {generation}"
        )),
        Err(e) => {
            let unwired = match wiring::unwire(&spec.host_ifname) {
                Ok(_) => format!("deleted {}", spec.host_ifname),
                Err(e) => format!("could not delete {}: {e}", spec.host_ifname),
            };
            let released = release_after_failure(agent, &attachment, log);
            return Err(e.into_cni().context(format!("{unwired}; {released}")));
        }
    }

    let mut ours = AddResult {
        interfaces: vec![
            Interface {
                name: spec.host_ifname.clone(),
                mac: Some(wired.host_mac),
                mtu: Some(spec.mtu),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: Some(wired.container_mac),
                mtu: Some(spec.mtu),
                sandbox: Some(env.netns.clone()),
            },
        ],
        dns: conf.dns.clone().unwrap_or_default(),
        ..AddResult::default()
    };
    for assignment in spec.ipv4.iter().chain(spec.ipv6.iter()) {
        ours.ips.push(IpConfig {
            address: assignment.address,
            prefix_len: assignment.prefix_len,
            gateway: Some(assignment.gateway),
            interface: 1,
        });
        ours.routes.push(Route {
            dst: if assignment.address.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            prefix_len: 0,
            gw: Some(assignment.gateway),
        });
    }
    // Cannot fail: the prevResult's shape was checked first.
    ours.to_json(conf.version, conf.prev_result.as_ref())
}

fn del(env: &Env, agent: &AgentClient, log: &mut Log) -> Result<(), CniError> {
    let attachment = env.attachment();
    let host = host_ifname(&attachment);
    match wiring::unwire(&host) {
        Ok(true) => log.line(format_args!("deleted {host}")),
        Ok(false) => log.line(format_args!("{host} was already gone")),
        Err(e) => {
            return Err(CniError::Netlink(format!(
                "cannot delete {host}: {e}; the attachment stays allocated until a DEL succeeds"
            )))
        }
    }
    match agent.release(attachment) {
        Ok(held) => {
            log.line(format_args!(
                "{}",
                if held {
                    "released at the agent"
                } else {
                    "the agent held nothing"
                }
            ));
            Ok(())
        }
        Err(e) => Err(e.into_cni().context(format!(
            "{host} is deleted; the addresses stay allocated until DEL is retried"
        ))),
    }
}

fn check(env: &Env, conf: &NetConf, agent: &AgentClient, log: &mut Log) -> Result<(), CniError> {
    let attachment = env.attachment();
    let allocation = agent.check(attachment.clone()).map_err(|e| match e {
        AgentError::Refused {
            kind: ErrorKind::UnknownAttachment,
            ..
        } => CniError::CheckFailed(format!("the agent holds nothing for this attachment: {e}")),
        other => other.into_cni(),
    })?;
    let mut problems = Vec::new();
    if allocation.registered.is_none() {
        problems.push("the endpoint is not registered with the agent".to_string());
    }
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::InvalidConfig(
            "CHECK needs prevResult (the result of the ADD)".into(),
        ));
    };
    let listed = result::listed_addresses(prev)?;
    for assignment in allocation.ipv4.iter().chain(allocation.ipv6.iter()) {
        if !listed.contains(&(assignment.address, assignment.prefix_len)) {
            problems.push(format!(
                "prevResult does not list {}/{}",
                assignment.address, assignment.prefix_len
            ));
        }
    }
    let spec = spec_of(&allocation, env);
    problems.extend(wiring::check(&spec).map_err(net_error)?);
    if problems.is_empty() {
        log.line("as expected");
        Ok(())
    } else {
        Err(CniError::CheckFailed(problems.join("; ")))
    }
}

fn status(agent: &AgentClient) -> Result<(), CniError> {
    let status = agent
        .status()
        .map_err(|e| CniError::Unavailable(e.to_string()))?;
    if !status.engine_connected {
        return Err(CniError::Unavailable(format!(
            "the Sluice agent on {} has no connection to the engine",
            status.node
        )));
    }
    if !status.in_sync() {
        return Err(CniError::Unavailable(format!(
            "the engine is not in sync with the agent: desired generation {}, acked {}{}",
            status.desired_generation,
            status.acked_generation,
            status
                .engine_error
                .map(|e| format!(", engine refused: {e}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

fn gc(conf: &NetConf, agent: &AgentClient, log: &mut Log) -> Result<(), CniError> {
    // Without the list every attachment would look stale: refuse rather than
    // release them all.
    let Some(valid) = conf.valid_attachments.clone() else {
        return Err(CniError::InvalidConfig(
            "GC needs cni.dev/valid-attachments".into(),
        ));
    };
    let released = agent.gc(valid).map_err(AgentError::into_cni)?;
    let mut failures = Vec::new();
    for attachment in &released {
        let host = host_ifname(attachment);
        match wiring::unwire(&host) {
            Ok(deleted) => log.line(format_args!(
                "gc released {}/{}{}",
                attachment.container_id,
                attachment.ifname,
                if deleted {
                    format!(", deleted {host}")
                } else {
                    String::new()
                }
            )),
            Err(e) => failures.push(format!("cannot delete {host}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::Netlink(failures.join("; ")))
    }
}

//! sluice-cni driven the way a runtime drives it, for the CNI tests
//! (`tests/cni_agent.rs`, `tests/cni_containerd.rs`): the plugin binary run in
//! a node network namespace with an explicit environment and stdin, its reply
//! parsed; scratch namespaces named in the lab's scheme (so `sluice-lab
//! cleanup` finds leftovers) and deleted when dropped; what a namespace holds.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use sluice_lab::binaries::{find_binary, CNI};
use sluice_lab::command::{self, run, run_ok, run_with_input, CmdOutput, SETUP_TIMEOUT};

/// Deadline for one plugin call: ADD may wait for the agent's Register
/// timeout (15 s) before failing.
pub const CNI_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one plugin invocation printed and how it exited.
#[derive(Debug, Clone)]
pub struct CniReply {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout as JSON; `Null` when stdout is empty.
    pub json: Value,
    pub elapsed: Duration,
}

impl CniReply {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The spec error's `code`, when the plugin failed with an error JSON.
    pub fn error_code(&self) -> Option<u64> {
        if self.success() {
            return None;
        }
        self.json["code"].as_u64()
    }

    /// The spec error's `msg` (empty when there is none).
    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for CniReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.exit_code,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// One invocation's environment (only what is set here reaches the plugin,
/// besides PATH) and stdin.
#[derive(Debug, Clone, Default)]
pub struct CniCall {
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

impl CniCall {
    /// `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME=eth0`,
    /// `CNI_PATH=/opt/cni/bin`, and `config` on stdin. Empty values are left out.
    pub fn new(command: &str, container: &str, netns: &str, config: &Value) -> CniCall {
        CniCall::default()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(config.to_string().into_bytes())
    }

    /// Sets (or with an empty value, removes) a variable.
    pub fn env(mut self, key: &str, value: &str) -> CniCall {
        self.env.retain(|(k, _)| k != key);
        if !value.is_empty() {
            self.env.push((key.to_string(), value.to_string()));
        }
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> CniCall {
        self.stdin = bytes;
        self
    }

    /// Runs sluice-cni in network namespace `netns` (a name under /run/netns).
    pub fn run_in(&self, netns: &str) -> Result<CniReply> {
        let binary = find_binary(CNI)?;
        let mut cmd = command::in_netns(netns, &[&binary.display().to_string()]);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let started = std::time::Instant::now();
        let out = run_with_input(&mut cmd, &self.stdin, CNI_CALL_TIMEOUT)?;
        let elapsed = started.elapsed();
        let json = if out.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout)
                .with_context(|| format!("sluice-cni printed non-JSON: {:?}", out.stdout))?
        };
        Ok(CniReply {
            exit_code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
            json,
            elapsed,
        })
    }
}

/// A network namespace made by a test (`ip netns add`), deleted when dropped
/// with whatever interfaces are still in it. Name it in the lab's scheme
/// (`sluice_lab::names::pod_netns(lab.prefix(), n)` with `n` past the lab's
/// pods) so that `sluice-lab cleanup` removes it if the test process dies.
#[derive(Debug)]
pub struct ScratchNetns {
    name: String,
}

impl ScratchNetns {
    pub fn create(name: &str) -> Result<ScratchNetns> {
        run_ok(
            Command::new("ip").args(["netns", "add", name]),
            SETUP_TIMEOUT,
        )?;
        let ns = ScratchNetns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what a runtime hands the plugin as CNI_NETNS.
    pub fn path(&self) -> String {
        command::netns_path(&self.name).display().to_string()
    }

    /// `ip -n <name> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Result<CmdOutput> {
        ip_in(&self.name, args)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        if command::netns_path(&self.name).exists() {
            if let Err(err) = run_ok(
                Command::new("ip").args(["netns", "del", &self.name]),
                SETUP_TIMEOUT,
            ) {
                eprintln!("deleting namespace {}: {err:#}", self.name);
            }
        }
    }
}

/// `ip -n <netns> <args>`, which must succeed.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<CmdOutput> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run_ok(Command::new("ip").args(&full), SETUP_TIMEOUT)
}

/// The interface names in `netns`, sorted.
pub fn link_names(netns: &str) -> Result<Vec<String>> {
    let out = ip_in(netns, &["-j", "link", "show"])?;
    let links: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("parsing `ip -j link show` in {netns}"))?;
    let mut names: Vec<String> = links
        .as_array()
        .ok_or_else(|| anyhow!("`ip -j link show` in {netns}: {}", out.stdout))?
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Whether `ifname` exists in `netns`.
pub fn link_exists(netns: &str, ifname: &str) -> Result<bool> {
    let out = run(
        Command::new("ip").args(["-n", netns, "link", "show", "dev", ifname]),
        SETUP_TIMEOUT,
    )?;
    Ok(out.success())
}

/// The global addresses on `ifname` in `netns` with their prefix lengths.
pub fn addresses(netns: &str, ifname: &str) -> Result<Vec<(IpAddr, u8)>> {
    let out = ip_in(netns, &["-j", "addr", "show", "dev", ifname])?;
    let links: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("parsing `ip -j addr show {ifname}` in {netns}"))?;
    let mut found = Vec::new();
    for info in links[0]["addr_info"].as_array().into_iter().flatten() {
        if info["scope"] != "global" {
            continue;
        }
        let local: IpAddr = info["local"]
            .as_str()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("address in {info}"))?;
        let len = info["prefixlen"].as_u64().unwrap_or(0) as u8;
        found.push((local, len));
    }
    Ok(found)
}

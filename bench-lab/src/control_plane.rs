//! The lab's control plane: sluice-agent in the node namespace (standalone
//! mode, reading the lab's manifest directory) and sluice-cni run for each pod
//! as a container runtime would run it.
//!
//! Files in the run directory: `manifests/` (one Pod manifest per pod),
//! `agent-state/` (identities and attachments), `agent.sock`, with flow
//! observation on (see [`Lab::observe_agent_args`]) `hubble.sock`; the
//! engine's API socket is [`Lab::api_socket`].

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use sluice_api::agent::{AgentRequest, AgentResponse, AgentStatus, Request};
use sluice_api::{read_message, write_message};

use crate::binaries::{find_binary, AGENT, CNI};
use crate::command::{self, in_netns, run_with_input, CmdOutput};
use crate::lab::{Lab, Tracked, POD_CIDRS};

/// Log name of the agent's output.
pub const AGENT_LOG: &str = "agent";
/// The CNI network name in the lab's config.
pub const CNI_NETWORK: &str = "sluice-lab";
/// Deadline for one CNI call (ADD waits for the engine to serve the veth).
pub const CNI_TIMEOUT: Duration = Duration::from_secs(60);

/// What one CNI ADD gave a pod.
#[derive(Debug, Clone)]
pub struct CniResult {
    pub raw: Value,
}

impl Lab {
    /// `<run dir>/manifests`: the agent's manifest directory.
    pub fn manifests_dir(&self) -> PathBuf {
        self.run_dir().join("manifests")
    }

    /// `<run dir>/agent.sock`.
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    /// `<run dir>/hubble.sock`: the agent's `--hubble-socket`, which
    /// `sluice observe --server` reads. Every lab agent gets its own, so
    /// labs side by side do not take each other's (the default path is
    /// host-wide).
    pub fn hubble_socket(&self) -> PathBuf {
        self.run_dir().join("hubble.sock")
    }

    /// The agent flags for a flow-observation test: keep `buffer_capacity`
    /// flows for [`Lab::hubble_socket`] and, with `prometheus`, serve
    /// `/metrics` and the service map over HTTP at that address (in the node
    /// namespace). Every lab agent reads the engine's events socket
    /// ([`Lab::events_socket`]) already, as a deployed agent does.
    pub fn observe_agent_args(
        &self,
        buffer_capacity: usize,
        prometheus: Option<SocketAddr>,
    ) -> Vec<String> {
        let mut args = vec![
            "--hubble-event-buffer-capacity".to_string(),
            buffer_capacity.to_string(),
        ];
        if let Some(addr) = prometheus {
            args.extend(["--prometheus-serve-addr".to_string(), addr.to_string()]);
        }
        args
    }

    /// `<run dir>/agent-state`: identities and attachments, kept across agent restarts.
    pub fn agent_state_dir(&self) -> PathBuf {
        self.run_dir().join("agent-state")
    }

    /// Writes `default/pod<i>` (label `app=pod<i>`) for every pod, so each
    /// endpoint gets a label-derived identity.
    pub(crate) fn write_pod_manifests(&self, pods: usize) -> Result<()> {
        let dir = self.manifests_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut text = String::new();
        for i in 1..=pods {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod{i}\n  namespace: default\n  \
                 labels: {{app: pod{i}, lab: sluice}}\nspec:\n  containers: [{{name: main, image: busybox}}]\n"
            ));
        }
        let path = dir.join("pods.yaml");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Starts sluice-agent in the node namespace and waits for its socket.
    /// Returns its PID.
    pub fn start_agent(&self) -> Result<u32> {
        self.start_agent_with(&[])
    }

    /// [`Lab::start_agent`] with `extra` appended to the agent's command line
    /// (service flags such as `--enable-masquerade`).
    pub fn start_agent_with(&self, extra: &[&str]) -> Result<u32> {
        let binary = find_binary(AGENT)?.display().to_string();
        let socket = self.agent_socket();
        let manifests = self.manifests_dir().display().to_string();
        let state = self.agent_state_dir().display().to_string();
        let socket_text = socket.display().to_string();
        let engine = self.api_socket().display().to_string();
        let queues = self.spec().queues.to_string();
        let mtu = self.spec().mtu.to_string();
        let hubble = self.hubble_socket().display().to_string();
        let events = self.events_socket().display().to_string();
        let node = format!("{}-node", self.prefix());
        let mut args: Vec<String> = [
            binary.as_str(),
            "--manifests",
            &manifests,
            "--node-name",
            &node,
            "--state-dir",
            &state,
            "--socket",
            &socket_text,
            "--engine-socket",
            &engine,
            "--veth-queues",
            &queues,
            "--mtu",
            &mtu,
            "--hubble-socket",
            &hubble,
            "--engine-events-socket",
            &events,
            "--pod-cidr",
            POD_CIDRS[0],
            "--pod-cidr",
            POD_CIDRS[1],
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(uplink) = self.uplink() {
            args.extend([
                "--uplink".to_string(),
                uplink.ifname.clone(),
                "--uplink-next-hop-mac".to_string(),
                uplink.next_hop_mac.to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = {
            let mut inner = self.shared.lock()?;
            ensure!(inner.agent.is_none(), "the agent is already running");
            let _ = std::fs::remove_file(&socket);
            // A stale Hubble socket would look served before the agent binds it.
            let _ = std::fs::remove_file(self.hubble_socket());
            let child = self.spawn_logged(self.node_netns(), AGENT_LOG, &args)?;
            let pid = child.id();
            inner.agent = Some(Tracked {
                what: format!("agent (pid {pid})"),
                child,
            });
            pid
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            {
                let mut inner = self.shared.lock()?;
                let agent = inner
                    .agent
                    .as_mut()
                    .ok_or_else(|| anyhow!("the agent was stopped while starting"))?;
                if let Some(status) = agent.child.try_wait()? {
                    bail!(
                        "the agent exited ({status}) before its socket answered\n{}",
                        self.log_tail(AGENT_LOG, 30)
                    );
                }
            }
            if UnixStream::connect(&socket).is_ok() {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                let _ = self.stop_agent();
                bail!(
                    "the agent's socket {} did not answer within 15 s\n{}",
                    socket.display(),
                    self.log_tail(AGENT_LOG, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID of the running agent, if any.
    pub fn agent_pid(&self) -> Option<u32> {
        let inner = self.shared.lock().ok()?;
        inner.agent.as_ref().map(|t| t.child.id())
    }

    /// Stops the agent (SIGTERM, SIGKILL after 5 s). `Ok(None)` if none ran.
    pub fn stop_agent(&self) -> Result<Option<ExitStatus>> {
        let mut inner = self.shared.lock()?;
        match inner.agent.take() {
            Some(mut agent) => Ok(Some(command::terminate(
                &mut agent.child,
                Duration::from_secs(5),
            )?)),
            None => Ok(None),
        }
    }

    /// Kills the agent with SIGKILL, as a crash would. `Ok(false)` if none ran.
    pub fn kill_agent(&self) -> Result<bool> {
        let mut inner = self.shared.lock()?;
        match inner.agent.take() {
            Some(mut agent) => {
                agent.child.kill().context("SIGKILL to the agent")?;
                agent.child.wait().context("reaping the agent")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One request to the agent.
    pub fn ask_agent(&self, request: AgentRequest) -> Result<AgentResponse> {
        let socket = self.agent_socket();
        let stream = UnixStream::connect(&socket)
            .with_context(|| format!("connecting to the agent at {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut writer = stream.try_clone()?;
        write_message(&mut writer, &Request::new(request))?;
        let mut reader = std::io::BufReader::new(stream);
        read_message(&mut reader)?.ok_or_else(|| anyhow!("the agent closed the connection"))
    }

    pub fn agent_status(&self) -> Result<AgentStatus> {
        match self.ask_agent(AgentRequest::Status)? {
            AgentResponse::Status { status } => Ok(status),
            other => bail!("unexpected answer to status: {other:?}"),
        }
    }

    /// Waits until the engine acked the agent's latest generation.
    pub fn wait_in_sync(&self, timeout: Duration) -> Result<AgentStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.agent_status();
            if let Ok(s) = &status {
                if s.in_sync() {
                    return status;
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent and engine not in sync within {timeout:?}: {status:?}\nagent log:\n{}\nengine log:\n{}",
                    self.log_tail(AGENT_LOG, 20),
                    self.engine_log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The network config the lab's "runtime" hands sluice-cni.
    pub fn cni_config(&self, cni_version: &str) -> Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "name": CNI_NETWORK,
            "type": "sluice-cni",
            "agentSocket": self.agent_socket(),
        })
    }

    /// Runs sluice-cni in the node namespace like a runtime: `command` (ADD,
    /// DEL, CHECK...) for lab pod `pod`, container id `<prefix>-pod<i>`.
    pub fn cni(&self, command: &str, pod: usize, cni_version: &str) -> Result<CmdOutput> {
        let netns = crate::names::pod_netns(self.prefix(), pod);
        let container = format!("{}-pod{pod}", self.prefix());
        let netns_path = if command == "DEL" {
            String::new()
        } else {
            command::netns_path(&netns).display().to_string()
        };
        self.cni_raw(
            command,
            &container,
            &netns_path,
            &format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod{pod}"),
            &self.cni_config(cni_version),
        )
    }

    /// sluice-cni with explicit environment and config.
    pub fn cni_raw(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        args: &str,
        config: &Value,
    ) -> Result<CmdOutput> {
        let binary = find_binary(CNI)?.display().to_string();
        let mut cmd = in_netns(self.node_netns(), &[&binary]);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", args)
            .env("CNI_PATH", "/opt/cni/bin");
        run_with_input(&mut cmd, config.to_string().as_bytes(), CNI_TIMEOUT)
    }

    /// ADD for lab pod `pod`; the result JSON, or an error with the plugin's error JSON.
    pub fn cni_add(&self, pod: usize) -> Result<CniResult> {
        let out = self.cni("ADD", pod, "1.0.0")?;
        ensure!(
            out.success(),
            "sluice-cni ADD for pod {pod} failed ({}): {}{}\nagent log:\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log_tail(AGENT_LOG, 20)
        );
        let raw: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("sluice-cni ADD printed {:?}", out.stdout))?;
        Ok(CniResult { raw })
    }
}

/// The addresses in a CNI result's `ips` (without prefix lengths).
pub fn result_ips(result: &Value) -> Result<Vec<std::net::IpAddr>> {
    let list = result["ips"]
        .as_array()
        .ok_or_else(|| anyhow!("CNI result has no ips: {result}"))?;
    list.iter()
        .map(|ip| {
            let text = ip["address"].as_str().unwrap_or("");
            let addr = text.split('/').next().unwrap_or("");
            addr.parse()
                .with_context(|| format!("CNI result address {text:?}"))
        })
        .collect()
}

/// The node-side interface in a CNI result: the one without a sandbox.
pub fn result_host_ifname(result: &Value) -> Result<String> {
    result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i.get("sandbox")
                .is_none_or(|s| s.as_str().unwrap_or("").is_empty())
        })
        .and_then(|i| i["name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("CNI result names no host interface: {result}"))
}

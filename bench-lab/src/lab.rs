//! The lab guard: one node namespace, its pods, and everything started in them.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sluice_tables::{Cidr, Endpoint, Gateway, MacAddr, NodeState, Uplink};

use crate::command::{self, in_netns, ip, run, run_ok, CmdOutput, SETUP_TIMEOUT};
use crate::names;

/// The gateway every pod routes through; the engine (or, in kernel mode, the
/// node kernel) answers for it.
pub const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0x53, 0x4c, 0x00, 0x00, 0x01]);
pub const GATEWAY_IPV4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const GATEWAY_IPV6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The node's uplink (`LabSpec::with_outside`): its name in the node namespace
/// and the node's own addresses on it.
pub const UPLINK_IFNAME: &str = "uplink0";
pub const UPLINK_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 254, 1);
pub const UPLINK_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x254, 0, 0, 0, 0, 0, 1);
/// The outside host's addresses (its `eth0`).
pub const OUTSIDE_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 254, 2);
pub const OUTSIDE_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x254, 0, 0, 0, 0, 0, 2);
/// The pod prefixes the outside routes via the node and the engine owns on the uplink.
pub const POD_CIDRS: [&str; 2] = ["10.200.0.0/24", "fd00:200::/64"];

/// Most pods one lab holds (the last IPv4 octet is 10 + pod number).
pub const MAX_PODS: usize = 200;
/// Most queues per veth (engine workers) the lab accepts.
pub const MAX_QUEUES: u32 = 64;

/// Default deadline for a command run in a pod with [`Lab::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Who moves packets between the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// The node namespace has no addresses, no routes and forwarding off: the
    /// only path between pods is sluice-engine. Without it, pods are isolated.
    Engine,
    /// The node kernel routes between pods (the baseline for benchmarks).
    Kernel,
}

impl std::str::FromStr for Forwarding {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Forwarding> {
        match text {
            "engine" => Ok(Forwarding::Engine),
            "kernel" => Ok(Forwarding::Kernel),
            other => bail!("unknown forwarding mode {other:?} (engine or kernel)"),
        }
    }
}

/// The shape of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    pub pods: usize,
    /// numtxqueues/numrxqueues of every veth: one per engine worker.
    pub queues: u32,
    pub mode: Forwarding,
    /// `ethtool -K eth0 tx off` in every pod. XDP on a veth turns off TSO on its
    /// peer and TCP checksums can then arrive unfilled at the engine.
    pub pod_tx_checksum_off: bool,
    /// MTU of every pod's eth0 and its node-side veth (and of the engine's node
    /// state). XDP on a veth allows at most 3506 without multi-buffer programs.
    pub mtu: u32,
    /// An "outside" namespace joined to the node by its uplink (`uplink0`),
    /// which routes the pod prefixes via the node. Engine mode only.
    pub outside: bool,
    /// How pods are wired in engine mode.
    pub wiring: PodWiring,
    /// Each pod's Kubernetes namespace and name, in pod order (what the
    /// runtime puts in CNI_ARGS, and the endpoint's name); empty: pod `i` is
    /// `default/pod<i>`. Named pods need their manifests in `manifests`.
    pub pod_refs: Vec<PodRef>,
    /// Files written into the agent's manifest directory before the agent
    /// starts, instead of the default `pods.yaml`: (file name, text). Lets a
    /// lab start with its namespaces, labels and ports in place, so every
    /// endpoint gets its final identity on its first generation.
    pub manifests: Vec<(String, String)>,
}

/// A pod's Kubernetes namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: &str, name: &str) -> PodRef {
        PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How an engine-mode lab wires its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodWiring {
    /// As a container runtime would: sluice-agent runs in the node namespace
    /// (standalone mode, the lab's manifest directory), sluice-cni ADD creates
    /// each pod's veth and registers it, and the engine is fed by the agent
    /// over its API socket.
    Cni,
    /// The lab creates the veths itself and hands the engine a node state
    /// file (`--state`); no agent. Kernel mode always wires this way.
    Static,
}

impl LabSpec {
    /// Pods forwarded by sluice-engine, with pod checksum offload off.
    pub fn engine(pods: usize) -> LabSpec {
        LabSpec {
            pods,
            queues: 1,
            mode: Forwarding::Engine,
            pod_tx_checksum_off: true,
            mtu: sluice_tables::DEFAULT_MTU,
            outside: false,
            wiring: PodWiring::Cni,
            pod_refs: Vec::new(),
            manifests: Vec::new(),
        }
    }

    /// Pods forwarded by the node kernel.
    pub fn kernel(pods: usize) -> LabSpec {
        LabSpec {
            pods,
            queues: 1,
            mode: Forwarding::Kernel,
            pod_tx_checksum_off: false,
            mtu: sluice_tables::DEFAULT_MTU,
            outside: false,
            wiring: PodWiring::Static,
            pod_refs: Vec::new(),
            manifests: Vec::new(),
        }
    }

    pub fn with_queues(mut self, queues: u32) -> LabSpec {
        self.queues = queues;
        self
    }

    pub fn with_mtu(mut self, mtu: u32) -> LabSpec {
        self.mtu = mtu;
        self
    }

    /// Engine mode with the lab wiring the veths and writing a state file
    /// instead of going through the agent and sluice-cni.
    pub fn with_static_pods(mut self) -> LabSpec {
        self.wiring = PodWiring::Static;
        self
    }

    /// Whether pods are wired by sluice-cni through the agent.
    pub fn uses_cni(&self) -> bool {
        self.mode == Forwarding::Engine && self.wiring == PodWiring::Cni
    }

    /// Adds the outside namespace and the node's uplink (engine mode only).
    pub fn with_outside(mut self, outside: bool) -> LabSpec {
        self.outside = outside;
        self
    }

    /// Names every pod (one [`PodRef`] per pod, in order) and gives the agent
    /// `manifests` (file name, text) to start with: the Pod objects of those
    /// names, and whatever else the lab's tests need (Namespaces...).
    pub fn with_named_pods(
        mut self,
        pod_refs: Vec<PodRef>,
        manifests: Vec<(String, String)>,
    ) -> LabSpec {
        self.pod_refs = pod_refs;
        self.manifests = manifests;
        self
    }

    /// Pod `index`'s (1-based) namespace and name.
    pub fn pod_ref(&self, index: usize) -> PodRef {
        match index.checked_sub(1).and_then(|i| self.pod_refs.get(i)) {
            Some(named) => named.clone(),
            None => PodRef::new("default", &format!("pod{index}")),
        }
    }
}

/// Pod `i`'s IPv4 address (pods are numbered from 1): `10.200.0.<1+i>`, what
/// the agent's IPAM hands out to the i-th CNI ADD on a fresh node (.1 is the gateway).
pub fn pod_ipv4(pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, (1 + pod) as u8)
}

/// Pod `i`'s IPv6 address: `fd00:200::` plus `i` (the IPAM's order too).
pub fn pod_ipv6(pod: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0)) + pod as u128)
}

/// One pod of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// 1-based.
    pub index: usize,
    /// Kubernetes-style name, `default/pod<i>` (or its `LabSpec::pod_refs` name).
    pub name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// MAC of the pod's eth0.
    pub mac: MacAddr,
    /// The node side of the pod's veth, `lxc<i>`.
    pub node_ifname: String,
    /// Its ifindex inside the node namespace.
    pub node_ifindex: u32,
}

/// A process the lab started and will stop.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub what: String,
    pub child: Child,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Created namespaces, in creation order.
    namespaces: Vec<String>,
    pub(crate) engine: Option<Tracked>,
    pub(crate) agent: Option<Tracked>,
    /// The command line of the running engine.
    pub(crate) engine_args: Vec<String>,
    pub(crate) processes: Vec<Tracked>,
    torn_down: bool,
}

impl Inner {
    /// Position of a process this lab started, or an error naming the pid.
    fn tracked(&self, pid: u32) -> Result<usize> {
        self.processes
            .iter()
            .position(|t| t.child.id() == pid)
            .ok_or_else(|| anyhow!("pid {pid} was not started by this lab"))
    }
}

/// What teardown needs; shared with the registry so a signal handler can tear
/// down labs that the main thread owns.
#[derive(Debug)]
pub(crate) struct Shared {
    prefix: String,
    run_dir: PathBuf,
    inner: Mutex<Inner>,
}

/// Labs not yet torn down, for [`teardown_all`].
static LIVE: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop teardown.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tears down every lab of this process that still stands. For signal handlers
/// (Ctrl-C in the binary); a lab's owner dropping it later is harmless.
pub fn teardown_all() {
    let live: Vec<Arc<Shared>> = lock(&LIVE).clone();
    for shared in live {
        if let Err(err) = shared.teardown() {
            eprintln!("sluice-lab: teardown of {}: {err:#}", shared.prefix);
        }
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = lock(&self.inner);
        ensure!(!inner.torn_down, "lab {} is already torn down", self.prefix);
        Ok(inner)
    }

    /// Stops every process, deletes every namespace and the run directory.
    /// Idempotent; keeps going past errors and reports the first.
    fn teardown(&self) -> Result<()> {
        let mut inner = lock(&self.inner);
        if inner.torn_down {
            return Ok(());
        }
        inner.torn_down = true;
        let mut errors = Vec::new();
        // The agent first, so it does not log the engine going away.
        let tracked: Vec<Tracked> = inner
            .agent
            .take()
            .into_iter()
            .chain(inner.engine.take())
            .collect();
        for mut t in tracked
            .into_iter()
            .chain(std::mem::take(&mut inner.processes))
        {
            if let Err(err) = command::terminate(&mut t.child, Duration::from_secs(5)) {
                errors.push(anyhow!("stopping {}: {err:#}", t.what));
            }
        }
        // Pods first, the node last: the reverse of creation.
        for netns in inner.namespaces.iter().rev() {
            if let Err(err) = delete_netns(netns) {
                errors.push(err);
            }
        }
        inner.namespaces.clear();
        if let Err(err) = fs::remove_dir_all(&self.run_dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                errors.push(anyhow!("removing {}: {err}", self.run_dir.display()));
            }
        }
        drop(inner);
        lock(&LIVE).retain(|s| !std::ptr::eq(s.as_ref(), self));
        match errors.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Kills what still runs in `netns` (by PID, from `ip netns pids`), then deletes it.
pub(crate) fn delete_netns(netns: &str) -> Result<()> {
    if !command::netns_path(netns).exists() {
        return Ok(());
    }
    // Bounded: a process that survives SIGKILL (uninterruptible sleep) is left,
    // and the namespace then lingers until it exits; deletion still unbinds it.
    for _ in 0..3 {
        let out = run(&mut ip(&["netns", "pids", netns]), SETUP_TIMEOUT)?;
        let pids: Vec<u32> = out
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            command::terminate_foreign(pid, Duration::from_secs(2));
        }
    }
    run_ok(&mut ip(&["netns", "del", netns]), SETUP_TIMEOUT)
        .with_context(|| format!("deleting namespace {netns}"))?;
    Ok(())
}

/// A node and its pods, as network namespaces. Dropping it stops everything it
/// started and deletes everything it created, also when a test panics.
#[derive(Debug)]
pub struct Lab {
    pub(crate) shared: Arc<Shared>,
    spec: LabSpec,
    node_netns: String,
    pods: Vec<Pod>,
    state_path: PathBuf,
    /// The node's uplink, when the lab has an outside.
    uplink: Option<Uplink>,
}

impl Lab {
    /// Builds the node and pods of `spec` and writes the engine's state file.
    pub fn new(spec: LabSpec) -> Result<Lab> {
        ensure!(
            (1..=MAX_PODS).contains(&spec.pods),
            "a lab has 1 to {MAX_PODS} pods, not {}",
            spec.pods
        );
        ensure!(
            (1..=MAX_QUEUES).contains(&spec.queues),
            "a veth has 1 to {MAX_QUEUES} queues, not {}",
            spec.queues
        );
        ensure!(
            (68..=9000).contains(&spec.mtu),
            "a pod MTU is 68 to 9000, not {}",
            spec.mtu
        );
        ensure!(
            !(spec.outside && spec.mode == Forwarding::Kernel),
            "with_outside is supported in engine mode only (kernel mode has no uplink routing)"
        );
        ensure!(
            spec.pod_refs.is_empty() || (spec.pod_refs.len() == spec.pods && spec.uses_cni()),
            "named pods: one name per pod ({} names for {} pods), wired through sluice-cni",
            spec.pod_refs.len(),
            spec.pods
        );
        ensure!(
            spec.pod_refs.is_empty() || !spec.manifests.is_empty(),
            "named pods need their Pod manifests (LabSpec::with_named_pods)"
        );
        ensure!(command::is_root(), "the lab needs root (namespaces, veths)");
        let prefix = names::next_prefix();
        let run_dir = names::run_dir(&prefix);
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            run_dir: run_dir.clone(),
            inner: Mutex::new(Inner::default()),
        });
        lock(&LIVE).push(shared.clone());
        // From here on, any error drops `lab`, which tears down what exists.
        let mut lab = Lab {
            shared,
            node_netns: names::node_netns(&prefix),
            state_path: run_dir.join("state.json"),
            spec,
            pods: Vec::new(),
            uplink: None,
        };
        fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let node = self.node_netns.clone();
        self.add_netns(&node)?;
        ip_in(&node, &["link", "set", "lo", "up"])?;
        match self.spec.mode {
            Forwarding::Engine => sysctl(
                &node,
                &[
                    ("net.ipv4.conf.all.forwarding", "0"),
                    ("net.ipv4.conf.default.forwarding", "0"),
                    ("net.ipv6.conf.all.forwarding", "0"),
                    ("net.ipv6.conf.default.forwarding", "0"),
                ],
            )?,
            Forwarding::Kernel => sysctl(
                &node,
                &[
                    ("net.ipv4.conf.all.forwarding", "1"),
                    ("net.ipv6.conf.all.forwarding", "1"),
                ],
            )?,
        }
        if self.spec.outside {
            self.uplink = Some(self.add_outside()?);
        }
        if self.spec.uses_cni() {
            return self.add_pods_through_cni();
        }
        for index in 1..=self.spec.pods {
            let pod = self.add_pod(index)?;
            self.pods.push(pod);
        }
        let state = serde_json::to_string_pretty(&self.node_state())?;
        fs::write(&self.state_path, state + "\n")
            .with_context(|| format!("writing {}", self.state_path.display()))?;
        Ok(())
    }

    /// The runtime's way: pod namespaces, manifests, engine and agent, then
    /// sluice-cni ADD for each pod in order (so the IPAM hands out the planned
    /// addresses, which is checked).
    fn add_pods_through_cni(&mut self) -> Result<()> {
        for index in 1..=self.spec.pods {
            self.add_netns(&names::pod_netns(&self.shared.prefix, index))?;
        }
        if self.spec.manifests.is_empty() {
            self.write_pod_manifests(self.spec.pods)?;
        } else {
            self.write_initial_manifests()?;
        }
        self.start_engine(&crate::EngineOptions::default())?;
        self.start_agent()?;
        for index in 1..=self.spec.pods {
            let netns = names::pod_netns(&self.shared.prefix, index);
            let result = if self.spec.pod_refs.is_empty() {
                self.cni_add(index)?
            } else {
                self.cni_add_named(index)?
            };
            let ips = crate::control_plane::result_ips(&result.raw)?;
            let (ipv4, ipv6) = (pod_ipv4(index), pod_ipv6(index));
            ensure!(
                ips.contains(&ipv4.into()) && ips.contains(&ipv6.into()),
                "pod {index}: sluice-cni handed out {ips:?}, the lab plans {ipv4} and {ipv6}"
            );
            let host = crate::control_plane::result_host_ifname(&result.raw)?;
            let (_, mac) = link_info(&netns, "eth0")?;
            let (node_ifindex, _) = link_info(&self.node_netns, &host)?;
            self.pods.push(Pod {
                index,
                name: self.spec.pod_ref(index).to_string(),
                netns,
                ipv4,
                ipv6,
                mac,
                node_ifname: host,
                node_ifindex,
            });
        }
        self.wait_in_sync(Duration::from_secs(30))?;
        Ok(())
    }

    /// Writes `LabSpec::manifests` into the agent's manifest directory.
    fn write_initial_manifests(&self) -> Result<()> {
        let dir = self.manifests_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, text) in &self.spec.manifests {
            let path = dir.join(file);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// sluice-cni ADD for named pod `index`, with its namespace and name in
    /// CNI_ARGS (container id `<prefix>-pod<i>` as for unnamed pods).
    fn cni_add_named(&self, index: usize) -> Result<crate::control_plane::CniResult> {
        let pod = self.spec.pod_ref(index);
        let netns = command::netns_path(&names::pod_netns(&self.shared.prefix, index));
        let out = self.cni_raw(
            "ADD",
            &format!("{}-pod{index}", self.shared.prefix),
            &netns.display().to_string(),
            &format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
            &self.cni_config("1.0.0"),
        )?;
        ensure!(
            out.success(),
            "sluice-cni ADD for pod {index} ({pod}) failed ({}): {}{}\nagent log:\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log_tail(crate::control_plane::AGENT_LOG, 20)
        );
        let raw = serde_json::from_str(&out.stdout)
            .with_context(|| format!("sluice-cni ADD printed {:?}", out.stdout))?;
        Ok(crate::control_plane::CniResult { raw })
    }

    /// Creates a namespace under the lock, so a concurrent teardown either sees
    /// it or prevents it.
    fn add_netns(&self, netns: &str) -> Result<()> {
        let mut inner = self.shared.lock()?;
        run_ok(&mut ip(&["netns", "add", netns]), SETUP_TIMEOUT)?;
        inner.namespaces.push(netns.to_string());
        Ok(())
    }

    fn add_pod(&self, index: usize) -> Result<Pod> {
        let node = &self.node_netns;
        let netns = names::pod_netns(&self.shared.prefix, index);
        let lxc = format!("lxc{index}");
        let queues = self.spec.queues.to_string();
        let (ipv4, ipv6) = (pod_ipv4(index), pod_ipv6(index));
        self.add_netns(&netns)?;
        // Created inside the node namespace with its peer moved straight into
        // the pod: no lab interface ever exists in the root namespace.
        #[rustfmt::skip]
        ip_in(node, &[
            "link", "add", &lxc, "numtxqueues", &queues, "numrxqueues", &queues,
            "type", "veth", "peer", "name", "eth0", "netns", &netns,
            "numtxqueues", &queues, "numrxqueues", &queues,
        ])?;

        // Node side. No DAD: addresses are usable at once and no probe leaves.
        sysctl(node, &[(&format!("net.ipv6.conf.{lxc}.accept_dad"), "0")])?;
        match self.spec.mode {
            Forwarding::Engine => {
                // No link-local address either: the node kernel owns nothing here.
                ip_in(node, &["link", "set", &lxc, "addrgenmode", "none"])?;
                sysctl(
                    node,
                    &[
                        (&format!("net.ipv4.conf.{lxc}.forwarding"), "0"),
                        (&format!("net.ipv6.conf.{lxc}.forwarding"), "0"),
                    ],
                )?;
                ip_in(node, &["link", "set", &lxc, "up"])?;
            }
            Forwarding::Kernel => {
                ip_in(node, &["link", "set", &lxc, "up"])?;
                let gw4 = format!("{GATEWAY_IPV4}/32");
                let gw6 = format!("{GATEWAY_IPV6}/64");
                ip_in(node, &["addr", "add", &gw4, "dev", &lxc])?;
                ip_in(node, &["-6", "addr", "add", &gw6, "dev", &lxc, "nodad"])?;
                let to4 = format!("{ipv4}/32");
                let to6 = format!("{ipv6}/128");
                ip_in(node, &["route", "add", &to4, "dev", &lxc])?;
                ip_in(node, &["-6", "route", "add", &to6, "dev", &lxc])?;
            }
        }

        // Pod side.
        sysctl(&netns, &[("net.ipv6.conf.eth0.accept_dad", "0")])?;
        ip_in(&netns, &["link", "set", "lo", "up"])?;
        let mtu = self.spec.mtu.to_string();
        ip_in(node, &["link", "set", &lxc, "mtu", &mtu])?;
        ip_in(&netns, &["link", "set", "eth0", "mtu", &mtu])?;
        ip_in(&netns, &["link", "set", "eth0", "up"])?;
        let addr4 = format!("{ipv4}/32");
        let addr6 = format!("{ipv6}/128");
        let gw4 = GATEWAY_IPV4.to_string();
        let gw6 = GATEWAY_IPV6.to_string();
        ip_in(&netns, &["addr", "add", &addr4, "dev", "eth0"])?;
        ip_in(
            &netns,
            &["-6", "addr", "add", &addr6, "dev", "eth0", "nodad"],
        )?;
        #[rustfmt::skip]
        ip_in(&netns, &["route", "add", &gw4, "dev", "eth0", "scope", "link"])?;
        ip_in(
            &netns,
            &["route", "add", "default", "via", &gw4, "dev", "eth0"],
        )?;
        #[rustfmt::skip]
        ip_in(&netns, &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"])?;
        if self.spec.pod_tx_checksum_off {
            run_ok(
                &mut in_netns(&netns, &["ethtool", "-K", "eth0", "tx", "off"]),
                SETUP_TIMEOUT,
            )?;
        }

        let (_, mac) = link_info(&netns, "eth0")?;
        let (node_ifindex, _) = link_info(node, &lxc)?;
        Ok(Pod {
            index,
            name: format!("default/pod{index}"),
            netns,
            ipv4,
            ipv6,
            mac,
            node_ifname: lxc,
            node_ifindex,
        })
    }

    /// The outside namespace and the node's uplink to it. The node kernel owns
    /// the uplink addresses (its own traffic) but has no pod routes and does not
    /// forward: outside <-> pod traffic exists only through the engine.
    fn add_outside(&self) -> Result<Uplink> {
        let node = &self.node_netns;
        let out = names::outside_netns(&self.shared.prefix);
        self.add_netns(&out)?;
        #[rustfmt::skip]
        ip_in(node, &[
            "link", "add", UPLINK_IFNAME, "type", "veth", "peer", "name", "eth0", "netns", &out,
        ])?;
        let mtu = self.spec.mtu.to_string();
        sysctl(
            node,
            &[
                (&format!("net.ipv6.conf.{UPLINK_IFNAME}.accept_dad"), "0"),
                (&format!("net.ipv4.conf.{UPLINK_IFNAME}.forwarding"), "0"),
                (&format!("net.ipv6.conf.{UPLINK_IFNAME}.forwarding"), "0"),
            ],
        )?;
        ip_in(node, &["link", "set", UPLINK_IFNAME, "mtu", &mtu])?;
        let node4 = format!("{UPLINK_IPV4}/24");
        let node6 = format!("{UPLINK_IPV6}/64");
        ip_in(node, &["addr", "add", &node4, "dev", UPLINK_IFNAME])?;
        #[rustfmt::skip]
        ip_in(node, &["-6", "addr", "add", &node6, "dev", UPLINK_IFNAME, "nodad"])?;
        ip_in(node, &["link", "set", UPLINK_IFNAME, "up"])?;

        sysctl(&out, &[("net.ipv6.conf.eth0.accept_dad", "0")])?;
        ip_in(&out, &["link", "set", "lo", "up"])?;
        ip_in(&out, &["link", "set", "eth0", "mtu", &mtu])?;
        let out4 = format!("{OUTSIDE_IPV4}/24");
        let out6 = format!("{OUTSIDE_IPV6}/64");
        ip_in(&out, &["addr", "add", &out4, "dev", "eth0"])?;
        ip_in(&out, &["-6", "addr", "add", &out6, "dev", "eth0", "nodad"])?;
        ip_in(&out, &["link", "set", "eth0", "up"])?;
        let (via4, via6) = (UPLINK_IPV4.to_string(), UPLINK_IPV6.to_string());
        #[rustfmt::skip]
        ip_in(&out, &["route", "add", POD_CIDRS[0], "via", &via4, "dev", "eth0"])?;
        #[rustfmt::skip]
        ip_in(&out, &["-6", "route", "add", POD_CIDRS[1], "via", &via6, "dev", "eth0"])?;
        if self.spec.pod_tx_checksum_off {
            run_ok(
                &mut in_netns(&out, &["ethtool", "-K", "eth0", "tx", "off"]),
                SETUP_TIMEOUT,
            )?;
        }

        let (ifindex, mac) = link_info(node, UPLINK_IFNAME)?;
        let (_, next_hop_mac) = link_info(&out, "eth0")?;
        Ok(Uplink {
            ifname: UPLINK_IFNAME.to_string(),
            ifindex,
            mac,
            next_hop_mac,
            pod_cidrs: POD_CIDRS.iter().filter_map(|c| Cidr::parse(c)).collect(),
            addrs: vec![UPLINK_IPV4.into(), UPLINK_IPV6.into()],
        })
    }

    /// The outside namespace, when the lab was built with one.
    pub fn outside_netns(&self) -> Option<String> {
        self.uplink
            .as_ref()
            .map(|_| names::outside_netns(&self.shared.prefix))
    }

    /// The node's uplink, when the lab was built with an outside.
    pub fn uplink(&self) -> Option<&Uplink> {
        self.uplink.as_ref()
    }

    /// Runs `args` in the outside namespace; killed after `timeout`.
    pub fn exec_outside(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let netns = self
            .outside_netns()
            .ok_or_else(|| anyhow!("lab {} has no outside namespace", self.prefix()))?;
        self.exec_in(&netns, args, timeout)
    }

    /// `sl<pid>x<n>`: the prefix of every object of this lab.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    pub fn node_netns(&self) -> &str {
        &self.node_netns
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Pod `index` (1-based).
    pub fn pod(&self, index: usize) -> Result<&Pod> {
        index
            .checked_sub(1)
            .and_then(|i| self.pods.get(i))
            .ok_or_else(|| anyhow!("lab {} has no pod {index}", self.prefix()))
    }

    /// `/run/sluice-lab/<prefix>`: state file, engine socket, logs.
    pub fn run_dir(&self) -> &Path {
        &self.shared.run_dir
    }

    /// The engine's input, written at construction.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Every namespace the lab made, node first.
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.shared.inner).namespaces.clone()
    }

    /// The node state the engine is given: gateway plus one endpoint per pod.
    pub fn node_state(&self) -> NodeState {
        NodeState {
            gateway: Gateway {
                mac: GATEWAY_MAC,
                ipv4: GATEWAY_IPV4,
                ipv6: GATEWAY_IPV6,
            },
            endpoints: self
                .pods
                .iter()
                .map(|pod| Endpoint {
                    name: pod.name.clone(),
                    ifindex: pod.node_ifindex,
                    ifname: pod.node_ifname.clone(),
                    mac: pod.mac,
                    ipv4: Some(pod.ipv4),
                    ipv6: Some(pod.ipv6),
                    identity: 0,
                })
                .collect(),
            mtu: self.spec.mtu,
            uplink: self.uplink.clone(),
            ipcache: Vec::new(),
            services: Vec::new(),
            lb: Default::default(),
            policy: Default::default(),
        }
    }

    /// Runs `args` in pod `pod` with the default timeout.
    pub fn exec(&self, pod: usize, args: &[&str]) -> Result<CmdOutput> {
        self.exec_timeout(pod, args, EXEC_TIMEOUT)
    }

    /// Runs `args` in pod `pod`; killed after `timeout`.
    pub fn exec_timeout(&self, pod: usize, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let netns = self.pod(pod)?.netns.clone();
        self.exec_in(&netns, args, timeout)
    }

    /// Runs `args` in the node namespace; killed after `timeout`.
    pub fn exec_node(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        self.exec_in(&self.node_netns, args, timeout)
    }

    pub(crate) fn exec_in(
        &self,
        netns: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CmdOutput> {
        let running = {
            // Started under the lock: a teardown running now would otherwise
            // miss it when it lists the namespace's processes.
            let _inner = self.shared.lock()?;
            command::start(&mut in_netns(netns, args))?
        };
        running.finish(timeout)
    }

    /// Starts `args` in pod `pod` in the background; the lab stops it at teardown
    /// (or [`Lab::stop_process`] earlier). Output goes to `<run dir>/<log>.{stdout,stderr}.log`.
    pub fn spawn(&self, pod: usize, log: &str, args: &[&str]) -> Result<u32> {
        let netns = self.pod(pod)?.netns.clone();
        let mut inner = self.shared.lock()?;
        let child = self.spawn_logged(&netns, log, args)?;
        let pid = child.id();
        inner.processes.push(Tracked {
            what: format!("`{}` in {netns} (pid {pid})", args.join(" ")),
            child,
        });
        Ok(pid)
    }

    /// Spawns with output to log files in the run dir; the caller tracks the child.
    pub(crate) fn spawn_logged(&self, netns: &str, log: &str, args: &[&str]) -> Result<Child> {
        let open = |stream: &str| -> Result<fs::File> {
            let path = self.log_path(log, stream);
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
        };
        let mut cmd = in_netns(netns, args);
        cmd.stdin(Stdio::null())
            .stdout(open("stdout")?)
            .stderr(open("stderr")?);
        cmd.spawn()
            .with_context(|| format!("cannot start `{}`", command::describe(&cmd)))
    }

    pub(crate) fn log_path(&self, log: &str, stream: &str) -> PathBuf {
        self.run_dir().join(format!("{log}.{stream}.log"))
    }

    /// The last `lines` lines of a background process's stdout and stderr.
    pub fn log_tail(&self, log: &str, lines: usize) -> String {
        let mut text = String::new();
        for stream in ["stdout", "stderr"] {
            let content = fs::read_to_string(self.log_path(log, stream)).unwrap_or_default();
            let all: Vec<&str> = content.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            text.push_str(&format!("--- {log} {stream} (last {} lines)\n", tail.len()));
            for line in tail {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Whether a process started with [`Lab::spawn`] still runs.
    pub fn process_running(&self, pid: u32) -> Result<bool> {
        let mut inner = self.shared.lock()?;
        let at = inner.tracked(pid)?;
        Ok(inner.processes[at].child.try_wait()?.is_none())
    }

    /// Waits up to `timeout` for a process started with [`Lab::spawn`] to exit by
    /// itself; `Ok(None)` if it still runs.
    pub fn wait_process(
        &self,
        pid: u32,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut inner = self.shared.lock()?;
                let at = inner.tracked(pid)?;
                if let Some(status) = inner.processes[at].child.try_wait()? {
                    return Ok(Some(status));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops a process started with [`Lab::spawn`] (SIGTERM, then SIGKILL).
    pub fn stop_process(&self, pid: u32) -> Result<std::process::ExitStatus> {
        let mut inner = self.shared.lock()?;
        let at = inner.tracked(pid)?;
        let mut tracked = inner.processes.remove(at);
        command::terminate(&mut tracked.child, Duration::from_secs(5))
    }

    /// Stops everything and deletes everything; also done by drop. Idempotent.
    pub fn teardown(&self) -> Result<()> {
        self.shared.teardown()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(err) = self.shared.teardown() {
            eprintln!("sluice-lab: teardown of {}: {err:#}", self.shared.prefix);
        }
    }
}

/// `ip -n <netns> <args>`, which must succeed.
fn ip_in(netns: &str, args: &[&str]) -> Result<CmdOutput> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run_ok(&mut ip(&full), SETUP_TIMEOUT)
}

/// Sets sysctls inside `netns` (/proc/sys/net shows the reader's namespace).
fn sysctl(netns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let assignments: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["sysctl", "-q", "-w"];
    args.extend(assignments.iter().map(String::as_str));
    run_ok(&mut in_netns(netns, &args), SETUP_TIMEOUT)?;
    Ok(())
}

/// ifindex and MAC of `ifname` in `netns`, from `ip -j link show`.
pub(crate) fn link_info(netns: &str, ifname: &str) -> Result<(u32, MacAddr)> {
    let out = ip_in(netns, &["-j", "link", "show", "dev", ifname])?;
    let links: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("parsing `ip -j link show {ifname}` in {netns}"))?;
    let link = &links[0];
    let ifindex = link["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| anyhow!("{ifname} in {netns}: no ifindex in {}", out.stdout.trim()))?;
    let mac = link["address"]
        .as_str()
        .and_then(MacAddr::parse)
        .ok_or_else(|| anyhow!("{ifname} in {netns}: no MAC in {}", out.stdout.trim()))?;
    Ok((ifindex, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_follow_the_plan() {
        assert_eq!(pod_ipv4(1).to_string(), "10.200.0.2");
        assert_eq!(pod_ipv6(1).to_string(), "fd00:200::1");
        assert_eq!(pod_ipv4(MAX_PODS).to_string(), "10.200.0.201");
        assert_eq!(pod_ipv6(MAX_PODS).to_string(), "fd00:200::c8");
    }

    #[test]
    fn gateway_constants_match_the_plan() {
        assert_eq!(GATEWAY_MAC.to_string(), "02:53:4c:00:00:01");
        assert_eq!(GATEWAY_IPV6.to_string(), "fe80::1");
    }

    #[test]
    fn modes_parse() {
        assert_eq!("kernel".parse::<Forwarding>().unwrap(), Forwarding::Kernel);
        assert_eq!("engine".parse::<Forwarding>().unwrap(), Forwarding::Engine);
        assert!("bridge".parse::<Forwarding>().is_err());
    }

    #[test]
    fn named_pods_need_one_name_each_and_their_manifests() {
        let refs = vec![PodRef::new("x", "a")];
        let err = Lab::new(LabSpec::engine(2).with_named_pods(refs.clone(), vec![])).unwrap_err();
        assert!(err.to_string().contains("1 names for 2 pods"), "{err}");
        let err = Lab::new(LabSpec::engine(1).with_named_pods(refs.clone(), vec![])).unwrap_err();
        assert!(
            err.to_string().contains("need their Pod manifests"),
            "{err}"
        );
        let err = Lab::new(LabSpec::kernel(1).with_named_pods(refs, vec![])).unwrap_err();
        assert!(err.to_string().contains("sluice-cni"), "{err}");
        let spec = LabSpec::engine(2).with_named_pods(
            vec![PodRef::new("x", "a"), PodRef::new("y", "b")],
            vec![("pods.yaml".into(), String::new())],
        );
        assert_eq!(spec.pod_ref(2).to_string(), "y/b");
        assert_eq!(LabSpec::engine(2).pod_ref(2).to_string(), "default/pod2");
    }

    #[test]
    fn bad_specs_are_refused_before_touching_anything() {
        let err = Lab::new(LabSpec::kernel(0)).unwrap_err();
        assert!(err.to_string().contains("1 to 200 pods"), "{err}");
        let err = Lab::new(LabSpec::kernel(1).with_queues(0)).unwrap_err();
        assert!(err.to_string().contains("queues"), "{err}");
        let err = Lab::new(LabSpec::kernel(1).with_outside(true)).unwrap_err();
        assert!(err.to_string().contains("engine mode only"), "{err}");
    }
}

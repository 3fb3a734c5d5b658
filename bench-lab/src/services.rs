//! Lab helpers for Services: manifests (Pods with labels, ports and readiness;
//! Services of every type; EndpointSlices) written into the agent's manifest
//! directory and waited for, and the programs service tests run in pods and in
//! the outside namespace (a netexec-like HTTP/UDP server, nginx, iperf3, curl,
//! a Python UDP client).
//!
//! Manifests are written as JSON (which is YAML) through serde_json, so every
//! field is spelled as the Kubernetes API spells it and quoting cannot go wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::command::{ip, run_ok, CmdOutput, SETUP_TIMEOUT};
use crate::lab::{Lab, Tracked, UPLINK_IPV4, UPLINK_IPV6};

/// The netexec stand-in (see the script's docstring): upstream e2e uses
/// `agnhost netexec` in its backend pods for the same answers.
pub const NETEXEC_SCRIPT: &str = include_str!("netexec.py");
/// The Python the pod programs run with (Debian's, not a user's pyenv).
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a manifest change may take to become a new agent generation before
/// it is taken to change nothing the engine sees.
pub const GENERATION_WAIT: Duration = Duration::from_secs(3);
/// How long the engine may take to ack a generation.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one client request (curl --max-time, UDP receive timeout).
pub const REQUEST_TIMEOUT_S: u32 = 3;

/// Where a program runs: a pod (1-based) or the outside namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Pod(usize),
    Outside,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Pod(i) => write!(f, "pod{i}"),
            Place::Outside => f.write_str("outside"),
        }
    }
}

/// `containers[].ports[]` of a lab pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    /// "TCP" or "UDP".
    pub protocol: &'static str,
    pub host_port: Option<u16>,
}

impl ContainerPort {
    pub fn tcp(port: u16) -> ContainerPort {
        ContainerPort {
            name: None,
            port,
            protocol: "TCP",
            host_port: None,
        }
    }

    pub fn udp(port: u16) -> ContainerPort {
        ContainerPort {
            protocol: "UDP",
            ..ContainerPort::tcp(port)
        }
    }

    pub fn named(mut self, name: &str) -> ContainerPort {
        self.name = Some(name.to_string());
        self
    }

    pub fn with_host_port(mut self, host_port: u16) -> ContainerPort {
        self.host_port = Some(host_port);
        self
    }
}

/// One lab pod's manifest. [`PodManifest::lab_default`] is what the lab writes
/// at start (labels `app=pod<i>`, `lab=sluice`, no ports, no status); the
/// builders add what services need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodManifest {
    /// 1-based lab pod index; the object is `default/pod<i>`.
    pub index: usize,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<ContainerPort>,
    /// Write `status` (phase Running, podIPs, the Ready condition).
    pub with_status: bool,
    /// The Ready condition's value when `with_status`.
    pub ready: bool,
    /// metadata.deletionTimestamp set: the pod is terminating.
    pub terminating: bool,
}

impl PodManifest {
    pub fn lab_default(index: usize) -> PodManifest {
        PodManifest {
            index,
            labels: vec![
                ("app".to_string(), format!("pod{index}")),
                ("lab".to_string(), "sluice".to_string()),
            ],
            ports: Vec::new(),
            with_status: false,
            ready: true,
            terminating: false,
        }
    }

    /// A running, ready pod with `label` added and `ports` declared.
    pub fn serving(index: usize, label: (&str, &str), ports: Vec<ContainerPort>) -> PodManifest {
        let mut pod = PodManifest::lab_default(index);
        pod.labels.push((label.0.to_string(), label.1.to_string()));
        pod.ports = ports;
        pod.with_status = true;
        pod
    }

    pub fn not_ready(mut self) -> PodManifest {
        self.with_status = true;
        self.ready = false;
        self
    }

    pub fn terminating(mut self) -> PodManifest {
        self.terminating = true;
        self
    }

    /// The Pod object.
    pub fn to_json(&self) -> Value {
        let i = self.index;
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut container = json!({"name": "main", "image": "busybox"});
        if !self.ports.is_empty() {
            let ports: Vec<Value> = self
                .ports
                .iter()
                .map(|p| {
                    let mut port = json!({"containerPort": p.port, "protocol": p.protocol});
                    if let Some(name) = &p.name {
                        port["name"] = json!(name);
                    }
                    if let Some(host_port) = p.host_port {
                        port["hostPort"] = json!(host_port);
                    }
                    port
                })
                .collect();
            container["ports"] = json!(ports);
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("pod{i}"), "namespace": "default", "labels": labels},
            "spec": {"containers": [container]},
        });
        if self.terminating {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        }
        if self.with_status {
            let (v4, v6) = (
                crate::pod_ipv4(i).to_string(),
                crate::pod_ipv6(i).to_string(),
            );
            let ready = if self.ready { "True" } else { "False" };
            pod["status"] = json!({
                "phase": "Running",
                "podIP": v4,
                "podIPs": [{"ip": v4}, {"ip": v6}],
                "conditions": [{"type": "Ready", "status": ready}],
            });
        }
        pod
    }
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// `spec.ports[].targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One `spec.ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// "TCP" or "UDP".
    pub protocol: &'static str,
    pub target: TargetPort,
    pub node_port: Option<u16>,
}

impl ServicePort {
    pub fn tcp(port: u16, target: u16) -> ServicePort {
        ServicePort {
            name: None,
            port,
            protocol: "TCP",
            target: TargetPort::Number(target),
            node_port: None,
        }
    }

    pub fn udp(port: u16, target: u16) -> ServicePort {
        ServicePort {
            protocol: "UDP",
            ..ServicePort::tcp(port, target)
        }
    }

    pub fn named(mut self, name: &str) -> ServicePort {
        self.name = Some(name.to_string());
        self
    }

    /// targetPort as a container port name.
    pub fn to_named_target(mut self, target: &str) -> ServicePort {
        self.target = TargetPort::Name(target.to_string());
        self
    }

    pub fn with_node_port(mut self, node_port: u16) -> ServicePort {
        self.node_port = Some(node_port);
        self
    }
}

/// A Service object in `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceManifest {
    pub name: String,
    pub service_type: ServiceType,
    /// spec.clusterIPs, primary family first; one per family (dual-stack with two).
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// spec.selector; None = no selector (EndpointSlices are written by hand).
    pub selector: Option<Vec<(String, String)>>,
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress[].ip
    pub load_balancer_ips: Vec<IpAddr>,
    /// sessionAffinity ClientIP with this timeoutSeconds.
    pub affinity_timeout_s: Option<u32>,
    pub external_traffic_local: bool,
    pub internal_traffic_local: bool,
}

impl ServiceManifest {
    /// A ClusterIP service with `cluster_ips` and `ports`, no selector.
    pub fn cluster_ip(name: &str, cluster_ips: &[IpAddr], ports: Vec<ServicePort>) -> Self {
        ServiceManifest {
            name: name.to_string(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: cluster_ips.to_vec(),
            ports,
            selector: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            affinity_timeout_s: None,
            external_traffic_local: false,
            internal_traffic_local: false,
        }
    }

    pub fn of_type(mut self, service_type: ServiceType) -> Self {
        self.service_type = service_type;
        self
    }

    pub fn selecting(mut self, key: &str, value: &str) -> Self {
        self.selector = Some(vec![(key.to_string(), value.to_string())]);
        self
    }

    pub fn with_external_ips(mut self, ips: &[IpAddr]) -> Self {
        self.external_ips = ips.to_vec();
        self
    }

    pub fn with_load_balancer_ips(mut self, ips: &[IpAddr]) -> Self {
        self.load_balancer_ips = ips.to_vec();
        self
    }

    pub fn with_affinity(mut self, timeout_s: Option<u32>) -> Self {
        self.affinity_timeout_s = timeout_s;
        self
    }

    pub fn with_external_traffic_local(mut self) -> Self {
        self.external_traffic_local = true;
        self
    }

    pub fn with_internal_traffic_local(mut self) -> Self {
        self.internal_traffic_local = true;
        self
    }

    /// The Service object.
    pub fn to_json(&self) -> Value {
        let families: Vec<&str> = self
            .cluster_ips
            .iter()
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"port": p.port, "protocol": p.protocol});
                port["targetPort"] = match &p.target {
                    TargetPort::Number(n) => json!(n),
                    TargetPort::Name(name) => json!(name),
                };
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                if let Some(node_port) = p.node_port {
                    port["nodePort"] = json!(node_port);
                }
                port
            })
            .collect();
        let mut spec = json!({
            "type": match self.service_type {
                ServiceType::ClusterIp => "ClusterIP",
                ServiceType::NodePort => "NodePort",
                ServiceType::LoadBalancer => "LoadBalancer",
            },
            "clusterIP": self.cluster_ips.first().map(IpAddr::to_string),
            "clusterIPs": self.cluster_ips.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "ipFamilies": families,
            "ipFamilyPolicy": if self.cluster_ips.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "ports": ports,
            "sessionAffinity": if self.affinity_timeout_s.is_some() { "ClientIP" } else { "None" },
            "internalTrafficPolicy": if self.internal_traffic_local { "Local" } else { "Cluster" },
        });
        if let Some(timeout) = self.affinity_timeout_s {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": timeout}});
        }
        if self.service_type != ServiceType::ClusterIp {
            spec["externalTrafficPolicy"] = json!(if self.external_traffic_local {
                "Local"
            } else {
                "Cluster"
            });
        }
        if let Some(selector) = &self.selector {
            let map: serde_json::Map<String, Value> = selector
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            spec["selector"] = Value::Object(map);
        }
        if !self.external_ips.is_empty() {
            spec["externalIPs"] = json!(self
                .external_ips
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>());
        }
        let mut service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": "default"},
            "spec": spec,
        });
        if !self.load_balancer_ips.is_empty() {
            let ingress: Vec<Value> = self
                .load_balancer_ips
                .iter()
                .map(|ip| json!({"ip": ip.to_string()}))
                .collect();
            service["status"] = json!({"loadBalancer": {"ingress": ingress}});
        }
        service
    }
}

/// One `endpoints[]` entry of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addr: IpAddr,
    pub node_name: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// targetRef to `default/<pod>`.
    pub pod: Option<String>,
}

impl SliceEndpoint {
    /// A ready endpoint of lab pod `index` (family of `v6`) on this lab's node.
    pub fn lab_pod(lab: &Lab, index: usize, v6: bool) -> SliceEndpoint {
        let addr: IpAddr = if v6 {
            crate::pod_ipv6(index).into()
        } else {
            crate::pod_ipv4(index).into()
        };
        SliceEndpoint {
            addr,
            node_name: lab.node_name(),
            ready: true,
            serving: true,
            terminating: false,
            pod: Some(format!("pod{index}")),
        }
    }

    /// A ready endpoint at `addr` on another node.
    pub fn remote(addr: IpAddr, node_name: &str) -> SliceEndpoint {
        SliceEndpoint {
            addr,
            node_name: node_name.to_string(),
            ready: true,
            serving: true,
            terminating: false,
            pod: None,
        }
    }

    /// Terminating but still serving (ready false), as during a graceful shutdown.
    pub fn terminating(mut self) -> SliceEndpoint {
        self.ready = false;
        self.serving = true;
        self.terminating = true;
        self
    }
}

/// An EndpointSlice of one address family for a Service in `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSliceManifest {
    pub name: String,
    pub service: String,
    pub ipv6: bool,
    /// (port name, port, protocol)
    pub ports: Vec<(Option<String>, u16, &'static str)>,
    pub endpoints: Vec<SliceEndpoint>,
}

impl EndpointSliceManifest {
    pub fn new(service: &str, ipv6: bool, ports: Vec<(Option<String>, u16, &'static str)>) -> Self {
        EndpointSliceManifest {
            name: format!("{service}-{}", if ipv6 { "v6" } else { "v4" }),
            service: service.to_string(),
            ipv6,
            ports,
            endpoints: Vec::new(),
        }
    }

    pub fn with(mut self, endpoint: SliceEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// The EndpointSlice object.
    pub fn to_json(&self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let mut endpoint = json!({
                    "addresses": [e.addr.to_string()],
                    "nodeName": e.node_name,
                    "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                });
                if let Some(pod) = &e.pod {
                    endpoint["targetRef"] =
                        json!({"kind": "Pod", "namespace": "default", "name": pod});
                }
                endpoint
            })
            .collect();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(name, port, protocol)| {
                let mut p = json!({"port": port, "protocol": protocol});
                if let Some(name) = name {
                    p["name"] = json!(name);
                }
                p
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": self.service},
            },
            "addressType": if self.ipv6 { "IPv6" } else { "IPv4" },
            "ports": ports,
            "endpoints": endpoints,
        })
    }
}

/// What a client request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The server's answer (trimmed).
    Answer(String),
    /// TCP RST or ICMP port unreachable.
    Refused,
    /// No answer within [`REQUEST_TIMEOUT_S`].
    Timeout,
    /// Anything else (no route, host unreachable...), with the client's words.
    Failed(String),
}

impl Reply {
    pub fn answer(&self) -> Option<&str> {
        match self {
            Reply::Answer(text) => Some(text),
            _ => None,
        }
    }
}

/// `ip` or `[ip]` for a URL.
pub fn url_host(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// The Python UDP client: one datagram, one reply; exceptions name the outcome.
const UDP_CLIENT: &str = "import socket,sys
host,port,msg,t=sys.argv[1],int(sys.argv[2]),sys.argv[3],float(sys.argv[4])
s=socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET,socket.SOCK_DGRAM)
s.settimeout(t)
s.connect((host,port))
try:
    s.send(msg.encode())
    print('ANSWER '+s.recv(65535).decode())
except ConnectionRefusedError:
    print('REFUSED')
except socket.timeout:
    print('TIMEOUT')
";

impl Lab {
    /// The agent's `--node-name`: what EndpointSlices name as this node.
    pub fn node_name(&self) -> String {
        format!("{}-node", self.prefix())
    }

    fn place_netns(&self, place: Place) -> Result<String> {
        match place {
            Place::Pod(i) => Ok(self.pod(i)?.netns.clone()),
            Place::Outside => self
                .outside_netns()
                .ok_or_else(|| anyhow!("lab {} has no outside namespace", self.prefix())),
        }
    }

    /// Runs `args` at `place`.
    pub fn exec_at(&self, place: Place, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let netns = self.place_netns(place)?;
        self.exec_in(&netns, args, timeout)
    }

    /// Starts `args` at `place` in the background, tracked like [`Lab::spawn`].
    pub fn spawn_at(&self, place: Place, log: &str, args: &[&str]) -> Result<u32> {
        let netns = self.place_netns(place)?;
        let mut inner = self.shared.lock()?;
        let child = self.spawn_logged(&netns, log, args)?;
        let pid = child.id();
        inner.processes.push(Tracked {
            what: format!("`{}` in {netns} (pid {pid})", args.join(" ")),
            child,
        });
        Ok(pid)
    }

    /// Replaces the lab's `pods.yaml` with `pods` (pods not listed are gone
    /// from the cluster's view; their interfaces stay).
    pub fn write_pods(&self, pods: &[PodManifest]) -> Result<()> {
        let docs: Vec<Value> = pods.iter().map(PodManifest::to_json).collect();
        self.apply_manifest("pods.yaml", &docs)
    }

    /// Writes `docs` as `<manifests>/<file>` (atomically: temp file + rename)
    /// and waits until the agent computed a new generation from it and the
    /// engine acked it (or, when nothing the engine sees changed, until
    /// [`GENERATION_WAIT`] passed). A source error about `file` is an error.
    pub fn apply_manifest(&self, file: &str, docs: &[Value]) -> Result<()> {
        let dir = self.manifests_dir();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
        let text = serde_json::to_string_pretty(&list)? + "\n";
        let before = self.agent_status()?.desired_generation;
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        let path = dir.join(file);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        self.settle_manifests(before, Some(file))
    }

    /// Removes `<manifests>/<file>` and waits like [`Lab::apply_manifest`].
    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        let path: PathBuf = self.manifests_dir().join(file);
        let before = self.agent_status()?.desired_generation;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        self.settle_manifests(before, None)
    }

    fn settle_manifests(&self, before: u64, file: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + GENERATION_WAIT;
        loop {
            let status = self.agent_status()?;
            if let Some(file) = file {
                if let Some(err) = status.source_errors.iter().find(|e| e.contains(file)) {
                    bail!("the agent refused {file}: {err}");
                }
            }
            if status.desired_generation > before || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_in_sync(SYNC_TIMEOUT)?;
        Ok(())
    }

    /// Adds a route in the outside namespace (only there) to `addr` via the
    /// node's uplink address: how an outside client reaches LoadBalancer and
    /// external IPs that the node answers for.
    pub fn route_from_outside(&self, addr: IpAddr) -> Result<()> {
        let netns = self.place_netns(Place::Outside)?;
        let (to, via, family) = match addr {
            IpAddr::V4(a) => (format!("{a}/32"), UPLINK_IPV4.to_string(), "-4"),
            IpAddr::V6(a) => (format!("{a}/128"), UPLINK_IPV6.to_string(), "-6"),
        };
        #[rustfmt::skip]
        run_ok(&mut ip(&["-n", &netns, family, "route", "replace", &to, "via", &via, "dev", "eth0"]), SETUP_TIMEOUT)?;
        Ok(())
    }

    /// Starts the netexec stand-in at `place`, named `name`, answering HTTP on
    /// `http` and UDP on `udp` ports; returns once every socket is bound.
    pub fn start_netexec(
        &self,
        place: Place,
        name: &str,
        http: &[u16],
        udp: &[u16],
    ) -> Result<u32> {
        let script = self.run_dir().join("netexec.py");
        if !script.exists() {
            std::fs::write(&script, NETEXEC_SCRIPT)
                .with_context(|| format!("writing {}", script.display()))?;
        }
        let script_text = script.display().to_string();
        let mut args: Vec<String> = vec![PYTHON.into(), script_text, "--name".into(), name.into()];
        for port in http {
            args.extend(["--http".to_string(), port.to_string()]);
        }
        for port in udp {
            args.extend(["--udp".to_string(), port.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Names may be `namespace/pod`; a log file name may not hold a `/`.
        let log = format!("netexec-{place}-{}", name.replace('/', "_"));
        let pid = self.spawn_at(place, &log, &args)?;
        self.wait_ready_line(pid, &log, "netexec")?;
        Ok(pid)
    }

    fn wait_ready_line(&self, pid: u32, log: &str, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::fs::read_to_string(self.log_path(log, "stdout")).unwrap_or_default();
            if out.lines().any(|l| l.trim() == "ready") {
                return Ok(());
            }
            if !self.process_running(pid)? {
                bail!(
                    "{what} exited before it was ready\n{}",
                    self.log_tail(log, 20)
                );
            }
            ensure!(
                Instant::now() < deadline,
                "{what} not ready after 10 s\n{}",
                self.log_tail(log, 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts nginx (Debian nginx-light) in pod `pod` serving `body` at `/`
    /// on `port` (IPv4 and IPv6); returns once it listens.
    pub fn start_nginx(&self, pod: usize, port: u16, body: &str) -> Result<u32> {
        let dir = self.run_dir().join(format!("nginx-pod{pod}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{\n    listen {port};\n    listen [::]:{port};\n    \
             location / {{ return 200 \"{body}\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let conf_text = conf_path.display().to_string();
        let prefix = format!("{d}/");
        let log = format!("nginx-pod{pod}");
        let pid = self.spawn_at(
            Place::Pod(pod),
            &log,
            &["/usr/sbin/nginx", "-p", &prefix, "-c", &conf_text],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let filter = format!("sport = :{port}");
        loop {
            let listening = self.exec(pod, &["ss", "-H", "-l", "-t", "-n", &filter])?;
            if !listening.stdout.trim().is_empty() {
                return Ok(pid);
            }
            if !self.process_running(pid)? {
                bail!("nginx in pod {pod} exited\n{}", self.log_tail(&log, 20));
            }
            ensure!(
                Instant::now() < deadline,
                "nginx in pod {pod} not listening after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `iperf3 -s` (not one-off) in pod `pod` on `port`; returns once it listens.
    pub fn start_iperf3_server(&self, pod: usize, port: u16) -> Result<u32> {
        let port_text = port.to_string();
        let log = format!("iperf3-s-pod{pod}-{port}");
        let pid = self.spawn_at(Place::Pod(pod), &log, &["iperf3", "-s", "-p", &port_text])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let filter = format!("sport = :{port}");
        loop {
            let listening = self.exec(pod, &["ss", "-H", "-l", "-t", "-n", &filter])?;
            if !listening.stdout.trim().is_empty() {
                return Ok(pid);
            }
            if !self.process_running(pid)? {
                bail!("iperf3 -s in pod {pod} exited\n{}", self.log_tail(&log, 20));
            }
            ensure!(
                Instant::now() < deadline,
                "iperf3 -s in pod {pod} not listening after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `curl http://<addr>:<port><path>` from `from` (no proxy, [`REQUEST_TIMEOUT_S`]).
    pub fn http_get(&self, from: Place, addr: IpAddr, port: u16, path: &str) -> Result<Reply> {
        let url = format!("http://{}:{port}{path}", url_host(addr));
        let max_time = REQUEST_TIMEOUT_S.to_string();
        #[rustfmt::skip]
        let args = ["curl", "-sSv", "--noproxy", "*", "--max-time", &max_time, &url];
        let out = self.exec_at(
            from,
            &args,
            Duration::from_secs(u64::from(REQUEST_TIMEOUT_S) + 10),
        )?;
        // curl: 7 could not connect (-v names the cause: "Connection refused"), 28 timed out.
        Ok(match out.status.code() {
            Some(0) => Reply::Answer(out.stdout.trim().to_string()),
            Some(7) if out.stderr.contains("refused") => Reply::Refused,
            Some(28) => Reply::Timeout,
            _ => {
                // -v output is long: keep curl's own error line.
                let error = out.stderr.lines().find(|l| l.starts_with("curl:"));
                Reply::Failed(format!(
                    "curl {url} ({}): {}",
                    out.status,
                    error.unwrap_or("")
                ))
            }
        })
    }

    /// One UDP datagram `message` from `from` to `addr:port`, one reply awaited.
    pub fn udp_request(
        &self,
        from: Place,
        addr: IpAddr,
        port: u16,
        message: &str,
    ) -> Result<Reply> {
        let (host, port_text) = (addr.to_string(), port.to_string());
        let wait = REQUEST_TIMEOUT_S.to_string();
        let args = [PYTHON, "-c", UDP_CLIENT, &host, &port_text, message, &wait];
        let out = self.exec_at(
            from,
            &args,
            Duration::from_secs(u64::from(REQUEST_TIMEOUT_S) + 10),
        )?;
        let text = out.stdout.trim();
        Ok(if let Some(answer) = text.strip_prefix("ANSWER ") {
            Reply::Answer(answer.trim().to_string())
        } else if text == "REFUSED" {
            Reply::Refused
        } else if text == "TIMEOUT" {
            Reply::Timeout
        } else {
            Reply::Failed(format!(
                "udp to {host}:{port} ({}): {text} {}",
                out.status,
                out.stderr.trim()
            ))
        })
    }
}

/// Service addresses the lab's tests use (outside the pod and node prefixes).
pub fn cluster_ipv4(n: u8) -> IpAddr {
    Ipv4Addr::new(10, 96, 0, n).into()
}

pub fn cluster_ipv6(n: u16) -> IpAddr {
    Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, n).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pod_manifest_matches_the_labs_pods_yaml() {
        let pod = PodManifest::lab_default(3).to_json();
        assert_eq!(pod["metadata"]["name"], "pod3");
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "pod3", "lab": "sluice"})
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "main", "image": "busybox"}])
        );
        assert!(pod.get("status").is_none());
    }

    #[test]
    fn a_serving_pod_has_ports_status_and_readiness() {
        let pod = PodManifest::serving(
            2,
            ("svc", "web"),
            vec![ContainerPort::tcp(8080).named("http")],
        )
        .not_ready()
        .terminating()
        .to_json();
        assert_eq!(pod["metadata"]["labels"]["svc"], "web");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 8080, "protocol": "TCP", "name": "http"}])
        );
        assert_eq!(
            pod["status"]["podIPs"],
            json!([{"ip": "10.200.0.3"}, {"ip": "fd00:200::2"}])
        );
        assert_eq!(pod["status"]["conditions"][0]["status"], "False");
        assert!(pod["metadata"]["deletionTimestamp"].is_string());
    }

    #[test]
    fn a_dual_stack_load_balancer_service_spells_every_field() {
        let svc = ServiceManifest::cluster_ip(
            "web",
            &[cluster_ipv4(10), cluster_ipv6(0x10)],
            vec![ServicePort::tcp(80, 0)
                .to_named_target("http")
                .named("http")
                .with_node_port(30080)],
        )
        .of_type(ServiceType::LoadBalancer)
        .selecting("svc", "web")
        .with_load_balancer_ips(&["192.168.100.10".parse().unwrap()])
        .with_external_ips(&["192.168.101.10".parse().unwrap()])
        .with_affinity(Some(5))
        .with_external_traffic_local()
        .to_json();
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "LoadBalancer");
        assert_eq!(spec["clusterIPs"], json!(["10.96.0.10", "fd00:96::10"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(spec["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(spec["ports"][0]["targetPort"], "http");
        assert_eq!(spec["ports"][0]["nodePort"], 30080);
        assert_eq!(spec["sessionAffinity"], "ClientIP");
        assert_eq!(
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            5
        );
        assert_eq!(spec["externalTrafficPolicy"], "Local");
        assert_eq!(spec["externalIPs"], json!(["192.168.101.10"]));
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "192.168.100.10"}])
        );
    }

    #[test]
    fn an_endpoint_slice_carries_conditions_and_node_names() {
        let slice =
            EndpointSliceManifest::new("web", false, vec![(Some("http".into()), 8080, "TCP")])
                .with(SliceEndpoint::remote("10.201.0.5".parse().unwrap(), "other").terminating())
                .to_json();
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        assert_eq!(slice["addressType"], "IPv4");
        let e = &slice["endpoints"][0];
        assert_eq!(e["nodeName"], "other");
        assert_eq!(
            e["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
    }

    #[test]
    fn url_hosts_bracket_ipv6() {
        assert_eq!(url_host(cluster_ipv6(1)), "[fd00:96::1]");
        assert_eq!(url_host(cluster_ipv4(1)), "10.96.0.1");
    }
}

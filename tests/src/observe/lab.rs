//! The observe lab: four named pods in `default` (client, web, dns,
//! intruder), the engine serving its events socket, the agent with the
//! Hubble socket, its ring buffer and optionally the metrics/service map HTTP
//! server on the node namespace's loopback.
//!
//! What the pods are for: `client` talks to `web` directly and through the
//! `web` Service, and asks `dns` (dnsmasq) for names; `intruder` is refused
//! by web's policy. The policies are [`web_policy`] (web's ingress: TCP 8080
//! from the client only, port 80 denied to the client by an `ingressDeny`
//! rule) and [`client_policy`] (client's egress: DNS to dns with a DNS rule,
//! TCP 80 and 8080 to web).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sluice_lab::control_plane::AGENT_LOG;
use sluice_lab::services::{
    cluster_ipv4, EndpointSliceManifest, Place, ServiceManifest, ServicePort, SliceEndpoint, PYTHON,
};
use sluice_lab::{pod_ipv4, Lab, LabSpec, PodRef};

/// Lab pod numbers (1-based, in CNI ADD order).
pub const CLIENT: usize = 1;
pub const WEB: usize = 2;
pub const DNS: usize = 3;
pub const INTRUDER: usize = 4;
const POD_NAMES: [&str; 4] = ["client", "web", "dns", "intruder"];

/// Ports web's netexec serves HTTP on: 8080 (allowed to the client) and 80
/// (denied to the client by an explicit deny rule).
pub const WEB_PORT: u16 = 8080;
pub const WEB_DENIED_PORT: u16 = 80;
/// The `web` Service: ClusterIP port 80 -> web:8080.
pub const SERVICE_NAME: &str = "web";
pub const SERVICE_PORT: u16 = 80;
/// Names dnsmasq answers, all with [`DNS_ANSWER`].
pub const DNS_NAMES: [&str; 2] = ["www.observe.test", "api.observe.test"];
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
/// The policies' names (namespace `default`).
pub const WEB_POLICY: &str = "web-ingress";
pub const CLIENT_POLICY: &str = "client-egress";
/// Ring buffer size given to the agent.
pub const BUFFER_CAPACITY: usize = 4096;

/// What the observe lab serves besides the Hubble socket.
#[derive(Debug, Clone, Default)]
pub struct ObserveLabOptions {
    /// `--prometheus-serve-addr` (in the node namespace).
    pub http: Option<SocketAddr>,
    /// Apply [`web_policy`] and [`client_policy`].
    pub policies: bool,
    /// Start dnsmasq in the dns pod.
    pub dns_server: bool,
}

/// A lab wired for flow observation.
#[derive(Debug)]
pub struct ObserveLab {
    pub lab: Lab,
    pub http: Option<SocketAddr>,
}

impl ObserveLab {
    pub fn start(options: &ObserveLabOptions) -> Result<ObserveLab> {
        let refs: Vec<PodRef> = POD_NAMES
            .iter()
            .map(|name| PodRef::new("default", name))
            .collect();
        let manifests = vec![("pods.yaml".to_string(), pods_manifest()?)];
        let lab = Lab::new(LabSpec::engine(POD_NAMES.len()).with_named_pods(refs, manifests))
            .context(
                "lab up (build first: cargo build --release -p sluice-engine -p sluice-agent \
                 -p sluice-cni -p sluice-cli)",
            )?;
        // The lab's agent runs without observation: restart it with it (the
        // lab's engine already serves its events socket).
        lab.stop_agent()?;
        wait_for_unix_socket(&lab, &lab.events_socket(), "the engine's events socket")?;
        let args = lab.observe_agent_args(BUFFER_CAPACITY, options.http);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.start_agent_with(&args)?;
        lab.wait_in_sync(Duration::from_secs(30))?;
        wait_for_unix_socket(&lab, &lab.hubble_socket(), "the agent's Hubble socket")?;
        if let Some(addr) = options.http {
            wait_for_http(&lab, addr)?;
        }

        lab.start_netexec(Place::Pod(WEB), "web", &[WEB_PORT, WEB_DENIED_PORT], &[])?;
        if options.dns_server {
            start_dnsmasq(&lab)?;
        }
        lab.apply_manifest("web-service.yaml", &web_service(&lab))?;
        if options.policies {
            lab.apply_manifest("policies.yaml", &[web_policy(), client_policy()])?;
        }
        Ok(ObserveLab {
            lab,
            http: options.http,
        })
    }

    /// Pod `index`'s IPv4 address.
    pub fn ip(&self, index: usize) -> IpAddr {
        pod_ipv4(index).into()
    }

    /// The `web` Service's ClusterIP.
    pub fn service_ip(&self) -> IpAddr {
        cluster_ipv4(60)
    }

    /// `default/<name>` of pod `index`.
    pub fn pod_name(index: usize) -> String {
        format!("default/{}", POD_NAMES[index - 1])
    }
}

/// The Pod objects: `default/<name>`, labels `app=<name>`, `lab=observe`.
fn pods_manifest() -> Result<String> {
    let items: Vec<Value> = POD_NAMES
        .iter()
        .map(|name| {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": {"app": name, "lab": "observe"},
                },
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            })
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}

/// Service `default/web` (ClusterIP 10.96.0.60 port 80 -> 8080) and its
/// EndpointSlice naming the web pod.
fn web_service(lab: &Lab) -> Vec<Value> {
    let service = ServiceManifest::cluster_ip(
        SERVICE_NAME,
        &[cluster_ipv4(60)],
        vec![ServicePort::tcp(SERVICE_PORT, WEB_PORT).named("http")],
    );
    let mut web = SliceEndpoint::lab_pod(lab, WEB, false);
    web.pod = Some("web".to_string());
    let slice = EndpointSliceManifest::new(
        SERVICE_NAME,
        false,
        vec![(Some("http".to_string()), WEB_PORT, "TCP")],
    )
    .with(web);
    vec![service.to_json(), slice.to_json()]
}

/// Web's ingress: TCP 8080 from the client; TCP 80 from the client denied by
/// an explicit rule (`specs`-less CNP, so the rule path is `ingressDeny[0]`).
/// Everyone else (the intruder) finds no allow rule.
pub fn web_policy() -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": WEB_POLICY, "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                "toPorts": [{"ports": [{"port": WEB_PORT.to_string(), "protocol": "TCP"}]}],
            }],
            "ingressDeny": [{
                "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                "toPorts": [{"ports": [{"port": WEB_DENIED_PORT.to_string(), "protocol": "TCP"}]}],
            }],
        },
    })
}

/// The client's egress: DNS to the dns pod through a DNS rule (so its
/// queries are inspected and become L7 flows), TCP 80 and 8080 to web.
pub fn client_policy() -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": CLIENT_POLICY, "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "client"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": "dns"}}],
                    "toPorts": [{
                        "ports": [{"port": "53", "protocol": "ANY"}],
                        "rules": {"dns": [{"matchPattern": "*.observe.test"}]},
                    }],
                },
                {
                    "toEndpoints": [{"matchLabels": {"app": "web"}}],
                    "toPorts": [{"ports": [
                        {"port": WEB_PORT.to_string(), "protocol": "TCP"},
                        {"port": WEB_DENIED_PORT.to_string(), "protocol": "TCP"},
                    ]}],
                },
            ],
        },
    })
}

/// dnsmasq in the dns pod: answers [`DNS_NAMES`] with [`DNS_ANSWER`] from
/// `--host-record` only (no upstream, no hosts file).
fn start_dnsmasq(lab: &Lab) -> Result<u32> {
    let listen = format!("--listen-address={}", pod_ipv4(DNS));
    let records: Vec<String> = DNS_NAMES
        .iter()
        .map(|name| format!("--host-record={name},{DNS_ANSWER}"))
        .collect();
    let mut args = vec![
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &listen,
        "--port=53",
        "--user=root",
        "--pid-file=",
        "--local-ttl=30",
        "--log-facility=-",
    ];
    args.extend(records.iter().map(String::as_str));
    let pid = lab.spawn_at(Place::Pod(DNS), "dnsmasq", &args)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = lab.exec(DNS, &["ss", "-H", "-l", "-u", "-n", "sport = :53"])?;
        if !listening.stdout.trim().is_empty() {
            return Ok(pid);
        }
        ensure!(
            lab.process_running(pid)?,
            "dnsmasq exited\n{}",
            lab.log_tail("dnsmasq", 20)
        );
        ensure!(
            Instant::now() < deadline,
            "dnsmasq not listening after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_unix_socket(lab: &Lab, path: &Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while UnixStream::connect(path).is_err() {
        if Instant::now() >= deadline {
            bail!(
                "{what} {} accepted no connection within 15 s\n{}\n{}",
                path.display(),
                lab.log_tail(AGENT_LOG, 30),
                lab.engine_log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until something accepts TCP connections at `addr` in the node
/// namespace (the agent's HTTP server).
fn wait_for_http(lab: &Lab, addr: SocketAddr) -> Result<()> {
    const CONNECT: &str = "import socket,sys\n\
        try:\n    socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1).close();print('OPEN')\n\
        except OSError as e:\n    print('CLOSED',e)";
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = lab.exec_node(
            &[PYTHON, "-c", CONNECT, &host, &port],
            Duration::from_secs(5),
        )?;
        if out.stdout.trim() == "OPEN" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the agent's HTTP server at {addr} did not listen within 15 s ({})\n{}",
                out.stdout.trim(),
                lab.log_tail(AGENT_LOG, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

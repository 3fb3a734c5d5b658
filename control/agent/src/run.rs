//! Starting the agent: configuration, state directory, source, engine
//! client and socket server, until SIGINT/SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use sluice_policy::compile::CidrMatch;
use sluice_tables::{
    Cidr, Enforcement, LbAlgorithm, LbConfig, MacAddr, Masquerade, NoBackendResponse, Uplink,
    MAGLEV_TABLE_SIZES,
};

use crate::attachments::Attachments;
use crate::core::AgentCore;
use crate::desired::NodeConfig;
use crate::identity::IdentityAllocator;
use crate::lb_ids::LbIds;
use crate::policy::PolicySettings;
use crate::services::ServiceConfig;
use crate::source::{kube::KubeSource, manifests::ManifestSource, Source};
use crate::store::StoreHandle;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-agent",
    about = "Sluice control process: cluster -> engine tables"
)]
pub struct AgentArgs {
    /// Standalone mode: a directory of Kubernetes manifests, watched for changes.
    #[arg(long, conflicts_with = "kubernetes")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode: watch the API (in-cluster config, or --kubeconfig / KUBECONFIG).
    #[arg(long)]
    pub kubernetes: bool,
    #[arg(long, env = "KUBECONFIG", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (the Node object whose podCIDRs to use).
    #[arg(long, env = "SLUICE_NODE_NAME")]
    pub node_name: Option<String>,
    /// io.cilium.k8s.policy.cluster of every identity.
    #[arg(long, default_value = "default")]
    pub cluster_name: String,
    /// Pod CIDRs when the Node object names none (one per family).
    #[arg(long = "pod-cidr", value_parser = parse_cidr)]
    pub pod_cidrs: Vec<Cidr>,
    /// MAC the engine answers with as the pods' gateway.
    #[arg(long, default_value = "02:53:4c:00:00:01", value_parser = parse_mac)]
    pub gateway_mac: MacAddr,
    #[arg(long, default_value_t = sluice_tables::DEFAULT_MTU)]
    pub mtu: u32,
    /// TX/RX queues of every pod veth the CNI plugin creates: set it to the
    /// engine's --workers (worker N serves queue N of every interface).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub veth_queues: u32,
    /// The node's uplink interface (in the agent's network namespace), if the
    /// engine also carries traffic to and from outside.
    #[arg(long)]
    pub uplink: Option<String>,
    /// MAC of the next router on the uplink.
    #[arg(long, value_parser = parse_mac, requires = "uplink")]
    pub uplink_next_hop_mac: Option<MacAddr>,
    /// The engine's API socket.
    #[arg(long, default_value = "/run/sluice/engine-api.sock")]
    pub engine_socket: PathBuf,
    /// The agent's own socket (CNI plugin and CLI).
    #[arg(long, default_value = "/run/sluice/agent.sock")]
    pub socket: PathBuf,
    /// Where identities, attachments and service ids are kept across restarts.
    #[arg(long, default_value = "/var/lib/sluice")]
    pub state_dir: PathBuf,
    /// Backend selection of services without the `service.cilium.io/lb-algorithm`
    /// annotation (Cilium's default is random).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Random)]
    pub lb_algorithm: AlgorithmArg,
    /// Maglev lookup table size: one of Cilium's primes 251 ... 131071.
    #[arg(long, default_value_t = sluice_tables::DEFAULT_MAGLEV_TABLE_SIZE, value_parser = parse_maglev_size)]
    pub maglev_table_size: u32,
    /// Maglev hash seed as Cilium gives it (base64 of 12 bytes); the same on
    /// every node, so every node builds the same tables.
    #[arg(long, default_value = CILIUM_DEFAULT_MAGLEV_SEED, value_parser = parse_maglev_seed)]
    pub maglev_hash_seed: u64,
    /// What a new connection to a service without a usable backend gets.
    #[arg(long, value_enum, default_value_t = NoBackendArg::Reject)]
    pub service_no_backend_response: NoBackendArg,
    /// Inclusive range NodePorts must lie in (as the API server's --service-node-port-range).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub node_port_range: (u16, u16),
    /// Masquerade pod traffic leaving the cluster through the uplink (default:
    /// on when --uplink is given).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub enable_masquerade: Option<bool>,
    /// Source ports of masqueraded flows; above Linux's default ephemeral range
    /// (32768-60999) so they do not clash with the node's own connections.
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub masquerade_ports: (u16, u16),
    /// Destinations never masqueraded, besides the pod CIDRs (always included).
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub non_masquerade_cidrs: Vec<Cidr>,
    /// Policy enforcement (Cilium's flag): `default` enforces a direction of an
    /// endpoint once a policy selects it for that direction, `always` makes
    /// every endpoint default-deny, `never` enforces nothing.
    #[arg(long, value_enum, default_value_t = EnforcementArg::Default)]
    pub enable_policy: EnforcementArg,
    /// Traffic from this node (identity host) to its endpoints: `always`
    /// passes without policy (Cilium's default), `policy` is subject to the
    /// endpoints' ingress policy.
    #[arg(long, value_enum, default_value_t = AllowLocalhostArg::Always)]
    pub allow_localhost: AllowLocalhostArg,
    /// Which cluster addresses CIDR rules (fromCIDR, toCIDRSet, ipBlock)
    /// match besides world addresses, a comma list of `nodes` and `pods`;
    /// empty matches world addresses only (Cilium's default). Sluice's
    /// default `pods` is what the upstream NetworkPolicy ipBlock cases need.
    #[arg(long, default_value = "pods", value_parser = parse_cidr_match)]
    pub policy_cidr_match_mode: CidrMatch,
    /// Most addresses the engine's FQDN cache keeps per DNS name (toFQDNs).
    #[arg(long, default_value_t = 1000)]
    pub tofqdns_endpoint_max_ip_per_hostname: u32,
    /// Shortest time (seconds) a DNS answer's addresses stay allowed, whatever
    /// its TTL.
    #[arg(long, default_value_t = 0)]
    pub tofqdns_min_ttl: u32,

    // -- Metrics and service map (HTTP) --
    /// Serve Prometheus metrics (/metrics) and the service map (/ and
    /// /api/servicemap) on this address (Cilium's flag): `:9962` for every
    /// address, `10.0.0.1:9962`, `[fd00::1]:9962`; empty (the default) is off.
    #[arg(long, default_value = "", value_parser = crate::http::parse_serve_addr_flag)]
    pub prometheus_serve_addr: crate::http::ServeAddr,

    // -- Flows (Hubble) --
    /// The engine's events socket (sluice-engine --events-socket): flows,
    /// lost events and counters. The agent runs without it and reconnects.
    #[arg(long, default_value = "/run/sluice/engine-events.sock")]
    pub engine_events_socket: PathBuf,
    /// The agent's Hubble socket (`sluice observe`), mode 0600.
    #[arg(long, default_value = "/run/sluice/hubble.sock")]
    pub hubble_socket: PathBuf,
    /// Events (flows and lost-event reports) the flow ring buffer keeps
    /// (Cilium's flag and default).
    #[arg(long, default_value_t = crate::flows::DEFAULT_BUFFER_CAPACITY, value_parser = parse_buffer_capacity)]
    pub hubble_event_buffer_capacity: usize,
}

/// `--hubble-event-buffer-capacity`: above 0.
fn parse_buffer_capacity(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("the flow buffer capacity must be above 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a number of events")),
    }
}

/// `--enable-policy`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnforcementArg {
    Default,
    Always,
    Never,
}

/// `--allow-localhost`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AllowLocalhostArg {
    Always,
    Policy,
}

/// `--policy-cidr-match-mode`: a comma list of `nodes` and `pods`, or empty.
pub fn parse_cidr_match(text: &str) -> Result<CidrMatch, String> {
    let mut mode = CidrMatch::default();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "nodes" => mode.nodes = true,
            "pods" => mode.pods = true,
            other => {
                return Err(format!(
                    "{other:?} is not a CIDR match mode (a comma list of nodes, pods; empty for world only)"
                ))
            }
        }
    }
    Ok(mode)
}

/// The node's policy settings from the flags.
pub fn policy_settings(args: &AgentArgs) -> PolicySettings {
    PolicySettings {
        enforcement: match args.enable_policy {
            EnforcementArg::Default => Enforcement::Default,
            EnforcementArg::Always => Enforcement::Always,
            EnforcementArg::Never => Enforcement::Never,
        },
        allow_localhost: args.allow_localhost == AllowLocalhostArg::Always,
        cidr_match: args.policy_cidr_match_mode,
        fqdn_max_ips_per_name: args.tofqdns_endpoint_max_ip_per_hostname,
        fqdn_min_ttl_seconds: args.tofqdns_min_ttl,
    }
}

/// `--lb-algorithm`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    Random,
    Maglev,
}

/// `--service-no-backend-response`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoBackendArg {
    Reject,
    Drop,
}

/// Cilium's default `--bpf-lb-maglev-hash-seed`.
pub const CILIUM_DEFAULT_MAGLEV_SEED: &str = "JLfvgnHc2kaSUFaI";

fn parse_maglev_size(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if MAGLEV_TABLE_SIZES.contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not one of {MAGLEV_TABLE_SIZES:?}"))
    }
}

/// Cilium's seed is 12 random bytes in base64. Folded into 64 bits: the first
/// eight bytes little-endian, XOR the last four little-endian shifted into
/// the upper half, so every byte counts and every node folds alike.
pub fn parse_maglev_seed(text: &str) -> Result<u64, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{text:?} is not base64: {e}"))?;
    let bytes: [u8; 12] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{text:?} decodes to {} bytes, not 12", b.len()))?;
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[..8]);
    let mut high = [0u8; 4];
    high.copy_from_slice(&bytes[8..]);
    Ok(u64::from_le_bytes(low) ^ (u64::from(u32::from_le_bytes(high)) << 32))
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?} is not a port range like 30000-32767");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(format!(
            "{text:?}: the range must be non-empty and start above 0"
        ));
    }
    Ok((a, b))
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    Cidr::parse(text).ok_or_else(|| format!("{text:?} is not a CIDR like 10.200.0.0/24"))
}

fn parse_mac(text: &str) -> Result<MacAddr, String> {
    MacAddr::parse(text).ok_or_else(|| format!("{text:?} is not a MAC like 02:00:00:00:00:01"))
}

/// ifindex and MAC of `ifname` in this process's network namespace.
fn link_of(ifname: &str) -> anyhow::Result<(u32, MacAddr)> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).with_context(|| {
        format!("--uplink {ifname}: no such interface in the agent's network namespace")
    })?;
    let addrs = nix::ifaddrs::getifaddrs().context("list interface addresses")?;
    let mac = addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| {
            a.address
                .and_then(|s| s.as_link_addr().and_then(|l| l.addr()))
        })
        .with_context(|| format!("--uplink {ifname}: no MAC address"))?;
    Ok((ifindex, MacAddr(mac)))
}

/// The global addresses of `ifname` (link-local ones excluded: they are not
/// reachable from other links, so no NodePort is served on them).
fn global_addrs_of(ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().context("list interface addresses")?;
    let mut out: Vec<IpAddr> = addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| {
            let s = a.address?;
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| is_global(*ip))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified() && !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified() && !v6.is_loopback(),
    }
}

fn uplink(args: &AgentArgs) -> anyhow::Result<Option<Uplink>> {
    let Some(ifname) = &args.uplink else {
        return Ok(None);
    };
    let Some(next_hop_mac) = args.uplink_next_hop_mac else {
        bail!("--uplink needs --uplink-next-hop-mac");
    };
    let (ifindex, mac) = link_of(ifname)?;
    Ok(Some(Uplink {
        ifname: ifname.clone(),
        ifindex,
        mac,
        next_hop_mac,
        pod_cidrs: Vec::new(),
        addrs: global_addrs_of(ifname)?,
    }))
}

/// The node-wide LB settings from the flags.
pub fn lb_config(args: &AgentArgs) -> LbConfig {
    let masquerade = args
        .enable_masquerade
        .unwrap_or(args.uplink.is_some())
        .then(|| Masquerade {
            addrs: Vec::new(),
            port_min: args.masquerade_ports.0,
            port_max: args.masquerade_ports.1,
            non_masquerade_cidrs: args.non_masquerade_cidrs.clone(),
        });
    LbConfig {
        maglev_table_size: args.maglev_table_size,
        maglev_seed: args.maglev_hash_seed,
        no_backend: match args.service_no_backend_response {
            NoBackendArg::Reject => NoBackendResponse::Reject,
            NoBackendArg::Drop => NoBackendResponse::Drop,
        },
        masquerade,
    }
}

pub fn node_config(args: &AgentArgs) -> anyhow::Result<NodeConfig> {
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix_hostname()?,
    };
    Ok(NodeConfig {
        node_name,
        cluster_name: args.cluster_name.clone(),
        gateway_mac: args.gateway_mac,
        mtu: args.mtu,
        veth_queues: args.veth_queues,
        pod_cidrs: args.pod_cidrs.clone(),
        uplink: uplink(args)?,
        services: ServiceConfig {
            default_algorithm: match args.lb_algorithm {
                AlgorithmArg::Random => LbAlgorithm::Random,
                AlgorithmArg::Maglev => LbAlgorithm::Maglev,
            },
            node_port_min: args.node_port_range.0,
            node_port_max: args.node_port_range.1,
        },
        lb: lb_config(args),
        policy: policy_settings(args),
    })
}

fn nix_hostname() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the hostname for --node-name")?
        .trim()
        .to_string())
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = node_config(&args)?;
    let source: Box<dyn Source> = match (&args.manifests, args.kubernetes) {
        (Some(dir), false) => {
            if !dir.is_dir() {
                bail!("--manifests {}: not a directory", dir.display());
            }
            Box::new(ManifestSource::new(dir.clone()))
        }
        (None, true) => Box::new(match &args.kubeconfig {
            Some(path) => KubeSource::from_kubeconfig(path).await?,
            None => KubeSource::from_env().await?,
        }),
        _ => bail!("give either --manifests <dir> (standalone) or --kubernetes"),
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("create state directory {}", args.state_dir.display()))?;
    let attachments = Attachments::open(args.state_dir.join("attachments.json"))?;
    let identities = IdentityAllocator::open(args.state_dir.join("identities.json"))?;
    let lb_ids = LbIds::open(args.state_dir.join("lb-ids.json"))?;
    let store = StoreHandle::new();
    let core = AgentCore::new(
        config,
        source.describe(),
        store.clone(),
        attachments,
        identities,
        lb_ids,
    );
    let agent_name = format!(
        "sluice-agent {} {}",
        env!("CARGO_PKG_VERSION"),
        core.config.node_name
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let source_task = tokio::spawn(source.run(store.clone(), stop_rx));
    let server = crate::server::serve(core.clone(), &args.socket).await?;
    // Set once a desired state was computed from a store the source has fully
    // listed. Until then the engine keeps the state it has: a restarted agent's
    // store is still loading, and a snapshot of it would give every endpoint
    // reserved:init and leave out the ipcache entries of pods not yet read.
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let engine = {
        let core = core.clone();
        let socket = args.engine_socket.clone();
        tokio::spawn(async move {
            if synced_rx.wait_for(|synced| *synced).await.is_ok() {
                crate::engine_client::run(core, socket, agent_name).await;
            }
        })
    };
    // -- Flows (Hubble): engine events in, ring buffer, Hubble socket out --
    core.flows.set_capacity(args.hubble_event_buffer_capacity);
    let events = tokio::spawn(crate::events_client::run(
        core.clone(),
        args.engine_events_socket.clone(),
    ));
    let hubble = crate::hubble_server::serve(
        core.flows.clone(),
        core.config.node_name.clone(),
        &args.hubble_socket,
    )
    .await?;
    // -- end of flows --
    // -- Metrics and service map (HTTP) --
    let http = match args.prometheus_serve_addr.0 {
        Some(addr) => Some(crate::http::serve(addr, core.flows.clone()).await?),
        None => None,
    };
    // -- end of metrics and service map --
    let recompute = {
        let core = core.clone();
        let store = store.clone();
        let mut revisions = store.subscribe();
        tokio::spawn(async move {
            loop {
                // Kinds never become unsynced: synced before the recompute
                // means the recompute's own copy of the store is synced too.
                let synced = *synced_tx.borrow() || store.read(|s| s.all_synced());
                core.recompute();
                if synced {
                    synced_tx.send_if_modified(|s| !std::mem::replace(s, true));
                }
                if revisions.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    tracing::info!(
        node = %core.config.node_name,
        source = %core.source,
        socket = %args.socket.display(),
        engine = %args.engine_socket.display(),
        "agent ready"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        result = source_task => {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context("source stopped")),
                Err(e) => bail!("source task failed: {e}"),
            }
        }
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    server.abort();
    engine.abort();
    recompute.abort();
    events.abort();
    hubble.abort();
    if let Some(http) = &http {
        http.abort();
    }
    let _ = std::fs::remove_file(&args.hubble_socket);
    let _ = std::fs::remove_file(&args.socket);
    let _: Arc<AgentCore> = core;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
        let mut argv = vec!["sluice-agent", "--manifests", "/tmp"];
        argv.extend_from_slice(extra);
        AgentArgs::try_parse_from(argv)
    }

    #[test]
    fn lb_flags_default_to_ciliums_choices() {
        let a = args(&[]).unwrap();
        assert_eq!(a.lb_algorithm, AlgorithmArg::Random);
        assert_eq!(a.node_port_range, (30000, 32767));
        assert_eq!(a.masquerade_ports, (61000, 65535));
        let lb = lb_config(&a);
        assert_eq!(lb.maglev_table_size, 16381);
        assert_eq!(lb.no_backend, NoBackendResponse::Reject);
        // No uplink: no masquerade unless asked.
        assert!(lb.masquerade.is_none());
        assert_eq!(
            lb.maglev_seed,
            parse_maglev_seed(CILIUM_DEFAULT_MAGLEV_SEED).unwrap()
        );
        let on = lb_config(&args(&["--enable-masquerade"]).unwrap());
        assert_eq!(on.masquerade.unwrap().port_min, 61000);
        let with_uplink = args(&[
            "--uplink",
            "eth9",
            "--uplink-next-hop-mac",
            "02:00:00:00:00:01",
        ]);
        assert!(lb_config(&with_uplink.unwrap()).masquerade.is_some());
        let off = args(&[
            "--uplink",
            "eth9",
            "--uplink-next-hop-mac",
            "02:00:00:00:00:01",
            "--enable-masquerade=false",
        ]);
        assert!(lb_config(&off.unwrap()).masquerade.is_none());
    }

    #[test]
    fn lb_flags_are_parsed_and_bad_ones_refused_naming_the_value() {
        let a = args(&[
            "--lb-algorithm",
            "maglev",
            "--maglev-table-size",
            "251",
            "--service-no-backend-response",
            "drop",
            "--node-port-range",
            "20000-20100",
            "--non-masquerade-cidrs",
            "10.0.0.0/8,fd00::/8",
        ])
        .unwrap();
        assert_eq!(a.lb_algorithm, AlgorithmArg::Maglev);
        assert_eq!(a.maglev_table_size, 251);
        assert_eq!(a.node_port_range, (20000, 20100));
        assert_eq!(a.non_masquerade_cidrs.len(), 2);
        assert_eq!(lb_config(&a).no_backend, NoBackendResponse::Drop);
        let err = args(&["--maglev-table-size", "1000"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1000 is not one of"), "{err}");
        let err = args(&["--node-port-range", "32767-30000"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("32767-30000"), "{err}");
        let err = args(&["--maglev-hash-seed", "AAAA"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 bytes, not 12"), "{err}");
    }

    #[test]
    fn the_seed_fold_uses_every_byte() {
        // 12 zero bytes, then one byte changed in each half.
        assert_eq!(parse_maglev_seed("AAAAAAAAAAAAAAAA").unwrap(), 0);
        assert_eq!(parse_maglev_seed("AQAAAAAAAAAAAAAA").unwrap(), 1);
        assert_eq!(parse_maglev_seed("AAAAAAAAAAABAAAA").unwrap(), 1 << 32);
    }

    #[test]
    fn policy_flags_default_to_ciliums_choices_except_pod_cidr_matching() {
        let a = args(&[]).unwrap();
        assert_eq!(policy_settings(&a), PolicySettings::default());
        let p = policy_settings(&a);
        assert_eq!(p.enforcement, Enforcement::Default);
        assert!(p.allow_localhost);
        assert_eq!(
            p.cidr_match,
            CidrMatch {
                nodes: false,
                pods: true
            }
        );
        assert_eq!((p.fqdn_max_ips_per_name, p.fqdn_min_ttl_seconds), (1000, 0));
        let a = args(&[
            "--enable-policy",
            "always",
            "--allow-localhost",
            "policy",
            "--policy-cidr-match-mode",
            "nodes,pods",
            "--tofqdns-endpoint-max-ip-per-hostname",
            "50",
            "--tofqdns-min-ttl",
            "3600",
        ])
        .unwrap();
        let p = policy_settings(&a);
        assert_eq!(p.enforcement, Enforcement::Always);
        assert!(!p.allow_localhost);
        assert_eq!(
            p.cidr_match,
            CidrMatch {
                nodes: true,
                pods: true
            }
        );
        assert_eq!(
            (p.fqdn_max_ips_per_name, p.fqdn_min_ttl_seconds),
            (50, 3600)
        );
        // Empty: world addresses only, as Cilium by default.
        let a = args(&["--policy-cidr-match-mode=", "--enable-policy", "never"]).unwrap();
        let p = policy_settings(&a);
        assert_eq!(p.cidr_match, CidrMatch::default());
        assert_eq!(p.enforcement, Enforcement::Never);
        let err = args(&["--policy-cidr-match-mode", "pods,world"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"world\" is not a CIDR match mode"), "{err}");
        assert!(args(&["--enable-policy", "sometimes"]).is_err());
        assert!(args(&["--allow-localhost", "auto"]).is_err());
    }

    #[test]
    fn flow_flags_default_to_ciliums_and_refuse_an_empty_buffer() {
        let a = args(&[]).unwrap();
        assert_eq!(a.hubble_event_buffer_capacity, 4095);
        assert_eq!(a.hubble_socket, PathBuf::from("/run/sluice/hubble.sock"));
        assert_eq!(
            a.engine_events_socket,
            PathBuf::from("/run/sluice/engine-events.sock")
        );
        let a = args(&["--hubble-event-buffer-capacity", "65535"]).unwrap();
        assert_eq!(a.hubble_event_buffer_capacity, 65535);
        let err = args(&["--hubble-event-buffer-capacity", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be above 0"), "{err}");
        let err = args(&["--hubble-event-buffer-capacity", "many"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"many\" is not a number"), "{err}");
    }

    #[test]
    fn only_global_addresses_serve_node_ports() {
        assert!(is_global("192.168.254.1".parse().unwrap()));
        assert!(is_global("fd00:254::1".parse().unwrap()));
        assert!(!is_global("fe80::1".parse().unwrap()));
        assert!(!is_global("169.254.1.1".parse().unwrap()));
    }
}

//! Starting the agent: configuration, state directory, source, engine
//! client and socket server, until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_tables::{Cidr, MacAddr, Uplink};

use crate::attachments::Attachments;
use crate::core::AgentCore;
use crate::desired::NodeConfig;
use crate::identity::IdentityAllocator;
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
    /// Where identities and attachments are kept across restarts.
    #[arg(long, default_value = "/var/lib/sluice")]
    pub state_dir: PathBuf,
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
        // Filled with the uplink's addresses by the service work (NodePorts, masquerade).
        addrs: Vec::new(),
    }))
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
    let store = StoreHandle::new();
    let core = AgentCore::new(
        config,
        source.describe(),
        store.clone(),
        attachments,
        identities,
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
    let _ = std::fs::remove_file(&args.socket);
    let _: Arc<AgentCore> = core;
    Ok(())
}

//! `sluice-lab`: bring up a namespace lab, run the demo, clean up leftovers.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sluice_lab::bench::flows::{self, FlowsConfig};
use sluice_lab::bench::forward::{self, ForwardConfig, Generator, Variant};
use sluice_lab::bench::policy::{self, PolicyBenchConfig};
use sluice_lab::bench::rules::Loader;
use sluice_lab::bench::scenarios::{self, ScenariosConfig};
use sluice_lab::bench::services::{self, ServicesConfig};
use sluice_lab::bench::sync::{self, SyncConfig};
use sluice_lab::{
    cleanup, teardown_all, CleanupScope, EngineOptions, Forwarding, Lab, LabSpec, PingResult,
};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-lab",
    about = "Sluice node and pods as network namespaces on this machine (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Debug)]
struct LabArgs {
    /// Number of pods.
    #[arg(long, default_value_t = 3)]
    pods: usize,
    /// Engine workers (and veth queues).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Who forwards between pods: engine or kernel.
    #[arg(long, default_value = "engine")]
    mode: Forwarding,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
    /// MTU of the pod interfaces (XDP on veth allows up to 3506).
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring up a lab, ping between pods (IPv4, IPv6), run one iperf3 stream,
    /// print the engine's counters and tear down.
    Demo {
        #[command(flatten)]
        lab: LabArgs,
        /// Echo requests per pod pair and family.
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Length of the iperf3 run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
    },
    /// Bring up a lab (and the engine in engine mode) and wait for Ctrl-C.
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Do not start the engine (engine mode): pods stay isolated.
        #[arg(long)]
        no_engine: bool,
        /// Tear down after this many seconds instead of waiting for Ctrl-C.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Throughput comparisons (each builds its own labs and tears them down).
    Bench {
        #[command(subcommand)]
        bench: BenchCmd,
    },
    /// Remove leftover labs: namespaces named `sl<pid>x<n>-*` and their run dirs.
    Cleanup {
        /// Also remove labs whose creating process still runs.
        #[arg(long)]
        all: bool,
    },
    /// Test aid: build a kernel-mode lab with a process inside and exit without
    /// tearing it down; prints the lab's prefix.
    #[command(hide = true)]
    Leak {
        #[arg(long, default_value_t = 1)]
        pods: usize,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Pod-to-pod UDP packets per second: the node kernel, an XDP devmap redirect and
    /// sluice-engine (one worker), trials interleaved in one run. Prints a Markdown table.
    Forward(ForwardArgs),
    /// Scenarios beyond 64-byte UDP: 1500-byte UDP, one TCP stream, TCP request/response
    /// latency, new TCP connections per second, over the kernel (with conntrack, with
    /// kube-proxy-shaped iptables/nftables services), XDP devmap and the engine (1 or 2
    /// workers); trials interleaved per scenario. Prints a Markdown table per scenario.
    Scenarios(ScenariosArgs),
    /// Services at scale (issue 5): first-packet latency (connect time) and new TCP
    /// connections per second through the last ClusterIP of 1, 1k, 10k and 100k services,
    /// sluice-engine (state file) beside kube-proxy's iptables rules, rounds interleaved.
    /// Prints the two side by side with ratios.
    Services(ServicesArgs),
    /// Network policy (issue 6): new TCP connections per second and connect time from pod 1
    /// to pod 2 through sluice-engine with 0, 1k and 10k CiliumNetworkPolicy rules over 1k
    /// identities (one rule allows the measured port), rounds interleaved; the rules'
    /// compile time and the engine's memory with them. Prints the ratios to 0 rules.
    Policy(PolicyArgs),
    /// Control plane: N pods (distinct labels, so N identities, one podIP each) from a
    /// manifest directory to the engine's tables through a fresh sluice-agent (time to full
    /// sync), then single-label edits to the engine's ack; sizes interleaved, the largest
    /// over the smallest as ratios. Prints a Markdown table.
    Sync(SyncArgs),
    /// Flow events under load (issue 7): 64-byte UDP forwarding at full rate with the
    /// events socket unsubscribed (A), at aggregation medium (B) and none (C) with a
    /// subscriber parsing every line; a steady share of new flows; rounds interleaved.
    /// Prints B/A and C/A, events/s and lost counts; the target is B/A >= 0.95.
    Flows(FlowsArgs),
}

#[derive(clap::Args, Debug)]
struct FlowsArgs {
    /// Rounds; each runs baseline, medium and none once.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Measured window of a trial.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Traffic before the window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Frame size including the 4-byte FCS.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// UDP flows cycled by the generator (source ports from 10000).
    #[arg(long, default_value_t = 8250)]
    flows: u32,
    /// The engine's conntrack entries (two per flow); below 2 x --flows, evicted flows
    /// come back as new ones.
    #[arg(long, default_value_t = 16384)]
    ct_capacity: usize,
    /// The engine's per-worker event queue (default: the engine's own).
    #[arg(long)]
    events_queue_size: Option<usize>,
    /// Core of the engine's worker (the generator runs on CPU 0).
    #[arg(long, default_value_t = 1)]
    engine_core: usize,
    /// Who reads the events in B and C: bench (a subscriber thread here, static pods)
    /// or agent (sluice-agent with --engine-events-socket, pods through sluice-cni).
    #[arg(long, default_value = "bench")]
    consumer: flows::Consumer,
    /// Smoke run: 1 round of 2 s windows.
    #[arg(long)]
    quick: bool,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// sluice-pktgen binary (default: $SLUICE_PKTGEN, else next to this binary).
    #[arg(long)]
    pktgen: Option<PathBuf>,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct SyncArgs {
    /// Pod counts, comma separated; the last over the first gives the ratios.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sizes: Vec<usize>,
    /// Rounds; each runs every size once.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Label edits per trial after the full sync.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// Namespaces the pods are spread over (one manifest file each).
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Agent status polling period in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Services instead of pods: `--sizes` counts Services (2 backends each, from
    /// EndpointSlices), and the edits move one EndpointSlice's backend.
    #[arg(long)]
    services: bool,
}

#[derive(clap::Args, Debug)]
struct ServicesArgs {
    /// Service counts, comma separated; the first is the baseline of the "/ N" ratios.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Dataplanes, comma separated: sluice, iptables.
    #[arg(long, value_delimiter = ',', default_value = "sluice,iptables")]
    dataplanes: Vec<services::Dataplane>,
    /// Rounds; each runs every size on every dataplane once.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Run time of the connection-rate client.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Concurrent connect/close loops of the connection-rate client.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Sequential connects of the first-packet latency probe.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// iptables flavour: nft (iptables-nft-restore) or legacy (iptables-legacy-restore).
    #[arg(long, default_value = "nft")]
    iptables: String,
    /// Bound on one iptables-restore in seconds; a size that does not load in time is not
    /// tried again, nor any larger one.
    #[arg(long, default_value_t = 240)]
    iptables_load_timeout: u64,
    /// Bound on the engine's start (state parse and table build) in seconds.
    #[arg(long, default_value_t = 120)]
    engine_start_timeout: u64,
    /// Smoke run: 1 round, 2 s of connections, 200 probes.
    #[arg(long)]
    quick: bool,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// sluice-connrate binary (default: $SLUICE_CONNRATE, else next to this binary).
    #[arg(long)]
    connrate: Option<PathBuf>,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Rule counts, comma separated; the first is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    rules: Vec<usize>,
    /// Remote identities (one pod address each) the rules select from.
    #[arg(long, default_value_t = 1000)]
    identities: usize,
    /// Rounds; each runs every size once.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Run time of the connection-rate client.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Concurrent connect/close loops of the connection-rate client.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Sequential connects of the first-packet latency probe.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// Compiles per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    compile_runs: usize,
    /// Bound on the engine's start (state parse and table build) in seconds.
    #[arg(long, default_value_t = 120)]
    engine_start_timeout: u64,
    /// Smoke run: 1 round, 2 s of connections, 200 probes, 2 compiles.
    #[arg(long)]
    quick: bool,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// sluice-connrate binary (default: $SLUICE_CONNRATE, else next to this binary).
    #[arg(long)]
    connrate: Option<PathBuf>,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ScenariosArgs {
    /// Rounds; each runs every variant of a scenario once.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Measured window (UDP) or client run time (TCP).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// UDP traffic before the window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// UDP flows (distinct source ports), same in every variant.
    #[arg(long, default_value_t = 16)]
    flows: u32,
    /// Concurrent connect/close loops of the connection-rate client.
    #[arg(long, default_value_t = 4)]
    crr_parallel: usize,
    /// Scenarios, comma separated: udp64, udp1500, tcp-stream, tcp-rr, tcp-crr.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "udp64,udp1500,tcp-stream,tcp-rr,tcp-crr"
    )]
    scenarios: Vec<scenarios::Scenario>,
    /// Variants, comma separated: kernel, kernel-ct, devmap, engine, engine2, ipt-1k,
    /// ipt-10k, nft-1k, nft-10k (each runs only in the scenarios it applies to).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,kernel-ct,devmap,engine,engine2,ipt-1k,ipt-10k,nft-1k,nft-10k"
    )]
    variants: Vec<scenarios::Variant>,
    /// iptables flavour of V3: nft (iptables-nft-restore) or legacy (iptables-legacy-restore).
    #[arg(long, default_value = "nft")]
    iptables: String,
    /// Smoke run: 1 trial of 2 s (0.5 s UDP warm-up).
    #[arg(long)]
    quick: bool,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// sluice-connrate binary (default: $SLUICE_CONNRATE, else next to this binary).
    #[arg(long)]
    connrate: Option<PathBuf>,
    /// MTU of the pod interfaces in every variant (XDP on veth allows up to 3506).
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ForwardArgs {
    /// Rounds; each runs every variant once (K D E K D E ...).
    #[arg(long, default_value_t = 5)]
    trials: u32,
    /// Measured window of each trial.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Traffic before the window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Frame size in bytes including the 4-byte FCS (64: 60 bytes on the veth).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// UDP flows (distinct source ports).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Variants to run, comma separated: kernel, devmap, engine.
    #[arg(long, value_delimiter = ',', default_value = "kernel,devmap,engine")]
    variants: Vec<Variant>,
    /// Write every trial and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engine binary (default: $SLUICE_ENGINE, else next to this binary).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Core of the engine's worker (the generator runs on CPU 0).
    #[arg(long, default_value_t = 1)]
    engine_core: usize,
    /// Extra argument for the engine (repeatable).
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
    /// Who sends from pod 1: afxdp (sluice-pktgen tx) or trafgen.
    #[arg(long, default_value = "afxdp")]
    generator: Generator,
    /// sluice-pktgen binary (default: $SLUICE_PKTGEN, else next to this binary).
    #[arg(long)]
    pktgen: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM: stop and delete every lab this process made, then exit.
    if let Err(err) = ctrlc::set_handler(|| {
        eprintln!("sluice-lab: interrupted, tearing down");
        teardown_all();
        std::process::exit(130);
    }) {
        eprintln!("sluice-lab: cannot install the Ctrl-C handler: {err}");
    }
    let result = match cli.command {
        Cmd::Demo {
            lab,
            count,
            seconds,
        } => demo(&lab, count, seconds),
        Cmd::Up {
            lab,
            no_engine,
            seconds,
        } => up(&lab, no_engine, seconds),
        Cmd::Bench {
            bench: BenchCmd::Forward(args),
        } => bench_forward(args),
        Cmd::Bench {
            bench: BenchCmd::Scenarios(args),
        } => bench_scenarios(args),
        Cmd::Bench {
            bench: BenchCmd::Services(args),
        } => bench_services(args),
        Cmd::Bench {
            bench: BenchCmd::Policy(args),
        } => bench_policy(args),
        Cmd::Bench {
            bench: BenchCmd::Sync(args),
        } => bench_sync(args),
        Cmd::Bench {
            bench: BenchCmd::Flows(args),
        } => bench_flows(args),
        Cmd::Cleanup { all } => clean(all),
        Cmd::Leak { pods } => leak(pods),
    };
    if let Err(err) = result {
        eprintln!("sluice-lab: {err:#}");
        std::process::exit(1);
    }
}

fn build(args: &LabArgs) -> Result<Lab> {
    let spec = match args.mode {
        Forwarding::Engine => LabSpec::engine(args.pods),
        Forwarding::Kernel => LabSpec::kernel(args.pods),
    }
    .with_queues(args.workers)
    .with_mtu(args.mtu);
    let lab = Lab::new(spec)?;
    println!(
        "lab {}: {} pods, {:?} forwarding, {} queue(s) per veth, node namespace {}",
        lab.prefix(),
        lab.pods().len(),
        lab.spec().mode,
        lab.spec().queues,
        lab.node_netns()
    );
    for pod in lab.pods() {
        println!(
            "  pod{:<3} {:<12} {:<14} mac {}  node side {} (ifindex {})  netns {}",
            pod.index, pod.ipv4, pod.ipv6, pod.mac, pod.node_ifname, pod.node_ifindex, pod.netns
        );
    }
    if lab.spec().uses_cni() {
        println!(
            "  pods wired by sluice-cni; agent socket {}, manifests {}",
            lab.agent_socket().display(),
            lab.manifests_dir().display()
        );
    } else {
        println!("  state file {}", lab.state_path().display());
    }
    Ok(lab)
}

fn start_engine(lab: &Lab, args: &LabArgs) -> Result<()> {
    let options = EngineOptions {
        binary: args.engine.clone(),
        workers: Some(args.workers),
        extra_args: args.engine_args.clone(),
        ..EngineOptions::default()
    };
    let pid = lab.start_engine(&options)?;
    println!(
        "engine running (pid {pid}), stats socket {}",
        lab.stats_socket().display()
    );
    Ok(())
}

fn demo(args: &LabArgs, count: u32, seconds: u32) -> Result<()> {
    let lab = build(args)?;
    if lab.spec().mode == Forwarding::Engine {
        start_engine(&lab, args)?;
    }
    let n = lab.pods().len();
    let pairs: Vec<(usize, usize)> = match n {
        1 => Vec::new(),
        2 => vec![(1, 2), (2, 1)],
        _ => (1..=n).map(|i| (i, i % n + 1)).collect(),
    };
    let mut failures = 0;
    println!("\nping, {count} requests per pair and family:");
    for &(from, to) in &pairs {
        let target = lab.pod(to)?;
        let targets: [(&str, IpAddr); 2] =
            [("ipv4", target.ipv4.into()), ("ipv6", target.ipv6.into())];
        for (family, addr) in targets {
            let line = format!("  pod{from} -> pod{to} {family} {addr:<14}");
            match lab.ping(from, addr, count) {
                Ok(result) => {
                    if !result.all_received() {
                        failures += 1;
                    }
                    println!("{line} {}", describe_ping(&result));
                }
                Err(err) => {
                    failures += 1;
                    println!("{line} error: {err:#}");
                }
            }
        }
    }
    if let Some(&(from, to)) = pairs.first() {
        let addr: IpAddr = lab.pod(to)?.ipv4.into();
        println!("\niperf3, one TCP stream pod{from} -> pod{to} ({addr}) for {seconds} s:");
        let run = lab
            .iperf3_server(to)
            .and_then(|_| lab.iperf3_client(from, addr, seconds));
        match run {
            Ok(r) => println!(
                "  {:.2} Gbit/s received, {:.2} Gbit/s sent, retransmits {}",
                r.received_bits_per_second / 1e9,
                r.sent_bits_per_second / 1e9,
                r.retransmits
                    .map_or_else(|| "n/a".to_string(), |n| n.to_string())
            ),
            Err(err) => {
                failures += 1;
                println!("  error: {err:#}");
            }
        }
    }
    if lab.agent_pid().is_some() && n >= 2 {
        failures += demo_service(&lab, n);
        if n >= 3 {
            failures += demo_policy(&lab, n);
            failures += demo_observe(&lab);
        }
    }
    if lab.engine_pid().is_some() {
        failures += print_engine_counters(&lab);
    }
    lab.teardown()?;
    println!("\nlab {} removed", lab.prefix());
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    Ok(())
}

/// A ClusterIP Service (IPv4 and IPv6) selecting pods 2..=n by label, with a
/// named target port: HTTP servers in those pods, requests from pod 1 to the
/// service addresses, each answered by the backend the engine chose.
/// Returns the number of failures.
fn demo_service(lab: &Lab, n: usize) -> usize {
    use sluice_lab::services::{
        cluster_ipv4, cluster_ipv6, ContainerPort, Place, PodManifest, ServiceManifest, ServicePort,
    };
    const REQUESTS: usize = 6;
    let setup = || -> Result<Vec<IpAddr>> {
        let mut pods = vec![PodManifest::lab_default(1)];
        for i in 2..=n {
            lab.start_netexec(Place::Pod(i), &format!("pod{i}"), &[8080], &[])?;
            pods.push(PodManifest::serving(
                i,
                ("demo", "web"),
                vec![ContainerPort::tcp(8080).named("http")],
            ));
        }
        lab.write_pods(&pods)?;
        let vips = vec![cluster_ipv4(10), cluster_ipv6(10)];
        let service = ServiceManifest::cluster_ip(
            "web",
            &vips,
            vec![ServicePort::tcp(80, 8080)
                .named("http")
                .to_named_target("http")],
        )
        .selecting("demo", "web");
        lab.apply_manifest("web-service.yaml", &[service.to_json()])?;
        Ok(vips)
    };
    let vips = match setup() {
        Ok(vips) => vips,
        Err(err) => {
            println!("\nservice: error: {err:#}");
            return 1;
        }
    };
    println!(
        "\nService default/web (ClusterIP, port 80 -> named port http of pods 2..{n}), \
         {REQUESTS} requests per address from pod1:"
    );
    let mut failures = 0;
    for vip in vips {
        let mut answers = Vec::new();
        for _ in 0..REQUESTS {
            match lab.http_get(Place::Pod(1), vip, 80, "/hostname") {
                Ok(reply) => match reply.answer() {
                    Some(name) => answers.push(name.to_string()),
                    None => {
                        failures += 1;
                        answers.push(format!("{reply:?}"));
                    }
                },
                Err(err) => {
                    failures += 1;
                    answers.push(format!("error: {err:#}"));
                }
            }
        }
        println!("  {vip:<14} answered by {}", answers.join(", "));
    }
    failures
}

/// A CiliumNetworkPolicy on the web pods (2..=n) admitting only pod 1 on
/// port 8080: pod 1 still reaches the Service, pod 2 is refused by pod 3's
/// ingress (`policy_denied`), and `sluice policy get` / `trace` explain it.
/// Returns the number of failures.
fn demo_policy(lab: &Lab, n: usize) -> usize {
    use sluice_lab::services::{cluster_ipv4, Place};
    let policy = serde_json::json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "web-from-pod1", "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"demo": "web"}},
            "ingress": [{
                "fromEndpoints": [{"matchLabels": {"app": "pod1"}}],
                "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]
            }]
        }
    });
    if let Err(err) = lab.apply_manifest("web-policy.yaml", &[policy]) {
        println!("\npolicy: error: {err:#}");
        return 1;
    }
    println!(
        "\nCiliumNetworkPolicy default/web-from-pod1: pods 2..{n} (demo=web) admit only pod1 on TCP 8080:"
    );
    let mut failures = 0;
    let allowed = lab.http_get(Place::Pod(1), cluster_ipv4(10), 80, "/hostname");
    match &allowed {
        Ok(reply) if reply.answer().is_some() => {
            println!(
                "  pod1 -> Service web     answered by {}",
                reply.answer().unwrap_or_default()
            )
        }
        other => {
            failures += 1;
            println!("  pod1 -> Service web     expected an answer, got {other:?}");
        }
    }
    let target = lab.pod(3).map(|p| IpAddr::from(p.ipv4));
    let denied = target.and_then(|addr| lab.http_get(Place::Pod(2), addr, 8080, "/hostname"));
    match &denied {
        Ok(reply) if reply.answer().is_none() => {
            println!("  pod2 -> pod3:8080       refused as expected ({reply:?})")
        }
        other => {
            failures += 1;
            println!("  pod2 -> pod3:8080       expected no answer, got {other:?}");
        }
    }
    let views = [
        ("policies", vec!["policy", "get"], Expect::Exit(0)),
        (
            "why pod2 cannot reach pod3",
            vec![
                "policy",
                "trace",
                "--src",
                "default/pod2",
                "--dst",
                "default/pod3",
                "--dport",
                "8080",
            ],
            Expect::Exit(1),
        ),
    ];
    failures + show_views(lab, &views)
}

/// The flows behind the policy step, as Hubble users read them: `sluice
/// observe` on the agent's Hubble socket shows pod 2's refused connection as
/// DROPPED with the policy that denied it, and pod 1's Service connection
/// with its translation. Returns the number of failures.
fn demo_observe(lab: &Lab) -> usize {
    let server = lab.hubble_socket().display().to_string();
    let views = [
        (
            "dropped flows and the policy behind them",
            vec![
                "observe",
                "--server",
                &server,
                "--verdict",
                "DROPPED",
                "--protocol",
                "tcp",
                "--print-policy-names",
                "--last",
                "3",
            ],
            Expect::Shows("DROPPED"),
        ),
        (
            "pod1's connections to the Service (new connections, translated to a backend)",
            vec![
                "observe",
                "--server",
                &server,
                "--from-pod",
                "default/pod1",
                "--to-port",
                "8080",
                "--type",
                "trace",
                "--last",
                "3",
            ],
            Expect::Shows("FORWARDED"),
        ),
    ];
    show_views(lab, &views)
}

/// Shows the node the way a user reads it: with the `sluice` CLI built beside
/// the engine (`sluice status`, `endpoint list`, `identity list` from the
/// agent when the lab has one; `sluice stats`, `sluice drops` from the engine).
/// Returns the number of failures.
fn print_engine_counters(lab: &Lab) -> usize {
    let mut views: Vec<(&str, Vec<&str>, Expect)> = Vec::new();
    if lab.agent_pid().is_some() {
        views.push(("agent and engine", vec!["status"], Expect::Exit(0)));
        views.push(("endpoints", vec!["endpoint", "list"], Expect::Exit(0)));
        views.push(("identities", vec!["identity", "list"], Expect::Exit(0)));
        views.push(("services", vec!["service", "list"], Expect::Exit(0)));
        views.push(("connections", vec!["conntrack", "list"], Expect::Exit(0)));
    }
    views.push(("engine counters", vec!["stats"], Expect::Exit(0)));
    views.push(("drops by reason", vec!["drops"], Expect::Exit(0)));
    show_views(lab, &views)
}

/// What the demo expects of one CLI view.
#[derive(Debug)]
enum Expect {
    /// Exit with this code.
    Exit(i32),
    /// Exit 0 and print this text.
    Shows(&'static str),
}

/// Runs each `sluice <command>` (the CLI built beside the engine) against
/// the lab's sockets, printing a title and its output. Returns how many views
/// did not meet their expectation or could not run.
fn show_views(lab: &Lab, views: &[(&str, Vec<&str>, Expect)]) -> usize {
    let cli = match sluice_lab::find_engine() {
        Ok(engine) => engine.with_file_name("sluice"),
        Err(err) => {
            println!("  error: {err:#}");
            return 1;
        }
    };
    let mut failures = 0;
    for (title, command, expect) in views {
        println!("\n{title} (sluice {}):", command.join(" "));
        let out = std::process::Command::new(&cli)
            .arg("--engine-socket")
            .arg(lab.stats_socket())
            .arg("--agent-socket")
            .arg(lab.agent_socket())
            .args(command)
            .output();
        let out = match out {
            Ok(out) => out,
            Err(err) => {
                failures += 1;
                println!("  error: run {}: {err}", cli.display());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        let met = match expect {
            Expect::Exit(code) => out.status.code() == Some(*code),
            Expect::Shows(wanted) => out.status.success() && text.contains(wanted),
        };
        if !met {
            failures += 1;
            println!(
                "  error: expected {expect:?}, got exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    failures
}

fn describe_ping(r: &PingResult) -> String {
    let rtt = r
        .rtt_ms
        .map_or_else(String::new, |rtt| format!(", rtt avg {:.3} ms", rtt.avg));
    let verdict = if r.all_received() { "ok" } else { "LOSS" };
    format!("{}/{} replies{rtt}  {verdict}", r.received, r.sent)
}

fn up(args: &LabArgs, no_engine: bool, seconds: Option<u64>) -> Result<()> {
    let lab = build(args)?;
    if lab.spec().mode == Forwarding::Engine && !no_engine {
        start_engine(&lab, args)?;
    }
    let pod = lab.pod(1)?;
    println!(
        "\nlab is up. Try:\n  nsenter --net=/run/netns/{} ping {}\n  nsenter --net=/run/netns/{} bash",
        pod.netns,
        lab.pods().last().map_or(pod.ipv4, |p| p.ipv4),
        lab.node_netns()
    );
    match seconds {
        Some(s) => println!("tearing down in {s} s (or on Ctrl-C)"),
        None => println!("Ctrl-C tears it down"),
    }
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    while deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.teardown()?;
    println!("lab {} removed", lab.prefix());
    Ok(())
}

fn bench_forward(args: ForwardArgs) -> Result<()> {
    let config = ForwardConfig {
        trials: args.trials,
        seconds: args.seconds,
        warmup_seconds: args.warmup,
        size: args.size,
        flows: args.flows,
        variants: args.variants,
        engine: args.engine,
        engine_core: args.engine_core,
        engine_args: args.engine_args,
        generator: args.generator,
        pktgen: args.pktgen,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = forward::run(&config, command)?;
    forward::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

fn bench_scenarios(args: ScenariosArgs) -> Result<()> {
    let iptables = match args.iptables.as_str() {
        "nft" => Loader::IptablesNft,
        "legacy" => Loader::IptablesLegacy,
        other => bail!("--iptables {other:?}: nft or legacy"),
    };
    let mut config = ScenariosConfig {
        trials: args.trials,
        seconds: args.seconds,
        warmup_seconds: args.warmup,
        flows: args.flows,
        crr_parallel: args.crr_parallel,
        scenarios: args.scenarios,
        variants: args.variants,
        iptables,
        engine: args.engine,
        connrate: args.connrate,
        engine_args: args.engine_args,
        mtu: args.mtu,
    };
    if args.quick {
        config = config.quick();
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = scenarios::run(&config, command)?;
    scenarios::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

fn bench_services(args: ServicesArgs) -> Result<()> {
    let iptables = match args.iptables.as_str() {
        "nft" => Loader::IptablesNft,
        "legacy" => Loader::IptablesLegacy,
        other => bail!("--iptables {other:?}: nft or legacy"),
    };
    let mut config = ServicesConfig {
        sizes: args.sizes,
        dataplanes: args.dataplanes,
        trials: args.trials,
        seconds: args.seconds,
        parallel: args.parallel,
        probes: args.probes,
        iptables,
        iptables_load_timeout_seconds: args.iptables_load_timeout,
        engine_start_timeout_seconds: args.engine_start_timeout,
        engine: args.engine,
        connrate: args.connrate,
        engine_args: args.engine_args,
    };
    if args.quick {
        config = config.quick();
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = services::run(&config, command)?;
    services::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

fn bench_policy(args: PolicyArgs) -> Result<()> {
    let mut config = PolicyBenchConfig {
        sizes: args.rules,
        identities: args.identities,
        trials: args.trials,
        seconds: args.seconds,
        parallel: args.parallel,
        probes: args.probes,
        compile_runs: args.compile_runs,
        engine_start_timeout_seconds: args.engine_start_timeout,
        engine: args.engine,
        connrate: args.connrate,
        engine_args: args.engine_args,
    };
    if args.quick {
        config = config.quick();
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = policy::run(&config, command)?;
    policy::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

fn bench_sync(args: SyncArgs) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if args.services {
        let config = sync::ServicesSyncConfig {
            sizes: args.sizes,
            trials: args.trials,
            edits: args.edits,
            poll_ms: args.poll_ms,
        };
        let report = sync::run_services(&config, command)?;
        println!("{}", sync::services_markdown_table(&report.summary));
        return finish_report(
            &report,
            args.json.as_deref(),
            report.trials.len(),
            report.failed.len(),
        );
    }
    let config = SyncConfig {
        sizes: args.sizes,
        trials: args.trials,
        edits: args.edits,
        namespaces: args.namespaces,
        poll_ms: args.poll_ms,
    };
    let report = sync::run(&config, command)?;
    sync::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

fn bench_flows(args: FlowsArgs) -> Result<()> {
    let mut config = FlowsConfig {
        trials: args.trials,
        seconds: args.seconds,
        warmup_seconds: args.warmup,
        size: args.size,
        flows: args.flows,
        ct_capacity: args.ct_capacity,
        events_queue_size: args.events_queue_size,
        engine: args.engine,
        engine_core: args.engine_core,
        engine_args: args.engine_args,
        pktgen: args.pktgen,
        consumer: args.consumer,
    };
    if args.quick {
        config = config.quick();
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = flows::run(&config, command)?;
    flows::print_report(&report);
    finish_report(
        &report,
        args.json.as_deref(),
        report.trials.len(),
        report.failed.len(),
    )
}

/// Writes a benchmark report as JSON when asked, and fails the run when no trial
/// succeeded or any failed.
fn finish_report(
    report: &impl serde::Serialize,
    json: Option<&std::path::Path>,
    succeeded: usize,
    failed: usize,
) -> Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    if succeeded == 0 {
        bail!("no trial succeeded");
    }
    if failed > 0 {
        bail!("{failed} trial(s) failed");
    }
    Ok(())
}

fn clean(all: bool) -> Result<()> {
    let scope = if all {
        CleanupScope::All
    } else {
        CleanupScope::Stale
    };
    let report = cleanup(scope)?;
    println!(
        "removed {} namespace(s){}{}",
        report.namespaces.len(),
        if report.namespaces.is_empty() {
            ""
        } else {
            ": "
        },
        report.namespaces.join(" ")
    );
    if !report.run_dirs.is_empty() {
        println!("removed run dir(s): {}", report.run_dirs.join(" "));
    }
    Ok(())
}

fn leak(pods: usize) -> Result<()> {
    let lab = Lab::new(LabSpec::kernel(pods))?;
    lab.spawn(1, "sleeper", &["sleep", "300"])
        .context("starting a process in the leaked lab")?;
    println!("{}", lab.prefix());
    std::mem::forget(lab);
    std::process::exit(0);
}

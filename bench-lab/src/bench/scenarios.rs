//! `sluice-lab bench scenarios`: pod-to-pod scenarios beyond 64-byte UDP packets per second,
//! over the kernel baselines and the engine, trials interleaved per scenario.
//!
//! Scenarios (pod 1 -> pod 2 in a fresh two-pod lab per trial):
//!
//! - `udp64`: 64-byte UDP frames (trafgen, as `bench forward`), delivered packets per second.
//! - `udp1500`: 1518-byte frames (1514 on the veth), delivered Gbit/s and packets per second.
//! - `tcp-stream`: one iperf3 TCP stream: Gbit/s received and retransmits.
//! - `tcp-rr`: sockperf ping-pong over TCP (`sockperf pp --tcp --full-rtt`, 14-byte
//!   messages, one outstanding): round-trip time p50 and p99, transactions per second.
//! - `tcp-crr`: new TCP connections per second with `sluice-connrate` (connect, 1-byte
//!   request, 1-byte response, close; `--crr-parallel` loops).
//!
//! Variants: V0 kernel routing, V0-ct (kernel routing with an nftables `ct state` forward
//! chain, so nf_conntrack tracks every flow), V1 XDP devmap (UDP only), V2 sluice-engine with
//! one busy worker on core 1, V2x2 with two busy workers on cores 0 and 1 (veth queues 2;
//! shares cores with the generator on this 2-core machine), and for the TCP scenarios V3 /
//! V3n: kube-proxy's iptables / nftables rule shape for 1k or 10k services in the node
//! namespace, traffic to the last service's ClusterIP, DNATed to pod 2 by the node kernel.
//! The engine has no service translation yet (issue 5): a V2 ClusterIP row is printed as
//! "n/a (services issue)".
//!
//! Every program of a trial runs on CPU 0 (`taskset -c 0`): trafgen, iperf3, sockperf and
//! sluice-connrate, client and server. CPU is whole-machine busy time from /proc/stat over
//! the measured window, divided by the scenario's unit (see [`Scenario::cpu_unit`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use sluice_xdp::{AttachMode, DevmapRedirect, Sink};

use super::forward::{self, engine_window, median, parse_trafgen, ForwardConfig};
use super::labkit::{find_tool, link_counts, link_mac, require, wait_for_ports, within_netns};
use super::machine::{loadavg, loadavg_1min, process_ticks, ticks_per_second, CpuTimes, Machine};
use super::rules::{self, cluster_ip, Loader, RulesLoad, SERVICE_PORT, TARGET_PORT};
use crate::command::{ip, run_ok, SETUP_TIMEOUT};
use crate::{parse_iperf3, EngineOptions, Lab, LabSpec, GATEWAY_MAC};

/// Every generator and server runs here (`taskset -c`).
pub const APP_CPU: usize = 0;
/// The one worker of V2.
pub const ENGINE_CORE: usize = 1;
const FROM_POD: usize = 1;
const TO_POD: usize = 2;
/// `$SLUICE_CONNRATE` overrides where sluice-connrate is looked for.
pub const CONNRATE_ENV: &str = "SLUICE_CONNRATE";
pub const CONNRATE_BIN: &str = "sluice-connrate";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Udp64,
    Udp1500,
    TcpStream,
    TcpRr,
    TcpCrr,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Udp64,
        Scenario::Udp1500,
        Scenario::TcpStream,
        Scenario::TcpRr,
        Scenario::TcpCrr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Udp64 => "udp64",
            Scenario::Udp1500 => "udp1500",
            Scenario::TcpStream => "tcp-stream",
            Scenario::TcpRr => "tcp-rr",
            Scenario::TcpCrr => "tcp-crr",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::Udp64 => "64-byte UDP, delivered packets per second (trafgen)",
            Scenario::Udp1500 => "1518-byte UDP (1514 on the veth), throughput (trafgen)",
            Scenario::TcpStream => "one TCP stream (iperf3)",
            Scenario::TcpRr => {
                "TCP request/response round-trip time (sockperf ping-pong, 14-byte messages)"
            }
            Scenario::TcpCrr => {
                "new TCP connections per second (sluice-connrate: connect, 1 B request, 1 B \
                 response, close)"
            }
        }
    }

    pub fn is_udp(self) -> bool {
        matches!(self, Scenario::Udp64 | Scenario::Udp1500)
    }

    /// Frame size for trafgen, FCS included.
    fn frame_size(self) -> usize {
        if self == Scenario::Udp64 {
            64
        } else {
            1518
        }
    }

    /// The metric the ratio column is about, and whether higher is better.
    pub fn primary(self) -> (&'static str, bool) {
        match self {
            Scenario::Udp64 => ("delivered_pps", true),
            Scenario::Udp1500 => ("delivered_gbps", true),
            Scenario::TcpStream => ("gbps", true),
            Scenario::TcpRr => ("rtt_p50_us", false),
            Scenario::TcpCrr => ("connections_per_second", true),
        }
    }

    /// What the CPU column divides by.
    pub fn cpu_unit(self) -> &'static str {
        match self {
            Scenario::Udp64 | Scenario::Udp1500 => "CPU s per M delivered packets",
            Scenario::TcpStream => "CPU s per GB received",
            Scenario::TcpRr => "CPU s per M transactions",
            Scenario::TcpCrr => "CPU s per M connections",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text.trim())
            .ok_or_else(|| {
                anyhow!("unknown scenario {text:?} (udp64, udp1500, tcp-stream, tcp-rr, tcp-crr)")
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Kernel,
    KernelCt,
    Devmap,
    Engine,
    Engine2,
    Ipt1k,
    Ipt10k,
    Nft1k,
    Nft10k,
}

impl Variant {
    pub const ALL: [Variant; 9] = [
        Variant::Kernel,
        Variant::KernelCt,
        Variant::Devmap,
        Variant::Engine,
        Variant::Engine2,
        Variant::Ipt1k,
        Variant::Ipt10k,
        Variant::Nft1k,
        Variant::Nft10k,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel",
            Variant::KernelCt => "kernel-ct",
            Variant::Devmap => "devmap",
            Variant::Engine => "engine",
            Variant::Engine2 => "engine2",
            Variant::Ipt1k => "ipt-1k",
            Variant::Ipt10k => "ipt-10k",
            Variant::Nft1k => "nft-1k",
            Variant::Nft10k => "nft-10k",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::Kernel => "V0",
            Variant::KernelCt => "V0-ct",
            Variant::Devmap => "V1",
            Variant::Engine => "V2",
            Variant::Engine2 => "V2x2",
            Variant::Ipt1k | Variant::Ipt10k => "V3",
            Variant::Nft1k | Variant::Nft10k => "V3n",
        }
    }

    pub fn describe(self, iptables: Loader) -> String {
        let ipt = match iptables {
            Loader::IptablesLegacy => "iptables-legacy",
            _ => "iptables-nft",
        };
        match self {
            Variant::Kernel => "V0 node kernel routing, pod1 -> pod2 IP".into(),
            Variant::KernelCt => {
                "V0-ct kernel routing + conntrack (nft `ct state` forward chain)".into()
            }
            Variant::Devmap => "V1 XDP devmap redirect lxc1->lxc2".into(),
            Variant::Engine => "V2 sluice-engine, 1 busy worker (core 1), pod2 IP".into(),
            Variant::Engine2 => {
                "V2x2 sluice-engine, 2 busy workers (cores 0,1; shares cores with the generator; UDP: \
                 trafgen on 2 CPUs)"
                    .into()
            }
            Variant::Ipt1k | Variant::Ipt10k => format!(
                "V3 kube-proxy iptables ({ipt}), {} services, last ClusterIP",
                self.services_label()
            ),
            Variant::Nft1k | Variant::Nft10k => format!(
                "V3n kube-proxy nftables (vmap), {} services, last ClusterIP",
                self.services_label()
            ),
        }
    }

    fn services_label(self) -> &'static str {
        match self.services() {
            Some(1_000) => "1k",
            Some(10_000) => "10k",
            _ => "",
        }
    }

    /// Services of the V3/V3n rule sets.
    pub fn services(self) -> Option<usize> {
        match self {
            Variant::Ipt1k | Variant::Nft1k => Some(1_000),
            Variant::Ipt10k | Variant::Nft10k => Some(10_000),
            _ => None,
        }
    }

    fn is_engine(self) -> bool {
        matches!(self, Variant::Engine | Variant::Engine2)
    }

    /// Whether the traffic goes to a ClusterIP (DNAT in the node kernel).
    fn via_cluster_ip(self) -> bool {
        self.services().is_some()
    }

    /// Whether this variant runs in `scenario`.
    pub fn applies(self, scenario: Scenario) -> bool {
        if scenario.is_udp() {
            !self.via_cluster_ip()
        } else {
            self != Variant::Devmap
        }
    }

    fn queues(self) -> u32 {
        if self == Variant::Engine2 {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == text.trim())
            .ok_or_else(|| {
                anyhow!(
                    "unknown variant {text:?} (kernel, kernel-ct, devmap, engine, engine2, \
                     ipt-1k, ipt-10k, nft-1k, nft-10k)"
                )
            })
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenariosConfig {
    pub trials: u32,
    /// Measured window (UDP) or client run time (TCP).
    pub seconds: u32,
    /// UDP: traffic before the window.
    pub warmup_seconds: f64,
    /// UDP flows (source ports 10000..).
    pub flows: u32,
    /// Concurrent loops of the connection-rate client.
    pub crr_parallel: usize,
    pub scenarios: Vec<Scenario>,
    pub variants: Vec<Variant>,
    /// iptables flavour of V3.
    pub iptables: Loader,
    pub engine: Option<PathBuf>,
    pub connrate: Option<PathBuf>,
    pub engine_args: Vec<String>,
    /// MTU of the pod interfaces in every variant (and of the engine's node state).
    pub mtu: u32,
}

impl Default for ScenariosConfig {
    fn default() -> ScenariosConfig {
        ScenariosConfig {
            trials: 3,
            seconds: 5,
            warmup_seconds: 1.0,
            flows: 16,
            crr_parallel: 4,
            scenarios: Scenario::ALL.to_vec(),
            variants: Variant::ALL.to_vec(),
            iptables: Loader::IptablesNft,
            engine: None,
            connrate: None,
            engine_args: Vec::new(),
            mtu: sluice_tables::DEFAULT_MTU,
        }
    }
}

impl ScenariosConfig {
    /// `--quick`: one trial of 2 s.
    pub fn quick(mut self) -> ScenariosConfig {
        self.trials = 1;
        self.seconds = 2;
        self.warmup_seconds = 0.5;
        self
    }

    pub fn validate(&self) -> Result<()> {
        ensure!((1..=20).contains(&self.trials), "--trials must be 1 to 20");
        ensure!(
            (1..=60).contains(&self.seconds),
            "--seconds must be 1 to 60"
        );
        ensure!(
            (0.0..=10.0).contains(&self.warmup_seconds),
            "--warmup must be 0 to 10 s"
        );
        ensure!(
            (1..=1000).contains(&self.flows),
            "--flows must be 1 to 1000"
        );
        ensure!(
            (1..=32).contains(&self.crr_parallel),
            "--crr-parallel must be 1 to 32"
        );
        ensure!(
            !self.pairs().is_empty(),
            "no scenario/variant pair to run (V1 is UDP only, V3/V3n TCP only)"
        );
        ensure!(
            !matches!(self.iptables, Loader::Nft),
            "V3 loads with iptables-nft-restore or iptables-legacy-restore"
        );
        Ok(())
    }

    /// (scenario, variants that apply), in run order.
    pub fn pairs(&self) -> Vec<(Scenario, Vec<Variant>)> {
        self.scenarios
            .iter()
            .map(|&s| {
                (
                    s,
                    self.variants
                        .iter()
                        .copied()
                        .filter(|v| v.applies(s))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// A generous bound on one trial (setup, rules, run, teardown).
    pub fn trial_bound(&self, scenario: Scenario, variant: Variant) -> f64 {
        let rules = match variant {
            Variant::Nft10k => 120.0,
            Variant::Ipt10k => 20.0,
            Variant::Ipt1k | Variant::Nft1k => 5.0,
            _ => 0.0,
        };
        let run = if scenario.is_udp() {
            self.warmup_seconds + f64::from(self.seconds) + 1.0 + 8.0
        } else {
            f64::from(self.seconds) + 20.0
        };
        30.0 + rules + run
    }

    /// What a trial usually takes (for the upfront estimate).
    pub fn trial_estimate(&self, scenario: Scenario, variant: Variant) -> f64 {
        let rules = match variant {
            Variant::Nft10k => 40.0,
            Variant::Ipt10k => 4.0,
            Variant::Ipt1k | Variant::Nft1k => 0.5,
            _ => 0.0,
        };
        let run = if scenario.is_udp() {
            self.warmup_seconds + f64::from(self.seconds) + 1.0
        } else {
            f64::from(self.seconds) + 1.5
        };
        4.0 + rules + run
    }
}

/// The engine's counters over a trial.
#[derive(Debug, Clone, Serialize)]
pub struct EngineTrial {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: BTreeMap<String, u64>,
    /// Packets each worker received (which queues the traffic used).
    pub per_worker_rx: Vec<u64>,
    pub cpu_seconds: Option<f64>,
}

/// One trial of one variant in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub scenario: Scenario,
    pub variant: Variant,
    pub round: u32,
    pub lab: String,
    /// Seconds the CPU and rate window lasted.
    pub window_seconds: f64,
    /// Everything measured; the scenario's primary metric is among them.
    pub metrics: BTreeMap<String, f64>,
    pub cpu_busy_seconds: BTreeMap<usize, f64>,
    pub cpu_busy_total: f64,
    /// Units (packets, GB, transactions, connections) the CPU time is divided by.
    pub cpu_units: f64,
    /// `cpu_busy_total / cpu_units` (per million units; per GB for the stream).
    pub cpu_per_unit: Option<f64>,
    pub engine: Option<EngineTrial>,
    pub rules: Option<RulesLoad>,
    pub setup_seconds: f64,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub scenario: Scenario,
    pub variant: Variant,
    pub round: u32,
    pub error: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn stat(values: &[f64]) -> Option<Stat> {
    (!values.is_empty()).then(|| Stat {
        median: median(values),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// One row of a scenario's table.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub variant: Variant,
    pub description: String,
    pub trials: usize,
    pub failed: usize,
    pub metrics: BTreeMap<String, Stat>,
    /// Median over V0's median of the same scenario, per metric.
    pub ratio_to_v0: BTreeMap<String, f64>,
    pub cpu_per_unit_median: Option<f64>,
    pub engine_drops: BTreeMap<String, u64>,
    /// Median share of the engine's packets that worker 0 received (V2x2: queue spread).
    pub worker0_share_median: Option<f64>,
    pub rules_load_seconds_median: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub command: String,
    pub unix_time: u64,
    pub config: ScenariosConfig,
    pub machine: Machine,
    pub sockperf: String,
    pub iperf3: String,
    pub pinning: String,
    pub cpu_accounting: &'static str,
    pub trials: Vec<Trial>,
    pub failed: Vec<FailedTrial>,
    pub summary: Vec<Summary>,
}

const CPU_ACCOUNTING: &str =
    "whole machine, all CPUs: /proc/stat user+nice+system+irq+softirq+steal \
     ticks over the window (UDP: the measured window; TCP: the client's whole run), summed over \
     CPUs, divided by the scenario's unit: delivered packets (UDP), GB received (stream), \
     transactions (RR), completed connections (CRR). Includes generators, servers, softirq \
     work, the engine's busy-polling cores and anything else running";

pub fn summarize(
    config: &ScenariosConfig,
    trials: &[Trial],
    failed: &[FailedTrial],
) -> Vec<Summary> {
    let mut rows = Vec::new();
    for (scenario, variants) in config.pairs() {
        let first = rows.len();
        for variant in variants {
            let mine: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.scenario == scenario && t.variant == variant)
                .collect();
            let mut keys: Vec<&String> = mine.iter().flat_map(|t| t.metrics.keys()).collect();
            keys.sort();
            keys.dedup();
            let metrics = keys
                .into_iter()
                .filter_map(|k| {
                    let values: Vec<f64> = mine
                        .iter()
                        .filter_map(|t| t.metrics.get(k).copied())
                        .filter(|x| x.is_finite())
                        .collect();
                    Some((k.clone(), stat(&values)?))
                })
                .collect();
            let cpu: Vec<f64> = mine.iter().filter_map(|t| t.cpu_per_unit).collect();
            let mut engine_drops = BTreeMap::new();
            for t in &mine {
                for (name, n) in t.engine.iter().flat_map(|e| e.drops.iter()) {
                    *engine_drops.entry(name.clone()).or_insert(0) += n;
                }
            }
            let shares: Vec<f64> = mine
                .iter()
                .filter_map(|t| {
                    let e = t.engine.as_ref()?;
                    let total: u64 = e.per_worker_rx.iter().sum();
                    (e.per_worker_rx.len() > 1 && total > 0)
                        .then(|| e.per_worker_rx[0] as f64 / total as f64)
                })
                .collect();
            let loads: Vec<f64> = mine
                .iter()
                .filter_map(|t| Some(t.rules.as_ref()?.load_seconds))
                .collect();
            rows.push(Summary {
                scenario,
                variant,
                description: variant.describe(config.iptables),
                trials: mine.len(),
                failed: failed
                    .iter()
                    .filter(|f| f.scenario == scenario && f.variant == variant)
                    .count(),
                metrics,
                ratio_to_v0: BTreeMap::new(),
                cpu_per_unit_median: (!cpu.is_empty()).then(|| median(&cpu)),
                engine_drops,
                worker0_share_median: (!shares.is_empty()).then(|| median(&shares)),
                rules_load_seconds_median: (!loads.is_empty()).then(|| median(&loads)),
            });
        }
        let base: BTreeMap<String, f64> = rows[first..]
            .iter()
            .find(|r| r.variant == Variant::Kernel && r.trials > 0)
            .map(|r| {
                r.metrics
                    .iter()
                    .map(|(k, s)| (k.clone(), s.median))
                    .collect()
            })
            .unwrap_or_default();
        for row in &mut rows[first..] {
            row.ratio_to_v0 = row
                .metrics
                .iter()
                .filter_map(|(k, s)| {
                    let b = *base.get(k)?;
                    (b != 0.0 && b.is_finite()).then(|| (k.clone(), s.median / b))
                })
                .collect();
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------
// Trials

/// Builds the variant's lab, runs one scenario trial, tears down (also on failure).
fn run_trial(
    config: &ScenariosConfig,
    scenario: Scenario,
    variant: Variant,
    round: u32,
) -> Result<Trial> {
    let started = Instant::now();
    let spec = if variant == Variant::Devmap {
        // Its own XDP programs on the veths: no engine, no agent.
        LabSpec::engine(2).with_static_pods()
    } else if variant.is_engine() {
        LabSpec::engine(2)
    } else {
        LabSpec::kernel(2)
    }
    .with_queues(variant.queues())
    .with_mtu(config.mtu);
    let lab = Lab::new(spec)?;
    let result = prepare(config, variant, &lab).and_then(|rules| {
        let setup_seconds = started.elapsed().as_secs_f64();
        let mut trial = if scenario.is_udp() {
            udp_trial(config, scenario, variant, round, &lab)
        } else {
            tcp_trial(config, scenario, variant, round, &lab)
        }?;
        trial.rules = rules;
        trial.setup_seconds = setup_seconds;
        Ok(trial)
    });
    // The Sink/devmap guards are gone by now; the namespaces (and their rules) go here.
    let teardown = lab.teardown();
    let trial = result?;
    teardown?;
    Ok(trial)
}

/// Rules and engine of a variant.
fn prepare(config: &ScenariosConfig, variant: Variant, lab: &Lab) -> Result<Option<RulesLoad>> {
    let pod2 = lab.pod(TO_POD)?.ipv4;
    let rules = match variant {
        Variant::KernelCt => Some(rules::load(
            lab,
            "conntrack",
            Loader::Nft,
            0,
            &rules::conntrack_rules(),
        )?),
        Variant::Ipt1k | Variant::Ipt10k => {
            let n = variant.services().unwrap_or(0);
            Some(rules::load(
                lab,
                &format!("kube-proxy-iptables-{n}"),
                config.iptables,
                n,
                &rules::kube_proxy_iptables(n, pod2),
            )?)
        }
        Variant::Nft1k | Variant::Nft10k => {
            let n = variant.services().unwrap_or(0);
            Some(rules::load(
                lab,
                &format!("kube-proxy-nftables-{n}"),
                Loader::Nft,
                n,
                &rules::kube_proxy_nftables(n, pod2),
            )?)
        }
        _ => None,
    };
    if variant.is_engine() {
        let (workers, cores) = if variant == Variant::Engine2 {
            (2, format!("{APP_CPU},{ENGINE_CORE}"))
        } else {
            (1, ENGINE_CORE.to_string())
        };
        let mut extra = vec![
            "--mode".to_string(),
            "busy".to_string(),
            "--cores".to_string(),
            cores,
        ];
        extra.extend(config.engine_args.iter().cloned());
        lab.start_engine(&EngineOptions {
            binary: config.engine.clone(),
            workers: Some(workers),
            extra_args: extra,
            ..EngineOptions::default()
        })?;
        wait_for_ports(lab, 2)?;
    }
    Ok(rules)
}

fn engine_snapshot(lab: &Lab) -> Option<(serde_json::Value, Option<u64>)> {
    lab.engine_pid()?;
    let stats = lab.engine_stats().ok()?;
    let ticks = stats["engine"]["pid"]
        .as_u64()
        .and_then(|pid| process_ticks(u32::try_from(pid).ok()?));
    Some((stats, ticks))
}

fn engine_trial(
    before: Option<(serde_json::Value, Option<u64>)>,
    after: Option<(serde_json::Value, Option<u64>)>,
) -> Option<EngineTrial> {
    let (b, bt) = before?;
    let (a, at) = after?;
    let w = engine_window(&b, &a);
    let per_worker = |v: &serde_json::Value| -> Vec<u64> {
        v["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| w["rx_packets"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (pb, pa) = (per_worker(&b), per_worker(&a));
    Some(EngineTrial {
        rx_packets: w.rx_packets,
        tx_packets: w.tx_packets,
        drops: w.drops,
        per_worker_rx: pa
            .iter()
            .enumerate()
            .map(|(i, x)| x.saturating_sub(pb.get(i).copied().unwrap_or(0)))
            .collect(),
        cpu_seconds: match (bt, at) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / ticks_per_second()),
            _ => None,
        },
    })
}

fn udp_trial(
    config: &ScenariosConfig,
    scenario: Scenario,
    variant: Variant,
    round: u32,
    lab: &Lab,
) -> Result<Trial> {
    let node = lab.node_netns().to_string();
    let from = lab.pod(FROM_POD)?.clone();
    let to = lab.pod(TO_POD)?.clone();
    let dst_mac = if matches!(variant, Variant::Kernel | Variant::KernelCt) {
        // The sink drops ARP as well: the node learns pod 2's MAC here, not by asking.
        let mac = to.mac.to_string();
        let addr = to.ipv4.to_string();
        #[rustfmt::skip]
        run_ok(&mut ip(&[
            "-n", &node, "neigh", "replace", &addr, "lladdr", &mac,
            "dev", &to.node_ifname, "nud", "permanent",
        ]), SETUP_TIMEOUT)?;
        link_mac(&node, &from.node_ifname)?
    } else {
        GATEWAY_MAC
    };
    let devmap = if variant == Variant::Devmap {
        let (a, b) = (from.node_ifname.clone(), to.node_ifname.clone());
        Some(within_netns(&node, move || {
            DevmapRedirect::attach(&a, &b, AttachMode::Native)
                .with_context(|| format!("devmap redirect {a} -> {b}"))
        })?)
    } else {
        None
    };
    let sink = within_netns(&to.netns, || {
        Sink::attach("eth0", AttachMode::Native).context("sink on pod 2's eth0")
    })?;

    let fconfig = ForwardConfig {
        size: scenario.frame_size(),
        flows: config.flows,
        ..ForwardConfig::default()
    };
    let conf_path = lab
        .run_dir()
        .join(format!("trafgen-{scenario}-{variant}-r{round}.cfg"));
    fs::write(
        &conf_path,
        forward::trafgen_config(&fconfig, dst_mac, from.mac, from.ipv4, to.ipv4),
    )
    .with_context(|| format!("writing {}", conf_path.display()))?;
    let conf = conf_path.display().to_string();
    let run_seconds = config.warmup_seconds + f64::from(config.seconds) + 1.0;
    let run_for = format!("{run_seconds:.1}");
    let cpu = APP_CPU.to_string();
    let log = format!("trafgen-{scenario}-{variant}-r{round}");
    // V2x2: a packet socket picks its tx queue from the sending CPU (cpu % queues), not from
    // the flow, so one trafgen CPU would feed queue 0 only. Two trafgen processes (CPUs 0 and
    // 1, pinned by trafgen itself) feed both queues and both workers.
    let two = variant == Variant::Engine2;
    let mut args = vec!["timeout", "-s", "INT", "-k", "3", &run_for];
    if !two {
        args.extend(["taskset", "-c", &cpu]);
    }
    #[rustfmt::skip]
    args.extend([
        "trafgen", "--dev", "eth0", "--conf", &conf, "--cpus", if two { "2" } else { "1" },
        "--no-sock-mem", "--notouch-irq",
    ]);
    let pid = lab.spawn(FROM_POD, &log, &args)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(config.warmup_seconds));
    ensure!(
        lab.process_running(pid)?,
        "trafgen exited during the warm-up\n{}",
        lab.log_tail(&log, 10)
    );
    let snap = |lab: &Lab| -> Result<_> {
        let tx = link_counts(&from.netns, "eth0", "tx")?;
        let cpu = CpuTimes::read()?;
        let sink = sink.counts().context("reading the sink's counts")?;
        let at = Instant::now();
        Ok((at, tx, cpu, sink, engine_snapshot(lab)))
    };
    let a = snap(lab)?;
    let end = a.0 + Duration::from_secs(u64::from(config.seconds));
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let b = snap(lab)?;
    ensure!(
        lab.process_running(pid)?,
        "trafgen exited before the window ended\n{}",
        lab.log_tail(&log, 10)
    );
    let bound = Duration::from_secs_f64(run_seconds + 6.0);
    if lab
        .wait_process(pid, bound.saturating_sub(started.elapsed()))?
        .is_none()
    {
        lab.stop_process(pid)?;
        bail!("trafgen did not stop within {bound:?}");
    }
    drop(sink);
    drop(devmap);

    let stdout =
        fs::read_to_string(lab.run_dir().join(format!("{log}.stdout.log"))).unwrap_or_default();
    let trafgen = parse_trafgen(&stdout);
    let window = b.0.duration_since(a.0).as_secs_f64();
    let delivered = b.3 .0.wrapping_sub(a.3 .0);
    let delivered_bytes = b.3 .1.wrapping_sub(a.3 .1);
    let offered = (b.1 .0 + b.1 .1).saturating_sub(a.1 .0 + a.1 .1);
    let busy = b.2.busy_since(&a.2, ticks_per_second());
    let busy_total: f64 = busy.values().sum();
    let mut metrics = BTreeMap::new();
    metrics.insert("delivered_pps".into(), delivered as f64 / window);
    metrics.insert(
        "delivered_gbps".into(),
        delivered_bytes as f64 * 8.0 / window / 1e9,
    );
    metrics.insert("offered_pps".into(), offered as f64 / window);
    metrics.insert(
        "loss".into(),
        if offered > 0 {
            (1.0 - delivered as f64 / offered as f64).max(0.0)
        } else {
            1.0
        },
    );
    if delivered > 0 {
        metrics.insert(
            "delivered_frame_bytes".into(),
            delivered_bytes as f64 / delivered as f64,
        );
    }
    if let Some(t) = trafgen {
        if let Some(s) = t.seconds.filter(|s| *s > 0.0) {
            metrics.insert("trafgen_pps".into(), t.packets as f64 / s);
        }
    }
    let units = delivered as f64 / 1e6;
    Ok(Trial {
        scenario,
        variant,
        round,
        lab: lab.prefix().to_string(),
        window_seconds: window,
        metrics,
        cpu_busy_seconds: busy,
        cpu_busy_total: busy_total,
        cpu_units: units,
        cpu_per_unit: (units > 0.0).then(|| busy_total / units),
        engine: engine_trial(a.4, b.4),
        rules: None,
        setup_seconds: 0.0,
        loadavg: loadavg(),
    })
}

/// Waits until something listens on TCP `port` in pod `pod` (at most 5 s).
fn wait_listening(lab: &Lab, pod: usize, port: u16, pid: u32, log: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!("sport = :{port}");
    loop {
        let out = lab.exec(pod, &["ss", "-H", "-l", "-t", "-n", &filter])?;
        if !out.stdout.trim().is_empty() {
            return Ok(());
        }
        if !lab.process_running(pid)? {
            bail!("server in pod {pod} exited\n{}", lab.log_tail(log, 10));
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} in pod {pod} after 5 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Strips ANSI colour escapes (sockperf colours some lines).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What `sockperf pp --full-rtt` printed.
#[derive(Debug, Clone, PartialEq)]
pub struct SockperfResult {
    /// "[Valid Duration]" run time and received messages (the percentiles' population).
    pub valid_seconds: f64,
    pub valid_received: u64,
    /// "[Total Run]" received messages, warm-up included.
    pub total_received: u64,
    pub total_seconds: f64,
    pub avg_rtt_us: Option<f64>,
    /// percentile -> microseconds, e.g. 50.0, 99.0, 99.9.
    pub percentiles: BTreeMap<String, f64>,
}

fn field<T: FromStr>(line: &str, key: &str) -> Option<T> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses sockperf's ping-pong summary.
pub fn parse_sockperf(output: &str) -> Result<SockperfResult> {
    let text = strip_ansi(output);
    let valid = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .ok_or_else(|| anyhow!("no [Valid Duration] line in sockperf's output"))?;
    let total = text
        .lines()
        .find(|l| l.contains("[Total Run]"))
        .ok_or_else(|| anyhow!("no [Total Run] line in sockperf's output"))?;
    let mut percentiles = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.split("---> percentile").nth(1) {
            if let Some((p, v)) = rest.split_once('=') {
                if let (Ok(p), Ok(v)) = (p.trim().parse::<f64>(), v.trim().parse::<f64>()) {
                    percentiles.insert(format!("{p}"), v);
                }
            }
        }
    }
    ensure!(
        percentiles.contains_key("50") && percentiles.contains_key("99"),
        "no p50/p99 in sockperf's output"
    );
    Ok(SockperfResult {
        valid_seconds: field(valid, "RunTime=").ok_or_else(|| anyhow!("no RunTime: {valid}"))?,
        valid_received: field(valid, "ReceivedMessages=")
            .ok_or_else(|| anyhow!("no ReceivedMessages: {valid}"))?,
        total_received: field(total, "ReceivedMessages=")
            .ok_or_else(|| anyhow!("no ReceivedMessages: {total}"))?,
        total_seconds: field(total, "RunTime=").unwrap_or(0.0),
        avg_rtt_us: text.lines().find_map(|l| field::<f64>(l, "avg-rtt=")),
        percentiles,
    })
}

fn tcp_trial(
    config: &ScenariosConfig,
    scenario: Scenario,
    variant: Variant,
    round: u32,
    lab: &Lab,
) -> Result<Trial> {
    let to = lab.pod(TO_POD)?.clone();
    let (target, port): (Ipv4Addr, u16) = if variant.via_cluster_ip() {
        let n = variant.services().unwrap_or(1);
        (cluster_ip(n - 1), SERVICE_PORT)
    } else {
        (to.ipv4, TARGET_PORT)
    };
    let (target_s, port_s, listen_port) = (
        target.to_string(),
        port.to_string(),
        TARGET_PORT.to_string(),
    );
    let pod2_ip = to.ipv4.to_string();
    let cpu = APP_CPU.to_string();
    let secs = config.seconds.to_string();
    let client_timeout = Duration::from_secs(u64::from(config.seconds) + 20);
    let log = format!("server-{scenario}-{variant}-r{round}");
    let connrate = match scenario {
        Scenario::TcpCrr => Some(match &config.connrate {
            Some(p) => p.display().to_string(),
            None => find_tool(CONNRATE_BIN, CONNRATE_ENV)?.display().to_string(),
        }),
        _ => None,
    };
    let server_args: Vec<String> = match scenario {
        Scenario::TcpStream => [
            "taskset",
            "-c",
            &cpu,
            "iperf3",
            "-s",
            "-1",
            "-p",
            &listen_port,
        ]
        .map(String::from)
        .to_vec(),
        Scenario::TcpRr => [
            "taskset",
            "-c",
            &cpu,
            "sockperf",
            "sr",
            "--tcp",
            "-i",
            &pod2_ip,
            "-p",
            &listen_port,
        ]
        .map(String::from)
        .to_vec(),
        Scenario::TcpCrr => {
            // Fresh source ports for every connection: the whole range in pod 1's namespace.
            let out = lab.exec(
                FROM_POD,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv4.ip_local_port_range=1024 65535",
                ],
            )?;
            ensure!(out.success(), "sysctl in pod 1: {}", out.stderr.trim());
            let listen = format!("{pod2_ip}:{TARGET_PORT}");
            let life = (config.seconds + 15).to_string();
            [
                "taskset",
                "-c",
                &cpu,
                connrate.as_deref().unwrap_or(CONNRATE_BIN),
                "server",
                "--listen",
                &listen,
                "--seconds",
                &life,
            ]
            .map(String::from)
            .to_vec()
        }
        _ => bail!("{scenario} is not a TCP scenario"),
    };
    let server_refs: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = lab.spawn(TO_POD, &log, &server_refs)?;
    wait_listening(lab, TO_POD, TARGET_PORT, server, &log)?;

    let connect = format!("{target}:{port}");
    let parallel = config.crr_parallel.to_string();
    let client_args: Vec<&str> = match scenario {
        Scenario::TcpStream => vec![
            "taskset",
            "-c",
            &cpu,
            "iperf3",
            "-c",
            &target_s,
            "-p",
            &port_s,
            "-t",
            &secs,
            "--json",
            "--connect-timeout",
            "3000",
        ],
        Scenario::TcpRr => vec![
            "taskset",
            "-c",
            &cpu,
            "sockperf",
            "pp",
            "--tcp",
            "-i",
            &target_s,
            "-p",
            &port_s,
            "-t",
            &secs,
            "--full-rtt",
        ],
        _ => vec![
            "taskset",
            "-c",
            &cpu,
            connrate.as_deref().unwrap_or(CONNRATE_BIN),
            "client",
            "--connect",
            &connect,
            "--seconds",
            &secs,
            "--parallel",
            &parallel,
        ],
    };
    let e0 = engine_snapshot(lab);
    let c0 = CpuTimes::read()?;
    let t0 = Instant::now();
    let out = lab.exec_timeout(FROM_POD, &client_args, client_timeout)?;
    let window = t0.elapsed().as_secs_f64();
    let c1 = CpuTimes::read()?;
    let e1 = engine_snapshot(lab);
    if lab.process_running(server).unwrap_or(false) {
        let _ = lab.stop_process(server);
    }
    let busy = c1.busy_since(&c0, ticks_per_second());
    let busy_total: f64 = busy.values().sum();
    let fail = |what: &str| {
        anyhow!(
            "{what} ({}): {}\n{}\n{}",
            out.status,
            out.stderr.trim(),
            out.stdout.chars().take(2000).collect::<String>(),
            lab.log_tail(&log, 10)
        )
    };
    let mut metrics = BTreeMap::new();
    let units = match scenario {
        Scenario::TcpStream => {
            let r = parse_iperf3(&out.stdout).map_err(|e| fail(&format!("iperf3: {e:#}")))?;
            metrics.insert("gbps".into(), r.received_bits_per_second / 1e9);
            metrics.insert("sent_gbps".into(), r.sent_bits_per_second / 1e9);
            if let Some(n) = r.retransmits {
                metrics.insert("retransmits".into(), n as f64);
            }
            // GB received over the client's run.
            r.received_bits_per_second * r.seconds / 8.0 / 1e9
        }
        Scenario::TcpRr => {
            let r = parse_sockperf(&out.stdout).map_err(|e| fail(&format!("sockperf: {e:#}")))?;
            for (p, key) in [
                ("50", "rtt_p50_us"),
                ("99", "rtt_p99_us"),
                ("99.9", "rtt_p999_us"),
            ] {
                if let Some(v) = r.percentiles.get(p) {
                    metrics.insert(key.into(), *v);
                }
            }
            if let Some(avg) = r.avg_rtt_us {
                metrics.insert("rtt_avg_us".into(), avg);
            }
            if r.valid_seconds > 0.0 {
                metrics.insert(
                    "transactions_per_second".into(),
                    r.valid_received as f64 / r.valid_seconds,
                );
            }
            r.total_received as f64 / 1e6
        }
        _ => {
            ensure!(out.success(), "{}", fail("sluice-connrate client failed"));
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
                .map_err(|e| fail(&format!("sluice-connrate output: {e}")))?;
            let conns = v["connections"].as_u64().unwrap_or(0);
            metrics.insert(
                "connections_per_second".into(),
                v["connections_per_second"].as_f64().unwrap_or(0.0),
            );
            metrics.insert("errors".into(), v["errors"].as_f64().unwrap_or(0.0));
            for key in ["conn_us_p50", "conn_us_p99"] {
                if let Some(x) = v[key].as_f64() {
                    metrics.insert(key.into(), x);
                }
            }
            conns as f64 / 1e6
        }
    };
    Ok(Trial {
        scenario,
        variant,
        round,
        lab: lab.prefix().to_string(),
        window_seconds: window,
        metrics,
        cpu_busy_seconds: busy,
        cpu_busy_total: busy_total,
        cpu_units: units,
        cpu_per_unit: (units > 0.0).then(|| busy_total / units),
        engine: engine_trial(e0, e1),
        rules: None,
        setup_seconds: 0.0,
        loadavg: loadavg(),
    })
}

// ---------------------------------------------------------------------------------------
// Running and reporting

fn version_line(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = strip_ansi(&format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "not found".to_string())
}

fn describe_trial(t: &Trial) -> String {
    let (key, _) = t.scenario.primary();
    let mut line = format!(
        "{key} {}",
        t.metrics
            .get(key)
            .map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"))
    );
    for (k, v) in &t.metrics {
        if k != key {
            line.push_str(&format!(", {k} {v:.4}"));
        }
    }
    line.push_str(&format!(
        "; CPU {:.2} s busy = {} ({})",
        t.cpu_busy_total,
        t.cpu_per_unit
            .map_or_else(|| "n/a".to_string(), |x| format!("{x:.3}")),
        t.scenario.cpu_unit()
    ));
    if let Some(r) = &t.rules {
        line.push_str(&format!(
            "; rules {} ({} lines) loaded in {:.2} s",
            r.what, r.lines, r.load_seconds
        ));
    }
    if let Some(e) = &t.engine {
        line.push_str(&format!(
            "\n      engine rx {} tx {} per-worker rx {:?} drops {:?}",
            e.rx_packets, e.tx_packets, e.per_worker_rx, e.drops
        ));
    }
    line
}

pub fn run(config: &ScenariosConfig, command: String) -> Result<Report> {
    config.validate()?;
    let pairs = config.pairs();
    let any = |f: &dyn Fn(Scenario, Variant) -> bool| {
        pairs.iter().any(|(s, vs)| vs.iter().any(|&v| f(*s, v)))
    };
    if any(&|s, _| s.is_udp()) {
        require("trafgen", "netsniff-ng")?;
    }
    if any(&|s, _| s == Scenario::TcpStream) {
        require("iperf3", "iperf3")?;
    }
    if any(&|s, _| s == Scenario::TcpRr) {
        require("sockperf", "sockperf")?;
    }
    if any(&|s, _| s == Scenario::TcpCrr) && config.connrate.is_none() {
        find_tool(CONNRATE_BIN, CONNRATE_ENV)?;
    }
    if any(&|_, v| matches!(v, Variant::KernelCt | Variant::Nft1k | Variant::Nft10k)) {
        require("nft", "nftables")?;
    }
    if any(&|_, v| matches!(v, Variant::Ipt1k | Variant::Ipt10k)) {
        require(config.iptables.program(), "iptables")?;
    }
    if any(&|_, v| v.is_engine()) && config.engine.is_none() {
        crate::find_engine()?;
    }
    let mut machine = Machine::probe();
    let estimate: f64 = pairs
        .iter()
        .flat_map(|(s, vs)| vs.iter().map(move |&v| config.trial_estimate(*s, v)))
        .sum::<f64>()
        * f64::from(config.trials);
    let bound: f64 = pairs
        .iter()
        .flat_map(|(s, vs)| vs.iter().map(move |&v| config.trial_bound(*s, v)))
        .sum::<f64>()
        * f64::from(config.trials);
    println!(
        "bench scenarios: {} round(s) of {} trial(s), {} s per client run / window; \
         expected about {:.0} s ({:.1} min), at most {:.0} s",
        config.trials,
        pairs.iter().map(|(_, v)| v.len()).sum::<usize>(),
        config.seconds,
        estimate,
        estimate / 60.0,
        bound
    );
    for (s, vs) in &pairs {
        println!(
            "  {:<10} {}",
            s.name(),
            vs.iter().map(|v| v.name()).collect::<Vec<_>>().join(" ")
        );
    }
    println!(
        "machine: {} ({} CPUs), kernel {}, load {}",
        machine.cpu_model, machine.cpus, machine.kernel, machine.loadavg_start
    );
    if loadavg_1min(&machine.loadavg_start).is_some_and(|l| l > 0.5) {
        println!("warning: the machine is not idle (1-min load average above 0.5)");
    }
    let mut trials = Vec::new();
    let mut failed = Vec::new();
    for (scenario, variants) in &pairs {
        println!("\n{scenario}: {}", scenario.title());
        for round in 1..=config.trials {
            for &variant in variants {
                print!("  round {round} {:<10} ", variant.name());
                let _ = std::io::Write::flush(&mut std::io::stdout());
                match run_trial(config, *scenario, variant, round) {
                    Ok(trial) => {
                        println!("{}", describe_trial(&trial));
                        trials.push(trial);
                    }
                    Err(err) => {
                        println!("FAILED: {err:#}");
                        failed.push(FailedTrial {
                            scenario: *scenario,
                            variant,
                            round,
                            error: format!("{err:#}"),
                        });
                    }
                }
            }
        }
    }
    machine.loadavg_end = Some(loadavg());
    let summary = summarize(config, &trials, &failed);
    Ok(Report {
        benchmark: "scenarios",
        command,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: config.clone(),
        machine,
        sockperf: version_line("sockperf", "--version"),
        iperf3: version_line("iperf3", "--version"),
        pinning: format!(
            "every generator, client and server on CPU {APP_CPU} (taskset -c {APP_CPU}; trafgen \
             --cpus 1); V2: one busy worker on core {ENGINE_CORE}; V2x2: busy workers on cores \
             {APP_CPU},{ENGINE_CORE} (worker 0 shares CPU {APP_CPU} with the generator); kernel \
             softirq work runs where the sending CPU raises it"
        ),
        cpu_accounting: CPU_ACCOUNTING,
        trials,
        failed,
        summary,
    })
}

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".to_string()
    }
}

fn mmm(row: &Summary, key: &str, scale: f64, digits: usize) -> String {
    row.metrics.get(key).map_or_else(
        || "n/a".to_string(),
        |s| {
            format!(
                "{} ({}–{})",
                num(s.median * scale, digits),
                num(s.min * scale, digits),
                num(s.max * scale, digits)
            )
        },
    )
}

fn med(row: &Summary, key: &str, scale: f64, digits: usize) -> String {
    row.metrics
        .get(key)
        .map_or_else(|| "n/a".to_string(), |s| num(s.median * scale, digits))
}

fn ratio(row: &Summary, key: &str) -> String {
    row.ratio_to_v0
        .get(key)
        .map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}×"))
}

fn trials_cell(row: &Summary) -> String {
    if row.failed > 0 {
        format!("{} ({} failed)", row.trials, row.failed)
    } else {
        row.trials.to_string()
    }
}

/// One scenario's rows as a Markdown table.
pub fn markdown_table(scenario: Scenario, rows: &[&Summary]) -> String {
    let cpu_head = scenario.cpu_unit();
    let (head, sep) = match scenario {
        Scenario::Udp64 => (
            format!("| variant | delivered Mpps, median (min–max) | ratio to V0 | offered Mpps | loss | {cpu_head} | trials |"),
            "| --- | --- | --- | --- | --- | --- | --- |",
        ),
        Scenario::Udp1500 => (
            format!("| variant | delivered Gbit/s, median (min–max) | ratio to V0 | delivered Mpps | loss | {cpu_head} | trials |"),
            "| --- | --- | --- | --- | --- | --- | --- |",
        ),
        Scenario::TcpStream => (
            format!("| variant | Gbit/s, median (min–max) | ratio to V0 | retransmits (median) | {cpu_head} | trials |"),
            "| --- | --- | --- | --- | --- | --- |",
        ),
        Scenario::TcpRr => (
            format!("| variant | RTT p50 µs, median (min–max) | p50 ratio to V0 | RTT p99 µs, median (min–max) | p99 ratio to V0 | transactions/s | {cpu_head} | trials |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ),
        Scenario::TcpCrr => (
            format!("| variant | connections/s, median (min–max) | ratio to V0 | per-connection p99 µs | errors | {cpu_head} | trials |"),
            "| --- | --- | --- | --- | --- | --- | --- |",
        ),
    };
    let mut text = format!("{head}\n{sep}\n");
    let cpu = |r: &Summary| {
        r.cpu_per_unit_median.map_or_else(
            || "n/a".to_string(),
            |x| num(x, if x < 10.0 { 3 } else { 1 }),
        )
    };
    let mut v2_done = false;
    for r in rows {
        let line = match scenario {
            Scenario::Udp64 => format!(
                "| {} | {} | {} | {} | {}% | {} | {} |",
                r.description,
                mmm(r, "delivered_pps", 1e-6, 3),
                ratio(r, "delivered_pps"),
                med(r, "offered_pps", 1e-6, 3),
                med(r, "loss", 100.0, 1),
                cpu(r),
                trials_cell(r)
            ),
            Scenario::Udp1500 => format!(
                "| {} | {} | {} | {} | {}% | {} | {} |",
                r.description,
                mmm(r, "delivered_gbps", 1.0, 2),
                ratio(r, "delivered_gbps"),
                med(r, "delivered_pps", 1e-6, 3),
                med(r, "loss", 100.0, 1),
                cpu(r),
                trials_cell(r)
            ),
            Scenario::TcpStream => format!(
                "| {} | {} | {} | {} | {} | {} |",
                r.description,
                mmm(r, "gbps", 1.0, 2),
                ratio(r, "gbps"),
                med(r, "retransmits", 1.0, 0),
                cpu(r),
                trials_cell(r)
            ),
            Scenario::TcpRr => format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.description,
                mmm(r, "rtt_p50_us", 1.0, 1),
                ratio(r, "rtt_p50_us"),
                mmm(r, "rtt_p99_us", 1.0, 1),
                ratio(r, "rtt_p99_us"),
                med(r, "transactions_per_second", 1.0, 0),
                cpu(r),
                trials_cell(r)
            ),
            Scenario::TcpCrr => format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.description,
                mmm(r, "connections_per_second", 1.0, 0),
                ratio(r, "connections_per_second"),
                med(r, "conn_us_p99", 1.0, 0),
                med(r, "errors", 1.0, 0),
                cpu(r),
                trials_cell(r)
            ),
        };
        text.push_str(&line);
        text.push('\n');
        // The engine has no ClusterIP translation yet: its V3-equivalent row is a gap.
        if !scenario.is_udp() && r.variant.is_engine() && !v2_done {
            v2_done = true;
            let cols = sep.matches("---").count();
            text.push_str("| V2 sluice-engine, pod1 -> ClusterIP |");
            for _ in 1..cols {
                text.push_str(" n/a (services issue) |");
            }
            text.push('\n');
        }
    }
    text
}

pub fn print_report(report: &Report) {
    println!(
        "\n{} trial(s) x {} s per scenario; load average {} at start, {} at end\n",
        report.config.trials,
        report.config.seconds,
        report.machine.loadavg_start,
        report.machine.loadavg_end.as_deref().unwrap_or("?")
    );
    for (scenario, _) in report.config.pairs() {
        let rows: Vec<&Summary> = report
            .summary
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        println!("#### {scenario}: {}\n", scenario.title());
        print!("{}", markdown_table(scenario, &rows));
        let mut notes = Vec::new();
        for r in &rows {
            if let Some(share) = r.worker0_share_median {
                notes.push(format!(
                    "{}: worker 0 received {:.0}% of the engine's packets",
                    r.variant.label(),
                    share * 100.0
                ));
            }
            if !r.engine_drops.is_empty() {
                notes.push(format!("{} drops: {:?}", r.variant.name(), r.engine_drops));
            }
            if let Some(s) = r.rules_load_seconds_median {
                notes.push(format!(
                    "{} rules loaded in {s:.2} s (median)",
                    r.variant.name()
                ));
            }
        }
        if !notes.is_empty() {
            println!("\n{}", notes.join("; "));
        }
        println!();
    }
    println!(
        "machine: {}, {} CPUs, kernel {}, {}, {}, {}\npinning: {}\nCPU: {}\ncommand: {}",
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.kernel,
        report.machine.trafgen,
        report.sockperf,
        report.iperf3,
        report.pinning,
        report.cpu_accounting,
        report.command
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKPERF: &str = "sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; \
        SentMessages=56993; ReceivedMessages=56992\n\
        sockperf: ========= Printing statistics for Server No: 0\n\
        sockperf: [Valid Duration] RunTime=1.552 sec; SentMessages=56574; ReceivedMessages=56574\n\
        sockperf: \u{1b}[2;35m====> avg-rtt=27.383 (std-dev=139.337)\u{1b}[0m\n\
        sockperf: ---> <MAX> observation = 12109.527\n\
        sockperf: ---> percentile 99.999 = 12086.822\n\
        sockperf: ---> percentile 99.900 =  218.976\n\
        sockperf: ---> percentile 99.000 =   55.683\n\
        sockperf: ---> percentile 50.000 =   20.017\n\
        sockperf: ---> <MIN> observation =   18.003\n";

    #[test]
    fn sockperf_summary_parses() {
        let r = parse_sockperf(SOCKPERF).unwrap();
        assert_eq!(r.valid_received, 56574);
        assert_eq!(r.total_received, 56992);
        assert!((r.valid_seconds - 1.552).abs() < 1e-9);
        assert_eq!(r.avg_rtt_us, Some(27.383));
        assert_eq!(r.percentiles["50"], 20.017);
        assert_eq!(r.percentiles["99"], 55.683);
        assert_eq!(r.percentiles["99.9"], 218.976);
        assert!(parse_sockperf("sockperf: error").is_err());
    }

    #[test]
    fn names_round_trip_and_applicability() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
        }
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
        }
        assert!(Variant::Devmap.applies(Scenario::Udp1500));
        assert!(!Variant::Devmap.applies(Scenario::TcpRr));
        assert!(!Variant::Nft10k.applies(Scenario::Udp64));
        assert!(Variant::Nft10k.applies(Scenario::TcpCrr));
        let pairs = ScenariosConfig::default().pairs();
        assert_eq!(pairs.len(), 5);
        assert_eq!(pairs[0].1.len(), 5);
        assert_eq!(pairs[2].1.len(), 8);
    }

    fn trial(scenario: Scenario, variant: Variant, key: &str, v: f64) -> Trial {
        Trial {
            scenario,
            variant,
            round: 1,
            lab: String::new(),
            window_seconds: 1.0,
            metrics: [(key.to_string(), v)].into_iter().collect(),
            cpu_busy_seconds: BTreeMap::new(),
            cpu_busy_total: 1.0,
            cpu_units: 1.0,
            cpu_per_unit: Some(1.0),
            engine: None,
            rules: None,
            setup_seconds: 0.0,
            loadavg: String::new(),
        }
    }

    #[test]
    fn ratios_are_per_scenario_and_the_engine_service_gap_is_shown() {
        let config = ScenariosConfig {
            scenarios: vec![Scenario::TcpRr, Scenario::TcpCrr],
            variants: vec![Variant::Kernel, Variant::Engine, Variant::Ipt1k],
            ..ScenariosConfig::default()
        };
        let trials = [
            trial(Scenario::TcpRr, Variant::Kernel, "rtt_p50_us", 20.0),
            trial(Scenario::TcpRr, Variant::Kernel, "rtt_p50_us", 40.0),
            trial(Scenario::TcpRr, Variant::Engine, "rtt_p50_us", 15.0),
            trial(
                Scenario::TcpCrr,
                Variant::Kernel,
                "connections_per_second",
                1000.0,
            ),
            trial(
                Scenario::TcpCrr,
                Variant::Ipt1k,
                "connections_per_second",
                500.0,
            ),
        ];
        let rows = summarize(&config, &trials, &[]);
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0].metrics["rtt_p50_us"].median, 30.0);
        assert_eq!(rows[1].ratio_to_v0["rtt_p50_us"], 0.5);
        assert_eq!(rows[2].trials, 0);
        assert_eq!(rows[5].ratio_to_v0["connections_per_second"], 0.5);
        let rr: Vec<&Summary> = rows
            .iter()
            .filter(|r| r.scenario == Scenario::TcpRr)
            .collect();
        let table = markdown_table(Scenario::TcpRr, &rr);
        assert!(table.contains("| 30.0 (20.0–40.0) | 1.00× |"), "{table}");
        assert!(
            table.contains("ClusterIP | n/a (services issue) |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + 3 + 1);
    }

    #[test]
    fn quick_is_short_and_valid() {
        let q = ScenariosConfig::default().quick();
        assert_eq!((q.trials, q.seconds), (1, 2));
        assert!(q.validate().is_ok());
        let none = ScenariosConfig {
            scenarios: vec![Scenario::Udp64],
            variants: vec![Variant::Ipt1k],
            ..ScenariosConfig::default()
        };
        assert!(none.validate().is_err());
    }
}

//! A policy lab (the upstream model's 9 pods, netexec answering on 80 and 81
//! TCP and UDP in each, optionally the outside namespace) and the replay of
//! case files in it: apply, delete, relabel, then probe every pair and
//! compare with the expected matrices, retrying once like upstream's
//! ValidateOrFail.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sluice_lab::policy::{initial_manifests, ProbeProtocol, ProbeTarget};
use sluice_lab::services::{Place, Reply};
use sluice_lab::{Lab, LabSpec};

use super::case::{object_key, substitute, Case, Direction, External, PortProtocol, Probe, Step};
use super::model::{Model, PORTS};
use super::reachability::{Comparison, TruthTable};

/// The manifest file holding the policies a case created.
pub const POLICIES_FILE: &str = "policies.yaml";
/// The outside server's name (what it answers to `hostname`).
pub const OUTSIDE_NAME: &str = "outside";

/// How a policy lab is built.
#[derive(Debug, Clone, Default)]
pub struct PolicyLabOptions {
    /// The outside namespace (`LabSpec::with_outside`), running netexec too.
    pub outside: bool,
    /// Extra outside addresses (with prefix length) for CIDR rules.
    pub outside_addresses: Vec<(IpAddr, u8)>,
}

/// A lab of the upstream model, the policies in effect and the labels now.
#[derive(Debug)]
pub struct PolicyLab {
    pub lab: Lab,
    /// The labels now in the agent's manifests.
    pub model: Model,
    /// Policies in `policies.yaml`, by `Kind ns/name`.
    policies: BTreeMap<String, Value>,
    /// The flags the agent runs with beyond the lab's own; `None` when a
    /// restart failed half way (the next case restarts it).
    agent_args: Option<Vec<String>>,
    /// Per-probe deadline on the first try ([`PROBE_TIMEOUT`]); the retry
    /// gets twice as long.
    pub probe_timeout: Duration,
}

/// Upstream's ignoreLoopback: a pod's probe of itself never fails a case.
const IGNORE_LOOPBACK: bool = true;
/// A probe's deadline on the first try: a lost TCP SYN is sent again after
/// 1 s, so this covers one loss; UDP probes resend every 0.5 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long a new lab may take until every pod reaches every other.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a restarted agent may take to bring the engine in sync.
const AGENT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

impl PolicyLab {
    pub fn start(options: &PolicyLabOptions) -> Result<PolicyLab> {
        let started = Instant::now();
        let model = Model::upstream();
        let spec = LabSpec::engine(model.pods.len()).with_outside(options.outside);
        let spec = initial_manifests(spec, &model.namespaces(), &model.policy_pods())?;
        let lab = Lab::new(spec).context(
            "lab up (build first: cargo build --release -p sluice-engine -p sluice-agent \
             -p sluice-cni -p sluice-cli; binaries are found beside the test binary or via $SLUICE_*)",
        )?;
        for (i, pod) in model.pod_names().iter().enumerate() {
            lab.start_netexec(Place::Pod(i + 1), pod, &PORTS, &PORTS)?;
        }
        if options.outside {
            for (addr, len) in &options.outside_addresses {
                lab.add_outside_address(*addr, *len)?;
            }
            lab.start_netexec(Place::Outside, OUTSIDE_NAME, &PORTS, &PORTS)?;
        }
        let lab = PolicyLab {
            lab,
            model,
            policies: BTreeMap::new(),
            agent_args: Some(Vec::new()),
            probe_timeout: PROBE_TIMEOUT,
        };
        lab.wait_all_reachable()?;
        log(&format!(
            "policy lab {} up in {:.1} s",
            lab.lab.prefix(),
            started.elapsed().as_secs_f64()
        ));
        Ok(lab)
    }

    /// The lab is ready when every pod reaches every other on 80/TCP: each
    /// pod has resolved its gateway and every server answers before a case
    /// counts a probe. Unreachable pairs are logged while waiting.
    fn wait_all_reachable(&self) -> Result<()> {
        let on = PortProtocol {
            protocol: ProbeProtocol::Tcp,
            port: PORTS[0],
        };
        let all = TruthTable::new(&self.model.pod_names(), true);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let (observed, replies) = self.probe_matrix(on, PROBE_TIMEOUT)?;
            let cmp = Comparison::new(&all, &observed, IGNORE_LOOPBACK);
            if cmp.wrong == 0 {
                return Ok(());
            }
            let cells = wrong_cells(&cmp, &replies);
            if Instant::now() >= deadline {
                bail!(
                    "pods still unreachable {READY_TIMEOUT:?} after the lab came up:{cells}\n{}",
                    self.engine_drops()
                );
            }
            log(&format!(
                "waiting for the lab's pods to reach each other:{cells}"
            ));
        }
    }

    /// Restarts the agent with `args` added to the lab's flags, unless it
    /// runs with them already, and waits until the engine has its state (the
    /// engine keeps forwarding on the last state meanwhile).
    pub fn use_agent_args(&mut self, args: &[String]) -> Result<()> {
        if self.agent_args.as_deref() == Some(args) {
            return Ok(());
        }
        let flags: Vec<&str> = args.iter().map(String::as_str).collect();
        self.agent_args = None;
        self.lab.stop_agent()?;
        self.lab.start_agent_with(&flags)?;
        self.lab.wait_in_sync(AGENT_SYNC_TIMEOUT)?;
        self.agent_args = Some(args.to_vec());
        Ok(())
    }

    /// Back to no policies and upstream's labels (only what differs is rewritten).
    pub fn reset(&mut self) -> Result<()> {
        if !self.policies.is_empty() {
            self.policies.clear();
            self.lab.remove_manifest(POLICIES_FILE)?;
        }
        self.set_model(Model::upstream())
    }

    fn set_model(&mut self, next: Model) -> Result<()> {
        if next.namespace_labels != self.model.namespace_labels {
            self.lab.write_namespaces(&next.namespaces())?;
            self.model.namespace_labels = next.namespace_labels.clone();
        }
        if next.pod_labels != self.model.pod_labels {
            self.lab.write_policy_pods(&next.policy_pods())?;
            self.model.pod_labels = next.pod_labels;
        }
        Ok(())
    }

    /// Creates or replaces `objects` (after `$ip()` substitution).
    pub fn apply(&mut self, objects: &[Value]) -> Result<()> {
        for object in objects {
            let object = substitute(object, &self.model)?;
            self.policies.insert(object_key(&object)?, object);
        }
        self.write_policies()
    }

    /// Deletes policies by `Kind ns/name`.
    pub fn delete(&mut self, keys: &[String]) -> Result<()> {
        for key in keys {
            let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
            if self.policies.remove(&key).is_none() {
                bail!(
                    "delete {key}: no such policy (have: {:?})",
                    self.policies.keys()
                );
            }
        }
        self.write_policies()
    }

    fn write_policies(&mut self) -> Result<()> {
        if self.policies.is_empty() {
            return self.lab.remove_manifest(POLICIES_FILE);
        }
        let docs: Vec<Value> = self.policies.values().cloned().collect();
        self.lab.apply_manifest(POLICIES_FILE, &docs)
    }

    /// Replays `case` from a reset lab; the first failing step ends it.
    pub fn run_case(&mut self, case: &Case) -> Result<()> {
        let started = Instant::now();
        self.reset().context("resetting the lab before the case")?;
        self.use_agent_args(&case.agent_args)
            .context("restarting the agent with the case's flags")?;
        let next = case.setup.applied_to(&self.model)?;
        self.set_model(next).context("setup")?;
        for (i, step) in case.steps.iter().enumerate() {
            let what = match &step.description {
                Some(d) => format!("{:?}, step {} ({d})", case.name, i + 1),
                None => format!("{:?}, step {}", case.name, i + 1),
            };
            if let Err(err) = self.run_step(step) {
                return Err(err.context(format!("{what}\n{}", self.engine_drops())));
            }
            log(&format!("ok: {what}"));
        }
        log(&format!(
            "case {:?} passed in {:.1} s",
            case.name,
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The engine's non-zero drop counters and policy drops, for failure reports.
    pub fn engine_drops(&self) -> String {
        match self.lab.engine_stats() {
            Ok(stats) => {
                let drops: Vec<String> = stats["drops"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| d["count"].as_u64().unwrap_or(0) > 0)
                    .map(|d| format!("{}={}", d["name"].as_str().unwrap_or("?"), d["count"]))
                    .collect();
                format!(
                    "engine drops: {}; policy drops: {}",
                    drops.join(" "),
                    stats["policy_drops"]
                )
            }
            Err(err) => format!("engine stats: {err:#}"),
        }
    }

    fn run_step(&mut self, step: &Step) -> Result<()> {
        if !step.apply.is_empty() {
            self.apply(&step.apply)?;
        }
        if !step.delete.is_empty() {
            self.delete(&step.delete)?;
        }
        if !step.relabel.is_empty() {
            let next = step.relabel.applied_to(&self.model)?;
            self.set_model(next)?;
        }
        self.validate(&step.probe, &step.external)
    }

    /// Probes everything `probes` and `externals` name and compares, with
    /// one retry of everything when anything differs (upstream's second try).
    pub fn validate(&self, probes: &[Probe], externals: &[External]) -> Result<()> {
        let mut failures = self.probe_and_compare(probes, externals, self.probe_timeout)?;
        if !failures.is_empty() {
            log(&format!(
                "{} probe set(s) differ on the first try, retrying:\n{}",
                failures.len(),
                failures.join("\n")
            ));
            failures = self.probe_and_compare(probes, externals, self.probe_timeout * 2)?;
        }
        if failures.is_empty() {
            return Ok(());
        }
        bail!("{}", failures.join("\n"))
    }

    /// Reports of the probe sets that differ from their expectation. Every
    /// probe of every set runs in one round (one probe program per source).
    fn probe_and_compare(
        &self,
        probes: &[Probe],
        externals: &[External],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let pods = self.model.pod_names();
        let n = pods.len();
        let mut plan = Vec::new();
        let mut matrices = Vec::new();
        for probe in probes {
            let expected = probe.expected(&pods)?;
            for on in probe.targets()? {
                matrices.push((on, expected.clone(), plan.len()));
                plan.extend(matrix_plan(on, n));
            }
        }
        let mut rows = Vec::new();
        for external in externals {
            let expected = external.expected(&pods)?;
            for on in external.targets()? {
                rows.push((on, external, expected.clone(), plan.len()));
                plan.extend((1..=n).map(|pod| match external.direction {
                    Direction::Egress => Planned {
                        from: Place::Pod(pod),
                        bind: None,
                        target: target(on, external.address),
                    },
                    Direction::Ingress => Planned {
                        from: Place::Outside,
                        bind: Some(external.address),
                        target: target(on, sluice_lab::pod_ipv4(pod).into()),
                    },
                }));
            }
        }
        let replies = self.run_plan(&plan, timeout)?;
        let mut failures = Vec::new();
        for (on, expected, at) in matrices {
            let cells = &replies[at..at + n * n];
            let (observed, cells) = observed_matrix(on, &pods, cells);
            let cmp = Comparison::new(&expected, &observed, IGNORE_LOOPBACK);
            if cmp.wrong > 0 {
                failures.push(format!(
                    "probing {on}: {}wrong cells: {}",
                    cmp.report(),
                    wrong_cells(&cmp, &cells)
                ));
            }
        }
        for (on, external, expected, at) in rows {
            let wrong: Vec<String> = pods
                .iter()
                .zip(&expected)
                .zip(&replies[at..at + n])
                .filter(|((_, want), reply)| **want != reply.answer().is_some())
                .map(|((pod, want), reply)| {
                    let (from, to) = match external.direction {
                        Direction::Egress => (pod.clone(), external.address.to_string()),
                        Direction::Ingress => (external.address.to_string(), pod.clone()),
                    };
                    format!(
                        "{from} -> {to} {on}: expected {}, got {reply:?}",
                        verdict(*want)
                    )
                })
                .collect();
            if !wrong.is_empty() {
                failures.push(format!("probing {on} outside:\n  {}", wrong.join("\n  ")));
            }
        }
        Ok(failures)
    }

    /// Every pod to every pod on `on`, all sources at once; the observed
    /// table and each cell's reply (row = from, column = to).
    pub fn probe_matrix(
        &self,
        on: PortProtocol,
        timeout: Duration,
    ) -> Result<(TruthTable, Vec<Vec<Reply>>)> {
        let pods = self.model.pod_names();
        let replies = self.run_plan(&matrix_plan(on, pods.len()), timeout)?;
        Ok(observed_matrix(on, &pods, &replies))
    }

    /// Runs every planned probe: one probe program per source place and
    /// local address, all of them at once; the replies in plan order.
    fn run_plan(&self, plan: &[Planned], timeout: Duration) -> Result<Vec<Reply>> {
        // (source place, local address) -> the plan's indexes from there.
        type Source = (Place, Option<IpAddr>);
        let mut groups: Vec<(Source, Vec<usize>)> = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            match groups.iter_mut().find(|(key, _)| *key == (p.from, p.bind)) {
                Some((_, members)) => members.push(i),
                None => groups.push(((p.from, p.bind), vec![i])),
            }
        }
        let answers: Vec<Vec<Reply>> = std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .iter()
                .map(|((from, bind), members)| {
                    let targets: Vec<ProbeTarget> =
                        members.iter().map(|&i| plan[i].target).collect();
                    scope.spawn(move || self.lab.probe_all_from(*from, *bind, &targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a probe thread panicked"))
                .collect::<Result<_>>()
        })?;
        let mut replies = vec![Reply::Timeout; plan.len()];
        for ((_, members), answers) in groups.iter().zip(answers) {
            for (&i, reply) in members.iter().zip(answers) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }
}

/// One probe: from where, leaving from which local address, to what.
#[derive(Debug, Clone, Copy)]
struct Planned {
    from: Place,
    bind: Option<IpAddr>,
    target: ProbeTarget,
}

fn target(on: PortProtocol, addr: IpAddr) -> ProbeTarget {
    ProbeTarget {
        protocol: on.protocol,
        addr,
        port: on.port,
    }
}

/// Pod `from` to pod `to` for every pair, row by row.
fn matrix_plan(on: PortProtocol, n: usize) -> Vec<Planned> {
    let mut plan = Vec::with_capacity(n * n);
    for from in 1..=n {
        for to in 1..=n {
            plan.push(Planned {
                from: Place::Pod(from),
                bind: None,
                target: target(on, sluice_lab::pod_ipv4(to).into()),
            });
        }
    }
    plan
}

/// The observed table of a matrix's replies (row by row) and the replies
/// as rows.
fn observed_matrix(
    on: PortProtocol,
    pods: &[String],
    replies: &[Reply],
) -> (TruthTable, Vec<Vec<Reply>>) {
    let n = pods.len();
    let mut observed = TruthTable::new(pods, false);
    let rows: Vec<Vec<Reply>> = replies.chunks(n).map(<[Reply]>::to_vec).collect();
    for (f, row) in rows.iter().enumerate() {
        for (t, reply) in row.iter().enumerate() {
            observed.set(f, t, reached(on, reply, &pods[t]));
        }
    }
    (observed, rows)
}

/// Whether `reply` shows the connection reached `to` (TCP and UDP: answered
/// with its name; ICMP: an echo reply).
fn reached(on: PortProtocol, reply: &Reply, to: &str) -> bool {
    match (on.protocol, reply.answer()) {
        (ProbeProtocol::Icmp, Some(_)) => true,
        (_, Some(name)) => name == to,
        (_, None) => false,
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "reachable"
    } else {
        "blocked"
    }
}

/// The differing cells with what the probe got, one per line.
fn wrong_cells(cmp: &Comparison, replies: &[Vec<Reply>]) -> String {
    let pods = cmp.expected.pods();
    let mut lines = String::new();
    for f in 0..pods.len() {
        for t in 0..pods.len() {
            if !cmp.agree.get(f, t) {
                lines.push_str(&format!(
                    "\n  {} -> {}: expected {}, got {:?}",
                    pods[f],
                    pods[t],
                    verdict(cmp.expected.get(f, t)),
                    replies[f][t]
                ));
            }
        }
    }
    lines
}

/// Progress lines go straight to stderr (not through libtest's capture of
/// `eprintln!`), so a long lab run shows where it is.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

//! Shared pieces of the service lab tests (`tests/services.rs`,
//! `tests/services_e2e.rs`): the lab they start, repeated requests, and a
//! check collector so one broken feature does not hide the others checked in
//! the same lab.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Result};
use sluice_lab::command::is_root;
use sluice_lab::services::{Place, Reply};
use sluice_lab::{Lab, LabSpec};

pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "skipping {test}: lab tests need root");
    false
}

/// `pods` pods wired by sluice-cni and an outside namespace; the agent runs
/// with `agent_args` added (restarted when there are any).
pub fn service_lab(pods: usize, agent_args: &[&str]) -> Lab {
    let lab = Lab::new(LabSpec::engine(pods).with_outside(true)).expect(
        "lab up (build first: cargo build --release -p sluice-engine -p sluice-agent \
         -p sluice-cni -p sluice-cli; binaries are found beside the test binary or via $SLUICE_*)",
    );
    if !agent_args.is_empty() {
        lab.stop_agent().expect("stopping the agent");
        lab.start_agent_with(agent_args)
            .expect("agent restarts with the service flags");
        lab.wait_in_sync(Duration::from_secs(30))
            .expect("agent and engine in sync");
    }
    lab
}

/// `count` HTTP GETs of `path` from `from`; every one must be answered.
pub fn answers(
    lab: &Lab,
    from: Place,
    addr: IpAddr,
    port: u16,
    path: &str,
    count: usize,
) -> Result<Vec<String>> {
    let mut seen = Vec::with_capacity(count);
    for i in 0..count {
        match lab.http_get(from, addr, port, path)? {
            Reply::Answer(text) => seen.push(text),
            other => bail!(
                "request {} of {count} from {from} to {addr} port {port}{path}: {other:?} (answers so far: {seen:?})",
                i + 1
            ),
        }
    }
    Ok(seen)
}

/// The distinct `/hostname` answers of `count` requests.
pub fn hostnames(
    lab: &Lab,
    from: Place,
    addr: IpAddr,
    port: u16,
    count: usize,
) -> Result<BTreeSet<String>> {
    Ok(answers(lab, from, addr, port, "/hostname", count)?
        .into_iter()
        .collect())
}

/// Fails unless the answers were exactly `expected`.
pub fn expect_hosts(seen: &BTreeSet<String>, expected: &[&str], what: &str) -> Result<()> {
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    if *seen != want {
        bail!("{what}: answered by {seen:?}, expected exactly {want:?}");
    }
    Ok(())
}

/// Fails if `reply` is an answer (the service must not serve it).
pub fn expect_unanswered(reply: &Reply, what: &str) -> Result<()> {
    if let Reply::Answer(text) = reply {
        bail!("{what}: answered {text:?}, expected no answer");
    }
    Ok(())
}

/// Fails unless `reply` is [`Reply::Refused`].
pub fn expect_refused(reply: &Reply, what: &str) -> Result<()> {
    if *reply != Reply::Refused {
        bail!("{what}: got {reply:?}, expected connection refused / port unreachable");
    }
    Ok(())
}

/// Runs named checks against one lab and reports every failure at the end.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    pub fn run(&mut self, name: &str, check: impl FnOnce() -> Result<()>) {
        match check() {
            Ok(()) => eprintln!("ok: {name}"),
            Err(err) => {
                eprintln!("FAILED: {name}: {err:#}");
                self.failures.push(format!("{name}: {err:#}"));
            }
        }
    }

    /// Panics listing every failed check.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

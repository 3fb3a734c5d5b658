//! `sluice observe --server <hubble socket>` against the lab's agent, as a
//! person would run it: JSON output parsed line by line (Hubble's
//! `GetFlowsResponse` shape: `{"flow": {...}}` or `{"lost_events": {...}}`),
//! compact output as text; and polling, since flows reach the agent a
//! moment after the packets.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sluice_lab::binaries::{find_binary, CLI};
use sluice_lab::command::run;
use sluice_lab::Lab;

/// How long a flow may take from the packet to the agent's ring buffer.
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `sluice observe --server <hubble socket> <args>`; its stdout, or an
/// error with its exit status and stderr.
pub fn observe_text(lab: &Lab, args: &[&str]) -> Result<String> {
    let cli = find_binary(CLI)?;
    let out = run(
        Command::new(&cli)
            .arg("observe")
            .arg("--server")
            .arg(lab.hubble_socket())
            .args(args),
        Duration::from_secs(20),
    )?;
    if !out.success() {
        bail!(
            "`sluice observe {}` exited {}: {}",
            args.join(" "),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// `sluice observe ... -o json <args>`: the flows printed (lost-event lines
/// are checked for shape and skipped).
pub fn observe_json(lab: &Lab, args: &[&str]) -> Result<Vec<Value>> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let text = observe_text(lab, &all)?;
    let mut flows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let response: Value = serde_json::from_str(line)
            .with_context(|| format!("`sluice observe -o json` printed {line:?}"))?;
        if let Some(flow) = response.get("flow") {
            flows.push(flow.clone());
        } else if response.get("lost_events").is_none() {
            bail!("an observe line with neither flow nor lost_events: {line}");
        }
    }
    Ok(flows)
}

/// Polls [`observe_json`] with `args` until some flow satisfies `wanted`;
/// returns the flows of that poll. The error lists what was seen.
pub fn wait_for_flow(
    lab: &Lab,
    args: &[&str],
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        let flows = observe_json(lab, args)?;
        if flows.iter().any(&wanted) {
            return Ok(flows);
        }
        if Instant::now() >= deadline {
            bail!(
                "no flow {what} within {FLOW_TIMEOUT:?} from `sluice observe {}`; {} flows seen:\n{}",
                args.join(" "),
                flows.len(),
                summaries(&flows)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One line per flow, for failure messages (the last 40).
pub fn summaries(flows: &[Value]) -> String {
    let start = flows.len().saturating_sub(40);
    flows[start..]
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}:{} -> {}:{} {} {} {}",
                text(f, &["Type"]),
                text(f, &["verdict"]),
                text(f, &["drop_reason_desc"]),
                text(f, &["IP", "source"]),
                port(f, "source_port").unwrap_or(0),
                text(f, &["IP", "destination"]),
                port(f, "destination_port").unwrap_or(0),
                text(f, &["source", "pod_name"]),
                text(f, &["destination", "pod_name"]),
                text(f, &["trace_reason"]),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The string at `path` in `flow`, or "".
pub fn text<'a>(flow: &'a Value, path: &[&str]) -> &'a str {
    let mut at = flow;
    for key in path {
        at = &at[*key];
    }
    at.as_str().unwrap_or("")
}

/// The L4 port `field` (`source_port`, `destination_port`) of a TCP, UDP or
/// SCTP flow.
pub fn port(flow: &Value, field: &str) -> Option<u16> {
    ["TCP", "UDP", "SCTP"]
        .iter()
        .find_map(|proto| flow["l4"][*proto][field].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

/// The `name`s of the policies in `flow[field]` (`ingress_denied_by`, ...).
pub fn policy_names(flow: &Value, field: &str) -> Vec<String> {
    flow[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

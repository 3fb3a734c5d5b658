//! `sluice observe`: flows from the agent's Hubble socket (or a file of
//! saved `-o json` lines), with `hubble observe`'s flags and output formats.
//!
//! Filter flags are read in command-line order, because `--not` applies to
//! the flag after it; clap gives each occurrence's position, and
//! [`filters::build`] turns the ordered list into Hubble's whitelist and
//! blacklist. The request is checked here with the same
//! [`GetFlowsRequest::compile`] the agent runs, so a bad value fails before
//! anything is sent; with `--input-file` the compiled query is applied
//! locally.

mod filters;
mod print;
mod time;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use sluice_api::hubble::{
    format_time, Flow, GetFlowsRequest, GetFlowsResponse, OBSERVE_PROTOCOL_VERSION,
};

use print::{Format, Options, Printer};

/// Filter flags whose order matters, by clap id (= long name).
const FILTER_FLAGS: &[&str] = &[
    "not",
    "namespace",
    "all-namespaces",
    "pod",
    "from-pod",
    "to-pod",
    "label",
    "from-label",
    "to-label",
    "ip",
    "from-ip",
    "to-ip",
    "port",
    "from-port",
    "to-port",
    "protocol",
    "verdict",
    "drop-reason-desc",
    "type",
    "traffic-direction",
    "identity",
    "from-identity",
    "to-identity",
    "service",
    "from-service",
    "to-service",
    "node-name",
];

/// Observe flows of the agent's Hubble server (flags as `hubble observe`).
#[derive(Parser, Debug)]
#[command(name = "sluice observe")]
pub struct ObserveArgs {
    /// The agent's Hubble socket.
    #[arg(
        long,
        env = "SLUICE_HUBBLE_SOCKET",
        default_value = "/run/sluice/hubble.sock"
    )]
    server: PathBuf,
    /// Replay flows from a file of `-o json` lines (`-` for stdin) instead of the agent.
    #[arg(long = "input-file")]
    input_file: Option<String>,

    /// Get the last N flows (default 20 without --first, --all, --follow, --since, --until).
    #[arg(long)]
    last: Option<u64>,
    /// Get the first N flows.
    #[arg(long)]
    first: Option<u64>,
    /// Get all flows in the buffer.
    #[arg(long)]
    all: bool,
    /// Follow flows as they arrive.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Flows since a time: relative (3s, 5m, 1h30m) or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// Flows until a time: relative or RFC 3339.
    #[arg(long)]
    until: Option<String>,

    /// Reverses the next filter (sends it to the blacklist): --not --verdict DROPPED.
    #[arg(long, id = "not", num_args = 0, default_missing_value = "", action = clap::ArgAction::Append)]
    not: Vec<String>,
    /// Flows related to this Kubernetes namespace.
    #[arg(short = 'n', long, id = "namespace")]
    namespace: Vec<String>,
    /// Flows in any namespace.
    #[arg(short = 'A', long = "all-namespaces", id = "all-namespaces", num_args = 0, default_missing_value = "", action = clap::ArgAction::Append)]
    all_namespaces: Vec<String>,
    /// Flows related to pods with this name prefix ([namespace/]<pod-name>, default namespace `default`).
    #[arg(long, id = "pod")]
    pod: Vec<String>,
    #[arg(long = "from-pod", id = "from-pod")]
    from_pod: Vec<String>,
    #[arg(long = "to-pod", id = "to-pod")]
    to_pod: Vec<String>,
    /// Flows related to endpoints with these labels (key=value, k8s:key=value, reserved:world, selectors).
    #[arg(short = 'l', long, id = "label")]
    label: Vec<String>,
    #[arg(long = "from-label", id = "from-label")]
    from_label: Vec<String>,
    #[arg(long = "to-label", id = "to-label")]
    to_label: Vec<String>,
    /// Flows from or to this address or CIDR.
    #[arg(long, id = "ip")]
    ip: Vec<String>,
    #[arg(long = "from-ip", id = "from-ip")]
    from_ip: Vec<String>,
    #[arg(long = "to-ip", id = "to-ip")]
    to_ip: Vec<String>,
    /// Flows with this source or destination port.
    #[arg(long, id = "port")]
    port: Vec<String>,
    #[arg(long = "from-port", id = "from-port")]
    from_port: Vec<String>,
    #[arg(long = "to-port", id = "to-port")]
    to_port: Vec<String>,
    /// L4 or L7 protocol: tcp, udp, sctp, icmp, icmpv4, icmpv6, dns.
    #[arg(long, id = "protocol")]
    protocol: Vec<String>,
    /// FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED.
    #[arg(long, id = "verdict")]
    verdict: Vec<String>,
    /// Hubble drop reason name (POLICY_DENIED, POLICY_DENY, ...).
    #[arg(long = "drop-reason-desc", id = "drop-reason-desc")]
    drop_reason_desc: Vec<String>,
    /// Event type TYPE[:SUBTYPE]: drop, trace[:to-endpoint|from-endpoint|...], policy-verdict, l7.
    #[arg(short = 't', long = "type", id = "type")]
    event_type: Vec<String>,
    /// ingress or egress.
    #[arg(long = "traffic-direction", id = "traffic-direction")]
    traffic_direction: Vec<String>,
    /// Flows related to this security identity (number or reserved name).
    #[arg(long, id = "identity")]
    identity: Vec<String>,
    #[arg(long = "from-identity", id = "from-identity")]
    from_identity: Vec<String>,
    #[arg(long = "to-identity", id = "to-identity")]
    to_identity: Vec<String>,
    /// Flows from or to this service ([namespace/]<name>).
    #[arg(long, id = "service")]
    service: Vec<String>,
    #[arg(long = "from-service", id = "from-service")]
    from_service: Vec<String>,
    #[arg(long = "to-service", id = "to-service")]
    to_service: Vec<String>,
    /// Flows observed on these nodes (`*` wildcards).
    #[arg(long = "node-name", id = "node-name")]
    node_name: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Compact)]
    output: Format,
    /// Print the node name.
    #[arg(long = "print-node-name")]
    print_node_name: bool,
    /// Print the names of the policies that allowed or denied.
    #[arg(long = "print-policy-names")]
    print_policy_names: bool,
}

/// The filter flags in command-line order: `(flag, value)`.
fn ordered_filter_flags(matches: &ArgMatches) -> Vec<(String, String)> {
    let mut flags: Vec<(usize, String, String)> = Vec::new();
    for name in FILTER_FLAGS {
        if matches.value_source(name) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let Some(indices) = matches.indices_of(name) else {
            continue;
        };
        let values: Vec<String> = match matches.try_get_many::<String>(name) {
            Ok(Some(values)) => values.cloned().collect(),
            _ => Vec::new(),
        };
        for (i, index) in indices.enumerate() {
            let value = values.get(i).cloned().unwrap_or_default();
            flags.push((index, name.to_string(), value));
        }
    }
    flags.sort_by_key(|(index, _, _)| *index);
    flags.into_iter().map(|(_, n, v)| (n, v)).collect()
}

/// The request `hubble observe` would send for these flags (`now_ns` for
/// relative times).
pub fn request(
    args: &ObserveArgs,
    matches: &ArgMatches,
    now_ns: u64,
) -> Result<GetFlowsRequest, String> {
    if args.first.is_some() && args.last.is_some() {
        return Err("cannot set both --first and --last".into());
    }
    if args.first.is_some() && args.all {
        return Err("cannot set both --first and --all".into());
    }
    if args.first.is_some() && args.follow {
        return Err("cannot set both --first and --follow".into());
    }
    if args.last.is_some() && args.all {
        return Err("cannot set both --last and --all".into());
    }
    let since = args
        .since
        .as_deref()
        .map(|t| time::parse_time_flag("since", t, now_ns).map(format_time))
        .transpose()?;
    // As Hubble: --until does not apply to a followed stream.
    let until = match (&args.until, args.follow) {
        (Some(t), false) => Some(format_time(time::parse_time_flag("until", t, now_ns)?)),
        _ => None,
    };
    let number = match (args.first, args.last) {
        (Some(n), _) => n,
        (None, Some(n)) => n,
        // All: the whole buffer (0 in Sluice's protocol).
        (None, None) if args.all => 0,
        (None, None)
            if since.is_none() && until.is_none() && !args.follow && args.input_file.is_none() =>
        {
            20
        }
        (None, None) => 0,
    };
    let (whitelist, blacklist) = filters::build(&ordered_filter_flags(matches))?;
    let request = GetFlowsRequest {
        protocol: OBSERVE_PROTOCOL_VERSION,
        number,
        first: args.first.is_some(),
        follow: args.follow,
        since,
        until,
        whitelist,
        blacklist,
    };
    request.compile()?;
    Ok(request)
}

/// Parses `sluice observe` arguments (everything after `observe`).
fn parse(args: &[String]) -> Result<(ObserveArgs, ArgMatches), clap::Error> {
    let matches = ObserveArgs::command().try_get_matches_from(
        std::iter::once("sluice observe".to_string()).chain(args.iter().cloned()),
    )?;
    let parsed = ObserveArgs::from_arg_matches(&matches)?;
    Ok((parsed, matches))
}

/// One line of a saved file: a `GetFlowsResponse` (`-o json`) or a bare
/// flow (Hubble's legacy JSON).
/// One saved line: a GetFlowsResponse (`-o json`) or a bare Flow. A field of
/// the wrong shape is named by its path (`flow.l4.TCP.source_port: ...`).
fn parse_saved_line(line: &str) -> Result<GetFlowsResponse, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if value.get("flow").is_some() || value.get("lost_events").is_some() {
        return serde_path_to_error::deserialize(value)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()));
    }
    let flow: Flow = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("flow {}: {}", e.path(), e.inner()))?;
    Ok(GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time.clone(),
        flow: Some(flow),
        ..Default::default()
    })
}

/// Answers from a saved file, selected and filtered locally.
fn replay(path: &str, request: &GetFlowsRequest) -> anyhow::Result<Vec<GetFlowsResponse>> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("--input-file {path}"))?,
        ))
    };
    let mut responses = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("--input-file {path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let response = parse_saved_line(&line)
            .map_err(|e| anyhow::anyhow!("--input-file {path} line {}: {e}", n + 1))?;
        responses.push(response);
    }
    let query = request.compile().map_err(anyhow::Error::msg)?;
    Ok(query
        .select(&responses, |r| r.flow.as_ref())
        .into_iter()
        .cloned()
        .collect())
}

/// `sluice observe ARGS`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (args, matches) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    let request = request(&args, &matches, time::now_ns()).map_err(anyhow::Error::msg)?;
    let mut printer = Printer::new(Options {
        format: args.output,
        node_name: args.print_node_name,
        policy_names: args.print_policy_names,
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(path) = &args.input_file {
        for response in replay(path, &request)? {
            out.write_all(printer.write(&response).as_bytes())?;
        }
        out.write_all(printer.finish().as_bytes())?;
        return Ok(());
    }
    let mut stream = UnixStream::connect(&args.server).with_context(|| {
        format!(
            "connecting to the agent's Hubble socket {}",
            args.server.display()
        )
    })?;
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    for answer in BufReader::new(stream).lines() {
        let answer = answer.context("reading the agent's answer")?;
        let response: GetFlowsResponse = serde_json::from_str(&answer)
            .context("the agent's answer is not a GetFlowsResponse")?;
        if let Some(error) = &response.error {
            bail!("the agent refused the request: {error}");
        }
        out.write_all(printer.write(&response).as_bytes())?;
        if args.follow {
            // A followed table prints row by row.
            out.write_all(printer.finish().as_bytes())?;
            out.flush()?;
        }
    }
    out.write_all(printer.finish().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000_000_000;

    #[test]
    fn a_saved_line_of_the_wrong_shape_names_the_field() {
        let error = parse_saved_line(
            r#"{"flow": {"time": "t", "verdict": "DROPPED", "Type": "L3_L4", "l4": {"TCP": {"source_port": "x"}}}}"#,
        )
        .unwrap_err();
        assert!(error.starts_with("flow.l4.TCP.source_port: "), "{error}");
        let error =
            parse_saved_line(r#"{"time": 3, "verdict": "DROPPED", "Type": "L3_L4"}"#).unwrap_err();
        assert!(error.starts_with("flow time: "), "{error}");
        let saved = parse_saved_line(
            r#"{"time": "t", "verdict": "FORWARDED", "Type": "L3_L4", "node_name": "n1"}"#,
        )
        .unwrap();
        assert_eq!(saved.node_name, "n1");
        assert_eq!(saved.flow.unwrap().verdict, "FORWARDED");
    }

    fn request_for(args: &[&str]) -> Result<GetFlowsRequest, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (parsed, matches) = parse(&args).map_err(|e| e.to_string())?;
        request(&parsed, &matches, NOW)
    }

    #[test]
    fn defaults_are_the_last_20() {
        let r = request_for(&[]).unwrap();
        assert_eq!((r.number, r.first, r.follow), (20, false, false));
        assert!(r.whitelist.is_empty() && r.blacklist.is_empty());
        assert_eq!(request_for(&["--all"]).unwrap().number, 0);
        assert_eq!(request_for(&["-f"]).unwrap().number, 0);
        assert_eq!(request_for(&["--since", "5m"]).unwrap().number, 0);
        let r = request_for(&["--first", "3"]).unwrap();
        assert_eq!((r.number, r.first), (3, true));
        assert_eq!(request_for(&["--last", "7"]).unwrap().number, 7);
        assert!(request_for(&["--first", "1", "--last", "1"]).is_err());
        assert!(request_for(&["--first", "1", "-f"]).is_err());
        assert!(request_for(&["--last", "1", "--all"]).is_err());
    }

    #[test]
    fn times_are_sent_as_rfc3339() {
        let r = request_for(&["--since", "1m", "--until", "2026-11-18T11:06:40Z"]).unwrap();
        assert_eq!(r.since.as_deref(), Some("2026-11-18T11:05:40.000000000Z"));
        assert_eq!(r.until.as_deref(), Some("2026-11-18T11:06:40.000000000Z"));
        // --until is ignored when following, as in Hubble.
        assert_eq!(request_for(&["-f", "--until", "1m"]).unwrap().until, None);
        assert!(request_for(&["--since", "later"])
            .unwrap_err()
            .contains("--since"));
    }

    #[test]
    fn not_applies_to_the_next_flag_in_command_line_order() {
        let r = request_for(&[
            "--protocol",
            "tcp",
            "--not",
            "--verdict",
            "DROPPED",
            "--to-port",
            "80",
        ])
        .unwrap();
        assert_eq!(r.whitelist.len(), 1);
        assert_eq!(r.whitelist[0].protocol, ["tcp"]);
        assert_eq!(r.whitelist[0].destination_port, ["80"]);
        assert!(r.whitelist[0].verdict.is_empty());
        assert_eq!(r.blacklist.len(), 1);
        assert_eq!(r.blacklist[0].verdict, ["DROPPED"]);
        // Each --not negates its own next flag.
        let r = request_for(&[
            "--not",
            "--protocol",
            "udp",
            "--not",
            "--verdict",
            "DROPPED",
        ])
        .unwrap();
        assert!(r.whitelist.is_empty());
        assert_eq!(r.blacklist[0].protocol, ["udp"]);
        assert_eq!(r.blacklist[0].verdict, ["DROPPED"]);
        // The same flags with --not elsewhere negate something else.
        let r = request_for(&["--not", "--protocol", "tcp", "--verdict", "DROPPED"]).unwrap();
        assert_eq!(r.blacklist[0].protocol, ["tcp"]);
        assert_eq!(r.whitelist[0].verdict, ["DROPPED"]);
    }

    #[test]
    fn short_flags_and_namespace() {
        let r = request_for(&["-n", "shop", "-t", "drop", "-l", "app=web"]).unwrap();
        assert_eq!(r.whitelist.len(), 2);
        assert_eq!(r.whitelist[0].source_pod, ["shop/"]);
        assert_eq!(r.whitelist[0].source_label, ["app=web"]);
        assert_eq!(r.whitelist[1].destination_pod, ["shop/"]);
        assert_eq!(r.whitelist[1].destination_label, ["app=web"]);
        assert_eq!(r.whitelist[1].event_type[0].event_type, 1);
        let r = request_for(&["-A"]).unwrap();
        assert_eq!(r.whitelist[0].source_pod, ["/"]);
        // Bad values are refused before anything is sent.
        assert!(request_for(&["--from-ip", "10.0.0.300"])
            .unwrap_err()
            .contains("source_ip"));
        assert!(request_for(&["--protocol", "gre"]).is_err());
        assert!(request_for(&["--port", "http"]).is_err());
        assert!(request_for(&["-o", "yaml"]).is_err());
    }
}

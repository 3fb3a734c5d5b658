//! `sluice`: the command line for people. Engine counters and the connection
//! table come from the engine's stats socket; status, endpoints, identities,
//! services, policies and policy traces from the agent; `policy validate`
//! reads files only.

mod agent;
mod conntrack;
mod engine;
mod observe;
mod policy;
mod policy_validate;
mod services;
mod status;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use engine::ask;
use serde_json::Value;
use sluice_api::agent::{TraceProtocol, TraceRequest};

#[derive(Parser, Debug)]
#[command(name = "sluice", about = "Sluice dataplane command line")]
struct Cli {
    /// The engine's stats socket.
    #[arg(
        long,
        env = "SLUICE_ENGINE_SOCKET",
        default_value = "/run/sluice/engine.sock"
    )]
    engine_socket: PathBuf,
    /// The agent's socket.
    #[arg(
        long,
        env = "SLUICE_AGENT_SOCKET",
        default_value = "/run/sluice/agent.sock"
    )]
    agent_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drop counters by reason (stable number and name), per worker.
    Drops {
        /// Also list reasons whose count is zero.
        #[arg(long)]
        all: bool,
        /// Print the raw JSON.
        #[arg(short, long)]
        json: bool,
    },
    /// Engine counters: packets and bytes per worker, sockets per interface.
    Stats {
        #[arg(short, long)]
        json: bool,
    },
    /// Ask the engine to re-read its node state file.
    Reload,
    /// Agent, engine and sync state, in the spirit of `cilium status`.
    Status {
        #[arg(short, long)]
        json: bool,
        /// `-o json` is the same as `--json`.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Local endpoints (pods wired by sluice-cni).
    Endpoint {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Security identities (reserved and label-derived).
    Identity {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Services as the engine balances them: frontends, backends, algorithm,
    /// affinity, traffic policies.
    Service {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// The engine's connection table.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Network policy: validate files, list what the agent enforces, trace
    /// a connection.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Observe flows from the agent's Hubble socket, with `hubble
    /// observe`'s flags (`sluice observe --help`).
    #[command(disable_help_flag = true)]
    Observe {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// `-o`: how answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// `--protocol` of `policy trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TraceProtocolArg {
    Tcp,
    Udp,
    Sctp,
    /// ICMP (ICMPv6 for IPv6 peers); --dport is the ICMP type (default echo request).
    Icmp,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Parse and validate policy manifests (CiliumNetworkPolicy,
    /// CiliumClusterwideNetworkPolicy, NetworkPolicy) without an agent; exits
    /// 1 when any policy is invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The policies the agent read: rules, selected local endpoints,
    /// errors, and drops when the engine answers.
    Get {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The verdict for a new connection and the rules that decide it, on
    /// the agent's current state. Exits 0 when allowed, 1 when denied, 2 when
    /// it cannot be traced.
    Trace {
        #[command(flatten)]
        connection: TraceArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// The connection `policy trace` asks about.
#[derive(clap::Args, Debug)]
struct TraceArgs {
    /// `namespace/pod`, a local endpoint name, an address, `world` or `host`.
    #[arg(long)]
    src: String,
    /// Same forms as --src; a Service frontend address is traced to each backend.
    #[arg(long)]
    dst: String,
    /// Destination port (for ICMP the type).
    #[arg(long)]
    dport: Option<u16>,
    #[arg(long, value_enum, default_value_t = TraceProtocolArg::Tcp)]
    protocol: TraceProtocolArg,
}

impl TraceArgs {
    fn request(&self) -> TraceRequest {
        TraceRequest {
            src: self.src.clone(),
            dst: self.dst.clone(),
            dport: self.dport,
            protocol: match self.protocol {
                TraceProtocolArg::Tcp => TraceProtocol::Tcp,
                TraceProtocolArg::Udp => TraceProtocol::Udp,
                TraceProtocolArg::Sctp => TraceProtocol::Sctp,
                TraceProtocolArg::Icmp => TraceProtocol::Icmp,
            },
        }
    }
}

#[derive(Subcommand, Debug)]
enum ConntrackCommand {
    /// Connections matching every filter given.
    List {
        #[command(flatten)]
        filter: conntrack::FilterArgs,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(short, long)]
        json: bool,
    },
    /// Removes the connections matching every filter given (all without filters).
    Flush {
        #[command(flatten)]
        filter: conntrack::FilterArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ListCommand {
    List {
        #[arg(short, long)]
        json: bool,
    },
}

fn print_drops(report: &Value, all: bool) {
    let workers = report["workers"].as_array().map(|w| w.len()).unwrap_or(0);
    print!("{:>3}  {:<24} {:>12}", "NUM", "REASON", "TOTAL");
    for w in 0..workers {
        print!(" {:>10}", format!("worker{w}"));
    }
    println!();
    for row in report["drops"].as_array().into_iter().flatten() {
        let count = row["count"].as_u64().unwrap_or(0);
        if count == 0 && !all {
            continue;
        }
        print!(
            "{:>3}  {:<24} {:>12}",
            row["number"].to_string(),
            row["name"].as_str().unwrap_or("?"),
            count
        );
        for v in row["per_worker"].as_array().into_iter().flatten() {
            print!(" {:>10}", v.as_u64().unwrap_or(0));
        }
        println!();
    }
}

fn print_stats(report: &Value) {
    let engine = &report["engine"];
    println!(
        "engine pid {} · {} worker(s) on cores {} · mode {} · xdp {} · hugepages {} · generation {} · {} endpoint(s)",
        engine["pid"],
        engine["workers"],
        engine["cores"],
        engine["mode"].as_str().unwrap_or("?"),
        engine["xdp_mode"].as_str().unwrap_or("?"),
        engine["hugepages"],
        report["generation"],
        report["endpoints"],
    );
    println!(
        "{:<8} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
        "WORKER", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "REPLIES", "DROPS"
    );
    for w in report["workers"].as_array().into_iter().flatten() {
        let drops: u64 = w["drops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .sum();
        println!(
            "{:<8} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
            w["worker"].to_string(),
            w["rx_packets"].to_string(),
            w["rx_bytes"].to_string(),
            w["tx_packets"].to_string(),
            w["tx_bytes"].to_string(),
            w["replies"].to_string(),
            drops
        );
    }
    println!(
        "\n{:<16} {:>7} {:>6} {:>6} {:>12} {:>12} {:>12}  STATE",
        "INTERFACE", "IFINDEX", "WORKER", "QUEUE", "RX_RING_FULL", "FILL_EMPTY", "K_RX_DROP"
    );
    for p in report["ports"].as_array().into_iter().flatten() {
        let kernel = &p["kernel"];
        println!(
            "{:<16} {:>7} {:>6} {:>6} {:>12} {:>12} {:>12}  {}",
            p["ifname"].as_str().unwrap_or("?"),
            p["ifindex"].to_string(),
            p["worker"].to_string(),
            p["queue"].to_string(),
            kernel["rx_ring_full"].to_string(),
            kernel["fill_ring_empty"].to_string(),
            kernel["rx_dropped"].to_string(),
            p["state"].as_str().unwrap_or("?")
        );
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Drops { all, json } => {
            let report = ask(&cli.engine_socket, "stats")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report["drops"])?);
            } else {
                print_drops(&report, all);
            }
        }
        Command::Stats { json } => {
            let report = ask(&cli.engine_socket, "stats")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_stats(&report);
            }
        }
        Command::Reload => {
            let answer = ask(&cli.engine_socket, "reload")?;
            if answer["ok"] != Value::Bool(true) {
                bail!(
                    "reload refused: {}",
                    answer["error"].as_str().unwrap_or("?")
                );
            }
            println!("state applied, generation {}", answer["generation"]);
        }
        Command::Status { json, output } => {
            let json = json || output == Some(Output::Json);
            if !status::run(&cli.agent_socket, &cli.engine_socket, json)? {
                std::process::exit(1);
            }
        }
        Command::Endpoint {
            command: ListCommand::List { json },
        } => {
            let list = agent::endpoints(&cli.agent_socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                agent::print_endpoints(&list);
            }
        }
        Command::Identity {
            command: ListCommand::List { json },
        } => {
            let list = agent::identities(&cli.agent_socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                agent::print_identities(&list);
            }
        }
        Command::Service {
            command: ListCommand::List { json },
        } => {
            let (list, lb) = agent::services(&cli.agent_socket)?;
            if json {
                let out = serde_json::json!({"services": list, "lb": lb});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", services::render(&list, &lb));
            }
        }
        Command::Conntrack { command } => {
            conntrack_command(&cli.engine_socket, &cli.agent_socket, command)?
        }
        Command::Policy { command } => {
            policy_command(&cli.engine_socket, &cli.agent_socket, command)?
        }
        Command::Observe { args } => observe::run(&args)?,
    }
    Ok(())
}

fn policy_command(
    engine_socket: &std::path::Path,
    agent_socket: &std::path::Path,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Validate { files } => {
            let (report, ok) = policy_validate::validate_files(&files);
            print!("{report}");
            if !ok {
                std::process::exit(1);
            }
        }
        PolicyCommand::Get { output } => {
            let list = agent::policies(agent_socket)?;
            // Drops are the engine's; the listing stands without them.
            let stats = ask(engine_socket, "stats").ok();
            match output {
                Output::Json => {
                    let out = serde_json::json!({
                        "policies": list,
                        "policy_drops": stats.as_ref().map(|s| s["policy_drops"].clone()),
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
                Output::Table => {
                    let drops = stats.as_ref().map(policy::drops_by_policy);
                    print!("{}", policy::render_policies(&list, drops.as_ref()));
                }
            }
        }
        PolicyCommand::Trace { connection, output } => {
            // 0 allowed, 1 denied, 2 no answer: scripts can tell a denial
            // from a failure.
            let answer = match agent::trace_policy(agent_socket, connection.request()) {
                Ok(answer) => answer,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::exit(2);
                }
            };
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                Output::Table => print!("{}", policy::render_trace(&answer)),
            }
            if !answer.allowed {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn conntrack_command(
    engine_socket: &std::path::Path,
    agent_socket: &std::path::Path,
    command: ConntrackCommand,
) -> anyhow::Result<()> {
    let (filter, limit, json) = match &command {
        ConntrackCommand::List {
            filter,
            limit,
            json,
        } => (filter, Some(*limit), *json),
        ConntrackCommand::Flush { filter } => (filter, None, false),
    };
    let ids = match &filter.service {
        Some(name) => conntrack::service_ids(&agent::services(agent_socket)?.0, name)?,
        None => Vec::new(),
    };
    let filters = conntrack::filters(filter, &ids, limit);
    let ask_engine = |line: &str| ask(engine_socket, line);
    match command {
        ConntrackCommand::List { .. } => {
            let answer = conntrack::list(ask_engine, &filters, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", conntrack::render(&answer));
            }
        }
        ConntrackCommand::Flush { .. } => {
            let flushed = conntrack::flush(ask_engine, &filters)?;
            println!(
                "flushed {flushed} entr{}",
                if flushed == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn conntrack_filters_parse() {
        let cli = parse(&[
            "conntrack",
            "list",
            "--src",
            "10.0.0.1",
            "--dport",
            "80",
            "--protocol",
            "tcp",
            "--service",
            "default/web",
            "--limit",
            "5",
            "-j",
        ])
        .unwrap();
        let Command::Conntrack {
            command:
                ConntrackCommand::List {
                    filter,
                    limit,
                    json,
                },
        } = cli.command
        else {
            panic!("not a conntrack list: {:?}", cli.command);
        };
        assert_eq!(filter.src, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(filter.dport, Some(80));
        assert_eq!(filter.protocol, Some(conntrack::ProtocolArg::Tcp));
        assert_eq!(filter.service.as_deref(), Some("default/web"));
        assert_eq!((limit, json), (5, true));
        let cli = parse(&["conntrack", "flush", "--dst", "fd00::1", "--sport", "40000"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Conntrack { command: ConntrackCommand::Flush { filter } }
                if filter.dst == Some("fd00::1".parse().unwrap()) && filter.sport == Some(40000)
        ));
        assert!(parse(&["conntrack", "list", "--protocol", "gre"]).is_err());
        assert!(parse(&["conntrack", "list", "--src", "10.0.0"]).is_err());
        assert!(parse(&["conntrack", "flush", "--limit", "3"]).is_err());
    }

    #[test]
    fn policy_commands_parse() {
        let cli = parse(&[
            "policy",
            "trace",
            "--src",
            "default/a",
            "--dst",
            "10.96.0.10",
            "--dport",
            "80",
            "--protocol",
            "udp",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Policy {
            command: PolicyCommand::Trace { connection, output },
        } = cli.command
        else {
            panic!("not a policy trace: {:?}", cli.command);
        };
        assert_eq!(
            connection.request(),
            TraceRequest {
                src: "default/a".into(),
                dst: "10.96.0.10".into(),
                dport: Some(80),
                protocol: TraceProtocol::Udp,
            }
        );
        assert_eq!(output, Output::Json);
        // TCP and the table by default; ICMP needs no port.
        let cli = parse(&[
            "policy", "trace", "--src", "world", "--dst", "x/b", "--dport", "81",
        ]);
        assert!(matches!(
            cli.unwrap().command,
            Command::Policy {
                command: PolicyCommand::Trace {
                    connection: TraceArgs {
                        protocol: TraceProtocolArg::Tcp,
                        ..
                    },
                    output: Output::Table,
                }
            }
        ));
        let cli = parse(&[
            "policy",
            "trace",
            "--src",
            "a/a",
            "--dst",
            "a/b",
            "--protocol",
            "icmp",
        ]);
        let Command::Policy {
            command: PolicyCommand::Trace { connection, .. },
        } = cli.unwrap().command
        else {
            panic!("not a policy trace");
        };
        let request = connection.request();
        assert_eq!(
            (request.protocol, request.dport),
            (TraceProtocol::Icmp, None)
        );
        assert!(parse(&["policy", "trace", "--src", "a/a"]).is_err());
        assert!(parse(&[
            "policy",
            "trace",
            "--src",
            "a",
            "--dst",
            "b",
            "--protocol",
            "gre"
        ])
        .is_err());
        assert!(
            parse(&["policy", "trace", "--src", "a", "--dst", "b", "--dport", "70000"]).is_err()
        );

        let cli = parse(&["policy", "get", "-o", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Policy {
                command: PolicyCommand::Get {
                    output: Output::Json
                }
            }
        ));
        assert!(parse(&["policy", "get", "-o", "yaml"]).is_err());
        let cli = parse(&["policy", "validate", "a.yaml", "b.yaml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Policy { command: PolicyCommand::Validate { files } }
                if files == [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        ));
        assert!(parse(&["policy", "validate"]).is_err());
    }

    #[test]
    fn identity_scopes_follow_the_number_ranges() {
        assert_eq!(agent::identity_scope(2), "reserved");
        assert_eq!(agent::identity_scope(256), "cluster");
        assert_eq!(agent::identity_scope(65535), "cluster");
        assert_eq!(agent::identity_scope(1 << 24), "local");
    }

    #[test]
    fn service_list_parses() {
        let cli = parse(&["service", "list", "-j"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Service {
                command: ListCommand::List { json: true }
            }
        ));
    }
}

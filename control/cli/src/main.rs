//! `sluice`: the command line for people. Engine counters come from the
//! engine's stats socket; status, endpoints and identities from the agent.

mod agent;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::Value;

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
}

#[derive(Subcommand, Debug)]
enum ListCommand {
    List {
        #[arg(short, long)]
        json: bool,
    },
}

fn ask(socket: &Path, command: &str) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to the engine at {} (is sluice-engine running? set --engine-socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    serde_json::from_str(&body).with_context(|| format!("engine answered {body:?}"))
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
        Command::Status { json } => {
            let status = agent::status(&cli.agent_socket)?;
            let engine = ask(&cli.engine_socket, "stats").ok();
            if json {
                let out = serde_json::json!({"agent": status, "in_sync": status.in_sync(), "engine": engine});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                agent::print_status(&status, engine.as_ref());
            }
            if !status.in_sync() {
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
    }
    Ok(())
}

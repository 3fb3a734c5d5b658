//! A stand-in for sluice-engine's control surface, for testing the lab.
//!
//! It takes the engine's command line, loads and checks the state file, and
//! serves the stats socket: `stats\n` in, one JSON object out, then EOF. It moves
//! no packets. `--fail-at-start` makes it print an error and exit 1 instead.
//! It exits on SIGTERM (default action) and by itself after ten minutes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sluice_tables::{NodeState, Tables};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    stats_socket: PathBuf,
    #[arg(long, default_value_t = 1)]
    workers: u32,
    #[arg(long)]
    fail_at_start: bool,
}

const LIFETIME: Duration = Duration::from_secs(600);

fn main() {
    if let Err(err) = serve(Args::parse()) {
        eprintln!("sluice-fake-engine: {err:#}");
        std::process::exit(1);
    }
}

fn serve(args: Args) -> Result<()> {
    if args.fail_at_start {
        bail!("failing at start as asked");
    }
    let text = std::fs::read_to_string(&args.state)
        .with_context(|| format!("reading {}", args.state.display()))?;
    let state: NodeState = serde_json::from_str(&text).context("parsing the node state")?;
    let names: Vec<String> = state.endpoints.iter().map(|e| e.name.clone()).collect();
    let tables = Tables::build(state).context("building tables")?;
    println!(
        "fake engine: {} endpoints, {} workers",
        tables.endpoints.len(),
        args.workers
    );

    std::thread::spawn(|| {
        std::thread::sleep(LIFETIME);
        eprintln!("fake engine: lifetime over, exiting");
        std::process::exit(0);
    });
    let _ = std::fs::remove_file(&args.stats_socket);
    let listener = UnixListener::bind(&args.stats_socket)
        .with_context(|| format!("binding {}", args.stats_socket.display()))?;
    let mut requests = 0u64;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() || line.trim() != "stats" {
            continue;
        }
        requests += 1;
        let reply = serde_json::json!({
            "engine": "sluice-fake-engine",
            "workers": args.workers,
            "endpoints": names,
            "stats_requests": requests,
        });
        let _ = conn.write_all(reply.to_string().as_bytes());
    }
    Ok(())
}

//! `sluice-engine`: the packet engine process of one node.

use clap::Parser;
use sluice_engine::EngineConfig;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = EngineConfig::parse();
    match sluice_engine::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-engine: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Harness of the flow observability lab tests (`tests/observe_*.rs`): a lab
//! whose engine publishes flow events and whose agent serves them (Hubble
//! socket, Prometheus metrics, service map page), the pods' traffic, and the
//! real programs that read what the agent serves: `sluice observe`, Debian's
//! Prometheus and headless Chromium, all run inside the lab's node namespace.

use std::path::PathBuf;

pub mod chromium;
pub mod lab;
pub mod observer;
pub mod prometheus;
pub mod traffic;

/// `<repo>/target/test-artifacts/<name>`: files a test keeps for people to
/// look at (a screenshot), in a directory `git` ignores; created on demand.
pub fn artifact_path(name: &str) -> std::io::Result<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = repo.join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

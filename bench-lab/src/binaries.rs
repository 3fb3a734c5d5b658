//! Finding Sluice's own binaries: `$<ENV>` if set, else next to the current
//! executable or one directory up (test binaries live in `target/*/deps/`).

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};

/// `sluice-agent`, overridable with `$SLUICE_AGENT`.
pub const AGENT: (&str, &str) = ("sluice-agent", "SLUICE_AGENT");
/// `sluice-cni`, overridable with `$SLUICE_CNI`.
pub const CNI: (&str, &str) = ("sluice-cni", "SLUICE_CNI");
/// `sluice` (the CLI), overridable with `$SLUICE_CLI`.
pub const CLI: (&str, &str) = ("sluice", "SLUICE_CLI");

/// The binary `name`, or `$env` when set.
pub fn find_binary((name, env): (&str, &str)) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "${env} names {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    bail!(
        "no {name} binary found (tried {}); build it with \
         `cargo build --release --workspace` or set ${env}",
        tried.join(", ")
    )
}

//! Removing labs left behind by crashed or killed processes.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::command::{ip, run_ok, SETUP_TIMEOUT};
use crate::lab::delete_netns;
use crate::names::{self, LabPrefix, RUN_ROOT};

/// Which labs [`cleanup`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupScope {
    /// Labs whose creating process (the PID in the prefix) no longer runs.
    Stale,
    /// Every lab, including those of running processes.
    All,
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub namespaces: Vec<String>,
    pub run_dirs: Vec<String>,
}

/// The namespaces that belong to labs (`sl<digits>x<digits>-...`).
pub fn lab_namespaces() -> Result<Vec<String>> {
    let out = run_ok(&mut ip(&["netns", "list"]), SETUP_TIMEOUT)?;
    Ok(out
        .stdout
        .lines()
        // "name (id: 3)" or just "name"
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| names::parse_prefix(name).is_some_and(|p| name.len() > p.prefix.len()))
        .map(str::to_string)
        .collect())
}

fn selected(prefix: &LabPrefix, scope: CleanupScope) -> bool {
    match scope {
        CleanupScope::All => true,
        CleanupScope::Stale => !Path::new(&format!("/proc/{}", prefix.pid)).exists(),
    }
}

/// Removes leftover labs: kills the processes inside each lab namespace (by PID,
/// from `ip netns pids`), deletes the namespace, and removes run directories.
/// Pod namespaces go before node namespaces. Continues past errors.
pub fn cleanup(scope: CleanupScope) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let mut doomed: Vec<String> = lab_namespaces()?
        .into_iter()
        .filter(|ns| names::parse_prefix(ns).is_some_and(|p| selected(&p, scope)))
        .collect();
    // Pods first: their veths go with them, then the node has nothing left.
    doomed.sort_by_key(|ns| ns.ends_with("-node"));
    let mut first_error = None;
    for ns in doomed {
        match delete_netns(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(err) => {
                eprintln!("sluice-lab cleanup: {err:#}");
                first_error.get_or_insert(err);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(RUN_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(prefix) = names::parse_prefix(&name) else {
                continue;
            };
            if prefix.prefix != name || !selected(&prefix, scope) {
                continue;
            }
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            report.run_dirs.push(name);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

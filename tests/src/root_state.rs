//! A snapshot of what a runtime test must leave as it found it in the root
//! namespace and the machine's CNI and containerd paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use sluice_lab::command::{run_ok, SETUP_TIMEOUT};

/// What must be the same before and after: the root namespace's links and
/// addresses, the CNI paths, mounts of them, /run/containerd, ip_forward.
#[derive(Debug, PartialEq, Eq)]
pub struct RootState {
    pub links: BTreeSet<String>,
    pub addresses: BTreeSet<String>,
    pub cni_paths: BTreeSet<String>,
    pub cni_mounts: BTreeSet<String>,
    pub run_containerd: BTreeSet<String>,
    pub ip_forward: String,
}

fn listing(dir: &Path, into: &mut BTreeSet<String>) {
    if !dir.exists() {
        return;
    }
    into.insert(dir.display().to_string());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                listing(&path, into);
            } else {
                into.insert(path.display().to_string());
            }
        }
    }
}

/// Takes the snapshot.
pub fn root_state() -> RootState {
    let ip = |args: &[&str]| run_ok(Command::new("ip").args(args), SETUP_TIMEOUT).unwrap();
    // "<index>: <name>: ..." and "<index>: <dev> <family> <address> ...".
    let links = ip(&["-o", "link", "show"])
        .stdout
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    let addresses = ip(&["-o", "addr", "show"])
        .stdout
        .lines()
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    let mut cni_paths = BTreeSet::new();
    for dir in ["/etc/cni", "/opt/cni", "/var/lib/cni", "/usr/lib/cni"] {
        listing(Path::new(dir), &mut cni_paths);
    }
    let mut run_containerd = BTreeSet::new();
    listing(Path::new("/run/containerd"), &mut run_containerd);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cni_mounts = mounts
        .lines()
        .filter(|l| l.contains("cni") || l.contains("containerd"))
        .map(String::from)
        .collect();
    RootState {
        links,
        addresses,
        cni_paths,
        cni_mounts,
        run_containerd,
        ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
    }
}

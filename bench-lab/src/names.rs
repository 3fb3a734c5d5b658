//! Lab object names.
//!
//! Every lab instance has a prefix `sl<pid>x<n>`: the creating process's PID and a
//! per-process counter, so labs of parallel tests (threads or processes) never
//! collide. Its namespaces are `<prefix>-node`, `<prefix>-p<i>` (pods numbered
//! from 1) and, with an outside, `<prefix>-out`, and its run directory is `/run/sluice-lab/<prefix>/`. Interface names
//! live inside those namespaces (`lxc<i>` on the node, `eth0` in a pod), so they
//! need no prefix.
//!
//! A namespace belongs to a lab exactly when its name matches
//! `^sl[0-9]+x[0-9]+-`; this is what `cleanup` removes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where labs keep state files, sockets and logs.
pub const RUN_ROOT: &str = "/run/sluice-lab";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix for a lab of this process.
pub fn next_prefix() -> String {
    format!(
        "sl{}x{}",
        std::process::id(),
        NEXT_LAB.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn node_netns(prefix: &str) -> String {
    format!("{prefix}-node")
}

/// Pods are numbered from 1.
pub fn pod_netns(prefix: &str, pod: usize) -> String {
    format!("{prefix}-p{pod}")
}

/// The namespace standing for the world outside the node (`LabSpec::with_outside`).
pub fn outside_netns(prefix: &str) -> String {
    format!("{prefix}-out")
}

pub fn run_dir(prefix: &str) -> PathBuf {
    PathBuf::from(RUN_ROOT).join(prefix)
}

/// A lab prefix, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPrefix {
    /// `sl<pid>x<n>`
    pub prefix: String,
    /// The process that created the lab.
    pub pid: u32,
}

/// The lab prefix of a namespace or run-directory name, if it is one of ours:
/// `sl<digits>x<digits>` followed by the end or by `-`.
pub fn parse_prefix(name: &str) -> Option<LabPrefix> {
    let rest = name.strip_prefix("sl")?;
    let (pid, rest) = rest.split_once('x')?;
    let end = rest.find('-').unwrap_or(rest.len());
    let counter = &rest[..end];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) {
        return None;
    }
    Some(LabPrefix {
        prefix: name[..2 + pid.len() + 1 + counter.len()].to_string(),
        pid: pid.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_parse_back() {
        let a = next_prefix();
        let b = next_prefix();
        assert_ne!(a, b);
        let parsed = parse_prefix(&node_netns(&a)).unwrap();
        assert_eq!(parsed.prefix, a);
        assert_eq!(parsed.pid, std::process::id());
        assert_eq!(parse_prefix(&pod_netns(&b, 12)).unwrap().prefix, b);
        assert_eq!(parse_prefix(&b).unwrap().prefix, b);
        assert_eq!(parse_prefix(&outside_netns(&b)).unwrap().prefix, b);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "slx1-node",
            "sl12-node",
            "sl12x-node",
            "s12x1-node",
            "sl1x2node",
            "cni-1234",
            "slow",
        ] {
            assert_eq!(parse_prefix(name), None, "{name}");
        }
    }

    #[test]
    fn interface_and_socket_paths_fit() {
        // Worst case: a 7-digit PID and a large counter.
        let prefix = "sl4194304x4294967295";
        let sock = run_dir(prefix).join("engine.sock");
        assert!(sock.as_os_str().len() < 108, "unix socket path too long");
    }
}

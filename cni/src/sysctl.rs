//! Per-interface sysctls under /proc/sys/net. A lookup there resolves in the
//! netns of the calling *thread*, so a thread that entered the container's
//! netns reads and writes the container's interfaces.

use std::path::PathBuf;

use crate::netns::NetError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

fn path(family: Family, ifname: &str, key: &str) -> PathBuf {
    let family = match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    };
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"))
}

/// Whether this netns has IPv6 at all (no /proc/sys/net/ipv6 with ipv6.disable=1).
pub fn ipv6_available() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6/conf").is_dir()
}

pub fn set(family: Family, ifname: &str, key: &str, value: &str) -> Result<(), NetError> {
    let path = path(family, ifname, key);
    std::fs::write(&path, value)
        .map_err(|e| NetError::io(format!("writing {value} to {}", path.display()), e))
}

pub fn get(family: Family, ifname: &str, key: &str) -> Result<String, NetError> {
    let path = path(family, ifname, key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| NetError::io(format!("reading {}", path.display()), e))
}

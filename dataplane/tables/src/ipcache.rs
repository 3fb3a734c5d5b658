//! The IP-to-identity table (Cilium's "ipcache"): the security identity behind
//! every pod address in the cluster, local or remote. Policy reads it to learn
//! who a peer is; CIDR identities join it with the policy issue.

use std::net::IpAddr;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// One address and the identity that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCacheEntry {
    pub ip: IpAddr,
    /// Prefix length when the entry is a CIDR (absent: the whole address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    pub identity: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ipcache: address {ip} is given identity {first} and identity {second}")]
pub struct IpCacheError {
    pub ip: IpAddr,
    pub first: u32,
    pub second: u32,
}

/// Exact-match lookup from address to identity. Lookups never allocate.
#[derive(Clone, Debug, Default)]
pub struct IpCache {
    by_ip: HashMap<IpAddr, u32>,
}

impl IpCache {
    /// Builds the table; one address with two identities refuses the whole input.
    pub fn build(entries: &[IpCacheEntry]) -> Result<IpCache, IpCacheError> {
        let mut by_ip = HashMap::with_capacity(entries.len());
        for entry in entries {
            if let Some(first) = by_ip.insert(entry.ip, entry.identity) {
                if first != entry.identity {
                    return Err(IpCacheError {
                        ip: entry.ip,
                        first,
                        second: entry.identity,
                    });
                }
            }
        }
        Ok(IpCache { by_ip })
    }

    pub fn identity(&self, ip: IpAddr) -> Option<u32> {
        self.by_ip.get(&ip).copied()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, identity: u32) -> IpCacheEntry {
        IpCacheEntry {
            ip: ip.parse().unwrap(),
            prefix_len: None,
            identity,
        }
    }

    #[test]
    fn lookups_and_conflicts() {
        let cache = IpCache::build(&[entry("10.0.0.1", 256), entry("fd00::1", 257)]).unwrap();
        assert_eq!(cache.identity("10.0.0.1".parse().unwrap()), Some(256));
        assert_eq!(cache.identity("fd00::1".parse().unwrap()), Some(257));
        assert_eq!(cache.identity("10.0.0.2".parse().unwrap()), None);
        assert!(IpCache::build(&[entry("10.0.0.1", 256), entry("10.0.0.1", 256)]).is_ok());
        let err = IpCache::build(&[entry("10.0.0.1", 256), entry("10.0.0.1", 300)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ipcache: address 10.0.0.1 is given identity 256 and identity 300"
        );
    }
}

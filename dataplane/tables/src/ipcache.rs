//! The IP-to-identity table (Cilium's "ipcache"): the security identity behind
//! every address the cluster knows, pod addresses (local or remote) and the
//! CIDR prefixes of policies, found by longest prefix match. An address it
//! does not know is `world-ipv4` / `world-ipv6` ([`IpCache::identity_of`]).
//!
//! Shape: one hash map per prefix length that is present, probed longest
//! first, per family. A cluster has few distinct lengths (the exact /32 and
//! /128 of pods, a handful of policy prefixes), so a lookup is a few hash
//! probes, and it never allocates.

use std::net::IpAddr;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::policy::identity;

/// One address or prefix and the identity that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCacheEntry {
    pub ip: IpAddr,
    /// Prefix length when the entry is a CIDR (absent: the whole address).
    /// Host bits below the length are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    pub identity: u32,
}

/// Why an ipcache was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpCacheError {
    /// One address or prefix with two identities.
    #[error("ipcache: {} is given identity {first} and identity {second}", prefix_text(*.ip, *.prefix_len))]
    Conflict {
        ip: IpAddr,
        prefix_len: u8,
        first: u32,
        second: u32,
    },
    /// `prefix_len` longer than the address.
    #[error("ipcache: {ip}/{prefix_len}: prefix_len is above {max}")]
    PrefixLength { ip: IpAddr, prefix_len: u8, max: u8 },
}

/// `10.0.0.1` for a whole address, `10.0.0.0/8` for a prefix.
fn prefix_text(ip: IpAddr, prefix_len: u8) -> String {
    if prefix_len == full_length(ip) {
        format!("address {ip}")
    } else {
        format!("prefix {ip}/{prefix_len}")
    }
}

fn full_length(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The prefixes of one length: masked address -> identity.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefixes<A: Eq + std::hash::Hash> {
    len: u8,
    mask: A,
    by_prefix: HashMap<A, u32>,
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Adds `prefix` (already masked) of length `len` to the maps of its family.
fn insert<A: Copy + Eq + std::hash::Hash>(
    maps: &mut Vec<Prefixes<A>>,
    len: u8,
    mask: A,
    prefix: A,
    identity: u32,
) -> Result<(), u32> {
    let at = match maps.iter().position(|m| m.len == len) {
        Some(at) => at,
        None => {
            maps.push(Prefixes {
                len,
                mask,
                by_prefix: HashMap::new(),
            });
            maps.len() - 1
        }
    };
    match maps[at].by_prefix.insert(prefix, identity) {
        Some(first) if first != identity => Err(first),
        _ => Ok(()),
    }
}

/// Longest-prefix-match from address to identity. Lookups never allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpCache {
    /// Longest length first.
    v4: Vec<Prefixes<u32>>,
    v6: Vec<Prefixes<u128>>,
    entries: usize,
}

impl IpCache {
    /// Builds the table; one address or prefix with two identities (after
    /// masking host bits), or a prefix longer than its address, refuses the
    /// whole input.
    pub fn build(entries: &[IpCacheEntry]) -> Result<IpCache, IpCacheError> {
        let mut cache = IpCache::default();
        for entry in entries {
            let full = full_length(entry.ip);
            let len = entry.prefix_len.unwrap_or(full);
            if len > full {
                return Err(IpCacheError::PrefixLength {
                    ip: entry.ip,
                    prefix_len: len,
                    max: full,
                });
            }
            let inserted = match entry.ip {
                IpAddr::V4(a) => {
                    let mask = mask_v4(len);
                    insert(
                        &mut cache.v4,
                        len,
                        mask,
                        u32::from(a) & mask,
                        entry.identity,
                    )
                }
                IpAddr::V6(a) => {
                    let mask = mask_v6(len);
                    insert(
                        &mut cache.v6,
                        len,
                        mask,
                        u128::from(a) & mask,
                        entry.identity,
                    )
                }
            };
            if let Err(first) = inserted {
                return Err(IpCacheError::Conflict {
                    ip: entry.ip,
                    prefix_len: len,
                    first,
                    second: entry.identity,
                });
            }
        }
        cache.v4.sort_by_key(|m| std::cmp::Reverse(m.len));
        cache.v6.sort_by_key(|m| std::cmp::Reverse(m.len));
        cache.entries = cache.v4.iter().map(|m| m.by_prefix.len()).sum::<usize>()
            + cache.v6.iter().map(|m| m.by_prefix.len()).sum::<usize>();
        Ok(cache)
    }

    /// The identity of the longest entry containing `ip`, if any.
    #[inline]
    pub fn identity(&self, ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|m| m.by_prefix.get(&(a & m.mask)).copied())
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|m| m.by_prefix.get(&(a & m.mask)).copied())
            }
        }
    }

    /// The identity of `ip`: the longest match, else `world-ipv4` /
    /// `world-ipv6` (Cilium's identity for an address it knows nothing of).
    #[inline]
    pub fn identity_of(&self, ip: IpAddr) -> u32 {
        self.identity(ip).unwrap_or(match ip {
            IpAddr::V4(_) => identity::WORLD_IPV4,
            IpAddr::V6(_) => identity::WORLD_IPV6,
        })
    }

    /// The prefix lengths present, longest first (IPv4, IPv6).
    pub fn lengths(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.v4.iter().map(|m| m.len).collect(),
            self.v6.iter().map(|m| m.len).collect(),
        )
    }

    /// Distinct addresses and prefixes.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
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

    fn prefix(ip: &str, len: u8, identity: u32) -> IpCacheEntry {
        IpCacheEntry {
            prefix_len: Some(len),
            ..entry(ip, identity)
        }
    }

    fn id(cache: &IpCache, ip: &str) -> u32 {
        cache.identity_of(ip.parse().unwrap())
    }

    #[test]
    fn lookups_and_conflicts() {
        let cache = IpCache::build(&[entry("10.0.0.1", 256), entry("fd00::1", 257)]).unwrap();
        assert_eq!(cache.identity("10.0.0.1".parse().unwrap()), Some(256));
        assert_eq!(cache.identity("fd00::1".parse().unwrap()), Some(257));
        assert_eq!(cache.identity("10.0.0.2".parse().unwrap()), None);
        assert_eq!(cache.len(), 2);
        assert!(IpCache::build(&[entry("10.0.0.1", 256), entry("10.0.0.1", 256)]).is_ok());
        let err = IpCache::build(&[entry("10.0.0.1", 256), entry("10.0.0.1", 300)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ipcache: address 10.0.0.1 is given identity 256 and identity 300"
        );
        // A /32 is the address itself.
        let err =
            IpCache::build(&[entry("10.0.0.1", 256), prefix("10.0.0.1", 32, 300)]).unwrap_err();
        assert!(matches!(err, IpCacheError::Conflict { first: 256, .. }));
        // Host bits are masked, so these are one prefix.
        let err = IpCache::build(&[prefix("10.1.0.0", 16, 1), prefix("10.1.2.3", 16, 2)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "ipcache: prefix 10.1.2.3/16 is given identity 1 and identity 2"
        );
        let err = IpCache::build(&[prefix("10.0.0.0", 33, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "ipcache: 10.0.0.0/33: prefix_len is above 32");
        assert!(IpCache::build(&[prefix("fd00::", 129, 1)]).is_err());
    }

    #[test]
    fn the_longest_prefix_wins_and_unknown_is_world() {
        let cache = IpCache::build(&[
            prefix("10.0.0.0", 8, 100),
            prefix("10.1.0.0", 16, 101),
            prefix("10.1.2.0", 24, 102),
            entry("10.1.2.3", 103),
            prefix("192.168.0.0", 16, 104),
        ])
        .unwrap();
        assert_eq!(id(&cache, "10.1.2.3"), 103);
        assert_eq!(id(&cache, "10.1.2.4"), 102);
        assert_eq!(id(&cache, "10.1.3.4"), 101);
        assert_eq!(id(&cache, "10.2.0.0"), 100);
        assert_eq!(id(&cache, "10.255.255.255"), 100);
        assert_eq!(id(&cache, "11.0.0.0"), identity::WORLD_IPV4);
        assert_eq!(id(&cache, "192.168.7.1"), 104);
        assert_eq!(id(&cache, "fd00::1"), identity::WORLD_IPV6);
        assert_eq!(cache.lengths(), (vec![32, 24, 16, 8], vec![]));
    }

    #[test]
    fn a_zero_length_prefix_matches_every_address_of_its_family() {
        let cache = IpCache::build(&[
            prefix("0.0.0.0", 0, 50),
            entry("10.0.0.1", 51),
            prefix("::", 0, 60),
            prefix("fd00::", 64, 61),
        ])
        .unwrap();
        assert_eq!(id(&cache, "10.0.0.1"), 51);
        assert_eq!(id(&cache, "1.2.3.4"), 50);
        assert_eq!(id(&cache, "255.255.255.255"), 50);
        assert_eq!(id(&cache, "fd00::7"), 61);
        assert_eq!(id(&cache, "2001:db8::1"), 60);
        // Host bits of a /0 are ignored.
        let odd = IpCache::build(&[prefix("9.9.9.9", 0, 7)]).unwrap();
        assert_eq!(id(&odd, "1.1.1.1"), 7);
    }

    #[test]
    fn ipv6_prefixes_at_every_boundary() {
        let cache = IpCache::build(&[
            prefix("fd00::", 8, 1),
            prefix("fd00:1::", 32, 2),
            prefix("fd00:1:0:1::", 64, 3),
            prefix("fd00:1:0:1::80", 121, 4),
            entry("fd00:1:0:1::81", 5),
        ])
        .unwrap();
        assert_eq!(id(&cache, "fd00:1:0:1::81"), 5);
        assert_eq!(id(&cache, "fd00:1:0:1::82"), 4);
        assert_eq!(id(&cache, "fd00:1:0:1::7f"), 3);
        assert_eq!(id(&cache, "fd00:1:0:2::1"), 2);
        assert_eq!(id(&cache, "fd00:2::1"), 1);
        assert_eq!(id(&cache, "fdff::1"), 1);
        assert_eq!(id(&cache, "fe00::1"), identity::WORLD_IPV6);
        // An IPv4 prefix never matches an IPv6 address and the other way.
        let v4 = IpCache::build(&[prefix("0.0.0.0", 0, 9)]).unwrap();
        assert_eq!(id(&v4, "::"), identity::WORLD_IPV6);
    }

    /// The longest containing entry, by a linear scan over the input.
    fn linear(entries: &[IpCacheEntry], ip: IpAddr) -> Option<u32> {
        entries
            .iter()
            .filter_map(|e| {
                let len = e.prefix_len.unwrap_or(full_length(e.ip));
                let contains = match (e.ip, ip) {
                    (IpAddr::V4(p), IpAddr::V4(a)) => {
                        u32::from(p) & mask_v4(len) == u32::from(a) & mask_v4(len)
                    }
                    (IpAddr::V6(p), IpAddr::V6(a)) => {
                        u128::from(p) & mask_v6(len) == u128::from(a) & mask_v6(len)
                    }
                    _ => false,
                };
                contains.then_some((len, e.identity))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, identity)| identity)
    }

    /// LPM agrees with a linear scan over random tables. Addresses come from
    /// a small space (10.0.x.y, fd00::x:y) and lengths near the end of the
    /// address, so prefixes overlap often. A fixed-seed generator keeps the
    /// runs reproducible.
    #[test]
    fn lpm_matches_a_linear_scan() {
        let mut seed: u64 = 0x5eed_1a2b_3c4d_5e6f;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u32
        };
        let addr = |v6: bool, low: u32| -> IpAddr {
            let (hi, lo) = ((low >> 8) as u8, low as u8);
            if v6 {
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0xfd00,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(hi),
                    u16::from(lo),
                ))
            } else {
                IpAddr::V4(std::net::Ipv4Addr::new(10, 0, hi, lo))
            }
        };
        for round in 0..200 {
            let mut entries = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for i in 0..(next() % 40) {
                let v6 = next() % 2 == 0;
                let ip = addr(v6, next() & 0xffff);
                let len = (next() % 33) as u8 + if v6 { 96 } else { 0 };
                let masked = match ip {
                    IpAddr::V4(a) => u128::from(u32::from(a) & mask_v4(len)),
                    IpAddr::V6(a) => u128::from(a) & mask_v6(len),
                };
                // One identity per prefix, or the build refuses it.
                if seen.insert((v6, len, masked)) {
                    entries.push(IpCacheEntry {
                        ip,
                        prefix_len: Some(len),
                        identity: i + 1,
                    });
                }
            }
            let cache = IpCache::build(&entries).unwrap();
            assert_eq!(cache.len(), entries.len());
            for _ in 0..64 {
                let ip = addr(next() % 2 == 0, next() & 0xffff);
                assert_eq!(
                    cache.identity(ip),
                    linear(&entries, ip),
                    "round {round}: {ip} in {entries:?}"
                );
            }
        }
    }
}

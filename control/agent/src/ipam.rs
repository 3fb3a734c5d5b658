//! Address allocation inside this node's pod CIDRs. Pure: the caller passes
//! the addresses in use and where the last allocation ended; the
//! [`crate::attachments`] store persists both.
//!
//! IPv4: the network address, the first host (the pods' gateway, answered by
//! the engine) and the broadcast address are never handed out. IPv6: pods
//! route via the link-local gateway [`GATEWAY_IPV6`], so only the
//! subnet-router anycast address (`::0`) is skipped. Allocation continues after
//! the last address handed out, wrapping around, so a just-released address is
//! not reused at once (as the reference host-local plugin does).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_tables::Cidr;

/// The next hop IPv6 pods route through; the engine answers for it.
pub const GATEWAY_IPV6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Largest IPv6 range scanned for a free address (a /64 is never exhausted in practice).
const MAX_V6_SCAN: u128 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("pod CIDR {cidr} has no free {family} address ({in_use} in use)")]
    Exhausted {
        cidr: Cidr,
        family: &'static str,
        in_use: usize,
    },
    #[error("no pod CIDR is configured (Node spec.podCIDRs, or --pod-cidr in standalone mode)")]
    NoPodCidr,
}

/// The IPv4 gateway of a pod CIDR: its first host address.
pub fn gateway_ipv4(cidr: &Cidr) -> Option<Ipv4Addr> {
    match cidr.addr {
        IpAddr::V4(net) if cidr.prefix_len <= 30 => {
            Some(Ipv4Addr::from(network_v4(net, cidr.prefix_len) + 1))
        }
        _ => None,
    }
}

fn network_v4(addr: Ipv4Addr, len: u8) -> u32 {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(addr) & mask
}

fn network_v6(addr: Ipv6Addr, len: u8) -> u128 {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(addr) & mask
}

/// A free address in `cidr`, searching after `last` (wrapping).
pub fn allocate(
    cidr: &Cidr,
    in_use: &BTreeSet<IpAddr>,
    last: Option<IpAddr>,
) -> Result<IpAddr, IpamError> {
    let (first, count): (u128, u128) = match cidr.addr {
        IpAddr::V4(net) => {
            let size = 1u128 << (32 - u32::from(cidr.prefix_len));
            if size < 4 {
                (0, 0)
            } else {
                (u128::from(network_v4(net, cidr.prefix_len)) + 2, size - 3)
            }
        }
        IpAddr::V6(net) => {
            let size = 1u128
                .checked_shl(128 - u32::from(cidr.prefix_len))
                .unwrap_or(u128::MAX);
            (
                network_v6(net, cidr.prefix_len) + 1,
                (size - 1).min(MAX_V6_SCAN),
            )
        }
    };
    let to_ip = |n: u128| -> IpAddr {
        match cidr.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    };
    let start = match last {
        Some(ip) if cidr.contains(ip) => {
            let n = match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            };
            if n >= first && n < first + count {
                n - first + 1
            } else {
                0
            }
        }
        _ => 0,
    };
    for step in 0..count {
        let candidate = to_ip(first + (start + step) % count);
        if !in_use.contains(&candidate) {
            return Ok(candidate);
        }
    }
    Err(IpamError::Exhausted {
        cidr: *cidr,
        family: if cidr.addr.is_ipv4() { "IPv4" } else { "IPv6" },
        in_use: in_use.iter().filter(|ip| cidr.contains(**ip)).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn ipv4_skips_network_gateway_and_broadcast_and_exhausts() {
        let c = cidr("10.9.0.0/29");
        assert_eq!(gateway_ipv4(&c), Some(Ipv4Addr::new(10, 9, 0, 1)));
        let mut used = BTreeSet::new();
        let mut last = None;
        let mut got = Vec::new();
        while let Ok(ip) = allocate(&c, &used, last) {
            used.insert(ip);
            last = Some(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        );
        assert_eq!(
            allocate(&c, &used, last).unwrap_err().to_string(),
            "pod CIDR 10.9.0.0/29 has no free IPv4 address (5 in use)"
        );
    }

    #[test]
    fn a_released_address_is_not_reused_at_once() {
        let c = cidr("10.9.0.0/24");
        let used: BTreeSet<IpAddr> = ["10.9.0.2", "10.9.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // 10.9.0.3 was released; the cursor is at .4, so .5 comes next.
        assert_eq!(
            allocate(&c, &used, Some("10.9.0.4".parse().unwrap()))
                .unwrap()
                .to_string(),
            "10.9.0.5"
        );
        // Wrapping around finds the hole.
        let last: IpAddr = "10.9.0.254".parse().unwrap();
        assert_eq!(
            allocate(&c, &used, Some(last)).unwrap().to_string(),
            "10.9.0.3"
        );
    }

    #[test]
    fn ipv6_starts_after_the_anycast_address() {
        let c = cidr("fd00:200::/64");
        let ip = allocate(&c, &BTreeSet::new(), None).unwrap();
        assert_eq!(ip.to_string(), "fd00:200::1");
        let tiny = cidr("fd00::/127");
        let used: BTreeSet<IpAddr> = ["fd00::1".parse().unwrap()].into();
        assert!(allocate(&tiny, &used, None).is_err());
    }
}

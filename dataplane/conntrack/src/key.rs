//! The flow key (5-tuple), address rewrites, and the key's word encoding in
//! the table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 5-tuple of a packet as it arrived at the engine. ICMP echo puts the
/// identifier in `src_port` for requests and in `dst_port` for replies (the
/// other port 0), so `reversed()` of a request key is its reply's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6.
    pub protocol: u8,
}

impl FlowKey {
    /// The key of a packet travelling the other way.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    /// The key after `rewrites` are applied to a packet with this key.
    pub fn rewritten(&self, rewrites: &Rewrites) -> FlowKey {
        let mut key = *self;
        if let Some(src) = rewrites.src {
            key.src = src.ip();
            key.src_port = src.port();
        }
        if let Some(dst) = rewrites.dst {
            key.dst = dst.ip();
            key.dst_port = dst.port();
        }
        key
    }

    /// The key of the other entry of this key's flow, given this key's entry
    /// rewrites: the reverse of the packet after its rewrites. The same
    /// formula goes original -> reply and reply -> original, which is what
    /// lets any entry find its partner.
    pub fn partner(&self, rewrites: &Rewrites) -> FlowKey {
        self.rewritten(rewrites).reversed()
    }
}

/// Address translation applied to every packet matching an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rewrites {
    /// New source address and port (SNAT, or un-DNAT of a reply).
    pub src: Option<SocketAddr>,
    /// New destination address and port (DNAT, or un-SNAT of a reply).
    pub dst: Option<SocketAddr>,
}

/// Words a key takes in the table: source and destination address (two
/// words each, IPv4 zero-extended) and one word of ports, protocol and the
/// address families.
pub(crate) const KEY_WORDS: usize = 5;

/// Bit in the last key word: the source address is IPv6.
const SRC_V6: u64 = 1 << 0;
/// Bit in the last key word: the destination address is IPv6.
const DST_V6: u64 = 1 << 1;

impl FlowKey {
    pub(crate) fn to_words(self) -> [u64; KEY_WORDS] {
        let (src_hi, src_lo, src_v6) = ip_to_words(self.src);
        let (dst_hi, dst_lo, dst_v6) = ip_to_words(self.dst);
        let mut last = u64::from(self.src_port) << 48
            | u64::from(self.dst_port) << 32
            | u64::from(self.protocol) << 24;
        if src_v6 {
            last |= SRC_V6;
        }
        if dst_v6 {
            last |= DST_V6;
        }
        [src_hi, src_lo, dst_hi, dst_lo, last]
    }

    pub(crate) fn from_words(words: &[u64; KEY_WORDS]) -> FlowKey {
        let last = words[4];
        FlowKey {
            src: ip_from_words(words[0], words[1], last & SRC_V6 != 0),
            dst: ip_from_words(words[2], words[3], last & DST_V6 != 0),
            src_port: (last >> 48) as u16,
            dst_port: (last >> 32) as u16,
            protocol: (last >> 24) as u8,
        }
    }
}

/// An address as (high word, low word, is IPv6). IPv4 goes in the low word;
/// the family travels separately so `::a.b.c.d` and `a.b.c.d` stay distinct.
pub(crate) fn ip_to_words(ip: IpAddr) -> (u64, u64, bool) {
    match ip {
        IpAddr::V4(v4) => (0, u64::from(u32::from(v4)), false),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            ((bits >> 64) as u64, bits as u64, true)
        }
    }
}

pub(crate) fn ip_from_words(hi: u64, lo: u64, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo)))
    } else {
        IpAddr::V4(Ipv4Addr::from(lo as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_both_families_and_keep_them_apart() {
        let v4 = FlowKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40000,
            dst_port: 53,
            protocol: 17,
        };
        let mapped = FlowKey {
            src: "::10.0.0.1".parse().unwrap(),
            dst: "::10.96.0.10".parse().unwrap(),
            ..v4
        };
        let v6 = FlowKey {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00:96::a".parse().unwrap(),
            src_port: 1,
            dst_port: 65535,
            protocol: 6,
        };
        for key in [v4, mapped, v6] {
            assert_eq!(FlowKey::from_words(&key.to_words()), key);
        }
        assert_ne!(v4.to_words(), mapped.to_words());
    }

    #[test]
    fn partner_of_partner_is_the_key_for_dnat() {
        let original = FlowKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40000,
            dst_port: 80,
            protocol: 6,
        };
        let dnat = Rewrites {
            src: None,
            dst: Some("10.0.1.5:8080".parse().unwrap()),
        };
        let reply = original.partner(&dnat);
        assert_eq!(reply.src, "10.0.1.5".parse::<IpAddr>().unwrap());
        assert_eq!(reply.src_port, 8080);
        assert_eq!(reply.dst_port, 40000);
        let un_dnat = Rewrites {
            src: Some("10.96.0.10:80".parse().unwrap()),
            dst: None,
        };
        assert_eq!(reply.partner(&un_dnat), original);
    }
}

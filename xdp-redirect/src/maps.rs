//! Keys and values of the maps shared with the BPF programs.
//!
//! The types and constants come from `layout.rs`, the single definition that `build.rs` also
//! turns into the C header `sluice_maps.h` (with `_Static_assert`s on every size and offset).

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::lpm_trie::Key;

use crate::XdpError;

/// The library-side reading of `layout.rs`: public `#[repr(C)]` structs and constants.
macro_rules! sluice_layout {
    (
        consts {
            $( $(#[doc = $cdoc:literal])* $cname:ident : $cty:ty = $cval:expr ; )*
        }
        $(
            $(#[doc = $sdoc:literal])*
            struct $sname:ident => $cstruct:ident {
                $( $(#[doc = $fdoc:literal])* $fname:ident : $fty:ty ),* $(,)?
            }
        )*
    ) => {
        $( $(#[doc = $cdoc])* pub const $cname: $cty = $cval; )*
        $(
            $(#[doc = $sdoc])*
            #[doc = ""]
            #[doc = concat!("C: `struct ", stringify!($cstruct), "` in `sluice_maps.h`.")]
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
            pub struct $sname {
                $( $(#[doc = $fdoc])* pub $fname: $fty, )*
            }
        )*
    };
}

include!("layout.rs");

/// `aya::Pod` lets aya copy these types to and from map memory as bytes.
///
/// This is the crate's one exception to `unsafe_code = "deny"`: `Pod` is an unsafe marker
/// trait and has no safe alternative in aya 0.14.
#[allow(unsafe_code)]
mod plain_old_data {
    use super::{DestEntry, LpmKey, PortEntry, PortKey, PortRange, SinkCounts, XdpStats};

    // SAFETY: #[repr(C)] of u32 + [u8; 16], no padding (build.rs fails on padding); every bit
    // pattern is a valid value, so it may be built from arbitrary bytes and read as bytes.
    unsafe impl aya::Pod for LpmKey {}
    // SAFETY: #[repr(C)] of a single u32: no padding, every bit pattern valid.
    unsafe impl aya::Pod for DestEntry {}
    // SAFETY: #[repr(C)] of u8, u8, u16 laid out without padding (build.rs checks it); every
    // bit pattern valid.
    unsafe impl aya::Pod for PortKey {}
    // SAFETY: #[repr(C)] of a single u32: no padding, every bit pattern valid.
    unsafe impl aya::Pod for PortEntry {}
    // SAFETY: #[repr(C)] of u16, u16, u32 laid out without padding (build.rs checks it); every
    // bit pattern valid.
    unsafe impl aya::Pod for PortRange {}
    // SAFETY: #[repr(C)] of four u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for XdpStats {}
    // SAFETY: #[repr(C)] of two u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for SinkCounts {}
}

impl LpmKey {
    /// The trie key for `addr/prefix_len`, host bits cleared. IPv4 becomes IPv4-mapped IPv6
    /// with 96 added to the prefix length.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, XdpError> {
        let (mapped, offset, max) = match addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 96u32, 32u8),
            IpAddr::V6(v6) => (v6, 0, 128),
        };
        if prefix_len > max {
            return Err(XdpError::PrefixTooLong {
                addr,
                prefix_len,
                max,
            });
        }
        let prefixlen = offset + u32::from(prefix_len);
        let mask = u128::MAX.checked_shl(128 - prefixlen).unwrap_or(0);
        let masked = Ipv6Addr::from(u128::from(mapped) & mask);
        Ok(Self {
            prefixlen,
            addr: masked.octets(),
        })
    }
}

impl From<LpmKey> for Key<[u8; 16]> {
    fn from(key: LpmKey) -> Self {
        Key::new(key.prefixlen, key.addr)
    }
}

/// Transport protocols whose destination port can be owned by the engine on node addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl L4Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

/// Why the engine owns a (protocol, port) on the node's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// A Service node port.
    NodePort,
    /// A tunnel endpoint (VXLAN, Geneve, WireGuard).
    Tunnel,
}

impl From<PortKind> for PortEntry {
    fn from(kind: PortKind) -> Self {
        let kind = match kind {
            PortKind::NodePort => PORT_NODEPORT,
            PortKind::Tunnel => PORT_TUNNEL,
        };
        PortEntry { kind }
    }
}

impl PortKey {
    /// The key for `proto` and destination `port` (host order in, network order stored).
    pub const fn new(proto: L4Proto, port: u16) -> Self {
        Self {
            proto: proto.number(),
            pad: 0,
            port_be: port.to_be(),
        }
    }
}

impl XdpStats {
    /// Field-wise sum, used to fold the per-CPU copies.
    pub const fn plus(self, other: Self) -> Self {
        Self {
            redirected: self.redirected.wrapping_add(other.redirected),
            no_socket: self.no_socket.wrapping_add(other.no_socket),
            not_engine: self.not_engine.wrapping_add(other.not_engine),
            non_ip: self.non_ip.wrapping_add(other.non_ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn layouts_have_the_sizes_the_c_side_asserts() {
        assert_eq!(size_of::<LpmKey>(), 20);
        assert_eq!(offset_of!(LpmKey, addr), 4);
        assert_eq!(size_of::<DestEntry>(), 4);
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(offset_of!(PortKey, port_be), 2);
        assert_eq!(size_of::<PortEntry>(), 4);
        assert_eq!(size_of::<PortRange>(), 8);
        assert_eq!(offset_of!(PortRange, enabled), 4);
        assert_eq!(size_of::<XdpStats>(), 32);
        assert_eq!(size_of::<SinkCounts>(), 16);
    }

    #[test]
    fn lpm_key_matches_aya_trie_key() {
        assert_eq!(size_of::<LpmKey>(), size_of::<Key<[u8; 16]>>());
        let key: Key<[u8; 16]> = LpmKey::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 16)
            .unwrap()
            .into();
        assert_eq!(key.prefix_len(), 112);
        let mut want = [0u8; 16];
        want[10..].copy_from_slice(&[0xff, 0xff, 10, 1, 0, 0]);
        assert_eq!(key.data(), want);
    }

    #[test]
    fn lpm_key_clears_host_bits() {
        let v6: Ipv6Addr = "2001:db8:1:2:3::9".parse().unwrap();
        let key = LpmKey::new(IpAddr::V6(v6), 48).unwrap();
        assert_eq!(key.prefixlen, 48);
        assert_eq!(
            Ipv6Addr::from(key.addr),
            "2001:db8:1::".parse::<Ipv6Addr>().unwrap()
        );
        let all = LpmKey::new(IpAddr::V6(v6), 0).unwrap();
        assert_eq!(all.addr, [0; 16]);
        let host = LpmKey::new(IpAddr::V6(v6), 128).unwrap();
        assert_eq!(Ipv6Addr::from(host.addr), v6);
        let v4_default = LpmKey::new(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 0).unwrap();
        assert_eq!(v4_default.prefixlen, 96);
        assert_eq!(&v4_default.addr[10..12], &[0xff, 0xff]);
        assert_eq!(&v4_default.addr[12..], &[0, 0, 0, 0]);
    }

    #[test]
    fn lpm_key_rejects_long_prefixes() {
        let err = LpmKey::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 33).unwrap_err();
        assert_eq!(
            err.to_string(),
            "prefix length 33 is too long for 10.0.0.0 (at most 32)"
        );
        assert!(LpmKey::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 129).is_err());
    }

    #[test]
    fn port_key_is_network_order() {
        let key = PortKey::new(L4Proto::Udp, 4789);
        assert_eq!(key.proto, 17);
        assert_eq!(key.pad, 0);
        assert_eq!(key.port_be.to_ne_bytes(), 4789u16.to_be_bytes());
    }
}

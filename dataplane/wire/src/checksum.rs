//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are carried unfolded in a `u64` so that callers can add the pseudo-header,
//! the header and the payload in any order and fold once at the end.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Ones'-complement sum of `data` as big-endian 16-bit words (odd tail padded
/// with zero), not yet folded or inverted.
///
/// Eight bytes are read at a time and split into their four 16-bit words, so
/// the value is exactly the word-by-word sum (callers may add sums together).
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut quads = data.chunks_exact(8);
    for q in &mut quads {
        let mut x = [0u8; 8];
        x.copy_from_slice(q);
        let x = u64::from_be_bytes(x);
        acc += (x >> 48) + ((x >> 32) & 0xffff) + ((x >> 16) & 0xffff) + (x & 0xffff);
    }
    let mut words = quads.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a carried sum into 16 bits with end-around carry.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for a carried sum: the folded sum, inverted.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// Checksum of `data` alone (IPv4 header, ICMPv4 message).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// True when `data`, which contains its own checksum field, verifies.
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// Carried sum of the IPv4 pseudo-header (RFC 793/768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(protocol) + u64::from(len)
}

/// Carried sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    sum(&src.octets())
        + sum(&dst.octets())
        + u64::from(len >> 16)
        + u64::from(len & 0xffff)
        + u64::from(next_header)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data
/// changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + u64::from(!old) + u64::from(new))
}

/// Update for a changed 32-bit field aligned on a 16-bit boundary.
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!csum)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(acc)
}

/// Update for a changed byte string of even length at an even offset (e.g. an
/// address). Slices of different lengths are a caller bug; the shorter length wins.
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(!csum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(acc)
}

/// Update for a changed IPv4 address: use it for the IPv4 header checksum, and
/// for TCP/UDP whose pseudo-header carries the address (see [`update_udp`]).
pub fn update_ipv4_addr(csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_bytes(csum, &old.octets(), &new.octets())
}

/// Update for a changed IPv6 address: TCP, UDP and ICMPv6 cover it through the
/// pseudo-header (IPv6 has no header checksum).
pub fn update_ipv6_addr(csum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    update_bytes(csum, &old.octets(), &new.octets())
}

/// Transport protocols whose checksum covers the IP addresses via the
/// pseudo-header, so an address rewrite must update them too. ICMPv4 has no
/// pseudo-header.
pub const fn covers_pseudo_header(protocol: u8) -> bool {
    matches!(
        protocol,
        crate::ip_protocol::TCP | crate::ip_protocol::UDP | crate::ip_protocol::ICMPV6
    )
}

/// Applies `update` to a UDP checksum with the UDP rules: over IPv4 a zero field
/// means "no checksum" and stays zero; a computed zero is sent as `0xffff`.
pub fn update_udp(csum: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(update(csum))
}

/// A UDP checksum that computes to zero is transmitted as all ones (RFC 768).
pub const fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    // A captured IPv4 header (checksum b861) verifies, and matches smoltcp.
    #[test]
    fn ipv4_header_verifies() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(&hdr));
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
        let oracle = smoltcp::wire::Ipv4Packet::new_unchecked(&hdr[..]);
        assert!(oracle.verify_checksum());
    }

    #[test]
    fn ttl_decrement_update() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let old = u16::from_be_bytes([hdr[8], hdr[9]]);
        hdr[8] -= 1;
        let new = u16::from_be_bytes([hdr[8], hdr[9]]);
        let c = update_u16(0xb861, old, new);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(&hdr));
    }

    #[test]
    fn udp_zero_stays_zero() {
        assert_eq!(update_udp(0, |c| update_u16(c, 1, 2)), 0);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Incremental and full results must agree as ones'-complement numbers; the
    /// two zeros (0x0000, 0xffff) are the same value, so compare after verifying.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0xffff && b == 0) || (a == 0 && b == 0xffff)
    }

    fn with_checksum(mut data: Vec<u8>, at: usize) -> Vec<u8> {
        data[at] = 0;
        data[at + 1] = 0;
        let c = checksum(&data);
        data[at..at + 2].copy_from_slice(&c.to_be_bytes());
        data
    }

    proptest! {
        /// `sum` reads eight bytes at a time; its value must still be the plain
        /// word-by-word sum, whatever the length and alignment of the slice.
        #[test]
        fn sum_is_the_word_by_word_sum(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            skip in 0usize..8,
        ) {
            let data = &data[skip.min(data.len())..];
            let reference: u64 = data
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) })
                .sum();
            prop_assert_eq!(sum(data), reference);
        }

        #[test]
        fn update_u16_matches_full(
            data in proptest::collection::vec(any::<u8>(), 4..200),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let mut data = with_checksum(if data.len() % 2 == 1 { data[1..].to_vec() } else { data }, 0);
            let words = data.len() / 2;
            let w = 1 + word.index(words - 1);
            let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
            let csum = u16::from_be_bytes([data[0], data[1]]);
            data[2 * w..2 * w + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(csum, old, new);
            let full = with_checksum(data.clone(), 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same(inc, full), "inc {inc:04x} full {full:04x}");
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verifies(&data));
        }

        #[test]
        fn update_u32_matches_full(
            data in proptest::collection::vec(any::<u8>(), 8..200),
            word in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            let mut data = with_checksum(if data.len() % 2 == 1 { data[1..].to_vec() } else { data }, 0);
            let words = data.len() / 2;
            let w = 1 + word.index(words - 2);
            let at = 2 * w;
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let csum = u16::from_be_bytes([data[0], data[1]]);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update_u32(csum, old, new);
            let full = with_checksum(data.clone(), 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same(inc, full), "inc {inc:04x} full {full:04x}");
        }
    }
}

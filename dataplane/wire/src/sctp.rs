//! SCTP common header (RFC 9260 §3.1): ports and the CRC32c checksum.
//!
//! Unlike TCP and UDP, the SCTP checksum does not cover the IP addresses (no
//! pseudo-header), but it is a CRC, not a ones'-complement sum: a port rewrite
//! cannot be patched incrementally and the CRC is recomputed over the packet.

pub const HEADER_LEN: usize = 12;
/// Offset of the checksum field in the common header.
pub const CHECKSUM_OFFSET: usize = 8;

/// CRC32c (Castagnoli, reflected polynomial 0x82f63b78) lookup table, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32c of `data` (initial value and final xor all ones, as SCTP and iSCSI use it).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

/// Recomputes the checksum of the SCTP packet `packet` (common header and
/// chunks) in place. The CRC goes on the wire least significant byte first
/// (RFC 9260 Appendix A; Linux stores `cpu_to_le32`). Returns false when the
/// packet is shorter than the common header.
pub fn fill_checksum(packet: &mut [u8]) -> bool {
    if packet.len() < HEADER_LEN {
        return false;
    }
    packet[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].fill(0);
    let crc = crc32c(packet);
    packet[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    true
}

/// Whether the checksum of `packet` verifies.
pub fn verify_checksum(packet: &[u8]) -> bool {
    let Some(field) = packet.get(CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4) else {
        return false;
    };
    let stored = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    // Computed over the packet with the field zeroed, without allocating: the
    // header is copied, the chunks are read in place.
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&packet[..HEADER_LEN]);
    header[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].fill(0);
    let mut crc = !0u32;
    for b in header.iter().chain(&packet[HEADER_LEN..]) {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 B.4 test vectors (iSCSI uses the same CRC32c).
    #[test]
    fn crc32c_matches_the_rfc_vectors() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let incrementing: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&incrementing), 0x46dd_794e);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn fill_then_verify_and_a_changed_port_fails() {
        let mut p = [0u8; 28];
        p[0..2].copy_from_slice(&5000u16.to_be_bytes());
        p[2..4].copy_from_slice(&80u16.to_be_bytes());
        p[12] = 1; // INIT chunk type
        assert!(fill_checksum(&mut p));
        assert!(verify_checksum(&p));
        p[1] ^= 1;
        assert!(!verify_checksum(&p));
        assert!(!fill_checksum(&mut p[..11]));
    }
}

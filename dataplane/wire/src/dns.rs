//! DNS messages (RFC 1035 §4.1), as much as inline DNS policy needs: the
//! header, names (with compression pointers, §4.1.4), the question and
//! resource records. Parsing is bounds-checked everywhere and bounded on
//! every input: a name is at most 255 octets and follows at most
//! [`MAX_POINTERS`] compression pointers, so a pointer loop ends in an error.
//!
//! Names are read into a [`NameText`]: the presentation form used for policy
//! matching, labels joined by `.` without the root dot. Bytes other than
//! letters, digits, `-` and `_` are written as `\`, a byte no DNS selector
//! contains, so such labels match nothing (Cilium sees them escaped, which
//! no selector matches either) and a `.` inside a label cannot pass for a
//! label boundary.
//!
//! Emission ([`emit_name`], [`QuestionRepr::emit`], [`RecordRepr::emit`])
//! writes uncompressed names; it serves answers built in place and tests.

use crate::{be16, be32, put16, put32, BufferTooSmall};

pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, root label included (§2.3.4).
pub const MAX_NAME_WIRE_LEN: usize = 255;
/// Longest name in presentation form, without the root dot.
pub const MAX_NAME_TEXT_LEN: usize = MAX_NAME_WIRE_LEN - 2;
/// Compression pointers one name may follow (as miekg/dns, which Cilium's
/// DNS proxy uses: enough for any name of at most 255 octets).
pub const MAX_POINTERS: usize = 126;
/// The Internet class.
pub const CLASS_IN: u16 = 1;

/// Header flag bits (§4.1.1) and field positions in the flags word.
pub mod flags {
    /// Response.
    pub const QR: u16 = 0x8000;
    pub const OPCODE_SHIFT: u16 = 11;
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Authentic data (RFC 4035).
    pub const AD: u16 = 0x0020;
    /// Checking disabled (RFC 4035).
    pub const CD: u16 = 0x0010;
    pub const RCODE_MASK: u16 = 0x000f;
}

/// Operation codes.
pub mod opcode {
    pub const QUERY: u8 = 0;
    pub const NOTIFY: u8 = 4;
}

/// Response codes.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

/// Record types.
pub mod rr_type {
    pub const A: u16 = 1;
    pub const CNAME: u16 = 5;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
}

/// Why bytes are not a DNS message: one variant per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsError {
    /// Fewer than 12 bytes.
    HeaderTruncated,
    /// A label or pointer runs past the end of the message.
    NameTruncated,
    /// A label type other than a length (0b00) or a pointer (0b11).
    LabelType,
    /// More than 255 octets.
    NameTooLong,
    /// More than [`MAX_POINTERS`] compression pointers (a loop).
    TooManyPointers,
    /// Type and class run past the end of the message.
    QuestionTruncated,
    /// Type, class, TTL or data length run past the end of the message.
    RecordTruncated,
    /// The record data runs past the end of the message.
    RdataTruncated,
}

/// The header (§4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z, AD, CD and RCODE, as on the wire.
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn parse(message: &[u8]) -> Result<Header, DnsError> {
        if message.len() < HEADER_LEN {
            return Err(DnsError::HeaderTruncated);
        }
        Ok(Header {
            id: be16(message, 0),
            flags: be16(message, 2),
            qdcount: be16(message, 4),
            ancount: be16(message, 6),
            nscount: be16(message, 8),
            arcount: be16(message, 10),
        })
    }

    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), BufferTooSmall> {
        let b = buffer.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        put16(b, 0, self.id);
        put16(b, 2, self.flags);
        put16(b, 4, self.qdcount);
        put16(b, 6, self.ancount);
        put16(b, 8, self.nscount);
        put16(b, 10, self.arcount);
        Ok(())
    }

    pub fn is_response(&self) -> bool {
        self.flags & flags::QR != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags & flags::OPCODE_MASK) >> flags::OPCODE_SHIFT) as u8
    }

    pub fn rcode(&self) -> u8 {
        (self.flags & flags::RCODE_MASK) as u8
    }
}

/// A name in presentation form (see the module documentation), held inline.
#[derive(Clone, Copy)]
pub struct NameText {
    bytes: [u8; MAX_NAME_TEXT_LEN],
    len: usize,
}

impl Default for NameText {
    fn default() -> Self {
        NameText {
            bytes: [0; MAX_NAME_TEXT_LEN],
            len: 0,
        }
    }
}

impl NameText {
    /// Labels joined by `.`, no root dot; empty for the root.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len.min(MAX_NAME_TEXT_LEN)]
    }

    fn push(&mut self, byte: u8) -> Result<(), DnsError> {
        let slot = self.bytes.get_mut(self.len).ok_or(DnsError::NameTooLong)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }
}

impl core::fmt::Debug for NameText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:?}",
            core::str::from_utf8(self.as_bytes()).unwrap_or("?")
        )
    }
}

/// The labels of the name at `at` in `message`, following pointers.
#[derive(Debug)]
pub struct Labels<'a> {
    message: &'a [u8],
    at: usize,
    /// Wire octets so far (length bytes and labels, the root's byte included).
    wire_len: usize,
    pointers: usize,
    /// Where the name ends in place: after its first pointer or its root label.
    end: Option<usize>,
    done: bool,
}

impl<'a> Labels<'a> {
    pub fn new(message: &'a [u8], at: usize) -> Labels<'a> {
        Labels {
            message,
            at,
            wire_len: 0,
            pointers: 0,
            end: None,
            done: false,
        }
    }

    /// The next label, or `None` after the root label.
    pub fn next_label(&mut self) -> Result<Option<&'a [u8]>, DnsError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let length = *self.message.get(self.at).ok_or(DnsError::NameTruncated)?;
            match length >> 6 {
                0b00 => {
                    let len = usize::from(length);
                    self.wire_len += 1 + len;
                    if self.wire_len > MAX_NAME_WIRE_LEN {
                        return Err(DnsError::NameTooLong);
                    }
                    if len == 0 {
                        self.done = true;
                        self.end.get_or_insert(self.at + 1);
                        return Ok(None);
                    }
                    let label = self
                        .message
                        .get(self.at + 1..self.at + 1 + len)
                        .ok_or(DnsError::NameTruncated)?;
                    self.at += 1 + len;
                    return Ok(Some(label));
                }
                0b11 => {
                    let low = *self
                        .message
                        .get(self.at + 1)
                        .ok_or(DnsError::NameTruncated)?;
                    self.pointers += 1;
                    if self.pointers > MAX_POINTERS {
                        return Err(DnsError::TooManyPointers);
                    }
                    self.end.get_or_insert(self.at + 2);
                    self.at = usize::from(u16::from_be_bytes([length & 0x3f, low]));
                }
                _ => return Err(DnsError::LabelType),
            }
        }
    }

    /// Where the name ends in place, once the root label has been read.
    pub fn end(&self) -> Option<usize> {
        self.end.filter(|_| self.done)
    }
}

/// Walks the name at `at` to its end; returns the offset after it in place.
pub fn skip_name(message: &[u8], at: usize) -> Result<usize, DnsError> {
    let mut labels = Labels::new(message, at);
    while labels.next_label()?.is_some() {}
    labels.end().ok_or(DnsError::NameTruncated)
}

/// Reads the name at `at` into `text`; returns the offset after it in place.
pub fn read_name(message: &[u8], at: usize, text: &mut NameText) -> Result<usize, DnsError> {
    text.len = 0;
    let mut labels = Labels::new(message, at);
    let mut first = true;
    while let Some(label) = labels.next_label()? {
        if !first {
            text.push(b'.')?;
        }
        first = false;
        for &byte in label {
            let shown = if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                byte
            } else {
                b'\\'
            };
            text.push(shown)?;
        }
    }
    labels.end().ok_or(DnsError::NameTruncated)
}

/// Whether the names at `a` and `b` are equal (ASCII case-insensitive,
/// §2.3.3), without copying them.
pub fn names_equal(message: &[u8], a: usize, b: usize) -> Result<bool, DnsError> {
    let mut left = Labels::new(message, a);
    let mut right = Labels::new(message, b);
    loop {
        match (left.next_label()?, right.next_label()?) {
            (None, None) => return Ok(true),
            (Some(l), Some(r)) if l.eq_ignore_ascii_case(r) => {}
            _ => return Ok(false),
        }
    }
}

/// Writes `name` (presentation form, a trailing dot allowed, no escapes)
/// uncompressed; returns the bytes written. An empty label or one longer
/// than 63 bytes is refused.
pub fn emit_name(name: &[u8], buffer: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let mut at = 0;
    if !name.is_empty() {
        for label in name.split(|&b| b == b'.') {
            if label.is_empty() || label.len() > 63 {
                return Err(BufferTooSmall);
            }
            let out = buffer
                .get_mut(at..at + 1 + label.len())
                .ok_or(BufferTooSmall)?;
            out[0] = label.len() as u8;
            out[1..].copy_from_slice(label);
            at += 1 + label.len();
        }
    }
    *buffer.get_mut(at).ok_or(BufferTooSmall)? = 0;
    Ok(at + 1)
}

/// Wire length of `name` as [`emit_name`] writes it.
pub fn name_wire_len(name: &[u8]) -> usize {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        1
    } else {
        name.len() + 2
    }
}

/// A question (§4.1.2) found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    /// Offset of its name.
    pub name_at: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset after it.
    pub end: usize,
}

impl Question {
    pub fn parse(message: &[u8], at: usize) -> Result<Question, DnsError> {
        let fixed = skip_name(message, at)?;
        let b = message
            .get(fixed..fixed + 4)
            .ok_or(DnsError::QuestionTruncated)?;
        Ok(Question {
            name_at: at,
            qtype: be16(b, 0),
            qclass: be16(b, 2),
            end: fixed + 4,
        })
    }
}

/// A resource record (§4.1.3) found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset of its owner name.
    pub name_at: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Offset and length of its data.
    pub rdata_at: usize,
    pub rdata_len: usize,
    /// Offset after it.
    pub end: usize,
}

impl Record {
    pub fn parse(message: &[u8], at: usize) -> Result<Record, DnsError> {
        let fixed = skip_name(message, at)?;
        let b = message
            .get(fixed..fixed + 10)
            .ok_or(DnsError::RecordTruncated)?;
        let rdata_len = usize::from(be16(b, 8));
        let rdata_at = fixed + 10;
        if message.len() < rdata_at + rdata_len {
            return Err(DnsError::RdataTruncated);
        }
        Ok(Record {
            name_at: at,
            rtype: be16(b, 0),
            class: be16(b, 2),
            ttl: be32(b, 4),
            rdata_at,
            rdata_len,
            end: rdata_at + rdata_len,
        })
    }

    /// The record's data.
    pub fn rdata<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        message
            .get(self.rdata_at..self.rdata_at + self.rdata_len)
            .unwrap_or(&[])
    }
}

/// A question to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuestionRepr<'a> {
    /// Presentation form, no escapes.
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
}

impl QuestionRepr<'_> {
    pub fn buffer_len(&self) -> usize {
        name_wire_len(self.name) + 4
    }

    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let at = emit_name(self.name, buffer)?;
        let b = buffer.get_mut(at..at + 4).ok_or(BufferTooSmall)?;
        put16(b, 0, self.qtype);
        put16(b, 2, self.qclass);
        Ok(at + 4)
    }
}

/// A resource record to emit, its owner name uncompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRepr<'a> {
    pub name: &'a [u8],
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

impl RecordRepr<'_> {
    pub fn buffer_len(&self) -> usize {
        name_wire_len(self.name) + 10 + self.rdata.len()
    }

    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let at = emit_name(self.name, buffer)?;
        let rdata_len = u16::try_from(self.rdata.len()).map_err(|_| BufferTooSmall)?;
        let b = buffer
            .get_mut(at..at + 10 + self.rdata.len())
            .ok_or(BufferTooSmall)?;
        put16(b, 0, self.rtype);
        put16(b, 2, self.class);
        put32(b, 4, self.ttl);
        put16(b, 8, rdata_len);
        b[10..].copy_from_slice(self.rdata);
        Ok(at + 10 + self.rdata.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A response for www.example.com: a CNAME to web.example.com (the
    /// owner compressed to the question, the target's suffix to it too),
    /// then an A record for the target (owner compressed to the target).
    fn response() -> Vec<u8> {
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0, // header
            3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
            0, 0, 1, 0, 1, // question at 12, type A class IN; ends at 33
        ];
        // CNAME at 33: owner -> 12, rdata "web" + pointer to "example.com" at 16.
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
        let target = m.len();
        m.extend_from_slice(&[3, b'w', b'e', b'b', 0xc0, 16]);
        // A: owner -> the CNAME target.
        m.extend_from_slice(&[
            0xc0,
            target as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            30,
            0,
            4,
            192,
            0,
            2,
            7,
        ]);
        m
    }

    #[test]
    fn header_fields() {
        let m = response();
        let h = Header::parse(&m).unwrap();
        assert_eq!((h.id, h.qdcount, h.ancount), (0x1234, 1, 2));
        assert!(h.is_response());
        assert_eq!((h.opcode(), h.rcode()), (opcode::QUERY, rcode::NOERROR));
        assert_ne!(h.flags & flags::RD, 0);
        let mut out = [0u8; HEADER_LEN];
        h.emit(&mut out).unwrap();
        assert_eq!(&out[..], &m[..HEADER_LEN]);
        assert_eq!(Header::parse(&m[..11]), Err(DnsError::HeaderTruncated));
        let notify = Header {
            flags: u16::from(opcode::NOTIFY) << flags::OPCODE_SHIFT | u16::from(rcode::REFUSED),
            ..h
        };
        assert_eq!(
            (notify.opcode(), notify.rcode()),
            (opcode::NOTIFY, rcode::REFUSED)
        );
    }

    #[test]
    fn question_and_records_with_compression() {
        let m = response();
        let q = Question::parse(&m, HEADER_LEN).unwrap();
        assert_eq!((q.qtype, q.qclass, q.end), (rr_type::A, CLASS_IN, 33));
        let mut text = NameText::default();
        assert_eq!(read_name(&m, q.name_at, &mut text), Ok(29));
        assert_eq!(text.as_bytes(), b"www.example.com");
        let cname = Record::parse(&m, q.end).unwrap();
        assert_eq!(
            (cname.rtype, cname.ttl, cname.rdata_len),
            (rr_type::CNAME, 60, 6)
        );
        assert!(names_equal(&m, cname.name_at, q.name_at).unwrap());
        read_name(&m, cname.rdata_at, &mut text).unwrap();
        assert_eq!(text.as_bytes(), b"web.example.com");
        let a = Record::parse(&m, cname.end).unwrap();
        assert_eq!((a.rtype, a.class, a.ttl), (rr_type::A, CLASS_IN, 30));
        assert_eq!(a.rdata(&m), &[192, 0, 2, 7]);
        assert_eq!(a.end, m.len());
        assert!(names_equal(&m, a.name_at, cname.rdata_at).unwrap());
        assert!(!names_equal(&m, a.name_at, q.name_at).unwrap());
        // Truncations: each field in turn.
        assert_eq!(
            Record::parse(&m[..m.len() - 1], cname.end),
            Err(DnsError::RdataTruncated)
        );
        assert_eq!(
            Record::parse(&m[..a.rdata_at - 1], cname.end),
            Err(DnsError::RecordTruncated)
        );
        assert_eq!(
            Question::parse(&m[..31], HEADER_LEN),
            Err(DnsError::QuestionTruncated)
        );
        assert_eq!(
            Question::parse(&m[..20], HEADER_LEN),
            Err(DnsError::NameTruncated)
        );
    }

    #[test]
    fn names_compare_case_insensitively() {
        let mut m = response();
        m[13] = b'W';
        assert!(names_equal(&m, 33, HEADER_LEN).unwrap());
        let mut text = NameText::default();
        read_name(&m, HEADER_LEN, &mut text).unwrap();
        assert_eq!(text.as_bytes(), b"Www.example.com");
    }

    #[test]
    fn pointer_loops_and_bad_labels_are_errors() {
        let mut text = NameText::default();
        // A pointer to itself, and two pointing at each other.
        let m = [0u8; 12]
            .iter()
            .copied()
            .chain([0xc0, 12])
            .collect::<Vec<_>>();
        assert_eq!(read_name(&m, 12, &mut text), Err(DnsError::TooManyPointers));
        let m = [0u8; 12]
            .iter()
            .copied()
            .chain([0xc0, 14, 0xc0, 12])
            .collect::<Vec<_>>();
        assert_eq!(skip_name(&m, 12), Err(DnsError::TooManyPointers));
        assert_eq!(names_equal(&m, 12, 14), Err(DnsError::TooManyPointers));
        // Label types 0b01 and 0b10.
        assert_eq!(skip_name(&[0x41, 0], 0), Err(DnsError::LabelType));
        assert_eq!(skip_name(&[0x80, 0], 0), Err(DnsError::LabelType));
        // A pointer past the end, a cut pointer, a label past the end.
        assert_eq!(skip_name(&[0xc0, 9], 0), Err(DnsError::NameTruncated));
        assert_eq!(skip_name(&[0xc0], 0), Err(DnsError::NameTruncated));
        assert_eq!(skip_name(&[3, b'a', b'b'], 0), Err(DnsError::NameTruncated));
        // A label repeated through a pointer past 255 octets.
        let mut m = vec![63];
        m.extend([b'a'; 63]);
        m.extend([0xc0, 0]);
        assert_eq!(read_name(&m, 0, &mut text), Err(DnsError::NameTooLong));
    }

    #[test]
    fn bytes_outside_dns_characters_read_as_backslash() {
        let m = [3, b'a', b'.', b'B', 2, b' ', b'_', 0];
        let mut text = NameText::default();
        assert_eq!(read_name(&m, 0, &mut text), Ok(8));
        assert_eq!(text.as_bytes(), b"a\\B.\\_");
        assert_eq!(read_name(&[0], 0, &mut text), Ok(1));
        assert_eq!(text.as_bytes(), b"");
    }

    #[test]
    fn the_longest_name_fits() {
        // 3 labels of 63 and one of 61: 4 + 63*3 + 61 + 1 = 255 octets.
        let name = [
            [b'a'; 63].as_slice(),
            b".",
            &[b'b'; 63],
            b".",
            &[b'c'; 63],
            b".",
            &[b'd'; 61],
        ]
        .concat();
        let mut m = vec![0u8; 255];
        assert_eq!(emit_name(&name, &mut m), Ok(255));
        let mut text = NameText::default();
        assert_eq!(read_name(&m, 0, &mut text), Ok(255));
        assert_eq!(text.as_bytes(), &name[..]);
        let longer = [name.as_slice(), b"e"].concat();
        let mut m = vec![0u8; 256];
        emit_name(&longer, &mut m).unwrap();
        assert_eq!(read_name(&m, 0, &mut text), Err(DnsError::NameTooLong));
    }

    fn label() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                b'a'..=b'z',
                b'A'..=b'Z',
                b'0'..=b'9',
                Just(b'-'),
                Just(b'_')
            ],
            1..20,
        )
    }

    proptest! {
        /// emit then parse gives back the question and the record.
        #[test]
        fn emit_parse_round_trip(
            labels in proptest::collection::vec(label(), 0..6),
            qtype: u16,
            ttl: u32,
            rdata in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let name = labels.join(&b'.');
            let question = QuestionRepr { name: &name, qtype, qclass: CLASS_IN };
            let record = RecordRepr { name: &name, rtype: rr_type::AAAA, class: CLASS_IN, ttl, rdata: &rdata };
            let mut m = vec![0u8; question.buffer_len() + record.buffer_len()];
            let q_end = question.emit(&mut m).unwrap();
            prop_assert_eq!(q_end, question.buffer_len());
            let r_end = record.emit(&mut m[q_end..]).unwrap();
            prop_assert_eq!(q_end + r_end, m.len());
            let q = Question::parse(&m, 0).unwrap();
            prop_assert_eq!((q.qtype, q.qclass, q.end), (qtype, CLASS_IN, q_end));
            let mut text = NameText::default();
            read_name(&m, 0, &mut text).unwrap();
            prop_assert_eq!(text.as_bytes(), &name[..]);
            let r = Record::parse(&m, q_end).unwrap();
            prop_assert_eq!((r.rtype, r.ttl, r.rdata(&m)), (rr_type::AAAA, ttl, &rdata[..]));
            prop_assert!(names_equal(&m, 0, q_end).unwrap());
        }

        /// Any bytes: parsing never panics, and every name read stays
        /// within bounds.
        #[test]
        fn arbitrary_bytes_never_panic(m in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..310) {
            let mut text = NameText::default();
            let _ = Header::parse(&m);
            if let Ok(end) = read_name(&m, at, &mut text) {
                prop_assert!(end <= m.len());
                prop_assert!(text.as_bytes().len() <= MAX_NAME_TEXT_LEN);
            }
            let _ = names_equal(&m, at, 0);
            if let Ok(q) = Question::parse(&m, at) {
                prop_assert!(q.end <= m.len());
            }
            if let Ok(r) = Record::parse(&m, at) {
                prop_assert!(r.end <= m.len());
            }
        }
    }
}

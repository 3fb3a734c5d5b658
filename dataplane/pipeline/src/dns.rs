//! Inline DNS policy: the L7 DNS rules (`toPorts[].rules.dns`) and the FQDN
//! cache behind `toFQDNs`, enforced on the frames of DNS flows themselves,
//! where Cilium sends these flows through its DNS proxy.
//!
//! * [`query`]: an original-direction packet of a flow allowed by an entry
//!   with DNS rules. A query for a name no rule matches is answered in place
//!   with REFUSED (Cilium's proxy default, `--tofqdns-dns-reject-response-code`)
//!   and never reaches the server. What Cilium's proxy (miekg/dns) does not
//!   forward is not forwarded either: fewer than 12 bytes or a response ->
//!   dropped unanswered; an opcode other than QUERY and NOTIFY -> NOTIMP;
//!   not exactly one question, more than one answer or authority record or
//!   two additional ones, or a question that does not parse -> FORMERR
//!   (header only). Every one of these counts as `dns_refused`.
//! * [`answer`]: a reply-direction packet of such a flow. The A and AAAA
//!   records of a NOERROR answer go into the FQDN cache under each toFQDNs
//!   selector that selects the question name (when the record's owner is the
//!   question or a CNAME chain from it leads there: Cilium's rule) or the
//!   record's own owner name. An address is kept for
//!   `max(TTL, --tofqdns-min-ttl)`; under the question name the TTL is the
//!   lowest of the record's and the CNAMEs' leading to it, as Cilium takes
//!   it. Records off the chain are ignored (Cilium rejects such an answer).
//!
//! DNS over TCP: a segment carries a 2-byte length and the message. A query
//! must arrive whole in one segment, which is how resolvers send it (one
//! write of length and message); a segment carrying part of a query, or
//! more than one, is dropped unanswered (`dns_refused`). The REFUSED answer
//! is a segment from the server's address and port: `seq` = the query's
//! `ack`, `ack` = its `seq` + payload length, PSH|ACK, the query's timestamp
//! option turned around (so PAWS on the client accepts it), other options
//! overwritten with NOPs. The server never sees the refused query's bytes:
//! its receive sequence stays before them, so anything the client sends
//! later on that connection waits in the server's out-of-order queue and is
//! never answered; the client's resolver times out and retries. Resolvers
//! (glibc, dig, Go) use one TCP connection per lookup, so this is rare.
//! Only the first segment of an answer that spans several fills the cache.
//!
//! The answer is built from the frame as it arrived (the engine calls
//! [`query`] before any service translation is applied to it), so it comes
//! from the address and port the client sent to, a ClusterIP included.
//!
//! Both functions read only bounds-checked slices and never panic,
//! allocate, lock or read a clock.

use core::net::IpAddr;

use sluice_conntrack::FqdnCache;
use sluice_tables::{DnsRules, Tables};
use sluice_wire::dns::{
    self, flags, opcode, rcode, rr_type, DnsError, Header, NameText, Question, Record,
};
use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::ip_protocol::{TCP, UDP};
use sluice_wire::tcp::flags as tcp_flags;
use sluice_wire::{
    checksum, ethertype, ipv4, ipv6, udp, EthernetRepr, Ipv4Repr, Ipv6Repr, TcpPacket, UdpPacket,
};

use crate::icmp_error::ReplyLink;
use crate::ipv4::GATEWAY_TTL;
use crate::nat::{End, Headers};
use crate::{observe, DnsNote, DropReason, Verdict};

const REASON: DropReason = DropReason::DnsRefused;
/// CNAMEs followed from the question name: more than resolvers follow.
const MAX_CHAIN: usize = 16;
const NS_PER_SECOND: u64 = 1_000_000_000;

/// What becomes of a query packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DnsOutcome {
    /// Goes on to the server unchanged.
    Pass,
    /// Answered in place (`Verdict::Reject`) or dropped (`Verdict::Drop`),
    /// counted as `dns_refused`.
    Refused(Verdict),
}

/// An original-direction packet of a DNS flow (UDP, or TCP with payload):
/// a query whose name matches none of `rules` is answered REFUSED in place,
/// back out through `link`; see the module documentation for the rest. A
/// query whose header parses is noted in `note` (id, name and type as far
/// as they parse, and whether the rules refused its name).
pub(crate) fn query(
    frame: &mut [u8],
    h: &Headers,
    rules: &DnsRules,
    link: ReplyLink,
    note: &mut Option<DnsNote>,
) -> DnsOutcome {
    let Some(carried) = locate(frame, h) else {
        return DnsOutcome::Refused(Verdict::Drop(REASON));
    };
    let message = match carried {
        Carried::Nothing => return DnsOutcome::Pass,
        Carried::Udp { message } => message,
        Carried::Tcp { message, whole, .. } => {
            if !whole {
                return DnsOutcome::Refused(Verdict::Drop(REASON));
            }
            message
        }
    };
    let Some(bytes) = frame.get(message.at..message.at + message.len) else {
        return DnsOutcome::Refused(Verdict::Drop(REASON));
    };
    let reply = match check_query(bytes, rules, note) {
        QueryCheck::Allowed => return DnsOutcome::Pass,
        QueryCheck::Unanswered => return DnsOutcome::Refused(Verdict::Drop(REASON)),
        QueryCheck::Answer(reply) => reply,
    };
    let verdict = build_reply(frame, h, carried, &reply, link).unwrap_or(Verdict::Drop(REASON));
    DnsOutcome::Refused(verdict)
}

/// A reply-direction packet of a DNS flow: A/AAAA records of a NOERROR
/// answer whose names a toFQDNs selector of `tables.policy` selects go into
/// `fqdn` (TTL, min TTL and per-name cap from the policy config). A response
/// is noted in `note`: id, RCODE, question, the addresses on the question's
/// chain and their lowest TTL (as the cache takes it under the question).
pub(crate) fn answer(
    frame: &[u8],
    h: &Headers,
    tables: &Tables,
    fqdn: &FqdnCache,
    now_ns: u64,
    note: &mut Option<DnsNote>,
) {
    let message = match locate(frame, h) {
        Some(Carried::Udp { message } | Carried::Tcp { message, .. }) => message,
        Some(Carried::Nothing) | None => return,
    };
    let Some(bytes) = frame.get(message.at..message.at + message.len) else {
        return;
    };
    let Some(noted) = note_response(bytes, note) else {
        return;
    };
    let learning = tables.policy.fqdn_selectors().next().is_some();
    let config = &tables.policy.state().config;
    let learn = |name: &[u8], ip: IpAddr, ttl: u32| {
        let ttl = ttl.max(config.fqdn_min_ttl_seconds);
        let expires_ns = now_ns.saturating_add(u64::from(ttl) * NS_PER_SECOND);
        let hash = name_hash(name);
        for (key, selector) in tables.policy.fqdn_selectors() {
            if selector.matches(name) {
                fqdn.insert(key, ip, hash, expires_ns, config.fqdn_max_ips_per_name);
            }
        }
    };
    let mut found = |address: Found<'_>| {
        observe::dns_address(noted, address.ip, address.chain_ttl);
        if learning {
            learn(address.question, address.ip, address.chain_ttl);
            if let Some(owner) = address.owner {
                learn(owner, address.ip, address.record_ttl);
            }
        }
    };
    // A message that stops parsing keeps what was learnt before that point.
    let _ = read_answer(bytes, &mut found);
}

/// Notes the header and question of a response; `None` (nothing noted)
/// when the message is not a response.
fn note_response<'n>(message: &[u8], note: &'n mut Option<DnsNote>) -> Option<&'n mut DnsNote> {
    let header = Header::parse(message).ok()?;
    if !header.is_response() {
        return None;
    }
    let noted = note.insert(observe::dns_note(header.id, true));
    noted.rcode = header.rcode();
    if header.qdcount >= 1 {
        let mut name = NameText::default();
        if dns::read_name(message, dns::HEADER_LEN, &mut name).is_ok() {
            observe::dns_name(noted, name.as_bytes());
        }
        if let Ok(question) = Question::parse(message, dns::HEADER_LEN) {
            noted.qtype = question.qtype;
        }
    }
    Some(noted)
}

/// Where the DNS message is in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    at: usize,
    len: usize,
}

/// What the transport payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carried {
    /// A TCP segment without payload (handshake, ACK, FIN).
    Nothing,
    Udp {
        message: Span,
    },
    /// `message` is what the segment holds of the message announced by the
    /// 2-byte length; `whole` when the segment holds exactly that message.
    Tcp {
        header_len: usize,
        payload_len: usize,
        message: Span,
        whole: bool,
    },
}

/// The DNS message of the UDP datagram or TCP segment at `h`; `None` when the
/// transport header does not parse or the payload is a cut length field.
fn locate(frame: &[u8], h: &Headers) -> Option<Carried> {
    let l4 = frame.get(h.l4..h.end)?;
    match h.protocol {
        UDP => {
            let datagram = UdpPacket::new_checked(l4).ok()?;
            Some(Carried::Udp {
                message: Span {
                    at: h.l4 + udp::HEADER_LEN,
                    len: datagram.len() - udp::HEADER_LEN,
                },
            })
        }
        TCP => {
            let segment = TcpPacket::new_checked(l4).ok()?;
            let header_len = segment.header_len();
            let payload = segment.payload();
            if payload.is_empty() {
                return Some(Carried::Nothing);
            }
            let announced = usize::from(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
            let present = payload.len() - 2;
            Some(Carried::Tcp {
                header_len,
                payload_len: payload.len(),
                message: Span {
                    at: h.l4 + header_len + 2,
                    len: announced.min(present),
                },
                whole: announced == present,
            })
        }
        _ => None,
    }
}

/// The answer a refused query gets (header fields; the question is kept
/// when `question_end` is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    id: u16,
    flags: u16,
    /// End of the question in the message: kept as it is.
    question_end: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryCheck {
    Allowed,
    /// Dropped without an answer (as miekg/dns ignores it).
    Unanswered,
    Answer(Reply),
}

fn check_query(message: &[u8], rules: &DnsRules, note: &mut Option<DnsNote>) -> QueryCheck {
    let Ok(header) = Header::parse(message) else {
        return QueryCheck::Unanswered;
    };
    if header.is_response() {
        return QueryCheck::Unanswered;
    }
    let noted = note.insert(observe::dns_note(header.id, false));
    let op = header.opcode();
    let header_only = |rcode: u8, op: u8| {
        QueryCheck::Answer(Reply {
            id: header.id,
            flags: flags::QR | u16::from(op) << flags::OPCODE_SHIFT | u16::from(rcode),
            question_end: None,
        })
    };
    if op != opcode::QUERY && op != opcode::NOTIFY {
        return header_only(rcode::NOTIMP, op);
    }
    if header.qdcount != 1 || header.ancount > 1 || header.nscount > 1 || header.arcount > 2 {
        return header_only(rcode::FORMERR, opcode::QUERY);
    }
    let mut name = NameText::default();
    let question = dns::read_name(message, dns::HEADER_LEN, &mut name)
        .and_then(|_| Question::parse(message, dns::HEADER_LEN));
    let Ok(question) = question else {
        return header_only(rcode::FORMERR, opcode::QUERY);
    };
    noted.qtype = question.qtype;
    observe::dns_name(noted, name.as_bytes());
    if rules.allows(name.as_bytes()) {
        return QueryCheck::Allowed;
    }
    noted.refused_by_policy = true;
    // As miekg/dns `SetReply`: the opcode, and RD and CD for a QUERY.
    let copied = if op == opcode::QUERY {
        header.flags & (flags::RD | flags::CD)
    } else {
        0
    };
    QueryCheck::Answer(Reply {
        id: header.id,
        flags: flags::QR
            | u16::from(op) << flags::OPCODE_SHIFT
            | copied
            | u16::from(rcode::REFUSED),
        question_end: Some(question.end),
    })
}

/// The query packet turned into `reply` from the server to the client, in
/// place: a new IP header, the transport header moved up behind it (ports
/// swapped), the DNS header rewritten and the question kept. `None` when the
/// packet cannot be answered (then it is dropped).
fn build_reply(
    frame: &mut [u8],
    h: &Headers,
    carried: Carried,
    reply: &Reply,
    link: ReplyLink,
) -> Option<Verdict> {
    let client = h.addr(frame, End::Src)?;
    let server = h.addr(frame, End::Dst)?;
    let client_port = h.port(frame, End::Src)?;
    let server_port = h.port(frame, End::Dst)?;
    let (message, l4_header_len, prefix_len) = match carried {
        Carried::Udp { message } => (message, udp::HEADER_LEN, 0),
        Carried::Tcp {
            message,
            header_len,
            ..
        } => (message, header_len, 2),
        Carried::Nothing => return None,
    };
    let message_len = dns::HEADER_LEN + reply.question_end.map_or(0, |end| end - dns::HEADER_LEN);
    if message_len > message.len {
        return None;
    }
    let ip_len = if h.ipv6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let l4 = ETH_LEN + ip_len;
    if h.l4 < l4 || message.at < h.l4 || message.at + message_len > frame.len() {
        return None;
    }
    let l4_len = l4_header_len + prefix_len + message_len;
    let tcp = match carried {
        Carried::Tcp { payload_len, .. } => Some(tcp_numbers(frame, h, payload_len)?),
        _ => None,
    };
    // Move the transport header and what is kept of the message up behind
    // the new IP header (the IPv4 header may have had options, the IPv6 one
    // extension headers); the rest is rewritten in place.
    frame.copy_within(h.l4..message.at + message_len, l4);
    let shift = h.l4 - l4;
    let message_at = message.at - shift;
    Header {
        id: reply.id,
        flags: reply.flags,
        qdcount: u16::from(reply.question_end.is_some()),
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .emit(frame.get_mut(message_at..)?)
    .ok()?;
    let segment = frame.get_mut(l4..l4 + l4_len)?;
    segment
        .get_mut(0..2)?
        .copy_from_slice(&server_port.to_be_bytes());
    segment
        .get_mut(2..4)?
        .copy_from_slice(&client_port.to_be_bytes());
    let (protocol, ethertype_value) = (
        h.protocol,
        if h.ipv6 {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        },
    );
    let pseudo = match (server, client) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            Ipv4Repr {
                src: from,
                dst: to,
                protocol,
                ttl: GATEWAY_TTL,
                tos: 0,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                payload_len: l4_len,
            }
            .emit(frame.get_mut(ETH_LEN..l4)?)
            .ok()?;
            checksum::pseudo_header_v4(from, to, protocol, l4_len as u32)
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            Ipv6Repr {
                src: from,
                dst: to,
                next_header: protocol,
                hop_limit: GATEWAY_TTL,
                traffic_class: 0,
                flow_label: 0,
                payload_len: l4_len,
            }
            .emit(frame.get_mut(ETH_LEN..l4)?)
            .ok()?;
            checksum::pseudo_header_v6(from, to, protocol, l4_len as u32)
        }
        _ => return None,
    };
    let segment = frame.get_mut(l4..l4 + l4_len)?;
    match tcp {
        None => {
            segment
                .get_mut(4..6)?
                .copy_from_slice(&(l4_len as u16).to_be_bytes());
            UdpPacket::new_checked(segment).ok()?.fill_checksum(pseudo);
        }
        Some(numbers) => {
            segment
                .get_mut(4..8)?
                .copy_from_slice(&numbers.seq.to_be_bytes());
            segment
                .get_mut(8..12)?
                .copy_from_slice(&numbers.ack.to_be_bytes());
            *segment.get_mut(13)? = tcp_flags::PSH | tcp_flags::ACK;
            segment.get_mut(18..20)?.copy_from_slice(&[0, 0]);
            turn_options_around(segment.get_mut(20..l4_header_len)?);
            let prefix = l4_header_len;
            segment
                .get_mut(prefix..prefix + 2)?
                .copy_from_slice(&(message_len as u16).to_be_bytes());
            TcpPacket::new_checked(segment).ok()?.fill_checksum(pseudo);
        }
    }
    EthernetRepr {
        dst: link.eth_dst,
        src: link.eth_src,
        ethertype: ethertype_value,
    }
    .emit(frame)
    .ok()?;
    Some(Verdict::Reject {
        ifindex: link.ifindex,
        len: l4 + l4_len,
        reason: REASON,
    })
}

/// Sequence numbers of the answer segment.
#[derive(Clone, Copy, Debug)]
struct TcpNumbers {
    seq: u32,
    ack: u32,
}

/// The answer continues the server's side: its `seq` is what the client
/// acknowledged, its `ack` covers the query (and a FIN sent with it). A
/// query on a SYN (TCP Fast Open), a RST or a segment without ACK has no
/// sequence state to answer in.
fn tcp_numbers(frame: &[u8], h: &Headers, payload_len: usize) -> Option<TcpNumbers> {
    let segment = TcpPacket::new_checked(frame.get(h.l4..h.end)?).ok()?;
    let seg_flags = segment.flags();
    if seg_flags & (tcp_flags::SYN | tcp_flags::RST) != 0 || seg_flags & tcp_flags::ACK == 0 {
        return None;
    }
    let consumed = payload_len as u32 + u32::from(seg_flags & tcp_flags::FIN != 0);
    Some(TcpNumbers {
        seq: segment.ack_number(),
        ack: segment.seq_number().wrapping_add(consumed),
    })
}

/// TCP option kinds the answer treats specially.
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_TIMESTAMPS: u8 = 8;

/// The query's options as the server would send them back: timestamps
/// swapped (TSval = the client's TSecr, the newest server clock it saw;
/// TSecr = its TSval), everything else (SACK blocks about the wrong
/// direction, unknown kinds) overwritten with NOPs.
fn turn_options_around(options: &mut [u8]) {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            OPTION_END => return,
            OPTION_NOP => at += 1,
            _ => {
                let len = options.get(at + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || at + len > options.len() {
                    options[at..].fill(OPTION_NOP);
                    return;
                }
                if kind == OPTION_TIMESTAMPS && len == 10 {
                    let (tsval, tsecr) = options[at + 2..at + 10].split_at_mut(4);
                    tsval.swap_with_slice(tsecr);
                } else {
                    options[at..at + len].fill(OPTION_NOP);
                }
                at += len;
            }
        }
    }
}

/// An A/AAAA record found on the question's CNAME chain.
#[derive(Clone, Copy, Debug)]
struct Found<'a> {
    question: &'a [u8],
    /// The record's owner when it is a CNAME target (not the question).
    owner: Option<&'a [u8]>,
    ip: IpAddr,
    /// The lowest TTL from the question to the record.
    chain_ttl: u32,
    /// The record's own TTL.
    record_ttl: u32,
}

/// Walks a response: `found` gets each A/AAAA record on the question's
/// CNAME chain. Only NOERROR answers to a QUERY with one question are read.
fn read_answer(message: &[u8], found: &mut impl FnMut(Found<'_>)) -> Result<(), DnsError> {
    let header = Header::parse(message)?;
    if !header.is_response()
        || header.opcode() != opcode::QUERY
        || header.rcode() != rcode::NOERROR
        || header.qdcount != 1
    {
        return Ok(());
    }
    let mut question_name = NameText::default();
    dns::read_name(message, dns::HEADER_LEN, &mut question_name)?;
    let question = Question::parse(message, dns::HEADER_LEN)?;
    // The chain: the question name, then each CNAME target, with the lowest
    // TTL on the way to it.
    let mut chain = [(question.name_at, u32::MAX); MAX_CHAIN];
    let mut chain_len = 1;
    let mut owner_name = NameText::default();
    let mut owner_link = None;
    let mut at = question.end;
    for _ in 0..header.ancount {
        let record = Record::parse(message, at)?;
        at = record.end;
        if record.class != dns::CLASS_IN {
            continue;
        }
        let mut link = None;
        for (i, &(name_at, _)) in chain[..chain_len].iter().enumerate().rev() {
            if dns::names_equal(message, record.name_at, name_at)? {
                link = Some(i);
                break;
            }
        }
        let Some(link) = link else {
            continue;
        };
        let chain_ttl = chain[link].1;
        match record.rtype {
            rr_type::CNAME if link == chain_len - 1 && chain_len < MAX_CHAIN => {
                dns::skip_name(message, record.rdata_at)?;
                chain[chain_len] = (record.rdata_at, chain_ttl.min(record.ttl));
                chain_len += 1;
            }
            rr_type::A | rr_type::AAAA => {
                let Some(ip) = address(record.rtype, record.rdata(message)) else {
                    continue;
                };
                // The owner's name is read once per link; a name that does
                // not read still leaves the address under the question.
                let owner_read = if link > 0 && owner_link != Some(link) {
                    let read = dns::read_name(message, chain[link].0, &mut owner_name);
                    owner_link = read.is_ok().then_some(link);
                    read.map(|_| ())
                } else {
                    Ok(())
                };
                found(Found {
                    question: question_name.as_bytes(),
                    owner: (link > 0 && owner_read.is_ok()).then_some(owner_name.as_bytes()),
                    ip,
                    chain_ttl: chain_ttl.min(record.ttl),
                    record_ttl: record.ttl,
                });
                owner_read?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn address(rtype: u16, rdata: &[u8]) -> Option<IpAddr> {
    match rtype {
        rr_type::A => <[u8; 4]>::try_from(rdata).ok().map(IpAddr::from),
        rr_type::AAAA => <[u8; 16]>::try_from(rdata).ok().map(IpAddr::from),
        _ => None,
    }
}

/// FNV-1a over the lowercase name: the per-name cap's key (stable, cheap,
/// and names are short).
fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;

//! Frame-level tests of the inline DNS policy: queries in, exact answers
//! out (checked again with smoltcp and the wire crate's DNS parser), answers
//! in, FQDN cache contents out.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use sluice_conntrack::FqdnCache;
use sluice_tables::{DnsRules, DnsSelector, PolicyConfig, PolicyState, PolicyTables, Tables};
use sluice_wire::dns::{
    flags, opcode, rcode, rr_type, Header, NameText, Question, QuestionRepr, RecordRepr, CLASS_IN,
};
use sluice_wire::ip_protocol::{TCP, UDP};
use sluice_wire::tcp::flags as tcp_flags;
use sluice_wire::{ethertype, L3};
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet};

use super::*;
use crate::fixtures::{self, ethernet, ipv6_simple, udp, GATEWAY_MAC, POD_A, V4};
use crate::flow_key::outer_headers;

const S: u64 = 1_000_000_000;
/// The DNS service's ClusterIP the client sends to (answers must come from it).
const DNS_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const CLIENT_PORT: u16 = 40000;
/// UMEM chunk the frames sit in.
const CHUNK: usize = 2048;

// ---- DNS messages ----------------------------------------------------------

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut m = vec![0u8; dns::HEADER_LEN];
    Header {
        id,
        flags,
        qdcount: counts[0],
        ancount: counts[1],
        nscount: counts[2],
        arcount: counts[3],
    }
    .emit(&mut m)
    .unwrap();
    m
}

fn push_question(m: &mut Vec<u8>, name: &str, qtype: u16) {
    let q = QuestionRepr {
        name: name.as_bytes(),
        qtype,
        qclass: CLASS_IN,
    };
    let at = m.len();
    m.resize(at + q.buffer_len(), 0);
    q.emit(&mut m[at..]).unwrap();
}

fn push_record(m: &mut Vec<u8>, name: &str, rtype: u16, ttl: u32, rdata: &[u8]) {
    let r = RecordRepr {
        name: name.as_bytes(),
        rtype,
        class: CLASS_IN,
        ttl,
        rdata,
    };
    let at = m.len();
    m.resize(at + r.buffer_len(), 0);
    r.emit(&mut m[at..]).unwrap();
}

/// An EDNS(0) OPT pseudo-record (root owner, UDP size 1232).
fn push_opt(m: &mut Vec<u8>) {
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
}

/// A recursive A query with an EDNS OPT record, as dig sends it.
fn query_msg(id: u16, name: &str) -> Vec<u8> {
    let mut m = header(id, flags::RD | flags::AD, [1, 0, 0, 1]);
    push_question(&mut m, name, rr_type::A);
    push_opt(&mut m);
    m
}

/// What the engine must answer to `query_msg(id, name)`.
fn refused_msg(id: u16, name: &str) -> Vec<u8> {
    let mut m = header(
        id,
        flags::QR | flags::RD | u16::from(rcode::REFUSED),
        [1, 0, 0, 0],
    );
    push_question(&mut m, name, rr_type::A);
    m
}

/// A NOERROR response to an A query for `qname` with `records`
/// (owner, type, TTL, data).
fn response_msg(qname: &str, records: &[(&str, u16, u32, Vec<u8>)]) -> Vec<u8> {
    let mut m = header(
        7,
        flags::QR | flags::RD | flags::RA,
        [1, records.len() as u16, 0, 0],
    );
    push_question(&mut m, qname, rr_type::A);
    for (owner, rtype, ttl, rdata) in records {
        push_record(&mut m, owner, *rtype, *ttl, rdata);
    }
    m
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> (&str, u16, u32, Vec<u8>) {
    (owner, rr_type::A, ttl, ip.to_vec())
}

fn aaaa(owner: &str, ttl: u32, ip: Ipv6Addr) -> (&str, u16, u32, Vec<u8>) {
    (owner, rr_type::AAAA, ttl, ip.octets().to_vec())
}

/// A CNAME to `target`, uncompressed.
fn cname<'a>(owner: &'a str, ttl: u32, target: &str) -> (&'a str, u16, u32, Vec<u8>) {
    let mut rdata = vec![0u8; dns::name_wire_len(target.as_bytes())];
    dns::emit_name(target.as_bytes(), &mut rdata).unwrap();
    (owner, rr_type::CNAME, ttl, rdata)
}

// ---- frames ----------------------------------------------------------------

fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ip = V4::new(src, dst, UDP, 64).packet(&udp(sport, dport, payload));
    ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV4, &ip)
}

fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ip = ipv6_simple(src, dst, 64, UDP, &udp(sport, dport, payload));
    ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV6, &ip)
}

/// A TCP segment (checksum filled by the IP builder).
fn tcp_segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    seg_flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push((((20 + options.len()) / 4) as u8) << 4);
    s.push(seg_flags);
    s.extend_from_slice(&502u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(options);
    s.extend_from_slice(payload);
    s
}

/// `message` behind its 2-byte length.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut p = (message.len() as u16).to_be_bytes().to_vec();
    p.extend_from_slice(message);
    p
}

/// NOP, NOP, timestamps (TSval, TSecr).
fn timestamps(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Vec<u8> {
    let ip = V4::new(src, dst, TCP, 64).packet(segment);
    ethernet(GATEWAY_MAC, POD_A.mac, ethertype::IPV4, &ip)
}

/// The IPv4 header the engine writes for an answer: TTL 64, DF, ident 0.
fn answer_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let ip = V4 {
        ident: 0,
        ..V4::new(src, dst, protocol, 64)
    }
    .packet(l4);
    ethernet(POD_A.mac, GATEWAY_MAC, ethertype::IPV4, &ip)
}

fn headers(frame: &[u8]) -> Headers {
    let parsed = sluice_wire::parse(frame).expect("fixture parses");
    match parsed.l3 {
        L3::Ipv4 { l4: Some(l4), .. } => outer_headers(false, l4),
        L3::Ipv6 { l4: Some(l4), .. } => outer_headers(true, l4),
        other => panic!("fixture has no transport header: {other:?}"),
    }
}

fn link() -> ReplyLink {
    ReplyLink {
        ifindex: POD_A.ifindex,
        eth_dst: POD_A.mac,
        eth_src: GATEWAY_MAC,
    }
}

fn rules() -> DnsRules {
    DnsRules {
        allow: vec![DnsSelector::MatchPattern("*.allowed.test".to_string())],
    }
}

/// Runs `query` over `input` in a chunk; returns the outcome and the
/// frame to send (for a reject) or the frame as left (otherwise).
fn run_query(input: &[u8], rules: &DnsRules) -> (DnsOutcome, Vec<u8>) {
    let mut chunk = vec![0u8; CHUNK];
    chunk[..input.len()].copy_from_slice(input);
    let h = headers(input);
    let outcome = query(&mut chunk, &h, rules, link(), &mut None);
    let out = match outcome {
        DnsOutcome::Refused(Verdict::Reject { len, .. }) => chunk[..len].to_vec(),
        _ => chunk[..input.len()].to_vec(),
    };
    (outcome, out)
}

fn rejected(len: usize) -> DnsOutcome {
    DnsOutcome::Refused(Verdict::Reject {
        ifindex: POD_A.ifindex,
        len,
        reason: DropReason::DnsRefused,
    })
}

const DROPPED: DnsOutcome = DnsOutcome::Refused(Verdict::Drop(DropReason::DnsRefused));

/// The DNS message of an answer frame, after smoltcp verified the IP and
/// transport checksums.
fn verified_dns(frame: &[u8]) -> Vec<u8> {
    let eth = smoltcp::wire::EthernetFrame::new_checked(frame).unwrap();
    let (src, dst, protocol, l4) = match eth.ethertype() {
        smoltcp::wire::EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
                ip.next_header(),
                ip.payload().to_vec(),
            )
        }
        smoltcp::wire::EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
                ip.next_header(),
                ip.payload().to_vec(),
            )
        }
        other => panic!("not IP: {other:?}"),
    };
    match protocol {
        smoltcp::wire::IpProtocol::Udp => {
            let d = smoltcp::wire::UdpPacket::new_checked(&l4[..]).unwrap();
            assert!(d.verify_checksum(&src, &dst));
            assert_eq!((d.src_port(), d.dst_port()), (53, CLIENT_PORT));
            d.payload().to_vec()
        }
        smoltcp::wire::IpProtocol::Tcp => {
            let s = smoltcp::wire::TcpPacket::new_checked(&l4[..]).unwrap();
            assert!(s.verify_checksum(&src, &dst));
            assert_eq!((s.src_port(), s.dst_port()), (53, CLIENT_PORT));
            let payload = s.payload();
            let len = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
            assert_eq!(len, payload.len() - 2);
            payload[2..].to_vec()
        }
        other => panic!("not UDP/TCP: {other:?}"),
    }
}

fn assert_refused_answer(message: &[u8], id: u16, name: &str) {
    let h = Header::parse(message).unwrap();
    assert_eq!(h.id, id);
    assert!(h.is_response());
    assert_eq!(h.rcode(), rcode::REFUSED);
    assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 0, 0, 0));
    let q = Question::parse(message, dns::HEADER_LEN).unwrap();
    assert_eq!(q.end, message.len());
    let mut text = NameText::default();
    dns::read_name(message, q.name_at, &mut text).unwrap();
    assert_eq!(text.as_bytes(), name.as_bytes());
}

// ---- queries ---------------------------------------------------------------

#[test]
fn an_allowed_query_passes_unchanged() {
    let rules = rules();
    let frames = [
        udp_v4(
            POD_A.ipv4,
            DNS_V4,
            CLIENT_PORT,
            53,
            &query_msg(1, "www.allowed.test"),
        ),
        udp_v6(
            POD_A.ipv6,
            DNS_V6,
            CLIENT_PORT,
            53,
            &query_msg(2, "WWW.Allowed.Test."),
        ),
        tcp_v4(
            POD_A.ipv4,
            DNS_V4,
            &tcp_segment(
                CLIENT_PORT,
                53,
                1000,
                5000,
                tcp_flags::PSH | tcp_flags::ACK,
                &[],
                &framed(&query_msg(3, "a.allowed.test")),
            ),
        ),
    ];
    for input in frames {
        let (outcome, out) = run_query(&input, &rules);
        assert_eq!(outcome, DnsOutcome::Pass);
        assert_eq!(out, input);
    }
}

#[test]
fn a_refused_udp_query_is_answered_refused_in_place_v4() {
    let input = udp_v4(
        POD_A.ipv4,
        DNS_V4,
        CLIENT_PORT,
        53,
        &query_msg(0xbeef, "denied.test"),
    );
    let (outcome, out) = run_query(&input, &rules());
    let expected = answer_v4(
        DNS_V4,
        POD_A.ipv4,
        UDP,
        &udp(53, CLIENT_PORT, &refused_msg(0xbeef, "denied.test")),
    );
    assert_eq!(outcome, rejected(expected.len()));
    assert_eq!(out, expected);
    assert_refused_answer(&verified_dns(&out), 0xbeef, "denied.test");
}

#[test]
fn a_refused_udp_query_is_answered_refused_in_place_v6() {
    let input = udp_v6(
        POD_A.ipv6,
        DNS_V6,
        CLIENT_PORT,
        53,
        &query_msg(9, "x.denied.test"),
    );
    let (outcome, out) = run_query(&input, &rules());
    let ip = ipv6_simple(
        DNS_V6,
        POD_A.ipv6,
        64,
        UDP,
        &udp(53, CLIENT_PORT, &refused_msg(9, "x.denied.test")),
    );
    let expected = ethernet(POD_A.mac, GATEWAY_MAC, ethertype::IPV6, &ip);
    assert_eq!(outcome, rejected(expected.len()));
    assert_eq!(out, expected);
    assert_refused_answer(&verified_dns(&out), 9, "x.denied.test");
}

/// An IPv4 header with options: the answer has a plain 20-byte header, the
/// datagram moved up behind it.
#[test]
fn a_query_behind_ip_options_gets_a_plain_answer() {
    let plain = udp_v4(
        POD_A.ipv4,
        DNS_V4,
        CLIENT_PORT,
        53,
        &query_msg(5, "denied.test"),
    );
    let mut input = plain[..34].to_vec();
    // IHL 6: one word of options (NOPs), the header checksum recomputed.
    input[14] = 0x46;
    input.extend_from_slice(&[1, 1, 1, 0]);
    input.extend_from_slice(&plain[34..]);
    let total = (input.len() - 14) as u16;
    input[16..18].copy_from_slice(&total.to_be_bytes());
    input[24..26].copy_from_slice(&[0, 0]);
    let csum = sluice_wire::checksum::checksum(&input[14..38]);
    input[24..26].copy_from_slice(&csum.to_be_bytes());
    let (outcome, out) = run_query(&input, &rules());
    let (_, plain_out) = run_query(&plain, &rules());
    assert_eq!(outcome, rejected(plain_out.len()));
    assert_eq!(out, plain_out);
}

/// The answer segment continues the server's side of the stream: seq = the
/// query's ack, ack = its seq + payload, PSH|ACK, the timestamps turned
/// around and the SACK block overwritten with NOPs.
#[test]
fn a_refused_tcp_query_is_answered_with_a_segment_from_the_server() {
    let query = framed(&query_msg(0x4242, "evil.test"));
    let mut options = timestamps(111, 222);
    // SACK: kind 5, one block.
    options.extend_from_slice(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    let input = tcp_v4(
        POD_A.ipv4,
        DNS_V4,
        &tcp_segment(
            CLIENT_PORT,
            53,
            1000,
            5000,
            tcp_flags::PSH | tcp_flags::ACK,
            &options,
            &query,
        ),
    );
    let (outcome, out) = run_query(&input, &rules());
    let mut answer_options = timestamps(222, 111);
    answer_options.extend_from_slice(&[1; 12]);
    let segment = tcp_segment(
        53,
        CLIENT_PORT,
        5000,
        1000 + query.len() as u32,
        tcp_flags::PSH | tcp_flags::ACK,
        &answer_options,
        &framed(&refused_msg(0x4242, "evil.test")),
    );
    let expected = answer_v4(DNS_V4, POD_A.ipv4, TCP, &segment);
    assert_eq!(outcome, rejected(expected.len()));
    assert_eq!(out, expected);
    assert_refused_answer(&verified_dns(&out), 0x4242, "evil.test");
    let s = smoltcp::wire::TcpPacket::new_checked(&out[34..]).unwrap();
    assert_eq!(s.seq_number(), smoltcp::wire::TcpSeqNumber(5000));
    assert_eq!(
        s.ack_number(),
        smoltcp::wire::TcpSeqNumber(1000 + query.len() as i32)
    );
    assert!(s.psh() && s.ack() && !s.fin() && !s.syn());
}

#[test]
fn a_query_with_fin_has_the_fin_acknowledged() {
    let query = framed(&query_msg(1, "evil.test"));
    let input = tcp_v4(
        POD_A.ipv4,
        DNS_V4,
        &tcp_segment(
            CLIENT_PORT,
            53,
            70,
            9,
            tcp_flags::FIN | tcp_flags::ACK,
            &[],
            &query,
        ),
    );
    let (_, out) = run_query(&input, &rules());
    let s = smoltcp::wire::TcpPacket::new_checked(&out[34..]).unwrap();
    assert_eq!(
        s.ack_number(),
        smoltcp::wire::TcpSeqNumber(70 + query.len() as i32 + 1)
    );
}

#[test]
fn tcp_segments_that_do_not_hold_exactly_one_query() {
    let rules = rules();
    let message = query_msg(1, "www.allowed.test");
    let whole = framed(&message);
    let seg = |payload: &[u8], seg_flags: u8| {
        tcp_v4(
            POD_A.ipv4,
            DNS_V4,
            &tcp_segment(CLIENT_PORT, 53, 1, 1, seg_flags, &[], payload),
        )
    };
    let ack = tcp_flags::ACK;
    // No payload: handshake and ACKs pass.
    assert_eq!(run_query(&seg(&[], ack), &rules).0, DnsOutcome::Pass);
    assert_eq!(
        run_query(&seg(&[], tcp_flags::SYN), &rules).0,
        DnsOutcome::Pass
    );
    // Part of a query, the length alone, one byte, two queries: dropped.
    assert_eq!(
        run_query(&seg(&whole[..whole.len() - 3], ack), &rules).0,
        DROPPED
    );
    assert_eq!(run_query(&seg(&whole[..2], ack), &rules).0, DROPPED);
    assert_eq!(run_query(&seg(&whole[..1], ack), &rules).0, DROPPED);
    assert_eq!(
        run_query(&seg(&[whole.clone(), whole.clone()].concat(), ack), &rules).0,
        DROPPED
    );
    // A refused query on a SYN (Fast Open) or without ACK: no state to answer in.
    let denied = framed(&query_msg(1, "denied.test"));
    assert_eq!(run_query(&seg(&denied, tcp_flags::SYN), &rules).0, DROPPED);
    assert_eq!(run_query(&seg(&denied, tcp_flags::PSH), &rules).0, DROPPED);
}

/// What Cilium's proxy (miekg/dns) does not forward.
#[test]
fn messages_that_are_not_one_plain_query() {
    let rules = rules();
    let send = |message: &[u8]| {
        run_query(
            &udp_v4(POD_A.ipv4, DNS_V4, CLIENT_PORT, 53, message),
            &rules,
        )
    };
    let answer_header = |out: &[u8]| Header::parse(&verified_dns(out)).unwrap();
    // Shorter than a header, or a response: dropped unanswered.
    assert_eq!(send(&[]).0, DROPPED);
    assert_eq!(send(&query_msg(1, "www.allowed.test")[..11]).0, DROPPED);
    let mut response = query_msg(1, "www.allowed.test");
    response[2] |= 0x80;
    assert_eq!(send(&response).0, DROPPED);
    // Another opcode (STATUS = 2): NOTIMP, header only, the opcode kept.
    let mut status = query_msg(3, "www.allowed.test");
    status[2] = 2 << 3;
    let (outcome, out) = send(&status);
    assert!(matches!(
        outcome,
        DnsOutcome::Refused(Verdict::Reject { .. })
    ));
    let h = answer_header(&out);
    assert_eq!(
        (h.id, h.opcode(), h.rcode(), h.qdcount),
        (3, 2, rcode::NOTIMP, 0)
    );
    assert!(h.is_response());
    assert_eq!(verified_dns(&out).len(), dns::HEADER_LEN);
    // Two questions, or a question that loops: FORMERR, header only.
    let mut two = header(4, flags::RD, [2, 0, 0, 0]);
    push_question(&mut two, "www.allowed.test", rr_type::A);
    push_question(&mut two, "denied.test", rr_type::A);
    let mut looping = header(5, flags::RD, [1, 0, 0, 0]);
    looping.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut cut = query_msg(6, "www.allowed.test");
    cut.truncate(dns::HEADER_LEN + 5);
    let mut records = query_msg(7, "www.allowed.test");
    records[7] = 2; // ancount 2
    for (message, id) in [(two, 4), (looping, 5), (cut, 6), (records, 7)] {
        let (outcome, out) = send(&message);
        assert!(
            matches!(outcome, DnsOutcome::Refused(Verdict::Reject { .. })),
            "id {id}"
        );
        let h = answer_header(&out);
        assert_eq!(
            (h.id, h.opcode(), h.rcode(), h.qdcount),
            (id, opcode::QUERY, rcode::FORMERR, 0)
        );
        assert_eq!(h.flags & flags::RD, 0);
    }
    // NOTIFY is checked like a query; its answer keeps the opcode, not RD.
    let mut notify = query_msg(8, "denied.test");
    notify[2] = (opcode::NOTIFY << 3) | 1;
    let (_, out) = send(&notify);
    let h = answer_header(&out);
    assert_eq!(
        (h.opcode(), h.rcode(), h.qdcount),
        (opcode::NOTIFY, rcode::REFUSED, 1)
    );
    assert_eq!(h.flags & flags::RD, 0);
    let mut allowed_notify = header(8, u16::from(opcode::NOTIFY) << 11, [1, 0, 0, 0]);
    push_question(&mut allowed_notify, "www.allowed.test", rr_type::A);
    assert_eq!(send(&allowed_notify).0, DnsOutcome::Pass);
}

#[test]
fn a_name_with_bytes_outside_dns_characters_is_refused() {
    // "a.b" as one label under allowed.test: not a subdomain label.
    let mut m = header(1, flags::RD, [1, 0, 0, 0]);
    m.extend_from_slice(&[3, b'a', b'.', b'b', 7]);
    m.extend_from_slice(b"allowed");
    m.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
    let input = udp_v4(POD_A.ipv4, DNS_V4, CLIENT_PORT, 53, &m);
    let (outcome, out) = run_query(&input, &rules());
    assert!(matches!(
        outcome,
        DnsOutcome::Refused(Verdict::Reject { .. })
    ));
    assert_eq!(
        Header::parse(&verified_dns(&out)).unwrap().rcode(),
        rcode::REFUSED
    );
}

// ---- answers ---------------------------------------------------------------

fn policy_tables(selectors: Vec<DnsSelector>, config: PolicyConfig) -> Tables {
    let mut tables = fixtures::tables();
    let state = PolicyState {
        config,
        fqdn_selectors: selectors,
        ..PolicyState::default()
    };
    tables.policy = PolicyTables::build(&state).unwrap();
    tables
}

fn www_and_cdn() -> Tables {
    policy_tables(
        vec![
            DnsSelector::MatchName("www.allowed.test".to_string()),
            DnsSelector::MatchPattern("*.cdn.test".to_string()),
        ],
        PolicyConfig::default(),
    )
}

fn key(tables: &Tables, selector: u32) -> u64 {
    tables.policy.fqdn_key(selector)
}

/// Feeds a UDP answer from the DNS server to the client.
fn feed(tables: &Tables, cache: &FqdnCache, message: &[u8], now_ns: u64) {
    let frame = udp_v4(DNS_V4, POD_A.ipv4, 53, CLIENT_PORT, message);
    answer(&frame, &headers(&frame), tables, cache, now_ns, &mut None);
}

const WEB: [u8; 4] = [192, 0, 2, 7];
const WEB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

fn ip(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}

#[test]
fn an_answer_fills_the_cache_for_the_selected_names_until_the_ttl() {
    let tables = www_and_cdn();
    let cache = FqdnCache::new(1024);
    let now = 100 * S;
    let message = response_msg(
        "www.allowed.test",
        &[
            cname("www.allowed.test", 10, "edge.cdn.test"),
            a("edge.cdn.test", 30, WEB),
            aaaa("EDGE.cdn.test", 30, WEB_V6),
        ],
    );
    feed(&tables, &cache, &message, now);
    let (www, cdn) = (key(&tables, 0), key(&tables, 1));
    for addr in [ip(WEB), IpAddr::V6(WEB_V6)] {
        // Under the question name: the chain's lowest TTL (the CNAME's 10 s).
        assert!(cache.contains(www, addr, now + 10 * S - 1), "{addr}");
        assert!(!cache.contains(www, addr, now + 10 * S), "{addr}");
        // Under the owner name: the record's own 30 s.
        assert!(cache.contains(cdn, addr, now + 30 * S - 1), "{addr}");
        assert!(!cache.contains(cdn, addr, now + 30 * S), "{addr}");
    }
    assert_eq!(cache.entries(now).len(), 4);
    // Expired entries are swept.
    assert_eq!(cache.gc_step(now + 31 * S, cache.buckets()), 4);
    assert!(cache.entries(0).is_empty());
}

#[test]
fn the_min_ttl_lengthens_short_answers() {
    let config = PolicyConfig {
        fqdn_min_ttl_seconds: 60,
        ..PolicyConfig::default()
    };
    let tables = policy_tables(
        vec![DnsSelector::MatchName("www.allowed.test".to_string())],
        config,
    );
    let cache = FqdnCache::new(1024);
    feed(
        &tables,
        &cache,
        &response_msg("www.allowed.test", &[a("www.allowed.test", 2, WEB)]),
        0,
    );
    assert!(cache.contains(key(&tables, 0), ip(WEB), 59 * S));
    assert!(!cache.contains(key(&tables, 0), ip(WEB), 60 * S));
    // A TTL above the minimum is kept.
    feed(
        &tables,
        &cache,
        &response_msg(
            "www.allowed.test",
            &[a("www.allowed.test", 90, [192, 0, 2, 8])],
        ),
        0,
    );
    assert!(cache.contains(key(&tables, 0), ip([192, 0, 2, 8]), 89 * S));
}

#[test]
fn a_name_keeps_at_most_its_cap_of_addresses() {
    let config = PolicyConfig {
        fqdn_max_ips_per_name: 3,
        ..PolicyConfig::default()
    };
    let tables = policy_tables(
        vec![DnsSelector::MatchPattern("*.allowed.test".to_string())],
        config,
    );
    let cache = FqdnCache::new(1024);
    let records: Vec<_> = (1..=5)
        .map(|i| a("www.allowed.test", 60, [192, 0, 2, i]))
        .collect();
    feed(
        &tables,
        &cache,
        &response_msg("www.allowed.test", &records),
        0,
    );
    let held: Vec<_> = (1..=5)
        .filter(|&i| cache.contains(key(&tables, 0), ip([192, 0, 2, i]), 0))
        .collect();
    assert_eq!(held, vec![1, 2, 3]);
    // Another name has its own cap.
    feed(
        &tables,
        &cache,
        &response_msg(
            "api.allowed.test",
            &[a("api.allowed.test", 60, [192, 0, 2, 9])],
        ),
        0,
    );
    assert!(cache.contains(key(&tables, 0), ip([192, 0, 2, 9]), 0));
}

#[test]
fn answers_that_teach_nothing() {
    let tables = www_and_cdn();
    let cache = FqdnCache::new(1024);
    let www = key(&tables, 0);
    // A record off the question's chain (Cilium rejects such an answer).
    feed(
        &tables,
        &cache,
        &response_msg("www.allowed.test", &[a("other.test", 60, WEB)]),
        0,
    );
    // A name no selector selects.
    feed(
        &tables,
        &cache,
        &response_msg("other.test", &[a("other.test", 60, WEB)]),
        0,
    );
    // NXDOMAIN with a record, a query, an A record of the wrong size.
    let mut nx = response_msg("www.allowed.test", &[a("www.allowed.test", 60, WEB)]);
    nx[3] |= rcode::NXDOMAIN;
    feed(&tables, &cache, &nx, 0);
    let mut not_response = response_msg("www.allowed.test", &[a("www.allowed.test", 60, WEB)]);
    not_response[2] &= 0x7f;
    feed(&tables, &cache, &not_response, 0);
    feed(
        &tables,
        &cache,
        &response_msg(
            "www.allowed.test",
            &[("www.allowed.test", rr_type::A, 60, vec![1, 2, 3])],
        ),
        0,
    );
    assert!(cache.entries(0).is_empty(), "{:?}", cache.entries(0));
    // No toFQDNs selector at all: nothing is read.
    let none = policy_tables(vec![], PolicyConfig::default());
    feed(
        &none,
        &cache,
        &response_msg("www.allowed.test", &[a("www.allowed.test", 60, WEB)]),
        0,
    );
    assert!(cache.entries(0).is_empty());
    // The same answer with the selector does teach (the cases above fail for their reason).
    feed(
        &tables,
        &cache,
        &response_msg("www.allowed.test", &[a("www.allowed.test", 60, WEB)]),
        0,
    );
    assert!(cache.contains(www, ip(WEB), 0));
}

#[test]
fn compressed_answers_are_followed() {
    // CNAME owner and A owner as pointers, the CNAME target's suffix too.
    let mut m = header(7, flags::QR | flags::RD | flags::RA, [1, 2, 0, 0]);
    push_question(&mut m, "www.allowed.test", rr_type::A);
    // "allowed.test" starts at 12 + 4.
    m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 7]);
    let target = m.len();
    m.extend_from_slice(&[4, b'e', b'd', b'g', b'e', 0xc0, 16]);
    m.extend_from_slice(&[0xc0, target as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&WEB);
    let tables = policy_tables(
        vec![
            DnsSelector::MatchName("www.allowed.test".to_string()),
            DnsSelector::MatchName("edge.allowed.test".to_string()),
        ],
        PolicyConfig::default(),
    );
    let cache = FqdnCache::new(1024);
    feed(&tables, &cache, &m, 0);
    assert!(cache.contains(key(&tables, 0), ip(WEB), 0));
    assert!(cache.contains(key(&tables, 1), ip(WEB), 0));
}

#[test]
fn a_tcp_answer_fills_the_cache_from_the_records_it_holds() {
    let tables = www_and_cdn();
    let cache = FqdnCache::new(1024);
    let message = response_msg(
        "www.allowed.test",
        &[
            a("www.allowed.test", 60, WEB),
            a("www.allowed.test", 60, [192, 0, 2, 8]),
        ],
    );
    // The first segment of a two-segment answer: the second record is cut.
    let mut payload = framed(&message);
    payload.truncate(payload.len() - 2);
    let frame = tcp_v4(
        DNS_V4,
        POD_A.ipv4,
        &tcp_segment(53, CLIENT_PORT, 1, 1, tcp_flags::ACK, &[], &payload),
    );
    answer(&frame, &headers(&frame), &tables, &cache, 0, &mut None);
    assert!(cache.contains(key(&tables, 0), ip(WEB), 0));
    assert!(!cache.contains(key(&tables, 0), ip([192, 0, 2, 8]), 0));
}

#[test]
fn name_hashes_ignore_case() {
    assert_eq!(
        name_hash(b"WWW.Allowed.test"),
        name_hash(b"www.allowed.test")
    );
    assert_ne!(
        name_hash(b"www.allowed.test"),
        name_hash(b"ww.allowed.test")
    );
}

// ---- robustness ------------------------------------------------------------

proptest! {
    /// Any bytes as the payload of a DNS datagram or segment, either
    /// direction: no panic, and an answer stays inside the chunk.
    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..600), tcp: bool, allowed: bool) {
        let input = if tcp {
            tcp_v4(POD_A.ipv4, DNS_V4, &tcp_segment(CLIENT_PORT, 53, 1, 1, tcp_flags::ACK, &[], &payload))
        } else {
            udp_v4(POD_A.ipv4, DNS_V4, CLIENT_PORT, 53, &payload)
        };
        let rules = if allowed {
            DnsRules { allow: vec![DnsSelector::MatchPattern("*".to_string())] }
        } else {
            rules()
        };
        let (outcome, _) = run_query(&input, &rules);
        if let DnsOutcome::Refused(Verdict::Reject { len, .. }) = outcome {
            prop_assert!(len <= CHUNK);
        }
        let tables = www_and_cdn();
        let cache = FqdnCache::new(1024);
        answer(&input, &headers(&input), &tables, &cache, 0, &mut None);
    }

    /// A valid query or answer with bytes overwritten (lengths, pointers,
    /// counts): no panic; an answered query is a well-formed frame.
    #[test]
    fn corrupted_messages_never_panic(
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 1..8),
        cut in 0usize..80,
    ) {
        let mut q = query_msg(1, "www.denied.test");
        let mut r = response_msg(
            "www.allowed.test",
            &[cname("www.allowed.test", 10, "edge.cdn.test"), a("edge.cdn.test", 30, WEB)],
        );
        for (at, byte) in &edits {
            if let Some(b) = q.get_mut(*at) { *b = *byte; }
            if let Some(b) = r.get_mut(*at) { *b = *byte; }
        }
        q.truncate(q.len().saturating_sub(cut % 8));
        r.truncate(r.len().saturating_sub(cut));
        let input = udp_v4(POD_A.ipv4, DNS_V4, CLIENT_PORT, 53, &q);
        let (outcome, out) = run_query(&input, &rules());
        if let DnsOutcome::Refused(Verdict::Reject { .. }) = outcome {
            let message = verified_dns(&out);
            prop_assert!(Header::parse(&message).unwrap().is_response());
        }
        let tables = www_and_cdn();
        let cache = FqdnCache::new(1024);
        feed(&tables, &cache, &r, 0);
    }
}

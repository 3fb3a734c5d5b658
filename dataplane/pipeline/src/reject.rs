//! Refusing a new connection to a service without backends, as kube-proxy and
//! Cilium do: a TCP RST, or an ICMP port unreachable for UDP and SCTP, from
//! the frontend address back to the sender. Both are built in the frame.

use core::net::IpAddr;

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::ip_protocol::TCP;
use sluice_wire::tcp::flags;
use sluice_wire::{
    checksum, ethertype, ipv4, ipv6, EthernetRepr, Icmpv4Repr, Icmpv6Repr, Ipv4Repr, Ipv6Repr,
    TcpPacket, TcpRepr,
};

use crate::icmp_error::{self, ReplyLink};
use crate::ipv4::GATEWAY_TTL;
use crate::nat::{End, Headers};
use crate::{DropReason, Verdict};

const REASON: DropReason = DropReason::ServiceNoBackend;

/// The reset for the TCP segment at `h` (RFC 9293 §3.10.7.1, "if the
/// connection does not exist"): a segment with ACK gets `<SEQ=SEG.ACK><CTL=RST>`,
/// one without gets `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. A RST is never
/// answered. Options, payload and IPv6 extension headers of the segment are
/// not copied: the reset is a bare 20-byte header.
pub(crate) fn tcp_reset(
    frame: &mut [u8],
    h: &Headers,
    link: ReplyLink,
) -> Result<Verdict, DropReason> {
    let (src, dst) = match (h.addr(frame, End::Src), h.addr(frame, End::Dst)) {
        (Some(s), Some(d)) => (s, d),
        _ => return Err(REASON),
    };
    let segment = frame.get(h.l4..h.end).ok_or(REASON)?;
    let seg = TcpPacket::new_checked(segment).map_err(|_| REASON)?;
    if seg.flags() & flags::RST != 0 {
        return Err(REASON);
    }
    let seg_len = seg.payload().len() as u32
        + u32::from(seg.flags() & flags::SYN != 0)
        + u32::from(seg.flags() & flags::FIN != 0);
    let (seq_number, ack_number, ctl) = if seg.flags() & flags::ACK != 0 {
        (seg.ack_number(), 0, flags::RST)
    } else {
        (
            0,
            seg.seq_number().wrapping_add(seg_len),
            flags::RST | flags::ACK,
        )
    };
    let tcp = TcpRepr {
        src_port: seg.dst_port(),
        dst_port: seg.src_port(),
        seq_number,
        ack_number,
        flags: ctl,
        window: 0,
        urgent_pointer: 0,
    };
    let tcp_len = tcp.buffer_len();
    let (ip_len, pseudo, ethertype) = match (dst, src) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let repr = Ipv4Repr {
                src: from,
                dst: to,
                protocol: TCP,
                ttl: GATEWAY_TTL,
                tos: 0,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                payload_len: tcp_len,
            };
            let ip = frame.get_mut(ETH_LEN..).ok_or(REASON)?;
            repr.emit(ip).map_err(|_| REASON)?;
            (
                ipv4::HEADER_LEN,
                checksum::pseudo_header_v4(from, to, TCP, tcp_len as u32),
                ethertype::IPV4,
            )
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let repr = Ipv6Repr {
                src: from,
                dst: to,
                next_header: TCP,
                hop_limit: GATEWAY_TTL,
                traffic_class: 0,
                flow_label: 0,
                payload_len: tcp_len,
            };
            let ip = frame.get_mut(ETH_LEN..).ok_or(REASON)?;
            repr.emit(ip).map_err(|_| REASON)?;
            (
                ipv6::HEADER_LEN,
                checksum::pseudo_header_v6(from, to, TCP, tcp_len as u32),
                ethertype::IPV6,
            )
        }
        _ => return Err(REASON),
    };
    let len = ETH_LEN + ip_len + tcp_len;
    let segment = frame.get_mut(ETH_LEN + ip_len..len).ok_or(REASON)?;
    tcp.emit(segment).map_err(|_| REASON)?;
    TcpPacket::new_checked(segment)
        .map_err(|_| REASON)?
        .fill_checksum(pseudo);
    EthernetRepr {
        dst: link.eth_dst,
        src: link.eth_src,
        ethertype,
    }
    .emit(frame)
    .map_err(|_| REASON)?;
    Ok(Verdict::Reject {
        ifindex: link.ifindex,
        len,
        reason: REASON,
    })
}

/// ICMP destination unreachable, port unreachable (IPv4 type 3 code 3, IPv6
/// type 1 code 4), from the frontend `from` to the sender, quoting the packet.
pub(crate) fn port_unreachable(
    frame: &mut [u8],
    h: &Headers,
    from: IpAddr,
    link: ReplyLink,
) -> Result<Verdict, DropReason> {
    let len = match from {
        IpAddr::V4(from) => {
            let header_len = h.l4 - h.ip;
            let ip = frame.get(h.ip..).ok_or(REASON)?;
            let total_len = ipv4::Ipv4Packet::new_checked(ip)
                .map_err(|_| REASON)?
                .total_len();
            icmp_error::error_v4(
                frame,
                total_len,
                header_len,
                from,
                Icmpv4Repr::DstUnreachable {
                    code: 3,
                    next_hop_mtu: 0,
                },
                link,
            )
        }
        IpAddr::V6(from) => {
            let ip = frame.get(h.ip..).ok_or(REASON)?;
            let total_len = ipv6::Ipv6Packet::new_checked(ip)
                .map_err(|_| REASON)?
                .total_len();
            icmp_error::error_v6(
                frame,
                total_len,
                from,
                Icmpv6Repr::DstUnreachable { code: 4 },
                link,
            )
        }
    };
    Ok(Verdict::Reject {
        ifindex: link.ifindex,
        len: len.ok_or(REASON)?,
        reason: REASON,
    })
}

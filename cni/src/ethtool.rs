//! `ethtool -K IFACE tx off` over the ethtool generic-netlink family.
//!
//! XDP on the node-side veth turns TSO off on its peer, and with checksum
//! offload still on, TCP segments leave the pod with their checksums unfilled
//! (CHECKSUM_PARTIAL) and reach the engine's AF_XDP path unfinished. Turning
//! the container end's tx checksumming off makes the pod's stack fill them.
//! The `ethtool` crate can only read features, so the two messages needed here
//! are built with netlink-packet-generic. The socket is opened in the calling
//! thread's netns.

use std::fmt::Debug;
use std::io;

use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use rtnetlink::packet_core::{
    DecodeError, DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator,
    ParseableParametrized, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// The features `ethtool -K tx off` turns off (its legacy "tx" group).
pub const TX_CHECKSUM_FEATURES: [&str; 5] = [
    "tx-checksum-ipv4",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv6",
    "tx-checksum-fcoe-crc",
    "tx-checksum-sctp",
];

// include/uapi/linux/ethtool_netlink.h (generated ethtool netlink spec).
const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_MSG_FEATURES_GET: u8 = 11;
const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_A_HEADER_DEV_INDEX: u16 = 1;
const ETHTOOL_A_HEADER_FLAGS: u16 = 3;
const ETHTOOL_FLAG_OMIT_REPLY: u32 = 1 << 1;
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_FEATURES_ACTIVE: u16 = 4;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;

/// A request of the ethtool family: a command and its top-level attributes.
#[derive(Clone, Debug)]
struct EthtoolRequest {
    cmd: u8,
    attributes: Vec<DefaultNla>,
}

impl GenlFamily for EthtoolRequest {
    fn family_name() -> &'static str {
        "ethtool"
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for EthtoolRequest {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attributes.as_slice().emit(buffer)
    }
}

/// A reply of the ethtool family, kept raw; its attributes are walked on demand.
#[derive(Clone, Debug)]
struct EthtoolReply {
    attributes: Vec<u8>,
}

impl GenlFamily for EthtoolReply {
    fn family_name() -> &'static str {
        "ethtool"
    }
    fn command(&self) -> u8 {
        0
    }
    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for EthtoolReply {
    fn buffer_len(&self) -> usize {
        self.attributes.len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.attributes)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for EthtoolReply {
    fn parse_with_param(buf: &[u8], _header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(EthtoolReply {
            attributes: buf.to_vec(),
        })
    }
}

fn nla(kind: u16, value: Vec<u8>) -> DefaultNla {
    DefaultNla::new(kind, value)
}

fn nested(kind: u16, children: &[DefaultNla]) -> DefaultNla {
    let mut value = vec![0u8; children.buffer_len()];
    children.emit(&mut value);
    DefaultNla::new(kind | NLA_F_NESTED, value)
}

fn nul_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn header(ifindex: u32, flags: u32) -> DefaultNla {
    nested(
        ETHTOOL_A_FEATURES_HEADER,
        &[
            nla(ETHTOOL_A_HEADER_DEV_INDEX, ifindex.to_ne_bytes().to_vec()),
            nla(ETHTOOL_A_HEADER_FLAGS, flags.to_ne_bytes().to_vec()),
        ],
    )
}

/// A generic-netlink socket in the calling thread's netns.
struct Genl {
    socket: Socket,
    sequence: u32,
}

impl Genl {
    fn open() -> io::Result<Genl> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Genl {
            socket,
            sequence: 0,
        })
    }

    /// Sends one request and returns the replies up to its ack (or the first
    /// reply when no ack was asked for).
    fn request<Req, Rep>(
        &mut self,
        mut message: GenlMessage<Req>,
        family_id: u16,
        ack: bool,
    ) -> io::Result<Vec<Rep>>
    where
        Req: GenlFamily + Emitable + Debug,
        Rep: ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        message.finalize();
        message.set_resolved_family_id(family_id);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
        self.sequence += 1;
        request.header.sequence_number = self.sequence;
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut replies = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < bytes.len() {
                let message = NetlinkMessage::<GenlMessage<Rep>>::deserialize(&bytes[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = message.header.length as usize;
                if message.header.sequence_number == self.sequence {
                    match message.payload {
                        NetlinkPayload::Error(error) => match error.code {
                            None => return Ok(replies),
                            Some(_) => return Err(error.to_io()),
                        },
                        NetlinkPayload::InnerMessage(reply) => {
                            replies.push(reply.payload);
                            if !ack {
                                return Ok(replies);
                            }
                        }
                        NetlinkPayload::Done(_) => return Ok(replies),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
            }
        }
    }

    fn family_id(&mut self, name: &str) -> io::Result<u16> {
        let message = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        let replies: Vec<GenlCtrl> = self.request(message, libc_genl_id_ctrl(), false)?;
        replies
            .iter()
            .flat_map(|r| r.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| io::Error::other(format!("no id for generic netlink family {name}")))
    }
}

/// GENL_ID_CTRL, the controller's fixed id.
fn libc_genl_id_ctrl() -> u16 {
    0x10
}

/// Turns the tx checksum features of link `ifindex` off (`ethtool -K tx off`).
/// Features the device cannot change are left alone by the kernel.
pub fn disable_tx_checksum(ifindex: u32) -> io::Result<()> {
    let mut genl = Genl::open()?;
    let family = genl.family_id("ethtool")?;
    let bits: Vec<DefaultNla> = TX_CHECKSUM_FEATURES
        .iter()
        // A bit listed without ETHTOOL_A_BITSET_BIT_VALUE (3) is set to off; bits
        // not listed keep their value (no ETHTOOL_A_BITSET_NOMASK).
        .map(|name| {
            nested(
                ETHTOOL_A_BITSET_BITS_BIT,
                &[nla(ETHTOOL_A_BITSET_BIT_NAME, nul_string(name))],
            )
        })
        .collect();
    let request = EthtoolRequest {
        cmd: ETHTOOL_MSG_FEATURES_SET,
        attributes: vec![
            header(ifindex, ETHTOOL_FLAG_OMIT_REPLY),
            nested(
                ETHTOOL_A_FEATURES_WANTED,
                &[nested(ETHTOOL_A_BITSET_BITS, &bits)],
            ),
        ],
    };
    genl.request::<_, EthtoolReply>(GenlMessage::from_payload(request), family, true)?;
    Ok(())
}

/// The names of the features active on link `ifindex` (`ethtool -k`).
pub fn active_features(ifindex: u32) -> io::Result<Vec<String>> {
    let mut genl = Genl::open()?;
    let family = genl.family_id("ethtool")?;
    let request = EthtoolRequest {
        cmd: ETHTOOL_MSG_FEATURES_GET,
        attributes: vec![header(ifindex, 0)],
    };
    let replies: Vec<EthtoolReply> =
        genl.request(GenlMessage::from_payload(request), family, false)?;
    let reply = replies
        .first()
        .ok_or_else(|| io::Error::other("no answer to ETHTOOL_MSG_FEATURES_GET"))?;
    let bad = |e: DecodeError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut active = Vec::new();
    for attribute in NlasIterator::new(reply.attributes.as_slice()) {
        let attribute = attribute.map_err(bad)?;
        if attribute.kind() != ETHTOOL_A_FEATURES_ACTIVE {
            continue;
        }
        // A no-mask bitset in verbose form lists the bits that are set.
        for inner in NlasIterator::new(attribute.value()) {
            let inner = inner.map_err(bad)?;
            if inner.kind() != ETHTOOL_A_BITSET_BITS {
                continue;
            }
            for bit in NlasIterator::new(inner.value()) {
                let bit = bit.map_err(bad)?;
                let mut name = None;
                for field in NlasIterator::new(bit.value()) {
                    let field: NlaBuffer<&[u8]> = field.map_err(bad)?;
                    if field.kind() == ETHTOOL_A_BITSET_BIT_NAME {
                        let raw = field.value();
                        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                        name = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
                    }
                }
                active.extend(name);
            }
        }
    }
    Ok(active)
}

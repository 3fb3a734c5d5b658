//! The program on the node's uplink.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData};

use crate::attach::{AttachMode, Attachment, Interface, LoadedObject};
use crate::maps::{
    DestEntry, L4Proto, LpmKey, PortEntry, PortKey, PortKind, PortRange, XdpStats, DEST_ENGINE,
    DEST_NODE,
};
use crate::sockets::SocketSteering;
use crate::XdpError;

pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/uplink.o"));

const DESTS_MAP: &str = "engine_dests";
const PORTS_MAP: &str = "engine_ports";
const PORT_RANGE_MAP: &str = "engine_port_range";

/// `sluice_uplink` attached to the node's uplink: frames to engine-owned destinations go to
/// the AF_XDP socket of their rx queue; everything else (the node's own traffic, ARP) goes to
/// the kernel untouched. Dropping it detaches the program.
///
/// Engine-owned is: an address inside a prefix added with [`add_prefix`](Self::add_prefix)
/// (pod CIDRs, service addresses), or a TCP/UDP/SCTP frame to a node address
/// ([`add_node_address`](Self::add_node_address)) whose destination port was added with
/// [`add_port`](Self::add_port) (node ports, tunnel ports). The most specific entry wins.
pub struct UplinkProgram {
    attachment: Attachment,
    steering: SocketSteering,
    dests: LpmTrie<MapData, [u8; 16], DestEntry>,
    ports: HashMap<MapData, PortKey, PortEntry>,
    port_range: Array<MapData, PortRange>,
}

impl std::fmt::Debug for UplinkProgram {
    // aya's Array has no Debug; the maps are shown by the attachment's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkProgram")
            .field("attachment", &self.attachment)
            .field("steering", &self.steering)
            .finish_non_exhaustive()
    }
}

impl UplinkProgram {
    /// The program's name in the kernel (`bpftool prog`) and in errors.
    pub const NAME: &'static str = "sluice_uplink";

    /// Loads the program and attaches it to `ifname` in the caller's network namespace. It
    /// starts with no engine-owned destinations: everything passes.
    pub fn attach(ifname: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let interface = Interface::resolve(ifname, Self::NAME)?;
        let mut object = LoadedObject::load(OBJECT, Self::NAME)?;
        let steering = SocketSteering::open(&mut object, ifname)?;
        let dests = object.take_map(DESTS_MAP, ifname)?;
        let ports = object.take_map(PORTS_MAP, ifname)?;
        let port_range = object.take_map(PORT_RANGE_MAP, ifname)?;
        let attachment = object.attach(interface, mode)?;
        Ok(Self {
            attachment,
            steering,
            dests,
            ports,
            port_range,
        })
    }

    /// See [`PodProgram::register_socket`](crate::PodProgram::register_socket).
    pub fn register_socket(&mut self, queue_id: u32, socket: impl AsRawFd) -> Result<(), XdpError> {
        self.steering.register(&self.attachment, queue_id, socket)
    }

    /// Frames received on rx queue `queue_id` go to the kernel again.
    pub fn unregister_socket(&mut self, queue_id: u32) -> Result<(), XdpError> {
        self.steering.unregister(&self.attachment, queue_id)
    }

    /// Frames to `addr/prefix_len` belong to the engine. Host bits of `addr` are ignored.
    pub fn add_prefix(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), XdpError> {
        self.insert_dest(addr, prefix_len, DEST_ENGINE, "add engine prefix")
    }

    /// Every frame to this one address belongs to the engine (a service address:
    /// LoadBalancer ingress IP, externalIP): [`add_prefix`](Self::add_prefix) with
    /// the full host length.
    pub fn add_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.add_prefix(addr, host_len(addr))
    }

    /// Removes an address added with [`add_address`](Self::add_address).
    pub fn remove_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.remove_prefix(addr, host_len(addr))
    }

    /// Removes a prefix added with [`add_prefix`](Self::add_prefix).
    pub fn remove_prefix(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), XdpError> {
        self.remove_dest(addr, prefix_len, "remove engine prefix")
    }

    /// `addr` is one of the node's own addresses: frames to it stay with the kernel unless
    /// their (protocol, destination port) was added with [`add_port`](Self::add_port).
    pub fn add_node_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.insert_dest(addr, host_len(addr), DEST_NODE, "add node address")
    }

    /// Removes an address added with [`add_node_address`](Self::add_node_address).
    pub fn remove_node_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.remove_dest(addr, host_len(addr), "remove node address")
    }

    /// Frames to any node address with this protocol and destination port belong to the
    /// engine. IPv4 non-first fragments and IPv6 frames with extension headers before the L4
    /// header do not match (they stay with the kernel).
    pub fn add_port(&mut self, proto: L4Proto, port: u16, kind: PortKind) -> Result<(), XdpError> {
        self.ports
            .insert(PortKey::new(proto, port), PortEntry::from(kind), 0)
            .map_err(|cause| {
                self.attachment
                    .map_error(PORTS_MAP, format!("add {proto:?} port {port}"), cause)
            })
    }

    /// Removes a port added with [`add_port`](Self::add_port).
    pub fn remove_port(&mut self, proto: L4Proto, port: u16) -> Result<(), XdpError> {
        self.ports
            .remove(&PortKey::new(proto, port))
            .map_err(|cause| {
                self.attachment
                    .map_error(PORTS_MAP, format!("remove {proto:?} port {port}"), cause)
            })
    }

    /// Replies to node addresses whose TCP/UDP destination port or ICMP echo-reply
    /// identifier is in `min..=max` (the masquerade range) belong to the engine; `None`
    /// switches that off.
    pub fn set_masquerade_range(&mut self, range: Option<(u16, u16)>) -> Result<(), XdpError> {
        let value = match range {
            Some((min, max)) => PortRange {
                min,
                max,
                enabled: 1,
            },
            None => PortRange {
                min: 0,
                max: 0,
                enabled: 0,
            },
        };
        self.port_range.set(0, value, 0).map_err(|cause| {
            self.attachment.map_error(
                PORT_RANGE_MAP,
                format!("set masquerade range {range:?}"),
                cause,
            )
        })
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        self.steering.stats(&self.attachment)
    }

    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        &self.attachment.interface.name
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> AttachMode {
        self.attachment.mode
    }

    fn insert_dest(
        &mut self,
        addr: IpAddr,
        prefix_len: u8,
        kind: u32,
        what: &str,
    ) -> Result<(), XdpError> {
        let key: Key<[u8; 16]> = LpmKey::new(addr, prefix_len)?.into();
        self.dests
            .insert(&key, DestEntry { kind }, 0)
            .map_err(|cause| {
                self.attachment
                    .map_error(DESTS_MAP, format!("{what} {addr}/{prefix_len}"), cause)
            })
    }

    fn remove_dest(&mut self, addr: IpAddr, prefix_len: u8, what: &str) -> Result<(), XdpError> {
        let key: Key<[u8; 16]> = LpmKey::new(addr, prefix_len)?.into();
        self.dests.remove(&key).map_err(|cause| {
            self.attachment
                .map_error(DESTS_MAP, format!("{what} {addr}/{prefix_len}"), cause)
        })
    }
}

fn host_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// The one definition of everything the XDP programs and Rust share: map sizes, constants,
// and the #[repr(C)] keys and values of the maps.
//
// This file is plain data for the `sluice_layout!` macro and is read twice:
// - `src/maps.rs` includes it to get the Rust structs and constants;
// - `build.rs` includes it to write `sluice_maps.h` (C structs, `#define`s, and
//   `_Static_assert`s on every size and offset) before compiling `bpf/*.c`.
// Field types are limited to u8/u16/u32/u64 and arrays of them, and a struct may not have
// padding (build.rs refuses it), so every type here is plain old data on both sides.
// Multi-byte fields hold host order unless the doc says "network order".

sluice_layout! {
    consts {
        /// Entries of `xsks_map`: the highest rx queue index a socket can serve, plus one.
        XSK_MAX_QUEUES: u32 = 256;
        /// Entries of the uplink's `engine_dests` LPM trie.
        DEST_MAX_ENTRIES: u32 = 65536;
        /// Entries of the uplink's `engine_ports` hash.
        PORT_MAX_ENTRIES: u32 = 1024;
        /// `DestEntry::kind`: every frame to this prefix belongs to the engine (pod CIDRs,
        /// service addresses).
        DEST_ENGINE: u32 = 1;
        /// `DestEntry::kind`: a node address; only frames whose (protocol, destination port)
        /// is in `engine_ports` belong to the engine (node ports, tunnel ports).
        DEST_NODE: u32 = 2;
        /// `PortEntry::kind`: a Service node port.
        PORT_NODEPORT: u32 = 1;
        /// `PortEntry::kind`: a tunnel endpoint (VXLAN, Geneve, WireGuard).
        PORT_TUNNEL: u32 = 2;
    }

    /// Key of the uplink's `engine_dests` LPM trie. IPv4 is stored IPv4-mapped
    /// (`::ffff:a.b.c.d`) with 96 added to its prefix length, so one trie serves both families.
    struct LpmKey => sluice_lpm_key {
        /// Significant leading bits of `addr`.
        prefixlen: u32,
        /// IPv6 address or IPv4-mapped IPv6 address, network order.
        addr: [u8; 16],
    }

    /// Value of the `engine_dests` LPM trie.
    struct DestEntry => sluice_dest {
        /// `DEST_ENGINE` or `DEST_NODE`.
        kind: u32,
    }

    /// Key of the uplink's `engine_ports` hash: an L4 protocol and destination port that the
    /// engine owns on the node's own addresses (`DEST_NODE` entries).
    struct PortKey => sluice_port_key {
        /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
        proto: u8,
        /// Always zero: part of the hashed key.
        pad: u8,
        /// Destination port, network order.
        port_be: u16,
    }

    /// Value of the `engine_ports` hash.
    struct PortEntry => sluice_port_entry {
        /// `PORT_NODEPORT` or `PORT_TUNNEL`.
        kind: u32,
    }

    /// The one entry of the uplink's `engine_port_range` array: the source ports (and ICMP
    /// echo identifiers) the engine gives masqueraded flows. Replies to a node address whose
    /// TCP/UDP destination port, or ICMP/ICMPv6 echo-reply identifier, lies in
    /// `[min, max]` belong to the engine. `max < min` (the initial zeroes aside) or
    /// `enabled == 0`: none.
    struct PortRange => sluice_port_range {
        /// Lowest port, host order.
        min: u16,
        /// Highest port, host order.
        max: u16,
        /// 1 when the range is in use.
        enabled: u32,
    }

    /// The one entry of the per-CPU `xdp_stats` array of the pod and uplink programs.
    struct XdpStats => sluice_xdp_stats {
        /// Frames redirected into an AF_XDP socket.
        redirected: u64,
        /// Engine-bound frames passed to the kernel because no socket serves their rx queue.
        no_socket: u64,
        /// Uplink: IP frames passed because their destination is not engine-owned.
        not_engine: u64,
        /// Uplink: frames passed because they are not IPv4/IPv6 (ARP, LLDP) or truncated.
        non_ip: u64,
    }

    /// The one entry of the sink benchmark program's per-CPU `sink_counts` array.
    struct SinkCounts => sluice_sink_counts {
        /// Frames seen (and dropped).
        packets: u64,
        /// Bytes of those frames, from the Ethernet header on.
        bytes: u64,
    }
}

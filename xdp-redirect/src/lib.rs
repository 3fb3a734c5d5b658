//! Loads the XDP programs that steer frames into AF_XDP sockets.
//!
//! - [`PodProgram`] on the node side of every pod veth: every frame to the engine.
//! - [`UplinkProgram`] on the uplink: frames for engine-owned destinations to the engine, the
//!   node's own traffic to the kernel.
//! - [`DevmapRedirect`], [`PassProgram`] and [`Sink`]: baselines for throughput comparisons.
//!
//! The programs are C (`bpf/*.c`), compiled by `build.rs` and embedded. Map keys and values
//! are defined once, in `src/layout.rs` (see [`maps`]). Every program is attached through a
//! bpf_link and detached on `Drop` or when the process exits; nothing is pinned.
//!
//! Interface names are resolved in the network namespace of the calling thread.

mod attach;
mod bench;
mod error;
pub mod maps;
mod pod;
mod sockets;
mod uplink;

pub use attach::AttachMode;
pub use bench::{DevmapRedirect, PassProgram, Sink};
pub use error::XdpError;
pub use maps::{L4Proto, PortKind, XdpStats};
pub use pod::PodProgram;
pub use uplink::UplinkProgram;

#[cfg(test)]
mod object_tests {
    //! The compiled objects agree with the Rust side on names and map layouts, checked by
    //! parsing the ELF (no kernel, no root).

    use std::mem::size_of;

    use aya::maps::lpm_trie::Key;

    use crate::maps::*;

    /// (map, key size, value size, max entries) as the Rust side uses them.
    fn check_maps(object: &[u8], programs: &[&str], maps: &[(&str, usize, usize, u32)]) {
        let obj = aya_obj::Object::parse(object).expect("parse embedded BPF object");
        for program in programs {
            assert!(obj.programs.contains_key(*program), "program {program}");
        }
        assert_eq!(obj.maps.len(), maps.len(), "maps: {:?}", obj.maps.keys());
        for &(name, key, value, entries) in maps {
            let map = obj.maps.get(name).unwrap_or_else(|| panic!("map {name}"));
            assert_eq!(map.key_size() as usize, key, "{name} key size");
            assert_eq!(map.value_size() as usize, value, "{name} value size");
            assert_eq!(map.max_entries(), entries, "{name} max entries");
        }
    }

    #[test]
    fn pod_object() {
        check_maps(
            crate::pod::OBJECT,
            &[crate::PodProgram::NAME],
            &[
                ("xsks_map", 4, 4, XSK_MAX_QUEUES),
                ("xdp_stats", 4, size_of::<XdpStats>(), 1),
            ],
        );
    }

    #[test]
    fn uplink_object() {
        check_maps(
            crate::uplink::OBJECT,
            &[crate::UplinkProgram::NAME],
            &[
                ("xsks_map", 4, 4, XSK_MAX_QUEUES),
                ("xdp_stats", 4, size_of::<XdpStats>(), 1),
                (
                    "engine_dests",
                    size_of::<Key<[u8; 16]>>(),
                    size_of::<DestEntry>(),
                    DEST_MAX_ENTRIES,
                ),
                (
                    "engine_ports",
                    size_of::<PortKey>(),
                    size_of::<PortEntry>(),
                    PORT_MAX_ENTRIES,
                ),
                ("engine_port_range", 4, size_of::<PortRange>(), 1),
            ],
        );
    }

    #[test]
    fn bench_objects() {
        // The DEVMAP value is the kernel's struct bpf_devmap_val (ifindex, program fd).
        check_maps(
            crate::bench::DEVMAP_OBJECT,
            &[crate::DevmapRedirect::NAME, crate::PassProgram::NAME],
            &[("redirect_devs", 4, 8, 1)],
        );
        check_maps(
            crate::bench::SINK_OBJECT,
            &[crate::Sink::NAME],
            &[("sink_counts", 4, size_of::<SinkCounts>(), 1)],
        );
    }

    #[test]
    fn missing_interface_is_named_before_anything_is_loaded() {
        // Needs no root: the name is resolved before the object is loaded.
        let err = crate::PodProgram::attach("slx-no-such0", crate::AttachMode::Native).unwrap_err();
        assert!(
            matches!(&err, crate::XdpError::NoSuchInterface { ifname, program: "sluice_pod" } if ifname == "slx-no-such0"),
            "{err:?}"
        );
        let err = crate::DevmapRedirect::attach("lo", "slx-no-such1", crate::AttachMode::Skb)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no network interface named \"slx-no-such1\" in this network namespace (for XDP program sluice_devmap)"
        );
    }
}

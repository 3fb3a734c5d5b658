//! Setup errors, each naming the program, the interface and the map involved.

use std::net::IpAddr;

use aya::maps::xdp::XdpMapError;
use aya::maps::MapError;
use aya::programs::ProgramError;
use aya::EbpfError;
use thiserror::Error;

use crate::AttachMode;

/// Why loading, attaching or configuring an XDP program failed.
///
/// The message carries the cause, so the cause is not also exposed as `source()` (a chain
/// printer would show it twice). Causes from aya are boxed: they are large, and this error
/// travels through every setup call.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum XdpError {
    /// The interface to attach to (or to redirect to) does not exist in this network namespace.
    #[error("no network interface named {ifname:?} in this network namespace (for XDP program {program})")]
    NoSuchInterface {
        /// The missing interface.
        ifname: String,
        /// The program that needed it.
        program: &'static str,
    },
    /// The embedded BPF object could not be loaded (maps created, BTF loaded).
    #[error("load BPF object of XDP program {program}: {cause}")]
    LoadObject {
        /// The program whose object failed.
        program: &'static str,
        /// What aya reported.
        cause: Box<EbpfError>,
    },
    /// The embedded object lacks a program or map the Rust side expects.
    #[error("BPF object of XDP program {program} has no {kind} named {name}")]
    Missing {
        /// The program whose object was searched.
        program: &'static str,
        /// "program" or "map".
        kind: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// The kernel refused the program (verifier) or it is not an XDP program.
    #[error("load XDP program {program} into the kernel: {cause}")]
    LoadProgram {
        /// The program.
        program: &'static str,
        /// What aya reported, including the verifier log.
        cause: Box<ProgramError>,
    },
    /// Attaching to the interface failed.
    #[error("attach XDP program {program} to {ifname} in {mode} mode: {cause}")]
    Attach {
        /// The program.
        program: &'static str,
        /// The interface.
        ifname: String,
        /// The requested mode.
        mode: AttachMode,
        /// What aya reported.
        cause: Box<ProgramError>,
    },
    /// A map could not be opened, read or updated.
    #[error("{op} in map {map} of XDP program {program} on {ifname}: {cause}")]
    Map {
        /// The program owning the map.
        program: &'static str,
        /// The interface the program is attached to.
        ifname: String,
        /// The map.
        map: &'static str,
        /// What was being done, e.g. "register AF_XDP socket for rx queue 3".
        op: String,
        /// What aya reported.
        cause: Box<MapError>,
    },
    /// Setting the DEVMAP target failed.
    #[error(
        "set redirect target {target} in map {map} of XDP program {program} on {ifname}: {cause}"
    )]
    DevMap {
        /// The program owning the map.
        program: &'static str,
        /// The interface the program is attached to.
        ifname: String,
        /// The map.
        map: &'static str,
        /// The target interface.
        target: String,
        /// What aya reported.
        cause: Box<XdpMapError>,
    },
    /// A prefix length longer than the address.
    #[error("prefix length {prefix_len} is too long for {addr} (at most {max})")]
    PrefixTooLong {
        /// The address given.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
        /// The longest allowed for this family.
        max: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_error_names_program_interface_mode_and_cause() {
        let err = XdpError::Attach {
            program: "sluice_pod",
            ifname: "lxc3".into(),
            mode: AttachMode::Native,
            cause: Box::new(ProgramError::UnknownInterface {
                name: "lxc3".into(),
            }),
        };
        assert_eq!(
            err.to_string(),
            "attach XDP program sluice_pod to lxc3 in driver mode: unknown network interface lxc3"
        );
    }

    #[test]
    fn missing_interface_is_named() {
        let err = XdpError::NoSuchInterface {
            ifname: "lxc9".into(),
            program: "sluice_uplink",
        };
        assert_eq!(
            err.to_string(),
            "no network interface named \"lxc9\" in this network namespace (for XDP program sluice_uplink)"
        );
    }
}

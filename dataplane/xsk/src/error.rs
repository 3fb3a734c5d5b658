//! Setup and I/O errors. Every error about a port names its interface.

use std::io;
use std::sync::Arc;

use crate::PortId;

/// Errors from building a worker's UMEM, opening ports, and running them.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A configuration value the kernel would reject.
    #[error("invalid xsk config: {field} {reason}")]
    InvalidConfig {
        /// The `XskConfig` field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The UMEM could not be mapped.
    #[error("cannot map a {bytes}-byte UMEM: {source}")]
    Umem {
        /// Requested size.
        bytes: usize,
        /// The `mmap` error.
        source: io::Error,
    },
    /// The kernel has no AF_XDP sockets (`CONFIG_XDP_SOCKETS` off, or an old kernel).
    #[error("AF_XDP sockets are not supported by this kernel: {source}")]
    AfXdpUnsupported {
        /// The `socket(AF_XDP)` error.
        source: io::Error,
    },
    /// No interface with this name exists in the calling thread's network namespace.
    #[error("interface {ifname:?} does not exist")]
    NoSuchInterface {
        /// The name given to `open_port`.
        ifname: Arc<str>,
    },
    /// This worker already has a port on the same device queue.
    #[error("interface {ifname:?} queue {queue_id} already has a port on this worker")]
    PortInUse {
        /// Interface name.
        ifname: Arc<str>,
        /// Device queue.
        queue_id: u32,
    },
    /// A step of opening a port failed.
    #[error("opening AF_XDP port on {ifname:?} queue {queue_id} failed at {step}: {source}")]
    PortSetup {
        /// Interface name.
        ifname: Arc<str>,
        /// Device queue.
        queue_id: u32,
        /// The setup step (`"bind"`, `"mmap rx ring"`, ...).
        step: &'static str,
        /// The syscall error.
        source: io::Error,
    },
    /// The worker already has as many ports as a `PortId` can name.
    #[error("too many ports on one worker")]
    TooManyPorts,
    /// The `PortId` was closed or belongs to another worker.
    #[error("unknown or closed port {0:?}")]
    UnknownPort(PortId),
    /// The port's interface went away (deleted, moved to another namespace) or its
    /// socket was unbound. The port is dead: close it; other ports are unaffected.
    #[error("AF_XDP port {port:?} on {ifname:?} is down ({op}): {source}; the interface was removed or the socket unbound")]
    PortDown {
        /// The dead port.
        port: PortId,
        /// Its interface name.
        ifname: Arc<str>,
        /// What noticed it (`"tx kick"`, `"rx wakeup"`, `"rx probe"`, ...).
        op: &'static str,
        /// The kernel's answer, usually ENXIO.
        source: io::Error,
    },
    /// `getsockopt(XDP_STATISTICS)` failed.
    #[error("reading XDP statistics of {ifname:?} failed: {source}")]
    Stats {
        /// Interface name.
        ifname: Arc<str>,
        /// The syscall error.
        source: io::Error,
    },
}

impl XskError {
    /// The port this error is about, when it is about one running port.
    pub fn port(&self) -> Option<PortId> {
        match self {
            XskError::PortDown { port, .. } => Some(*port),
            XskError::UnknownPort(port) => Some(*port),
            _ => None,
        }
    }
}

//! The program on the node side of every pod veth.

use std::os::fd::AsRawFd;

use crate::attach::{AttachMode, Attachment, Interface, LoadedObject};
use crate::maps::XdpStats;
use crate::sockets::SocketSteering;
use crate::XdpError;

pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pod.o"));

/// `sluice_pod` attached to a pod's veth: every frame goes to the AF_XDP socket registered for
/// its rx queue, or to the kernel while there is none. Dropping it detaches the program.
#[derive(Debug)]
pub struct PodProgram {
    // Declared first so the program is detached before the maps are closed.
    attachment: Attachment,
    steering: SocketSteering,
}

impl PodProgram {
    /// The program's name in the kernel (`bpftool prog`) and in errors.
    pub const NAME: &'static str = "sluice_pod";

    /// Loads the program and attaches it to `ifname` in the caller's network namespace.
    pub fn attach(ifname: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let interface = Interface::resolve(ifname, Self::NAME)?;
        let mut object = LoadedObject::load(OBJECT, Self::NAME)?;
        let steering = SocketSteering::open(&mut object, ifname)?;
        let attachment = object.attach(interface, mode)?;
        Ok(Self {
            attachment,
            steering,
        })
    }

    /// Frames received on rx queue `queue_id` now go to `socket` (a `RawFd`, `BorrowedFd`, or
    /// anything `AsRawFd`), an AF_XDP socket bound to that queue of this interface; the kernel
    /// refuses any other kind of socket. The fd need only be open during the call. Closing
    /// the socket later removes it from the map, and the queue's frames go to the kernel.
    pub fn register_socket(&mut self, queue_id: u32, socket: impl AsRawFd) -> Result<(), XdpError> {
        self.steering.register(&self.attachment, queue_id, socket)
    }

    /// Frames received on rx queue `queue_id` go to the kernel again.
    pub fn unregister_socket(&mut self, queue_id: u32) -> Result<(), XdpError> {
        self.steering.unregister(&self.attachment, queue_id)
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        self.steering.stats(&self.attachment)
    }

    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        &self.attachment.interface.name
    }

    /// Its index in the network namespace it was attached in.
    pub fn ifindex(&self) -> u32 {
        self.attachment.interface.index
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> AttachMode {
        self.attachment.mode
    }
}

//! Programs for throughput comparisons, not used by the engine.

use aya::maps::{DevMap, MapData, PerCpuArray};

use crate::attach::{AttachMode, Attachment, Interface, LoadedObject};
use crate::maps::SinkCounts;
use crate::XdpError;

pub(crate) static DEVMAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/devmap.o"));
pub(crate) static SINK_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sink.o"));

const REDIRECT_MAP: &str = "redirect_devs";
const SINK_MAP: &str = "sink_counts";

/// The in-kernel XDP ceiling: every frame received on one interface is transmitted on another
/// through a DEVMAP, without leaving the driver.
///
/// A veth drops frames redirected into it unless its peer runs an XDP program (or has GRO
/// on): when `to` is a veth, attach a [`Sink`] or a [`PassProgram`] to its peer, e.g. with
/// [`attach_peer_pass`](Self::attach_peer_pass). Dropping it detaches the program (and the
/// pass programs it holds).
pub struct DevmapRedirect {
    attachment: Attachment,
    to: Interface,
    _devs: DevMap<MapData>,
    peer_passes: Vec<PassProgram>,
}

impl DevmapRedirect {
    /// The program's name in the kernel and in errors.
    pub const NAME: &'static str = "sluice_devmap";

    /// Redirects every frame received on `from_ifname` out of `to_ifname`; both in the
    /// caller's network namespace.
    pub fn attach(from_ifname: &str, to_ifname: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let from = Interface::resolve(from_ifname, Self::NAME)?;
        let to = Interface::resolve(to_ifname, Self::NAME)?;
        let mut object = LoadedObject::load(DEVMAP_OBJECT, Self::NAME)?;
        let mut devs: DevMap<MapData> = object.take_map(REDIRECT_MAP, from_ifname)?;
        // The target goes in before the program is attached, so no frame meets an empty map.
        devs.set(0, to.index, None, 0)
            .map_err(|cause| XdpError::DevMap {
                program: Self::NAME,
                ifname: from.name.clone(),
                map: REDIRECT_MAP,
                target: to.name.clone(),
                cause: Box::new(cause),
            })?;
        let attachment = object.attach(from, mode)?;
        Ok(Self {
            attachment,
            to,
            _devs: devs,
            peer_passes: Vec::new(),
        })
    }

    /// Attaches a [`PassProgram`] to `peer_ifname` (the veth peer of the target, in the
    /// caller's network namespace) and keeps it until `self` is dropped.
    pub fn attach_peer_pass(
        &mut self,
        peer_ifname: &str,
        mode: AttachMode,
    ) -> Result<(), XdpError> {
        self.peer_passes
            .push(PassProgram::attach(peer_ifname, mode)?);
        Ok(())
    }

    /// The interface frames are received on.
    pub fn from_ifname(&self) -> &str {
        &self.attachment.interface.name
    }

    /// The interface frames are sent out of.
    pub fn to_ifname(&self) -> &str {
        &self.to.name
    }
}

impl std::fmt::Debug for DevmapRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevmapRedirect")
            .field("attachment", &self.attachment)
            .field("to", &self.to)
            .field("peer_passes", &self.peer_passes)
            .finish_non_exhaustive()
    }
}

/// An XDP program that passes every frame: makes a veth accept DEVMAP-redirected frames.
#[derive(Debug)]
pub struct PassProgram {
    _attachment: Attachment,
}

impl PassProgram {
    /// The program's name in the kernel and in errors.
    pub const NAME: &'static str = "sluice_pass";

    /// Attaches to `ifname` in the caller's network namespace.
    pub fn attach(ifname: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let interface = Interface::resolve(ifname, Self::NAME)?;
        let object = LoadedObject::load(DEVMAP_OBJECT, Self::NAME)?;
        Ok(Self {
            _attachment: object.attach(interface, mode)?,
        })
    }
}

/// Counts every frame and its bytes, then drops it.
pub struct Sink {
    attachment: Attachment,
    counts: PerCpuArray<MapData, SinkCounts>,
}

impl Sink {
    /// The program's name in the kernel and in errors.
    pub const NAME: &'static str = "sluice_sink";

    /// Attaches to `ifname` in the caller's network namespace.
    pub fn attach(ifname: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let interface = Interface::resolve(ifname, Self::NAME)?;
        let mut object = LoadedObject::load(SINK_OBJECT, Self::NAME)?;
        let counts = object.take_map(SINK_MAP, ifname)?;
        let attachment = object.attach(interface, mode)?;
        Ok(Self { attachment, counts })
    }

    /// `(packets, bytes)` dropped so far, summed over CPUs.
    pub fn counts(&self) -> Result<(u64, u64), XdpError> {
        let per_cpu = self.counts.get(&0, 0).map_err(|cause| {
            self.attachment
                .map_error(SINK_MAP, "read counts".into(), cause)
        })?;
        Ok(per_cpu.iter().fold((0, 0), |(p, b), c| {
            (p.wrapping_add(c.packets), b.wrapping_add(c.bytes))
        }))
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("attachment", &self.attachment)
            .finish_non_exhaustive()
    }
}

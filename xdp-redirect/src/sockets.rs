//! The AF_XDP socket map and stats that the pod and uplink programs share.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, PerCpuArray, XskMap};

use crate::attach::{Attachment, LoadedObject};
use crate::maps::XdpStats;
use crate::XdpError;

pub(crate) const XSKS_MAP: &str = "xsks_map";
pub(crate) const STATS_MAP: &str = "xdp_stats";

pub(crate) struct SocketSteering {
    sockets: XskMap<MapData>,
    stats: PerCpuArray<MapData, XdpStats>,
}

impl std::fmt::Debug for SocketSteering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketSteering")
            .field("queues", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl SocketSteering {
    pub(crate) fn open(object: &mut LoadedObject, ifname: &str) -> Result<Self, XdpError> {
        Ok(Self {
            sockets: object.take_map(XSKS_MAP, ifname)?,
            stats: object.take_map(STATS_MAP, ifname)?,
        })
    }

    pub(crate) fn register(
        &mut self,
        at: &Attachment,
        queue_id: u32,
        socket: impl AsRawFd,
    ) -> Result<(), XdpError> {
        let fd = socket.as_raw_fd();
        self.sockets.set(queue_id, fd, 0).map_err(|cause| {
            at.map_error(
                XSKS_MAP,
                format!("register AF_XDP socket fd {fd} for rx queue {queue_id}"),
                cause,
            )
        })
    }

    pub(crate) fn unregister(&mut self, at: &Attachment, queue_id: u32) -> Result<(), XdpError> {
        self.sockets.unset(queue_id).map_err(|cause| {
            at.map_error(
                XSKS_MAP,
                format!("unregister the AF_XDP socket of rx queue {queue_id}"),
                cause,
            )
        })
    }

    pub(crate) fn stats(&self, at: &Attachment) -> Result<XdpStats, XdpError> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(|cause| at.map_error(STATS_MAP, "read stats".into(), cause))?;
        Ok(per_cpu
            .iter()
            .fold(XdpStats::default(), |sum, cpu| sum.plus(*cpu)))
    }
}

//! Messages between the control thread and the workers about interfaces, and
//! the status of each (worker, interface) socket.

use std::os::fd::RawFd;
use std::sync::Mutex;

use crossbeam_channel::Sender;
use serde::Serialize;

/// A request from the control thread to one worker. Checked once per loop with
/// `try_recv`, never per packet.
#[derive(Debug)]
pub enum PortCommand {
    /// Open a socket on `ifname` rx queue `queue`, sharing the worker's UMEM,
    /// and answer with its fd (for the XSKMAP) or the error text.
    Open {
        ifname: String,
        ifindex: u32,
        queue: u32,
        reply: Sender<Result<RawFd, String>>,
    },
    /// Close the worker's socket on this interface.
    Close { ifindex: u32, reply: Sender<()> },
}

/// State of one socket, as shown by `sluice stats`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortStatus {
    pub worker: usize,
    pub ifname: String,
    pub ifindex: u32,
    pub queue: u32,
    /// `up`, or `down: <cause>` after an I/O error (e.g. the interface vanished).
    pub state: String,
    /// Milliseconds after the engine started at which this socket was opened
    /// (a socket opened again shows a later time); null if it never opened.
    pub opened_ms: Option<u64>,
    /// The kernel's counters for this socket (XDP_STATISTICS), read once a second.
    pub kernel: KernelSocketStats,
}

/// Frames the kernel could not hand to the socket, by cause.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelSocketStats {
    /// The rx ring was full: the worker did not keep up.
    pub rx_ring_full: u64,
    /// No frame was available in the fill ring (counted per event).
    pub fill_ring_empty: u64,
    /// Dropped for other reasons (e.g. frame larger than a UMEM chunk, or no fill frame).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

/// Port states shared between workers and the stats socket; touched only when
/// a port opens, closes or fails.
#[derive(Debug, Default)]
pub struct PortBoard {
    ports: Mutex<Vec<PortStatus>>,
}

impl PortBoard {
    pub fn set(&self, status: PortStatus) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        match ports
            .iter_mut()
            .find(|p| p.worker == status.worker && p.ifindex == status.ifindex)
        {
            Some(p) => *p = status,
            None => ports.push(status),
        }
    }

    /// Records the kernel counters of a socket that is on the board.
    pub fn set_kernel_stats(&self, worker: usize, ifindex: u32, kernel: KernelSocketStats) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = ports
            .iter_mut()
            .find(|p| p.worker == worker && p.ifindex == ifindex)
        {
            p.kernel = kernel;
        }
    }

    pub fn remove(&self, worker: usize, ifindex: u32) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|p| !(p.worker == worker && p.ifindex == ifindex));
    }

    pub fn list(&self) -> Vec<PortStatus> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ports.sort_by(|a, b| (a.ifname.as_str(), a.worker).cmp(&(b.ifname.as_str(), b.worker)));
        ports
    }
}

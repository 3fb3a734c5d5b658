//! AF_XDP I/O: UMEM, rings, frames, wakeups. The only crate with `unsafe`.
//!
//! A [`WorkerIo`] is one worker's I/O: one UMEM (on 2 MiB hugepages when available)
//! shared with `XDP_SHARED_UMEM` by every port the worker opens, each port with its own
//! fill/completion ring pair, so ports may sit on different devices. Frames are owned
//! [`Frame`] tokens: they come out of [`WorkerIo::receive`] / [`WorkerIo::alloc_frame`]
//! and go back through [`WorkerIo::transmit`] / [`WorkerIo::release`]; packet bytes are
//! only reachable as a borrow of a token ([`WorkerIo::buffer_mut`]).
//!
//! ```no_run
//! # fn run() -> Result<(), sluice_xsk::XskError> {
//! use sluice_xsk::{WorkerIo, XskConfig};
//! let mut io = WorkerIo::new(&XskConfig::default())?;
//! let a = io.open_port("veth-a", 0)?; // insert io.port_fd(a) into your XSKMAP
//! let b = io.open_port("veth-b", 0)?;
//! let mut batch = Vec::with_capacity(64);
//! loop {
//!     io.receive(a, &mut batch, 64)?;
//!     for mut frame in batch.drain(..) {
//!         let _bytes = io.buffer_mut(&mut frame); // run the pipeline here
//!         if let Err(frame) = io.transmit(b, frame) {
//!             io.release(frame);
//!         }
//!     }
//!     io.flush()?;
//! }
//! # }
//! ```
//!
//! # Module map
//!
//! - `sys`: every syscall (socket, setsockopt, mmap, bind, sendto/recvfrom kicks); the
//!   kicks are replaceable in unit tests.
//! - `ring`: the four SPSC rings; the only atomics, each naming its kernel partner.
//! - `umem`, `frame`: the memory and the token; the only `&mut [u8]` construction.
//! - `pool`: who owns each frame (pool, user, a port's fill or TX path).
//! - `port`, `worker`: socket setup and the public API.
//!
//! # Why not xsk-rs
//!
//! xsk-rs 0.11 was the suggested base. This crate talks to the kernel directly because
//! (1) xsk-rs only exposes frame memory as per-descriptor `DataMut` views limited to the
//! written length, while the engine needs the whole chunk (`buffer_mut` up to the chunk
//! end, headroom for encapsulation) from a sound base pointer; (2) TX must publish one
//! batch per flush with a single Release store across many `transmit` calls, which
//! `TxQueue::produce(&[FrameDesc])` would force through an extra copy; (3) libxdp keeps
//! the UMEM bound through its first socket, so once that interface disappears no new
//! shared socket can be created, whereas here any live port can be the share anchor;
//! (4) there is no program-loading code path to inhibit, and no C build. The cost is
//! ~150 lines of ring code, tested over plain memory in `ring.rs`.
#![allow(unsafe_code)]

mod config;
mod error;
mod frame;
mod pool;
mod port;
mod ring;
mod sys;
mod umem;
mod worker;

pub use config::{BindMode, XskConfig};
pub use error::XskError;
pub use frame::Frame;
pub use worker::{PortId, WorkerIo, XskStats};

/// `WorkerIo` must move to its worker thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<WorkerIo>();
};

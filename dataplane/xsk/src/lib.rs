//! AF_XDP I/O: UMEM, rings, frames, wakeups. The only crate with `unsafe`.

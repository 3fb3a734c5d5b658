//! The protocols between Sluice's processes, one definition for both ends.
//!
//! - [`engine`]: the agent feeds the engine its desired node state: a full
//!   snapshot on connect, then deltas with generation numbers, each acked.
//! - [`agent`]: the CNI plugin and the `sluice` CLI ask the agent (allocate,
//!   register, release, status, lists).
//! - [`events`]: flow events, lost-event reports and counters from the
//!   engine to the agent (the engine's events socket).
//! - [`hubble`]: Hubble's flow model and the observe request the agent's
//!   Hubble socket serves (`sluice observe`).
//! - [`conntrack`]: the CLI's conntrack list/flush filter and answers
//!   (over the engine's stats socket).
//!
//! Both run over unix stream sockets as newline-delimited JSON ([`framing`]),
//! so a person can read them with `socat`. Each starts with a version check; a
//! mismatch is refused with a message naming both versions.

pub mod agent;
pub mod changes;
pub mod conntrack;
pub mod engine;
pub mod events;
pub mod framing;
pub mod hubble;

pub use changes::{apply_changes, diff_states, Change, ChangeError};
pub use framing::{read_message, write_message, FramingError, MAX_MESSAGE_BYTES};

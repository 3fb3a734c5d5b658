//! `sluice-cni`: the CNI plugin of Sluice (CNI spec 1.1.0, and 1.0.0, 0.4.0,
//! 0.3.1, 0.3.0 as runtimes still send them).
//!
//! Stateless: addresses come from the agent (`Allocate`), the plugin wires the
//! veth pair itself, then `Register`s it; DEL deletes the veth and `Release`s.
//!
//! - [`env`]: CNI_* variables; [`config`]: the config on stdin;
//! - [`result`] and [`error`]: what goes to stdout, per spec version;
//! - [`agent_client`]: the agent's unix socket;
//! - [`netns`], [`wiring`], [`ethtool`], [`sysctl`]: the kernel side;
//! - [`commands`]: ADD, DEL, CHECK, STATUS, GC, VERSION.

pub mod agent_client;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod ethtool;
pub mod log;
pub mod netns;
pub mod result;
pub mod sysctl;
pub mod version;
pub mod wiring;

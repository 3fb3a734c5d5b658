//! End-to-end tests of the dataplane, run as root in network namespaces made
//! by the lab (`tests/*.rs`). They use the release `sluice-engine` next to the
//! test binary's target directory, or `$SLUICE_ENGINE`; `scripts/test.sh`
//! builds it first.

pub mod cni;
pub mod containerd;
pub mod engine_view;
pub mod netpol;
pub mod observe;
pub mod root_state;
pub mod service_checks;

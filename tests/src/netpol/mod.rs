//! Network policy in the lab: upstream Kubernetes' netpol truth tables
//! (`tests/netpol_e2e.rs`) and Cilium's semantics (`tests/policy_cilium.rs`),
//! replayed from case files (`tests/netpol/*.yaml`) against the real engine,
//! agent and sluice-cni.
//!
//! * [`model`]: upstream's namespaces, pods, labels and ports.
//! * [`reachability`]: expected/observed matrices, compared and printed as upstream does.
//! * [`case`]: the case file format.
//! * [`runner`]: the policy lab and the replay of a case in it.
//! * [`shared`]: one lab for all the tests of a test binary.

pub mod case;
pub mod model;
pub mod reachability;
pub mod runner;
pub mod shared;

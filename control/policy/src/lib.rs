//! Network policy for Sluice: CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy (cilium.io/v2) and Kubernetes NetworkPolicy
//! (networking.k8s.io/v1), parsed and validated into one model ([`model`]),
//! then compiled with the node's identities into the tables the engine
//! enforces ([`sluice_tables::PolicyState`]) and the ipcache entries that
//! CIDR rules need.
//!
//! Pure: no I/O. The agent calls [`compile::compile`] for every generation;
//! the CLI uses [`parse`] for `sluice policy validate`.
//!
//! Modules:
//! * [`model`]: the rule types (Cilium's `api.Rule` shape).
//! * [`parse`]: objects (YAML/JSON values) -> [`model::Policy`], with
//!   validation errors naming the object and the field.
//! * [`knp`]: NetworkPolicy -> rules, as Cilium translates them.
//! * [`selector`]: label selectors over Cilium labels, entities.
//! * [`fqdn`]: DNS name patterns.
//! * [`compile`]: policies + identities -> per-endpoint tables.

pub mod compile;
pub mod fqdn;
pub mod knp;
pub mod model;
pub mod parse;
pub mod selector;
#[doc(hidden)]
pub mod synthetic;

//! The whole pipeline over arbitrary frames against the policy fixture
//! tables (allow, deny, default-deny, CIDR identities, DNS rules and toFQDNs
//! entries): no panic, a forwarded or answered frame never exceeds its
//! chunk, and every policy drop names a rule of the state or none.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{split_pipeline_input, CHUNK};
use sluice_pipeline::{fixtures, process, FlowTables, Verdict};
use sluice_tables::Tables;

static TABLES: OnceLock<Tables> = OnceLock::new();
/// One flow table for the whole run, so inputs also meet tracked flows and
/// DNS flows whose answers fill the FQDN cache.
static FLOWS: OnceLock<FlowTables> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let tables = TABLES.get_or_init(fixtures::policy_tables);
    let flows = FLOWS.get_or_init(fixtures::flows);
    let Some((ingress, frame)) = split_pipeline_input(data) else {
        return;
    };
    let mut chunk = [0u8; CHUNK];
    let copied = frame.len().min(CHUNK);
    chunk[..copied].copy_from_slice(&frame[..copied]);
    match process(&mut chunk, frame.len(), ingress, tables, flows, 0) {
        Verdict::Forward { len, .. } | Verdict::Reject { len, .. } => assert!(len <= CHUNK),
        Verdict::PolicyDrop { rule, .. } => assert!(
            rule == Verdict::NO_RULE || (rule as usize) < tables.policy.state().rules.len()
        ),
        Verdict::Drop(_) => {}
    }
});

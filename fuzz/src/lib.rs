//! Shared by the fuzz targets and the seed-corpus test: how a fuzz input maps
//! onto a pipeline call.

use sluice_pipeline::fixtures;

/// UMEM chunk size the pipeline target runs frames in.
pub const CHUNK: usize = 2048;

/// Ingress interfaces a pipeline input can select with its first byte. New
/// ones are appended, so existing corpus entries keep their ingress.
pub const INGRESS: [u32; 5] = [
    fixtures::POD_A.ifindex,
    fixtures::POD_B.ifindex,
    fixtures::POD_C.ifindex,
    fixtures::UNKNOWN_IFINDEX,
    fixtures::UPLINK_IFINDEX,
];

/// Position of [`fixtures::UNKNOWN_IFINDEX`] in [`INGRESS`].
const UNKNOWN_SELECTOR: usize = 3;

/// Pipeline input: one byte selecting the ingress interface, then the frame.
pub fn split_pipeline_input(data: &[u8]) -> Option<(u32, &[u8])> {
    let (&selector, frame) = data.split_first()?;
    Some((INGRESS[usize::from(selector) % INGRESS.len()], frame))
}

/// The pipeline input that replays a fixture.
pub fn pipeline_input(fixture: &fixtures::Fixture) -> Vec<u8> {
    let selector = INGRESS
        .iter()
        .position(|i| *i == fixture.ingress_ifindex)
        .unwrap_or(UNKNOWN_SELECTOR) as u8;
    let mut input = vec![selector];
    input.extend_from_slice(&fixture.input);
    input
}

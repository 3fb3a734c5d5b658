//! The seed corpus is the fixture set. This test regenerates `corpus/` when
//! `SLUICE_WRITE_CORPUS=1` and otherwise checks that the checked-in corpus
//! still matches the fixtures.

use std::fs;
use std::path::PathBuf;

use sluice_pipeline::fixtures;

fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let mut files = Vec::new();
    let sets = [
        ("", fixtures::all()),
        ("uplink-", fixtures::uplink_all()),
        ("services-", fixtures::service_all()),
    ];
    let numbered = sets
        .iter()
        .flat_map(|(prefix, set)| set.iter().enumerate().map(move |(i, f)| (prefix, i, f)));
    for (prefix, i, f) in numbered {
        let name = format!("{prefix}{i:02}-{}", slug(f.description));
        files.push((
            "pipeline_process".into(),
            name.clone(),
            sluice_fuzz::pipeline_input(f),
        ));
        files.push(("wire_parse".into(), name, f.input.clone()));
    }
    // The policy fixtures seed their own target (other tables).
    for (i, f) in fixtures::policy_all().iter().enumerate() {
        let name = format!("policy-{i:02}-{}", slug(f.description));
        files.push((
            "pipeline_policy".into(),
            name.clone(),
            sluice_fuzz::pipeline_input(f),
        ));
        files.push(("wire_parse".into(), name, f.input.clone()));
    }
    files
}

fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .take(60)
        .collect()
}

#[test]
fn seed_corpus_matches_fixtures() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = std::env::var_os("SLUICE_WRITE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in corpus() {
        let path = root.join(&target).join(&name);
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else if fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seed corpus out of date (run with SLUICE_WRITE_CORPUS=1): {stale:?}"
    );
}

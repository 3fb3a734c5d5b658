//! Crash-safe JSON files in the agent's state directory: written to a
//! temporary file, synced, then renamed over the old one, so a restart reads
//! either the old or the new content, never a torn one.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};

/// Reads `path`, or `T::default()` when it does not exist yet.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("state file {} is corrupt", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("read state file {}", path.display())),
    }
}

/// Replaces `path` atomically with `value` as indented JSON.
pub fn store<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomically(
        path,
        &serde_json::to_vec_pretty(value).context("encode state")?,
    )
}

/// Replaces `path` atomically with `value` as JSON on one line: for large
/// files rewritten often (the LB ids), where indentation doubles the size.
pub fn store_compact<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomically(path, &serde_json::to_vec(value).context("encode state")?)
}

fn write_atomically(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(text)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

//! The engine's stats socket: one line in, one JSON answer out.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Sends one command line to the engine and returns its JSON answer.
pub fn ask(socket: &Path, command: &str) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to the engine at {} (is sluice-engine running? set --engine-socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    serde_json::from_str(&body).with_context(|| format!("engine answered {body:?}"))
}

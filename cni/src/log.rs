//! Log lines: always to stderr (the spec keeps stdout for the result), and
//! also appended to the config's `logFile` when it names one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Log {
    prefix: String,
    file: Option<File>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            prefix: format!("sluice-cni[{}]", std::process::id()),
            file: None,
        }
    }

    /// Names the invocation in every later line.
    pub fn set_context(&mut self, command: &str, attachment: &str) {
        self.prefix = format!("sluice-cni[{}] {command}", std::process::id());
        if !attachment.is_empty() {
            self.prefix = format!("{} {attachment}", self.prefix);
        }
    }

    /// Best effort: a log file that cannot be opened is reported on stderr only.
    pub fn open_file(&mut self, path: &Path) {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => self.file = Some(file),
            Err(e) => self.line(format_args!("cannot open log file {}: {e}", path.display())),
        }
    }

    pub fn line(&mut self, message: impl std::fmt::Display) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let text = format!(
            "{}.{:03} {}: {message}\n",
            now.as_secs(),
            now.subsec_millis(),
            self.prefix
        );
        let _ = std::io::stderr().write_all(text.as_bytes());
        if let Some(file) = &mut self.file {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

impl Default for Log {
    fn default() -> Log {
        Log::new()
    }
}

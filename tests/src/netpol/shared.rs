//! One lab shared by every test of a test binary, torn down by the last test.
//!
//! Each upstream case is its own `#[test]`, named after the case, but a lab
//! takes seconds to build, so the tests of one binary take turns on one lab
//! (a mutex: one case at a time). The lab is built by the first test that
//! runs and dropped (stopping everything, deleting every namespace) by the
//! test that finishes last. Which one is last: libtest itself is asked, by
//! running this binary again with the same arguments and `--list`, how many
//! tests this run will run; each test counts itself done when it ends, also
//! when it panics. If that question cannot be answered, each test builds and
//! tears down its own lab (slower, still clean).

use std::io::Write;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// A lab of type `T` shared by the tests of this binary.
#[derive(Debug)]
pub struct SharedLab<T> {
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    lab: Option<T>,
    /// Tests this run will run; `None` until the first test asked.
    planned: Option<usize>,
    finished: usize,
}

impl<T> Default for SharedLab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SharedLab<T> {
    pub const fn new() -> SharedLab<T> {
        SharedLab {
            inner: Mutex::new(Inner {
                lab: None,
                planned: None,
                finished: 0,
            }),
        }
    }

    /// Runs `body` with the lab, building it with `make` if no test did yet.
    /// Counts this test done when `body` returns or panics; the last test
    /// drops the lab.
    pub fn run<R>(&self, make: impl FnOnce() -> T, body: impl FnOnce(&mut T) -> R) -> R {
        // A test that panicked holding the lock leaves a poisoned mutex; the
        // lab itself is still whole (each case resets it first).
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut turn = Turn { inner };
        if turn.inner.planned.is_none() {
            turn.inner.planned = Some(planned_tests());
        }
        if turn.inner.lab.is_none() {
            turn.inner.lab = Some(make());
        }
        let lab = turn.inner.lab.as_mut().expect("the lab was just built");
        body(lab)
    }
}

/// One test's turn on the lab; its end (return or unwinding) counts the
/// test done and drops the lab after the last one.
struct Turn<'a, T> {
    inner: MutexGuard<'a, Inner<T>>,
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        self.inner.finished += 1;
        if self.inner.finished >= self.inner.planned.unwrap_or(1) {
            // Dropping the lab tears it down.
            self.inner.lab = None;
            self.inner.finished = 0;
            self.inner.planned = None;
        }
    }
}

/// Arguments that only shape libtest's output; `--list` does not take them
/// (or they would change its format).
const OUTPUT_FLAGS: [&str; 8] = [
    "--nocapture",
    "--no-capture",
    "--show-output",
    "-q",
    "--quiet",
    "--report-time",
    "--ensure-time",
    "--exact-time",
];
const OUTPUT_OPTIONS: [&str; 3] = ["--format", "--logfile", "--color"];

/// How many tests this run of the test binary runs: libtest's own answer to
/// the same filters with `--list`. 1 when it cannot tell.
fn planned_tests() -> usize {
    match list_tests() {
        Ok(n) if n > 0 => n,
        outcome => {
            let _ = writeln!(
                std::io::stderr(),
                "could not count this run's tests ({outcome:?}): every test builds its own lab"
            );
            1
        }
    }
}

fn list_tests() -> std::io::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut kept = Vec::new();
    while let Some(arg) = args.next() {
        if OUTPUT_FLAGS.contains(&arg.as_str()) {
            continue;
        }
        if OUTPUT_OPTIONS.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if OUTPUT_OPTIONS
            .iter()
            .any(|o| arg.starts_with(&format!("{o}=")))
        {
            continue;
        }
        kept.push(arg);
    }
    let out = Command::new(std::env::current_exe()?)
        .args(&kept)
        .args(["--list", "--format", "terse"])
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "--list exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static BUILT: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug)]
    struct Probe;
    impl Drop for Probe {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_last_planned_turn_drops_the_lab_even_when_it_panics() {
        let shared: SharedLab<Probe> = SharedLab::new();
        shared.inner.lock().unwrap().planned = Some(3);
        let make = || {
            BUILT.fetch_add(1, Ordering::SeqCst);
            Probe
        };
        shared.run(make, |_| ());
        shared.run(make, |_| ());
        assert_eq!(
            (BUILT.load(Ordering::SeqCst), DROPPED.load(Ordering::SeqCst)),
            (1, 0)
        );
        let third = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.run(make, |_| panic!("a failing case"))
        }));
        assert!(third.is_err());
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
        assert!(shared
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lab
            .is_none());
    }

    #[test]
    fn this_binary_lists_its_own_tests() {
        // The unit-test binary of this crate has many tests; the count is
        // libtest's answer to this run's own filters, so at least this one.
        assert!(list_tests().unwrap() >= 1);
    }
}

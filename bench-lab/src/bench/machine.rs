//! What a benchmark records about the machine: kernel, CPU, load, per-CPU busy time.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs (the `cpuN` lines of /proc/stat).
    pub cpus: usize,
    /// /proc/loadavg when the run started.
    pub loadavg_start: String,
    /// /proc/loadavg when the run ended (filled in by the runner).
    pub loadavg_end: Option<String>,
    /// `trafgen -v`, first line.
    pub trafgen: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |path: &str| {
            fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"))
        };
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let trafgen = Command::new("trafgen")
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "not found".to_string());
        Machine {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model,
            cpus: CpuTimes::read().map(|t| t.per_cpu.len()).unwrap_or(0),
            loadavg_start: loadavg(),
            loadavg_end: None,
            trafgen,
        }
    }
}

/// /proc/loadavg, trimmed.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The 1-minute load average, if readable.
pub fn loadavg_1min(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Busy and total clock ticks per CPU from /proc/stat (whole machine: every process, every
/// namespace). Busy = user + nice + system + irq + softirq + steal; idle and iowait are not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// cpu number -> (busy ticks, all ticks)
    pub per_cpu: BTreeMap<usize, (u64, u64)>,
}

impl CpuTimes {
    pub fn read() -> Result<CpuTimes> {
        let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        CpuTimes::parse(&text)
    }

    pub fn parse(text: &str) -> Result<CpuTimes> {
        let mut per_cpu = BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            let Some(number) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
                continue;
            };
            let cpu: usize = number
                .parse()
                .map_err(|_| anyhow!("bad /proc/stat line {line:?}"))?;
            let values: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
            let get = |i: usize| values.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest is inside user).
            let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
            let all = busy + get(3) + get(4);
            per_cpu.insert(cpu, (busy, all));
        }
        anyhow::ensure!(!per_cpu.is_empty(), "no cpuN lines in /proc/stat");
        Ok(CpuTimes { per_cpu })
    }

    /// Busy seconds per CPU between `earlier` and `self`.
    pub fn busy_since(&self, earlier: &CpuTimes, ticks_per_second: f64) -> BTreeMap<usize, f64> {
        self.per_cpu
            .iter()
            .map(|(&cpu, &(busy, _))| {
                let before = earlier.per_cpu.get(&cpu).map_or(busy, |&(b, _)| b);
                (cpu, busy.saturating_sub(before) as f64 / ticks_per_second)
            })
            .collect()
    }
}

/// utime + stime clock ticks of every thread of process `pid` (/proc/<pid>/task/*/stat).
pub fn process_ticks(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may exit between listing and reading; it no longer counts.
        if let Ok(stat) = fs::read_to_string(task.path().join("stat")) {
            total += stat_ticks(&stat)?;
        }
    }
    Some(total)
}

/// utime + stime of one /proc/.../stat line (fields 14 and 15; the command name in
/// parentheses may contain spaces).
fn stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// USER_HZ, the unit of /proc/stat (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &f64| t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let a = CpuTimes::parse(
            "cpu  10 0 10 100 5 0 0 0 0 0\n\
             cpu0 1 2 3 100 5 6 7 8 0 0\n\
             cpu1 0 0 0 50 0 0 0 0 0 0\nintr 1 2\n",
        )
        .unwrap();
        assert_eq!(a.per_cpu[&0], (27, 132));
        assert_eq!(a.per_cpu[&1], (0, 50));
        assert_eq!(a.per_cpu.len(), 2);
        let b = CpuTimes::parse(
            "cpu0 101 2 3 100 5 6 7 8 0 0\n\
             cpu1 0 0 50 100 0 0 0 0 0 0\n",
        )
        .unwrap();
        let busy = b.busy_since(&a, 100.0);
        assert_eq!(busy[&0], 1.0);
        assert_eq!(busy[&1], 0.5);
    }

    #[test]
    fn thread_stat_ticks() {
        let stat =
            "1234 (sluice w 0) R 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0 100 1 1";
        assert_eq!(stat_ticks(stat), Some(267));
        assert!(process_ticks(std::process::id()).is_some());
    }

    #[test]
    fn loadavg_first_field() {
        assert_eq!(loadavg_1min("1.44 2.77 2.02 1/86 15423"), Some(1.44));
        assert_eq!(loadavg_1min(""), None);
    }
}

//! Debian's Prometheus (`/usr/bin/prometheus`) run in the lab's node
//! namespace, scraping the agent's `/metrics` every second, and PromQL
//! queries through its HTTP API (`/api/v1/query`, with curl in the same
//! namespace). Its config and TSDB live in a directory of its own, removed
//! when the [`Prometheus`] is dropped, after the process (ended by its PID).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sluice_lab::command::{in_netns, run, terminate};
use sluice_lab::Lab;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    listen: SocketAddr,
    netns: String,
}

/// The scrape config: one job, the agent's metrics, every second.
pub fn config(target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sluice-agent\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: ['{target}']\n"
    )
}

impl Prometheus {
    /// Writes the config (checked with promtool) into `<run dir>/prometheus`
    /// and starts Prometheus in the node namespace listening on `listen`;
    /// returns once its API answers.
    pub fn start(lab: &Lab, target: SocketAddr, listen: SocketAddr) -> Result<Prometheus> {
        let dir = lab.run_dir().join("prometheus");
        fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config(target))
            .with_context(|| format!("writing {}", config_path.display()))?;
        let check = run(
            std::process::Command::new(PROMTOOL)
                .args(["check", "config"])
                .arg(&config_path),
            Duration::from_secs(20),
        )?;
        ensure!(
            check.success(),
            "promtool check config {}: {}{}",
            config_path.display(),
            check.stdout,
            check.stderr
        );
        let log = |name: &str| -> Result<fs::File> {
            let path = dir.join(name);
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
        };
        let args = [
            PROMETHEUS.to_string(),
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={listen}"),
            "--web.enable-lifecycle".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = in_netns(lab.node_netns(), &args)
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .spawn()
            .with_context(|| format!("starting {PROMETHEUS}"))?;
        let mut prometheus = Prometheus {
            child: Some(child),
            dir,
            listen,
            netns: lab.node_netns().to_string(),
        };
        prometheus.wait_ready(lab)?;
        Ok(prometheus)
    }

    fn wait_ready(&mut self, lab: &Lab) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("prometheus exited ({status})\n{}", self.log_tail(30));
                }
            }
            let url = format!("http://{}/-/ready", self.listen);
            let out = lab.exec_node(
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "2",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ],
                Duration::from_secs(5),
            )?;
            if out.stdout.trim() == "200" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "prometheus not ready within 30 s at {url}\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `lines` lines of Prometheus's stderr (where it logs).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// GET `path` (with `query` URL-encoded as `query=`) from the API: the
    /// `data` of a `success` answer.
    fn api(&self, lab: &Lab, path: &str, query: Option<&str>) -> Result<Value> {
        let url = format!("http://{}{path}", self.listen);
        let encoded = query.map(|q| format!("query={q}"));
        let mut args = vec!["curl", "-sS", "--max-time", "5", "--get"];
        if let Some(encoded) = &encoded {
            args.extend(["--data-urlencode", encoded]);
        }
        args.push(&url);
        let out = lab.exec_node(&args, Duration::from_secs(10))?;
        ensure!(out.success(), "curl {url}: {}", out.stderr.trim());
        let answer: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("{url} answered {:?}", out.stdout))?;
        ensure!(answer["status"] == "success", "{url} {query:?}: {answer}");
        Ok(answer["data"].clone())
    }

    /// An instant PromQL query: the samples as (labels, value).
    pub fn query(&self, lab: &Lab, promql: &str) -> Result<Vec<(Value, f64)>> {
        let data = self.api(lab, "/api/v1/query", Some(promql))?;
        data["result"]
            .as_array()
            .with_context(|| format!("{promql}: no result in {data}"))?
            .iter()
            .map(|sample| {
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("{promql}: sample without a value: {sample}"))?;
                Ok((sample["metric"].clone(), value))
            })
            .collect()
    }

    /// Polls `promql` (a query giving one sample, e.g. a `sum`) until its
    /// value satisfies `wanted`; returns it. The error names the last value.
    pub fn wait_value(
        &self,
        lab: &Lab,
        promql: &str,
        timeout: Duration,
        wanted: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(lab, promql)?;
            if let [(_, value)] = samples.as_slice() {
                if wanted(*value) {
                    return Ok(*value);
                }
            }
            if Instant::now() >= deadline {
                bail!("`{promql}` after {timeout:?}: {samples:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The scrape targets' (`scrapeUrl`, `health`, `lastError`).
    pub fn targets(&self, lab: &Lab) -> Result<Vec<(String, String, String)>> {
        let data = self.api(lab, "/api/v1/targets", None)?;
        Ok(data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
                (s("scrapeUrl"), s("health"), s("lastError"))
            })
            .collect())
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its config and data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ends Prometheus (SIGTERM to its PID, SIGKILL after 5 s) and removes
    /// its directory.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5))?;
        }
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("stopping prometheus: {err:#}");
        }
    }
}

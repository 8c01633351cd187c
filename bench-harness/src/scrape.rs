//! `--prometheus`: a real Prometheus (Debian's `prometheus`, on PATH) scrapes each broker's
//! metrics endpoint every second while the scenario runs; at the end the harness asks it for
//! the produce and fetch rates over each profile's time and plots them
//! (`scraped-throughput.svg` and `.png`): throughput as an operator's Prometheus saw it, beside
//! the load generator's own timeline.
//!
//! Every broker of the session listens for scrapes on the same address, one after another,
//! so the scrape target stays one; `rate()` takes the counter resets between brokers.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::plot_time::{throughput_time_plot, ProfileTimeline};
use crate::results::TimelinePoint;

const SCRAPE_INTERVAL_S: u64 = 1;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Prometheus needs a few more scrapes after the last run before its rates cover it.
const LAST_SCRAPES_WAIT: Duration = Duration::from_secs(3);

/// A running Prometheus and what the session marked.
pub struct Scraper {
    child: Child,
    web: SocketAddr,
    /// Where brokers serve metrics (`--metrics-listen`).
    pub metrics: SocketAddr,
    /// (profile, start, end) in Unix seconds.
    spans: Mutex<Vec<(String, f64, f64)>>,
    log: PathBuf,
}

fn free_address() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Unix seconds now.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
}

/// One HTTP/1.0 GET: the body, when the answer is 200.
fn get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Scraper {
    /// Starts Prometheus with its data under `data_dir`.
    pub fn start(data_dir: &Path, report_dir: &Path) -> Result<Scraper, String> {
        let binary = prometheus_binary()
            .ok_or("--prometheus: no `prometheus` on PATH (Debian: apt-get install prometheus)")?;
        let metrics = free_address()?;
        let web = free_address()?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
        let config = data_dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\nscrape_configs:\n  - job_name: shardline\n    static_configs:\n      - targets: ['{metrics}']\n"
            ),
        )
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log = report_dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data_dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let scraper = Scraper {
            child,
            web,
            metrics,
            spans: Mutex::new(Vec::new()),
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while get(web, "/-/ready").is_none() {
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus was not ready within {READY_TIMEOUT:?} (see {})",
                    scraper.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(scraper)
    }

    /// The broker flags that make it scrapeable here.
    pub fn broker_args(&self) -> Vec<String> {
        vec!["--metrics-listen".into(), self.metrics.to_string()]
    }

    /// `profile` loaded the broker from `start` to `end` (Unix seconds).
    pub fn mark(&self, profile: &str, start: f64, end: f64) {
        self.spans
            .lock()
            .expect("spans lock")
            .push((profile.to_string(), start, end));
    }

    fn range(&self, promql: &str, start: f64, end: f64) -> Vec<(f64, f64)> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={SCRAPE_INTERVAL_S}",
            percent_encode(promql)
        );
        let Some(body) = get(self.web, &path) else {
            return Vec::new();
        };
        let Ok(answer) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        answer["data"]["result"][0]["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|pair| {
                        let time = pair[0].as_f64()?;
                        let value: f64 = pair[1].as_str()?.parse().ok()?;
                        value.is_finite().then_some((time, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Plots the scraped produce and fetch rates of every marked span into `out`; returns
    /// the plot's path, or why there is none.
    pub fn plot(&self, out: &Path) -> Result<PathBuf, String> {
        std::thread::sleep(LAST_SCRAPES_WAIT);
        let spans = self.spans.lock().expect("spans lock").clone();
        let origin = spans.first().map_or(0.0, |span| span.1);
        let window = format!("[{}s]", 3 * SCRAPE_INTERVAL_S);
        let produce = format!("sum(rate(shardline_partition_produce_messages_total{window}))");
        let fetch = format!("sum(rate(shardline_partition_fetch_messages_total{window}))");
        let mut lines: Vec<ProfileTimeline> = Vec::new();
        for (profile, start, end) in &spans {
            // From one rate window into the span: earlier points would still count the
            // broker before it.
            let start = start + (3 * SCRAPE_INTERVAL_S) as f64;
            if start >= *end {
                continue;
            }
            let produced = self.range(&produce, start, *end);
            let fetched = self.range(&fetch, start, *end);
            let points: Vec<TimelinePoint> = produced
                .iter()
                .map(|&(time, rate)| TimelinePoint {
                    elapsed_s: time - origin,
                    phase: "measure".into(),
                    produce_messages_per_s: rate,
                    consume_messages_per_s: fetched
                        .iter()
                        .find(|(t, _)| (t - time).abs() < 0.5)
                        .map_or(0.0, |(_, r)| *r),
                })
                .collect();
            match lines.iter_mut().find(|line| &line.profile == profile) {
                Some(line) => line.points.extend(points),
                None => lines.push(ProfileTimeline {
                    profile: profile.clone(),
                    points,
                }),
            }
        }
        if lines.iter().all(|line| line.points.is_empty()) {
            return Err(format!(
                "prometheus returned no samples (see {})",
                self.log.display()
            ));
        }
        let path = out.join("scraped-throughput.svg");
        throughput_time_plot(
            &path,
            "Throughput as Prometheus scraped it (rate over 3 s; dashed: fetched)",
            &lines,
            &[],
        )?;
        Ok(path)
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

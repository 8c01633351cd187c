//! The metrics endpoint scraped by a real Prometheus (Debian's `prometheus`, which `.ci/run`
//! installs when it is missing): a steady produce rate shows up in Prometheus's own query
//! API as the rate that was sent. Without a `prometheus` binary the test says so and skips.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shardline::client::{Admin, Cluster, Producer, ProducerConfig};

use super::harness::{on_executor, Broker};

const MESSAGES_PER_ROUND: usize = 200;
const ROUND_MS: u64 = 100;
const ROUNDS: usize = 100;
const SCRAPE_INTERVAL: &str = "1s";
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where Prometheus is, if anywhere.
fn prometheus_binary() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
}

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.0 GET (no chunked answers), returning status line and body.
fn get(address: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
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

/// The value of an instant query's single series, if it has one.
fn query(prometheus: SocketAddr, promql: &str, at: Option<f64>) -> Option<f64> {
    let mut path = format!("/api/v1/query?query={}", percent_encode(promql));
    if let Some(at) = at {
        path.push_str(&format!("&time={at:.3}"));
    }
    let (status, body) = get(prometheus, &path)?;
    if !status.contains("200") {
        eprintln!("prometheus answered {status}: {body}");
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_produce_rate_that_was_sent() {
    let Some(binary) = prometheus_binary() else {
        eprintln!(
            "SKIPPED: no prometheus binary on PATH or in /usr/bin (.ci/run installs Debian's `prometheus`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_address();
    let mut broker = Broker::start(
        &dir.path().join("broker"),
        &["--metrics-listen", &metrics.to_string()],
    );
    let web = free_address();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\nscrape_configs:\n  - job_name: shardline\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let _prometheus = Prometheus(child);
    let deadline = Instant::now() + QUERY_TIMEOUT;
    while !get(web, "/-/ready").is_some_and(|(status, _)| status.contains("200")) {
        assert!(
            Instant::now() < deadline,
            "prometheus never got ready:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Prometheus scrapes the broker before the load starts.
    while query(web, "up{job=\"shardline\"}", None) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the broker"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A steady rate: MESSAGES_PER_ROUND every ROUND_MS.
    let address = broker.broker_arg();
    let (started, ended) = on_executor(move || async move {
        let cluster = Cluster::new(&address, "prometheus-test", true).unwrap();
        Admin::new(cluster.clone())
            .create_topic("scraped", 4, &[])
            .await
            .unwrap();
        let producer = Producer::new(cluster, ProducerConfig::default());
        let started = SystemTime::now();
        let pace = Instant::now();
        for round in 0..ROUNDS {
            let mut deliveries = Vec::with_capacity(MESSAGES_PER_ROUND);
            for index in 0..MESSAGES_PER_ROUND {
                let key = format!("key-{round}-{index}");
                deliveries.push(
                    producer
                        .send("scraped", Some(key.as_bytes()), b"value")
                        .await
                        .unwrap(),
                );
            }
            producer.flush().await;
            for delivery in deliveries {
                delivery.wait().await.unwrap();
            }
            let next = pace + Duration::from_millis(ROUND_MS * (round as u64 + 1));
            glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
        }
        (started, SystemTime::now())
    });
    let sent = (ROUNDS * MESSAGES_PER_ROUND) as f64;
    let sent_rate = sent / ended.duration_since(started).unwrap().as_secs_f64();
    // Everything sent is counted once the last scrape is in.
    let total_query = "sum(shardline_partition_produce_messages_total{topic=\"scraped\"})";
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let total = query(web, total_query, None);
        if total == Some(sent) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus's total is {total:?}, not {sent}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The rate over the run's last seconds is the rate sent.
    let late = unix_seconds(ended) - 0.5;
    let rate_query = "sum(rate(shardline_partition_produce_messages_total{topic=\"scraped\"}[4s]))";
    let rate = query(web, rate_query, Some(late)).expect("a rate late in the run");
    eprintln!("sent {sent_rate:.0} msg/s; prometheus's rate late in the run: {rate:.0} msg/s");
    assert!(
        (rate - sent_rate).abs() <= 0.25 * sent_rate,
        "prometheus says {rate:.0} msg/s, {sent_rate:.0} msg/s were sent"
    );
    // Latency histograms are scraped too: produce requests were timed.
    let produce_count = query(
        web,
        "sum(shardline_request_latency_seconds_count{api=\"Produce\"})",
        None,
    )
    .expect("produce latency is scraped");
    assert!(produce_count > 0.0, "{produce_count}");
    assert!(broker.stop());
}

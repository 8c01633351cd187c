//! Byte-rate quotas: a client over its produce quota is slowed to it (by delayed responses,
//! nothing dropped), and another client on the same broker is not.

use std::time::{Duration, Instant};

use shardline::client::{Cluster, Producer, ProducerConfig};

use super::harness::{cli, on_executor, Broker};

const QUOTA_BYTES_PER_S: u64 = 400_000;
const MEASURED: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(2);
const VALUE_BYTES: usize = 1000;

/// Produces as fast as the broker lets it until `until`; returns the messages acknowledged.
fn flood(address: String, client_id: &'static str, topic: &'static str, until: Instant) -> u64 {
    on_executor(move || async move {
        let cluster = Cluster::new(&address, client_id, true).unwrap();
        let producer = Producer::new(cluster, ProducerConfig::default());
        let value = vec![b'q'; VALUE_BYTES];
        let mut deliveries = Vec::new();
        let mut index = 0u64;
        while Instant::now() < until {
            let key = format!("k{}", index % 64);
            deliveries.push(
                producer
                    .send(topic, Some(key.as_bytes()), &value)
                    .await
                    .unwrap(),
            );
            index += 1;
            if deliveries.len() >= 2000 {
                producer.flush().await;
                for delivery in deliveries.drain(..) {
                    delivery.wait().await.unwrap();
                }
            }
        }
        producer.flush().await;
        for delivery in deliveries.drain(..) {
            delivery.wait().await.unwrap();
        }
        index
    })
}

/// The sum of a metric's series whose labels start with `labels`, from one scrape.
fn scrape_sum(metrics: std::net::SocketAddr, name: &str, labels: &str) -> f64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let prefix = format!("{name}{{{labels}");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn a_client_over_its_quota_is_slowed_to_it_and_another_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--no-pin",
        "--metrics-listen",
        &metrics.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let broker = Broker::start_exact(&dir.path().join("data"), &args);
    let address = broker.broker_arg();
    for topic in ["slow", "fast"] {
        let output = cli(
            &[
                "topic",
                "create",
                "--broker",
                &address,
                "--topic",
                topic,
                "--partitions",
                "2",
            ],
            None,
        );
        assert!(output.status.success(), "{output:?}");
    }
    let rate = QUOTA_BYTES_PER_S.to_string();
    let set = cli(
        &[
            "quota",
            "set",
            "--broker",
            &address,
            "--client-id",
            "limited",
            "--produce-bytes-per-s",
            &rate,
        ],
        None,
    );
    assert!(set.status.success(), "{set:?}");
    let listed = cli(&["quota", "list", "--broker", &address], None);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("ClientId\tlimited\t{rate}\t-")),
        "{listed:?}"
    );

    let started = Instant::now();
    let until = started + WARM_UP + MEASURED;
    let (slow_address, fast_address) = (address.clone(), address.clone());
    let slow = std::thread::spawn(move || flood(slow_address, "limited", "slow", until));
    let fast = std::thread::spawn(move || flood(fast_address, "unlimited", "fast", until));
    // Measure after the warm-up (the quota's one-second burst is spent by then).
    std::thread::sleep(WARM_UP);
    let bytes = |topic: &str| {
        scrape_sum(
            metrics,
            "shardline_partition_produce_bytes_total",
            &format!("topic=\"{topic}\""),
        )
    };
    let (slow_before, fast_before, measured_from) = (bytes("slow"), bytes("fast"), Instant::now());
    std::thread::sleep(MEASURED);
    let (slow_after, fast_after) = (bytes("slow"), bytes("fast"));
    let seconds = measured_from.elapsed().as_secs_f64();
    let slow_rate = (slow_after - slow_before) / seconds;
    let fast_rate = (fast_after - fast_before) / seconds;
    let (slow_sent, fast_sent) = (slow.join().unwrap(), fast.join().unwrap());
    eprintln!(
        "quota {QUOTA_BYTES_PER_S} B/s: limited client {slow_rate:.0} B/s ({slow_sent} messages), unlimited client {fast_rate:.0} B/s ({fast_sent} messages)"
    );
    let quota = QUOTA_BYTES_PER_S as f64;
    assert!(
        (slow_rate - quota).abs() <= 0.2 * quota,
        "the limited client ran at {slow_rate:.0} B/s against a quota of {quota}"
    );
    assert!(
        fast_rate > 2.0 * quota,
        "the unlimited client was slowed too: {fast_rate:.0} B/s"
    );
    // The throttling shows in the metrics, for the limited client only.
    let delayed = scrape_sum(
        metrics,
        "shardline_quota_throttled_responses_total",
        "shard=\"0\",entity=\"limited\"",
    );
    assert!(delayed > 0.0, "no throttled responses counted");
    let unlimited = scrape_sum(
        metrics,
        "shardline_quota_throttled_responses_total",
        "shard=\"0\",entity=\"unlimited\"",
    );
    assert_eq!(unlimited, 0.0);
    // Everything acknowledged is there: delayed, not dropped.
    let appended = scrape_sum(
        metrics,
        "shardline_partition_messages_appended_total",
        "topic=\"slow\"",
    );
    assert_eq!(appended as u64, slow_sent);
}

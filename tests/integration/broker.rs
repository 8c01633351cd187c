//! A real broker process, driven by the CLI and the Rust client: everything produced is
//! consumed once, in per-key order; acknowledged writes survive `kill -9`; a graceful
//! restart keeps topics, configuration and data.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardline::client::{
    partition_for_key, Admin, ClientError, Cluster, Consumer, ConsumerConfig, Producer,
    ProducerConfig, StartFrom,
};
use shardline::protocol::{Acks, ErrorCode};

use crate::harness::{cli, on_executor, profile_file, Broker};

/// One consumed message: where it was and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Consumed {
    partition: u32,
    offset: u64,
    key: Option<String>,
    value: String,
}

/// Consumes a topic from the start until `expected` messages arrived (or 60 s passed).
fn consume_all(broker: &str, topic: &str, expected: usize, shard_aware: bool) -> Vec<Consumed> {
    let (broker, topic) = (broker.to_string(), topic.to_string());
    on_executor(move || async move {
        let cluster = Cluster::new(&broker, "test-consumer", shard_aware).unwrap();
        let mut consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign(&topic, None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut consumed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumed.len() < expected && Instant::now() < deadline {
            let fetched = consumer.poll().await.unwrap();
            fetched
                .for_each(|_, partition, record| {
                    consumed.push(Consumed {
                        partition,
                        offset: record.offset,
                        key: record.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                        value: String::from_utf8(record.value.to_vec()).unwrap(),
                    })
                })
                .unwrap();
        }
        // Nothing more arrives after the expected count.
        let extra = consumer.poll().await.unwrap();
        assert_eq!(
            extra.for_each(|_, _, _| ()).unwrap(),
            0,
            "more messages than were produced"
        );
        consumed
    })
}

/// Checks that every partition's records have dense offsets and that, per key, the
/// sequence numbers (after the last '-' of the value) only increase.
fn assert_per_key_order(consumed: &[Consumed]) {
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_sequence: BTreeMap<(String, String), u64> = BTreeMap::new();
    for record in consumed {
        if let Some(&previous) = last_offset.get(&record.partition) {
            assert_eq!(
                record.offset,
                previous + 1,
                "offsets are dense within partition {}",
                record.partition
            );
        }
        last_offset.insert(record.partition, record.offset);
        let (source, sequence) = record.value.rsplit_once('-').unwrap();
        let sequence: u64 = sequence.parse().unwrap();
        let key = (source.to_string(), record.key.clone().unwrap());
        if let Some(&previous) = last_sequence.get(&key) {
            assert!(
                sequence > previous,
                "key {key:?}: {sequence} after {previous}"
            );
        }
        last_sequence.insert(key, sequence);
    }
}

const MESSAGES_PER_SOURCE: usize = 50_000;
const KEYS: usize = 500;

#[test]
fn keyed_messages_from_cli_and_client_are_consumed_once_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let created = cli(
        &[
            "topic",
            "create",
            "--broker",
            &address,
            "--topic",
            "orders",
            "--partitions",
            "8",
        ],
        None,
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // Through the CLI: "key|value" lines.
    let mut lines = String::new();
    for sequence in 0..MESSAGES_PER_SOURCE {
        lines.push_str(&format!("key-{}|cli-{sequence}\n", sequence % KEYS));
    }
    let produced = cli(
        &[
            "produce",
            "--broker",
            &address,
            "--topic",
            "orders",
            "--key-separator",
            "|",
        ],
        Some(lines.as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(produced.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "acknowledged {MESSAGES_PER_SOURCE} of {MESSAGES_PER_SOURCE}"
        )),
        "{stderr}"
    );

    // Through the client, shard-aware.
    let client_address = address.clone();
    let acknowledged = on_executor(move || async move {
        let cluster = Cluster::new(&client_address, "test-producer", true).unwrap();
        let producer = Producer::new(
            cluster,
            ProducerConfig {
                linger: Duration::from_millis(2),
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::new();
        for sequence in 0..MESSAGES_PER_SOURCE {
            let key = format!("key-{}", sequence % KEYS);
            let value = format!("client-{sequence}");
            deliveries.push(
                producer
                    .send("orders", Some(key.as_bytes()), value.as_bytes())
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        let mut acknowledged = 0;
        for delivery in deliveries {
            delivery.wait().await.unwrap();
            acknowledged += 1;
        }
        acknowledged
    });
    assert_eq!(acknowledged, MESSAGES_PER_SOURCE);

    let total = 2 * MESSAGES_PER_SOURCE;
    // Consume once shard-aware and once through the main port (cross-shard forwarding).
    for shard_aware in [true, false] {
        let mut consumed = consume_all(&address, "orders", total, shard_aware);
        assert_eq!(
            consumed.len(),
            total,
            "every message consumed (shard_aware: {shard_aware})"
        );
        let distinct: HashSet<&str> = consumed.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(distinct.len(), total, "no message twice");
        consumed.sort_by_key(|c| (c.partition, c.offset));
        assert_per_key_order(&consumed);
        let partitions: HashSet<u32> = consumed.iter().map(|c| c.partition).collect();
        assert_eq!(partitions.len(), 8, "keys spread over every partition");
    }

    // The CLI consumer sees the same messages.
    let out = cli(
        &[
            "consume",
            "--broker",
            &address,
            "--topic",
            "orders",
            "--max-messages",
            "100000",
            "--format",
            "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), total);
    assert!(lines
        .iter()
        .all(|l| l["key"].as_str().unwrap().starts_with("key-") && l["offset"].is_u64()));
}

#[test]
fn acks_all_writes_survive_kill_9_under_the_durable_profile() {
    acks_all_writes_survive_kill_9(
        "durable",
        "[storage]\nflush = { mode = \"every-batch\" }\nshard_journal_bytes = 0\n",
    );
}

/// The same with a shard journal: acknowledged batches the segments had not yet received
/// when the broker died are brought back by the replay at its start.
#[test]
fn acks_all_writes_survive_kill_9_with_a_shard_journal() {
    let log = acks_all_writes_survive_kill_9(
        "journaled",
        "[storage]\nflush = { mode = \"interval\", interval_us = 1000 }\nshard_journal_bytes = 67108864\n",
    );
    assert!(
        log.contains("replayed the shard journals"),
        "the restarted broker replayed its journals"
    );
}

/// Produces with acks=all until the broker is killed, restarts it, and checks that every
/// acknowledged message is there once. Returns the broker's log.
fn acks_all_writes_survive_kill_9(name: &str, storage: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_file(dir.path(), name, storage);
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &["--profile", profile.to_str().unwrap()]);
    assert!(
        broker.log().contains(name),
        "the broker logs the profile it applied"
    );
    let address = broker.broker_arg();
    let created = cli(
        &[
            "topic",
            "create",
            "--broker",
            &address,
            "--topic",
            "payments",
            "--partitions",
            "4",
        ],
        None,
    );
    assert!(created.status.success());

    // Producers run in their own thread until the broker dies under them.
    let producer_address = address.clone();
    let producing = std::thread::spawn(move || {
        on_executor(move || async move {
            let cluster = Cluster::new(&producer_address, "test-producer", true).unwrap();
            let config = ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(1),
                retries: 0,
                request_timeout: Duration::from_secs(5),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(cluster, config);
            let acknowledged: Rc<std::cell::RefCell<Vec<(u32, u64, String)>>> = Rc::default();
            let mut sequence = 0u64;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                let value = format!("payment-{sequence}");
                let key = format!("account-{}", sequence % 97);
                let Ok(delivery) = producer
                    .send("payments", Some(key.as_bytes()), value.as_bytes())
                    .await
                else {
                    break;
                };
                let acknowledged = acknowledged.clone();
                glommio::spawn_local(async move {
                    if let Ok(stored) = delivery.wait().await {
                        acknowledged
                            .borrow_mut()
                            .push((stored.partition, stored.offset, value));
                    }
                })
                .detach();
                sequence += 1;
                if sequence % 256 == 0 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
            producer.flush().await;
            acknowledged.take()
        })
    });
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill();
    let acknowledged = producing.join().unwrap();
    assert!(
        acknowledged.len() > 100,
        "only {} messages were acknowledged before the kill",
        acknowledged.len()
    );

    broker.restart();
    let address = broker.broker_arg();
    let consumed = consume_all(&address, "payments", acknowledged.len(), true);
    let stored: BTreeMap<(u32, u64), &str> = consumed
        .iter()
        .map(|c| ((c.partition, c.offset), c.value.as_str()))
        .collect();
    for (partition, offset, value) in &acknowledged {
        assert_eq!(
            stored.get(&(*partition, *offset)).copied(),
            Some(value.as_str()),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
    let distinct: HashSet<&str> = consumed.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(distinct.len(), consumed.len(), "no message stored twice");
    let log = broker.log();
    assert!(broker.stop(), "graceful stop after recovery");
    log
}

#[test]
fn graceful_shutdown_and_restart_keep_topics_configs_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let admin_address = address.clone();
    on_executor(move || async move {
        let admin = Admin::new(Cluster::new(&admin_address, "test-admin", false).unwrap());
        admin
            .create_topic("kept", 3, &[("retention.ms".into(), "3600000".into())])
            .await
            .unwrap();
        admin.create_topic("dropped", 2, &[]).await.unwrap();
        let error = admin.create_topic("kept", 3, &[]).await.unwrap_err();
        assert!(error.to_string().contains("TopicAlreadyExists"), "{error}");
        let error = admin.create_topic("bad name", 1, &[]).await.unwrap_err();
        assert!(!error.is_retriable(), "{error}");
    });
    let lines: String = (0..3000)
        .map(|i| format!("k{}|message-{i}\n", i % 31))
        .collect();
    let produced = cli(
        &[
            "produce",
            "--broker",
            &address,
            "--topic",
            "kept",
            "--key-separator",
            "|",
        ],
        Some(lines.as_bytes()),
    );
    assert!(produced.status.success());
    let deleted = cli(
        &[
            "topic", "delete", "--broker", &address, "--topic", "dropped",
        ],
        None,
    );
    assert!(deleted.status.success());
    let mut before = consume_all(&address, "kept", 3000, true);
    before.sort_by_key(|c| (c.partition, c.offset));

    assert!(broker.stop(), "SIGTERM exits 0:\n{}", broker.log());
    assert!(broker.log().contains("broker stopped cleanly"));
    broker.restart();
    assert!(
        broker.log().contains("partitions recovered"),
        "start-up reports recovery:\n{}",
        broker.log()
    );
    let address = broker.broker_arg();
    let mut after = consume_all(&address, "kept", 3000, true);
    after.sort_by_key(|c| (c.partition, c.offset));
    assert!(
        before == after,
        "the same messages at the same offsets after a restart"
    );

    let listed = cli(&["topic", "list", "--broker", &address], None);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("kept") && !listed.contains("dropped"),
        "{listed}"
    );
    let described = cli(
        &["topic", "describe", "--broker", &address, "--topic", "kept"],
        None,
    );
    let described = String::from_utf8(described.stdout).unwrap();
    assert!(
        described.contains("retention.ms = 3600000 (set)"),
        "{described}"
    );
    // Appends continue after the recovered end.
    let more = cli(
        &["produce", "--broker", &address, "--topic", "kept"],
        Some(b"one more\n"),
    );
    assert!(more.status.success());
    assert_eq!(consume_all(&address, "kept", 3001, false).len(), 3001);
    assert!(broker.stop());
}

#[test]
fn bad_command_lines_fail_with_a_message_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let cases: Vec<Vec<&str>> = vec![
        vec!["produce", "--broker", &address, "--topic", "missing"],
        vec![
            "topic",
            "create",
            "--broker",
            &address,
            "--topic",
            "t",
            "--partitions",
            "0",
        ],
        vec![
            "topic",
            "create",
            "--broker",
            &address,
            "--topic",
            "t",
            "--config",
            "no.such=1",
        ],
        vec![
            "topic", "describe", "--broker", &address, "--topic", "missing",
        ],
        vec!["consume", "--broker", "127.0.0.1:1", "--topic", "t"],
        vec![
            "broker",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
        ],
    ];
    for args in cases {
        let out = cli(&args, Some(b"x\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains("shardline:"), "{args:?} says why: {stderr}");
    }
}

#[test]
fn a_fetch_stays_within_its_response_budget_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = Cluster::new(&address, "test-budget", false).unwrap();
        Admin::new(cluster.clone())
            .create_topic("wide", 8, &[])
            .await
            .unwrap();
        // One ~100 KB batch in every partition.
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig {
                batch_bytes: 1 << 20,
                ..ProducerConfig::default()
            },
        );
        let value = vec![b'v'; 1000];
        let mut deliveries = Vec::new();
        for i in 0..800u32 {
            let key = format!("k{i}");
            let partition_key = (0..)
                .map(|n| format!("{key}-{n}"))
                .find(|k| shardline::client::partition_for_key(k.as_bytes(), 8) == i % 8)
                .unwrap();
            deliveries.push(
                producer
                    .send("wide", Some(partition_key.as_bytes()), &value)
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        for delivery in deliveries {
            delivery.wait().await.unwrap();
        }
        let connection = cluster.any_connection().await.unwrap();
        let budget = 150_000u32;
        let request = fetch_from_start("wide", 8, 1, 0, budget);
        let response = connection.request(&request, &[]).await.unwrap();
        let sizes: Vec<usize> = response.partition_batches.iter().map(|b| b.len()).collect();
        let total: usize = sizes.iter().sum();
        let largest = sizes.iter().copied().max().unwrap();
        assert!(total > 0, "some data comes back");
        assert!(
            total <= budget as usize + largest,
            "{total} bytes for a {budget}-byte budget: {sizes:?}"
        );
        assert!(
            sizes.iter().filter(|&&s| s == 0).count() >= 6,
            "partitions past the budget are answered empty: {sizes:?}"
        );
    });
}

/// Partitions of the topic in `thousands_of_partitions_stop_gracefully_keeping_every_message`.
const MANY_PARTITIONS: u32 = 2000;

/// A broker holding thousands of open partitions with acknowledged data stops on SIGTERM
/// (every partition closes, a bounded number at once), exits 0, and after a restart every
/// acknowledged message is there, once.
#[test]
fn thousands_of_partitions_stop_gracefully_keeping_every_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let messages = 2 * MANY_PARTITIONS as usize;
    {
        let address = address.clone();
        on_executor(move || async move {
            let cluster = Cluster::new(&address, "many-partitions", true).unwrap();
            Admin::new(cluster.clone())
                .create_topic("many", MANY_PARTITIONS, &[])
                .await
                .unwrap();
            let producer = Producer::new(
                cluster,
                ProducerConfig {
                    acks: Acks::Leader,
                    ..ProducerConfig::default()
                },
            );
            let mut deliveries = Vec::new();
            for index in 0..messages {
                let key = format!("key-{index}");
                let value = format!("value-{index}");
                deliveries.push(
                    producer
                        .send("many", Some(key.as_bytes()), value.as_bytes())
                        .await
                        .unwrap(),
                );
            }
            producer.flush().await;
            for delivery in deliveries {
                delivery.wait().await.expect("acknowledged");
            }
        });
    }
    let stopping = Instant::now();
    assert!(broker.stop(), "graceful stop:\n{}", broker.log());
    eprintln!(
        "{MANY_PARTITIONS} partitions stopped in {:?}",
        stopping.elapsed()
    );
    broker.restart();
    let consumed = consume_all(&broker.broker_arg(), "many", messages, true);
    let mut values: Vec<&str> = consumed.iter().map(|c| c.value.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), messages, "every acknowledged message, once");
    assert_eq!(consumed.len(), messages);
    assert!(broker.stop());
}

/// `shardline broker --config FILE` takes its settings from the file (here the broker id
/// and a profile, relative to the file), flags override it (the harness's `--listen`), and
/// a file with an unknown key or a bad value stops the broker at start, naming the key.
#[test]
fn a_broker_config_file_is_applied_under_its_flags_and_refused_when_wrong() {
    let dir = tempfile::tempdir().unwrap();
    profile_file(
        dir.path(),
        "from-config",
        "[network]\nin_flight_requests_max = 8\n",
    );
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nbroker_id = 7\nprofile = \"from-config.toml\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &["--config", config.to_str().unwrap()]);
    assert!(
        broker.log().contains("profile=from-config"),
        "{}",
        broker.log()
    );
    let address = broker.broker_arg();
    let broker_id = on_executor(move || async move {
        let cluster = Cluster::new(&address, "config-test", true).unwrap();
        cluster.metadata().await.unwrap().brokers[0].broker_id
    });
    assert_eq!(broker_id, 7);
    assert!(broker.stop());

    for (text, key) in [
        ("listen = \"127.0.0.1:0\"\nbroker_idd = 1\n", "broker_idd"),
        ("listen = \"127.0.0.1:0\"\ncores = \"two\"\n", "cores"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = cli(
            &[
                "broker",
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            None,
        );
        assert!(!out.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}

/// `--log-format json` writes one JSON object per line (the harness still finds the address
/// in the message); `--log-level` takes a tracing filter per module; a bad filter is an error.
#[test]
fn logs_are_json_lines_on_request_with_levels_per_module() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--log-level",
            "warn,shardline::server::broker=info",
        ],
    );
    assert!(broker.stop());
    let log = broker.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        assert_eq!(value["target"], "shardline::server::broker", "{line}");
    }
    let out = cli(
        &[
            "--log-level",
            "shardline=[[",
            "topic",
            "list",
            "--broker",
            "127.0.0.1:1",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad log filter"));
}

/// A topic config change applies to the open partitions at once, without a restart: after
/// `segment.bytes` drops to 64 KiB, the next megabyte of data rolls many segments (with the
/// default 1 GiB it would stay in one).
#[test]
fn topic_config_changes_apply_to_open_partitions_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = Cluster::new(&address, "live-config", true).unwrap();
        let admin = Admin::new(cluster.clone());
        admin.create_topic("live", 1, &[]).await.unwrap();
        let producer = Producer::new(
            cluster,
            ProducerConfig {
                batch_bytes: 16 * 1024,
                ..ProducerConfig::default()
            },
        );
        let value = vec![b'x'; 1024];
        // The partition is open and writing before the change.
        producer
            .send("live", None, &value)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        admin
            .alter_configs("live", &[("segment.bytes".into(), "65536".into())], &[])
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for _ in 0..1000 {
            deliveries.push(producer.send("live", None, &value).await.unwrap());
        }
        producer.flush().await;
        for delivery in deliveries {
            delivery.wait().await.unwrap();
        }
    });
    assert!(broker.stop());
    let partition_dir = dir
        .path()
        .join("topics")
        .read_dir()
        .unwrap()
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with("live."))
        .expect("the topic's directory")
        .path()
        .join("0");
    let segments = std::fs::read_dir(&partition_dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "log"))
        .count();
    assert!(
        segments >= 8,
        "{segments} segments in {}",
        partition_dir.display()
    );
}

/// Sends one HTTP request to `address` and returns the whole response.
fn http(address: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `--metrics-listen` serves the Prometheus text format: the messages appended and produced
/// per partition add up to what was produced, fetches and a group's committed offsets and
/// lag are counted, requests and writes are timed, every shard reports, other paths get 404
/// and garbage 400.
#[test]
fn the_metrics_endpoint_counts_what_was_produced() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics.to_string();
    let mut broker = Broker::start(dir.path(), &["--metrics-listen", &metrics_arg]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = Cluster::new(&address, "metrics-test", true).unwrap();
        Admin::new(cluster.clone())
            .create_topic("counted", 4, &[])
            .await
            .unwrap();
        let producer = Producer::new(cluster, ProducerConfig::default());
        let mut deliveries = Vec::new();
        for index in 0..500 {
            let key = format!("key-{index}");
            deliveries.push(
                producer
                    .send("counted", Some(key.as_bytes()), b"value")
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        for delivery in deliveries {
            delivery.wait().await.unwrap();
        }
    });
    // A group reads everything and commits.
    let read = crate::cluster::consume_group(&broker.broker_arg(), "counted", "metered", 500);
    assert_eq!(read.len(), 500);
    let response = http(metrics, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    // The sum of a metric's series whose labels start with `labels`.
    let sum = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{{{labels}");
        response
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let counted = "topic=\"counted\"";
    assert_eq!(
        sum("shardline_partition_messages_appended_total", counted),
        500.0,
        "{response}"
    );
    assert_eq!(
        sum("shardline_partition_produce_messages_total", counted),
        500.0,
        "{response}"
    );
    assert!(sum("shardline_partition_produce_bytes_total", counted) > 500.0 * 5.0);
    assert!(
        sum("shardline_partition_fetch_messages_total", counted) >= 500.0,
        "{response}"
    );
    let group = "group=\"metered\",topic=\"counted\"";
    assert_eq!(
        sum("shardline_group_committed_offset", group),
        500.0,
        "{response}"
    );
    assert_eq!(
        sum("shardline_group_lag_messages", group),
        0.0,
        "{response}"
    );
    let produce = "shard=\"0\",api=\"Produce\"";
    let produce_requests = sum("shardline_request_latency_seconds_count", produce)
        + sum(
            "shardline_request_latency_seconds_count",
            "shard=\"1\",api=\"Produce\"",
        );
    assert!(produce_requests > 0.0, "{response}");
    assert!(
        sum("shardline_log_write_latency_seconds_count", "") > 0.0,
        "{response}"
    );
    assert!(
        sum("shardline_shard_connections_accepted_total", "") > 0.0,
        "{response}"
    );
    assert!(
        response.contains("shardline_resident_memory_bytes "),
        "{response}"
    );
    // Lag grows with what the group has not read.
    let more = cli(
        &[
            "produce",
            "--broker",
            &broker.broker_arg(),
            "--topic",
            "counted",
        ],
        Some(b"a\nb\nc\n"),
    );
    assert!(more.status.success(), "{more:?}");
    let again = http(metrics, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    let lag: f64 = again
        .lines()
        .filter(|line| line.starts_with("shardline_group_lag_messages{group=\"metered\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(lag, 3.0, "{again}");
    for shard in ["0", "1"] {
        assert!(
            response.contains(&format!("shardline_shard_partitions{{shard=\"{shard}\"}}")),
            "{response}"
        );
    }
    let missing = http(metrics, "GET /nothing HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let garbage = http(metrics, "\u{1}\u{2}\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    assert!(broker.stop());
}

/// A producer's batches for many partitions leave for their shard in shared produce
/// requests (the client's outbox): one flush of 64 partitions' batches takes one request
/// per shard, not one per batch; every message is stored once, on the partition its key
/// maps to; and a partition the broker refuses (here: a topic whose min.insync.replicas one
/// broker cannot meet, with acks=all) fails only its own message, not the batches that
/// travelled with it.
#[test]
fn a_producer_sends_many_partitions_batches_in_shared_requests() {
    const PARTITIONS: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics.to_string();
    let broker = Broker::start(dir.path(), &["--metrics-listen", &metrics_arg]);
    let address = broker.broker_arg();
    let produce_requests = move || -> f64 {
        http(metrics, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .lines()
            .filter(|line| {
                line.starts_with("shardline_request_latency_seconds_count{")
                    && line.contains("api=\"Produce\"")
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let (stored, refused, requests) = {
        let address = address.clone();
        on_executor(move || async move {
            let cluster = Cluster::new(&address, "outbox-test", true).unwrap();
            let admin = Admin::new(cluster.clone());
            admin
                .create_topic("gathered", PARTITIONS, &[])
                .await
                .unwrap();
            admin
                .create_topic(
                    "refused",
                    1,
                    &[("min.insync.replicas".to_string(), "2".to_string())],
                )
                .await
                .unwrap();
            // A long linger: only the flush below sends, so every batch is ready at once.
            let producer = Producer::new(
                cluster,
                ProducerConfig {
                    acks: Acks::All,
                    linger: Duration::from_secs(30),
                    retries: 0,
                    ..ProducerConfig::default()
                },
            );
            // The producer's id first (its request, and every batch waiting for it, would
            // spread the first batches over several requests).
            producer
                .send("gathered", Some(b"first"), b"first")
                .await
                .unwrap();
            producer.flush().await;
            let before = produce_requests();
            let mut deliveries = Vec::new();
            for index in 0..(PARTITIONS * 4) {
                let key = format!("key-{index}");
                let delivery = producer
                    .send("gathered", Some(key.as_bytes()), key.as_bytes())
                    .await
                    .unwrap();
                deliveries.push((key, delivery));
            }
            let refused = producer
                .send("refused", Some(b"k"), b"never stored")
                .await
                .unwrap();
            producer.flush().await;
            let mut stored = Vec::new();
            for (key, delivery) in deliveries {
                stored.push((key, delivery.wait().await.unwrap()));
            }
            (stored, refused.wait().await, produce_requests() - before)
        })
    };
    match refused {
        Err(ClientError::Broker { code, .. }) => assert_eq!(code, ErrorCode::NotEnoughReplicas),
        other => panic!("the refused topic's message was answered with {other:?}"),
    }
    let batches: HashSet<u32> = stored.iter().map(|(_, m)| m.partition).collect();
    assert!(batches.len() >= 48, "{} partitions hit", batches.len());
    // One per shard (two here), with room for a shard's request split by a late batch.
    assert!(
        requests <= 4.0,
        "{requests} produce requests for {} batches",
        batches.len() + 1
    );
    for (key, metadata) in &stored {
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "{key}"
        );
    }
    let consumed = consume_all(&address, "gathered", stored.len() + 1, true);
    let mut found: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for record in consumed.iter().filter(|r| r.value != "first") {
        assert_eq!(record.key.as_deref(), Some(record.value.as_str()));
        assert!(
            found
                .insert((record.partition, record.offset), record.value.clone())
                .is_none(),
            "offset read twice"
        );
    }
    assert_eq!(consumed.len(), stored.len() + 1, "each message stored once");
    for (key, metadata) in &stored {
        assert_eq!(
            found.get(&(metadata.partition, metadata.offset)),
            Some(key),
            "{key} is not where its acknowledgement said"
        );
    }
}

#[test]
fn a_long_polling_fetch_does_not_hold_back_later_answers_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        use shardline::protocol::{MetadataRequest, Request, Response};
        let cluster = Cluster::new(&address, "test-order", false).unwrap();
        Admin::new(cluster.clone())
            .create_topic("quiet", 1, &[])
            .await
            .unwrap();
        let connection = cluster.any_connection().await.unwrap();
        // Nothing will arrive: the broker holds this fetch for its whole wait.
        let fetch = fetch_from_start("quiet", 1, 1, 5_000, 1 << 20);
        let fetching = {
            let connection = connection.clone();
            glommio::spawn_local(async move {
                let answer = connection.request(&fetch, &[]).await;
                (Instant::now(), answer)
            })
        };
        // The fetch is on the wire (and waiting in the broker) before the next request.
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let metadata = connection
            .request(&Request::Metadata(MetadataRequest { topics: None }), &[])
            .await
            .unwrap();
        let answered = Instant::now();
        assert!(
            matches!(metadata.response, Response::Metadata(_)),
            "{:?}",
            metadata.response.api_key()
        );
        let (fetch_answered, fetched) = fetching.await;
        let fetched = fetched.unwrap();
        assert!(matches!(fetched.response, Response::Fetch(_)));
        // In request order the metadata answer would have waited the fetch's 5 s.
        assert!(
            answered < fetch_answered,
            "the metadata answer ({:?} after asking) came after the fetch's",
            answered - asked
        );
    });
}

/// A fetch without a session of partitions `0..partitions` of `topic`, from offset 0, up to
/// 1 MiB per partition.
fn fetch_from_start(
    topic: &str,
    partitions: u32,
    min_bytes: u32,
    max_wait_ms: u32,
    max_bytes: u32,
) -> shardline::protocol::Request {
    use shardline::protocol::{FetchPartition, FetchRequest, IsolationLevel, Request};
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        isolation: IsolationLevel::HighWatermark,
        partitions: (0..partitions)
            .map(|partition| FetchPartition {
                topic: topic.into(),
                partition,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                leader_epoch: None,
            })
            .collect(),
        session_id: 0,
        session_epoch: shardline::protocol::SESSIONLESS_EPOCH,
        forgotten: Vec::new(),
    })
}

/// Creates the two-partition topic "gather" of the `min_bytes` tests and a producer for it.
async fn gather_topic(cluster: &Rc<Cluster>) -> Producer {
    Admin::new(cluster.clone())
        .create_topic("gather", 2, &[])
        .await
        .unwrap();
    Producer::new(
        cluster.clone(),
        ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        },
    )
}

/// Sends one message of 1,000 bytes to `partition` of "gather" and waits for its
/// acknowledgement: one batch of a little more than 1,000 bytes.
async fn send_gathered(producer: &Producer, partition: u32) {
    let key = (0..)
        .map(|n| format!("key-{n}"))
        .find(|k| shardline::client::partition_for_key(k.as_bytes(), 2) == partition)
        .unwrap();
    let delivery = producer
        .send("gather", Some(key.as_bytes()), &[b'v'; 1000])
        .await
        .unwrap();
    producer.flush().await;
    delivery.wait().await.unwrap();
}

/// A fetch with `min_bytes` is answered once that many bytes have arrived, however many
/// arrivals that takes and on whichever partitions, and at the end of its wait with what
/// there is when they never do.
#[test]
fn a_fetch_waits_until_min_bytes_have_arrived_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        use shardline::protocol::Response;
        let cluster = Cluster::new(&address, "test-min-bytes", false).unwrap();
        let producer = gather_topic(&cluster).await;
        let fetch =
            |min_bytes, max_wait_ms| fetch_from_start("gather", 2, min_bytes, max_wait_ms, 1 << 20);
        let fetched_bytes = |answer: &shardline::protocol::DecodedResponse| {
            assert!(matches!(answer.response, Response::Fetch(_)));
            answer
                .partition_batches
                .iter()
                .map(|b| b.len())
                .sum::<usize>()
        };
        send_gathered(&producer, 0).await;
        let connection = cluster.any_connection().await.unwrap();
        // Three such batches are needed: the first is there, two more come one by one.
        let fetching = {
            let connection = connection.clone();
            let request = fetch(3000, 10_000);
            glommio::spawn_local(async move {
                let answer = connection.request(&request, &[]).await;
                (Instant::now(), answer)
            })
        };
        glommio::timer::sleep(Duration::from_millis(300)).await;
        send_gathered(&producer, 1).await;
        glommio::timer::sleep(Duration::from_millis(300)).await;
        let third_sent = Instant::now();
        send_gathered(&producer, 0).await;
        let (answered, answer) = fetching.await;
        let answer = answer.unwrap();
        let bytes = fetched_bytes(&answer);
        assert!(
            bytes >= 3000,
            "answered with {bytes} bytes, under min_bytes"
        );
        assert!(
            answered >= third_sent,
            "answered {:?} before the third batch was sent, with {bytes} bytes",
            third_sent - answered
        );
        assert!(
            answered - third_sent < Duration::from_secs(5),
            "answered {:?} after the bytes were there (the wait is 10 s)",
            answered - third_sent
        );
        // More than will ever come: the answer waits out max_wait, then carries what there is.
        let asked = Instant::now();
        let answer = connection.request(&fetch(1 << 20, 600), &[]).await.unwrap();
        let waited = asked.elapsed();
        assert_eq!(fetched_bytes(&answer), bytes, "every batch there is");
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
            "answered after {waited:?} for a 600 ms wait"
        );
    });
}

/// The same through a consumer, whose fetches after the first are incremental fetches on a
/// session: a poll with `min_bytes` returns once that many bytes arrived, over two partitions.
#[test]
fn a_consumer_poll_on_a_fetch_session_waits_for_min_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: the session's partitions are led where the fetch is served, and watched
    // there (the two-shard test above watches through the other shard too).
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--cores", "1", "--no-pin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let broker = Broker::start_exact(dir.path(), &args);
    let address = broker.broker_arg();
    on_executor(move || async move {
        // Not shard-aware: one connection, so one fetch carries both partitions (a
        // shard-aware consumer sends one fetch per shard, and min_bytes counts per fetch).
        let cluster = Cluster::new(&address, "test-session-min-bytes", false).unwrap();
        let producer = gather_topic(&cluster).await;
        let mut consumer = Consumer::new(
            cluster.clone(),
            ConsumerConfig {
                max_wait: Duration::from_secs(10),
                min_bytes: 3000,
                fetch_ahead: false,
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign("gather", None, StartFrom::Earliest)
            .await
            .unwrap();
        let count = |fetched: &shardline::client::Fetched| fetched.for_each(|_, _, _| ()).unwrap();
        // The first poll opens the session: three batches are there already.
        for partition in [0, 1, 0] {
            send_gathered(&producer, partition).await;
        }
        assert_eq!(count(&consumer.poll().await.unwrap()), 3);
        // The next poll is incremental and finds nothing: it waits for three more batches.
        let polling = glommio::spawn_local(async move {
            let fetched = consumer.poll().await.unwrap();
            (Instant::now(), count(&fetched))
        });
        glommio::timer::sleep(Duration::from_millis(300)).await;
        send_gathered(&producer, 1).await;
        glommio::timer::sleep(Duration::from_millis(300)).await;
        send_gathered(&producer, 0).await;
        glommio::timer::sleep(Duration::from_millis(300)).await;
        let third_sent = Instant::now();
        send_gathered(&producer, 1).await;
        let (answered, records) = polling.await;
        assert_eq!(records, 3, "the poll returned before min_bytes were there");
        assert!(
            answered >= third_sent && answered - third_sent < Duration::from_secs(5),
            "answered {answered:?}, third batch sent {third_sent:?} (the wait is 10 s)"
        );
    });
}

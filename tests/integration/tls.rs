//! TLS on the listeners, with a test CA made here (`rcgen`): a round trip checked message by
//! message, refusals (a plaintext client, a client that trusts another CA, a broker whose
//! certificate expired; under mutual TLS, a client without a certificate, with one from
//! another CA, or an expired one), a certificate reloaded on SIGHUP, and a three-broker
//! cluster whose controller, replication and clients all speak TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

use super::cluster::{broker_args, describe_rows_with, ip, voters, TestCluster, CONTROLLER_PORT};
use super::harness::{cli, on_executor, Broker};

/// A certificate authority made for one test.
pub(super) struct Authority {
    cert: Certificate,
    key: KeyPair,
    pub(super) pem: PathBuf,
}

/// A certificate and key written to files.
pub(super) struct Identity {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

pub(super) fn authority(dir: &Path, name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Authority { cert, key, pem }
}

/// A certificate from `ca` for `names` (IP addresses become IP subject alternative names),
/// valid from `days_from_now.0` to `days_from_now.1`.
pub(super) fn issue(
    dir: &Path,
    ca: &Authority,
    file: &str,
    names: &[&str],
    days_from_now: (i64, i64),
) -> Identity {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, file);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from_now.0);
    params.not_after = now + time::Duration::days(days_from_now.1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let identity = Identity {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&identity.cert, cert.pem()).unwrap();
    std::fs::write(&identity.key, key.serialize_pem()).unwrap();
    identity
}

/// Client flags: trust `ca`, present `identity`.
pub(super) fn identity_flags(ca: &Path, identity: &Identity) -> Vec<String> {
    [
        "--tls-ca",
        path(ca),
        "--tls-cert",
        path(&identity.cert),
        "--tls-key",
        path(&identity.key),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub(super) fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

pub(super) const VALID: (i64, i64) = (-1, 30);
pub(super) const EXPIRED: (i64, i64) = (-30, -1);

pub(super) fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `produce` over the CLI with `tls` flags; its output.
pub(super) fn produce(
    broker: &str,
    topic: &str,
    lines: &str,
    tls: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "produce",
        "--broker",
        broker,
        "--topic",
        topic,
        "--acks",
        "all",
        "--key-separator",
        ":",
    ];
    args.extend(tls);
    cli(&args, Some(lines.as_bytes()))
}

/// Every message of `topic` through `consume --format json` with `tls` flags.
pub(super) fn consume(
    broker: &str,
    topic: &str,
    count: usize,
    tls: &[&str],
) -> Vec<serde_json::Value> {
    let count = count.to_string();
    let mut args = vec![
        "consume",
        "--broker",
        broker,
        "--topic",
        topic,
        "--format",
        "json",
        "--max-messages",
        &count,
        "--idle-timeout-ms",
        "3000",
    ];
    args.extend(tls);
    let output = cli(&args, None);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Each key's values come back once, in the order sent.
pub(super) fn check_every_message(sent: usize, read: &[serde_json::Value]) {
    assert_eq!(read.len(), sent, "every message once");
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for message in read {
        let key = message["key"].as_str().unwrap().to_string();
        let value: i64 = message["value"].as_str().unwrap()[1..].parse().unwrap();
        assert!(seen.insert(value), "v{value} twice");
        let previous = last.insert(key.clone(), value).unwrap_or(-1);
        assert!(value > previous, "{key}: v{value} after v{previous}");
    }
}

pub(super) fn lines(count: usize) -> String {
    (0..count).map(|n| format!("k{}:v{n}\n", n % 13)).collect()
}

/// A broker in `dir/data` with a certificate from `ca` for 127.0.0.1, plus `extra` flags.
pub(super) fn tls_broker(dir: &Path, ca: &Authority, extra: &[&str]) -> Broker {
    let server = issue(dir, ca, "broker", &["127.0.0.1"], VALID);
    let mut args = vec![
        "--tls-cert",
        path(&server.cert),
        "--tls-key",
        path(&server.key),
    ];
    args.extend(extra);
    Broker::start(&dir.join("data"), &args)
}

/// A refused client fails with a message, it does not hang.
pub(super) fn assert_refused(output: &std::process::Output, what: &str) {
    assert!(!output.status.success(), "{what} was let in: {output:?}");
}

#[test]
fn tls_round_trip_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "test-ca");
    let other = authority(dir.path(), "other-ca");
    let broker = tls_broker(dir.path(), &ca, &[]);
    let address = broker.broker_arg();
    let trusted = ["--tls-ca", path(&ca.pem)];
    create_topic_tls(&address, "secret", &trusted);
    let output = produce(&address, "secret", &lines(2000), &trusted);
    assert!(output.status.success(), "{output:?}");
    check_every_message(2000, &consume(&address, "secret", 2000, &trusted));
    // A plaintext client, and one that trusts another CA, are refused.
    assert_refused(
        &produce(&address, "secret", "k:x\n", &[]),
        "a plaintext client",
    );
    let wrong = ["--tls-ca", path(&other.pem)];
    assert_refused(
        &produce(&address, "secret", "k:x\n", &wrong),
        "a client of another CA",
    );
    // A name the certificate does not carry is refused too.
    let misnamed = [
        "--tls-ca",
        path(&ca.pem),
        "--tls-server-name",
        "elsewhere.example",
    ];
    assert_refused(
        &produce(&address, "secret", "k:x\n", &misnamed),
        "a wrong server name",
    );
    // Nothing the refused clients sent was stored.
    check_every_message(2000, &consume(&address, "secret", 2001, &trusted));
    // A broker whose certificate expired is refused by its clients.
    let stale = issue(dir.path(), &ca, "stale-broker", &["127.0.0.1"], EXPIRED);
    let expired = Broker::start(
        &dir.path().join("expired"),
        &[
            "--tls-cert",
            path(&stale.cert),
            "--tls-key",
            path(&stale.key),
        ],
    );
    let output = cli(
        &[
            "topic",
            "list",
            "--broker",
            &expired.broker_arg(),
            "--tls-ca",
            path(&ca.pem),
        ],
        None,
    );
    assert_refused(&output, "an expired broker certificate");
}

pub(super) fn create_topic_tls(broker: &str, topic: &str, tls: &[&str]) {
    let mut args = vec![
        "topic",
        "create",
        "--broker",
        broker,
        "--topic",
        topic,
        "--partitions",
        "3",
    ];
    args.extend(tls);
    let output = cli(&args, None);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn mutual_tls_refuses_clients_without_a_good_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "test-ca");
    let other = authority(dir.path(), "other-ca");
    let broker = tls_broker(dir.path(), &ca, &["--tls-client-ca", path(&ca.pem)]);
    let address = broker.broker_arg();
    let alice = issue(dir.path(), &ca, "alice", &["alice"], VALID);
    let with = |identity: &Identity| identity_flags(&ca.pem, identity);
    let alice_flags = with(&alice);
    let alice_flags: Vec<&str> = alice_flags.iter().map(String::as_str).collect();
    create_topic_tls(&address, "mutual", &alice_flags);
    let output = produce(&address, "mutual", &lines(500), &alice_flags);
    assert!(output.status.success(), "{output:?}");
    check_every_message(500, &consume(&address, "mutual", 500, &alice_flags));
    // No certificate, one from another CA, an expired one: all refused, nothing stored.
    let no_certificate = ["--tls-ca", path(&ca.pem)];
    assert_refused(
        &produce(&address, "mutual", "k:x\n", &no_certificate),
        "no client certificate",
    );
    let mallory = issue(dir.path(), &other, "mallory", &["mallory"], VALID);
    let flags = with(&mallory);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_refused(
        &produce(&address, "mutual", "k:x\n", &flags),
        "a certificate of another CA",
    );
    let old = issue(dir.path(), &ca, "old-alice", &["alice"], EXPIRED);
    let flags = with(&old);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_refused(
        &produce(&address, "mutual", "k:x\n", &flags),
        "an expired client certificate",
    );
    check_every_message(500, &consume(&address, "mutual", 501, &alice_flags));
}

#[test]
fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = authority(dir.path(), "first-ca");
    let second = authority(dir.path(), "second-ca");
    let cert = dir.path().join("broker.crt");
    let key = dir.path().join("broker.key");
    let install = |identity: Identity| {
        std::fs::rename(&identity.cert, &cert).unwrap();
        std::fs::rename(&identity.key, &key).unwrap();
    };
    install(issue(dir.path(), &first, "one", &["127.0.0.1"], VALID));
    let broker = Broker::start(
        &dir.path().join("data"),
        &["--tls-cert", path(&cert), "--tls-key", path(&key)],
    );
    let address = broker.broker_arg();
    let list = |ca: &Path| {
        cli(
            &["topic", "list", "--broker", &address, "--tls-ca", path(ca)],
            None,
        )
    };
    assert!(list(&first.pem).status.success());
    assert_refused(&list(&second.pem), "the second CA before the reload");
    install(issue(dir.path(), &second, "two", &["127.0.0.1"], VALID));
    // A key that does not go with the certificate is refused on reload; the old one stays.
    std::fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_log(&broker, "TLS reload failed");
    assert!(
        list(&first.pem).status.success(),
        "the old certificate stays"
    );
    install(issue(dir.path(), &second, "three", &["127.0.0.1"], VALID));
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_log(&broker, "TLS certificate and key reloaded");
    assert!(list(&second.pem).status.success(), "{}", broker.log());
    assert_refused(&list(&first.pem), "the first CA after the reload");
}

fn wait_for_log(broker: &Broker, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !broker.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no '{text}' in:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three brokers with mutual TLS on every listener and authorization on: the controller's
/// Raft traffic, replication and clients all go through it, and a replicated topic works
/// end to end.
#[test]
fn a_cluster_speaks_tls_between_its_brokers() {
    const SUBNET: u8 = 78;
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "cluster-ca");
    let voters = voters(3, |i| ip(SUBNET, i));
    let brokers = (0..3)
        .map(|i| {
            let host = ip(SUBNET, i);
            let identity = issue(dir.path(), &ca, &format!("broker-{i}"), &[&host], VALID);
            // Authorization on: the brokers (and the test's client) are super users, so
            // replication and the controller calls pass under it.
            let tls = [
                "--tls-cert",
                path(&identity.cert),
                "--tls-key",
                path(&identity.key),
                "--tls-client-ca",
                path(&ca.pem),
                "--authorization",
                "--super-users",
                "broker-0,broker-1,broker-2,client",
            ];
            let args = broker_args(&host, 0, i, &voters, &tls);
            Broker::start_exact(&dir.path().join(format!("node-{i}")), &args)
        })
        .collect();
    let client = issue(dir.path(), &ca, "client", &["client"], VALID);
    let cluster = TestCluster::from_parts(brokers, dir);
    let flags = [
        "--tls-ca",
        path(&ca.pem),
        "--tls-cert",
        path(&client.cert),
        "--tls-key",
        path(&client.key),
    ];
    let bootstrap = cluster.bootstrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = vec!["cluster", "status", "--broker", bootstrap.as_str()];
        args.extend(flags);
        let status = String::from_utf8_lossy(&cli(&args, None).stdout).into_owned();
        if status.matches("\talive").count() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut args = vec![
        "topic",
        "create",
        "--broker",
        bootstrap.as_str(),
        "--topic",
        "replicated",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
    ];
    args.extend(flags);
    let output = cli(&args, None);
    assert!(output.status.success(), "{output:?}");
    let output = produce(&bootstrap, "replicated", &lines(1000), &flags);
    assert!(output.status.success(), "{output:?}");
    check_every_message(1000, &consume(&bootstrap, "replicated", 1000, &flags));
    // Every follower caught up over TLS: all in sync, holding all 1,000.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (rows, output) = describe_rows_with(&bootstrap, "replicated", &flags);
        let synced = rows.len() == 3 && rows.values().all(|row| row.in_sync.len() == 3);
        let total: u64 = rows.values().map(|row| row.high_watermark).sum();
        if synced && total == 1000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{output:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The internal (controller) listener takes only brokers: a certificate from the
    // brokers' CA whose name is a super user. Everyone else gets no answer to a call.
    let internal: std::net::SocketAddr = format!("{}:{CONTROLLER_PORT}", ip(SUBNET, 0))
        .parse()
        .unwrap();
    let probes = tempfile::tempdir().unwrap();
    let intruder = issue(probes.path(), &ca, "intruder", &["intruder"], VALID);
    let other_ca = authority(probes.path(), "other-ca");
    let stranger = issue(probes.path(), &other_ca, "client", &["client"], VALID);
    let ask = |tls: Option<shardline::tls::ClientTls>| {
        on_executor(move || async move {
            shardline::server::internal::call_over_network(
                internal,
                tls.as_ref(),
                &shardline::cluster::controller::ControllerCall::FetchImage { after: 0 },
                Duration::from_secs(5),
            )
            .await
            .map(|(reply, _)| format!("{reply:?}").chars().take(40).collect::<String>())
        })
    };
    let client_tls = |identity: Option<&Identity>| {
        shardline::tls::ClientTls::new(
            &ca.pem,
            identity.map(|i| (i.cert.as_path(), i.key.as_path())),
            None,
        )
        .unwrap()
    };
    let answered = ask(Some(client_tls(Some(&client))));
    assert!(
        answered.is_ok(),
        "a super user's certificate is answered: {answered:?}"
    );
    for (who, tls) in [
        ("no TLS", None),
        ("no certificate", Some(client_tls(None))),
        (
            "a certificate that is not a super user's",
            Some(client_tls(Some(&intruder))),
        ),
        (
            "a super user's name from another CA",
            Some(client_tls(Some(&stranger))),
        ),
    ] {
        let refused = ask(tls);
        assert!(
            refused.is_err(),
            "{who}: the internal listener answered {refused:?}"
        );
        eprintln!(
            "internal listener, {who}: refused ({})",
            refused.unwrap_err()
        );
    }
}

/// The bench harness runs its broker with TLS and the load generator over it, signed in as
/// a SCRAM user the harness creates (and, where Prometheus is installed, scraped by it): the
/// tiny scenario's runs complete with every message checked.
#[test]
fn the_bench_harness_and_the_load_generator_run_over_tls() {
    use super::harness::{build_workspace_binaries, shardline_binary};
    let binaries = build_workspace_binaries(&["shardline-loadgen", "shardline-bench"]);
    let work = tempfile::tempdir().unwrap();
    let ca = authority(work.path(), "bench-ca");
    let server = issue(work.path(), &ca, "broker", &["127.0.0.1"], VALID);
    let scenario = work.path().join("tiny.toml");
    std::fs::write(&scenario, super::bench_harness::TINY_SCENARIO).unwrap();
    let password = work.path().join("bench.password");
    std::fs::write(&password, "bench secret\n").unwrap();
    // With a Prometheus on the machine, it scrapes the run too.
    let prometheus = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("prometheus").is_file());
    if !prometheus {
        eprintln!("no prometheus on PATH: the harness runs without --prometheus");
    }
    let out = work.path().join("report");
    let output = std::process::Command::new(binaries.join("shardline-bench"))
        .arg("--scenario")
        .arg(&scenario)
        .arg("--profiles")
        .arg("balanced")
        .arg("--out")
        .arg(&out)
        .arg("--shardline")
        .arg(shardline_binary())
        .arg("--loadgen")
        .arg(binaries.join("shardline-loadgen"))
        .arg("--tuning-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning"))
        .arg("--data-parent")
        .arg(work.path())
        .arg("--no-pin")
        .args([
            "--tls-cert",
            path(&server.cert),
            "--tls-key",
            path(&server.key),
        ])
        .args(["--tls-ca", path(&ca.pem)])
        .args([
            "--sasl-user",
            "bench",
            "--sasl-password-file",
            path(&password),
        ])
        .args(prometheus.then_some("--prometheus"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{report}");
    let result = &results[0];
    assert!(result["throughput_messages_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(result["integrity_checked"], true, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicated"], 0, "{result}");
    // The load generator was given the CA (its command line heads its log).
    fn logs_under(dir: &Path) -> String {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    logs_under(&path)
                } else if path.extension().is_some_and(|e| e == "log") {
                    std::fs::read_to_string(&path).unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .collect()
    }
    let logs = logs_under(&out);
    assert!(
        logs.contains("--tls-ca"),
        "the load generator was given the CA: {logs}"
    );
}

//! Access rules under mutual TLS (a principal is its certificate's common name): what no
//! rule allows is refused with an authorization error and has no effect, a produce to a
//! topic the principal may only read leaves the log unchanged, rules come and go with
//! `shardline acl`, and only the cluster's administrators may change them.

use super::harness::cli;
use super::tls::{
    as_strs, assert_refused, authority, check_every_message, consume, create_topic_tls,
    identity_flags, issue, lines, path, produce, tls_broker, VALID,
};

/// Runs `args` plus `flags`; its output.
fn run(args: &[&str], flags: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(flags);
    cli(&all, stdin)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn access_rules_refuse_what_they_do_not_allow_and_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "acl-ca");
    let broker = tls_broker(
        dir.path(),
        &ca,
        &[
            "--tls-client-ca",
            path(&ca.pem),
            "--authorization",
            "--super-users",
            "admin",
        ],
    );
    let address = broker.broker_arg();
    let b = address.as_str();
    let admin = identity_flags(&ca.pem, &issue(dir.path(), &ca, "admin", &["admin"], VALID));
    let alice = identity_flags(&ca.pem, &issue(dir.path(), &ca, "alice", &["alice"], VALID));
    let bob = identity_flags(&ca.pem, &issue(dir.path(), &ca, "bob", &["bob"], VALID));
    let (admin, alice, bob) = (as_strs(&admin), as_strs(&alice), as_strs(&bob));
    create_topic_tls(b, "orders", &admin);
    let output = produce(b, "orders", &lines(100), &admin);
    assert!(output.status.success(), "{output:?}");

    // Nobody else may do anything yet.
    let read = run(
        &[
            "consume",
            "--broker",
            b,
            "--topic",
            "orders",
            "--idle-timeout-ms",
            "1000",
        ],
        &alice,
        None,
    );
    assert_refused(&read, "alice reading without a rule");
    assert!(
        stderr(&read).contains("TopicAuthorizationFailed"),
        "{}",
        stderr(&read)
    );
    let listed = run(&["topic", "list", "--broker", b], &bob, None);
    assert!(
        listed.status.success() && !String::from_utf8_lossy(&listed.stdout).contains("orders"),
        "metadata hides what bob may not describe: {listed:?}"
    );
    // A hidden topic and a missing one look the same to bob.
    for topic in ["orders", "no-such-topic"] {
        let described = run(
            &["topic", "describe", "--broker", b, "--topic", topic],
            &bob,
            None,
        );
        assert_refused(&described, "bob describing a topic");
        assert!(
            stderr(&described).contains("TopicAuthorizationFailed"),
            "{topic}: {}",
            stderr(&described)
        );
    }
    let created = run(
        &["topic", "create", "--broker", b, "--topic", "bobs"],
        &bob,
        None,
    );
    assert_refused(&created, "bob creating a topic");
    let granted = [
        "acl",
        "add",
        "--broker",
        b,
        "--principal",
        "alice",
        "--topic",
        "orders",
        "--operation",
        "read",
    ];
    assert_refused(&run(&granted, &alice, None), "alice granting herself");

    // Alice may read, not write: her produce leaves the log as it was.
    let added = run(&granted, &admin, None);
    assert!(added.status.success(), "{added:?}");
    check_every_message(100, &consume(b, "orders", 100, &alice));
    let written = produce(b, "orders", "k1:v1000\n", &alice);
    assert_refused(&written, "alice writing to a topic she may only read");
    assert!(
        stderr(&written).contains("TopicAuthorizationFailed")
            || stderr(&written).contains("may not Write"),
        "{}",
        stderr(&written)
    );
    check_every_message(100, &consume(b, "orders", 101, &admin));

    // A group needs its own rule.
    let group_read = [
        "consume",
        "--broker",
        b,
        "--topic",
        "orders",
        "--group",
        "readers",
        "--max-messages",
        "100",
        "--idle-timeout-ms",
        "3000",
    ];
    assert_refused(
        &run(&group_read, &alice, None),
        "alice joining a group without a rule",
    );
    let group_rule = [
        "acl",
        "add",
        "--broker",
        b,
        "--principal",
        "alice",
        "--group",
        "readers",
        "--operation",
        "read",
    ];
    assert!(run(&group_rule, &admin, None).status.success());
    let joined = run(&group_read, &alice, None);
    assert!(joined.status.success(), "{joined:?}");
    assert_eq!(String::from_utf8_lossy(&joined.stdout).lines().count(), 100);

    // The rules are listed, a bad one is refused with a reason, and a removed one is gone.
    let list = run(&["acl", "list", "--broker", b], &admin, None);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        text.contains("alice\tTopic\torders\tRead") && text.contains("alice\tGroup\treaders\tRead"),
        "{text}"
    );
    let bad = run(
        &[
            "acl",
            "add",
            "--broker",
            b,
            "--principal",
            "x",
            "--group",
            "g",
            "--operation",
            "write",
        ],
        &admin,
        None,
    );
    assert_refused(&bad, "a write rule on a group");
    assert!(
        stderr(&bad).contains("not an operation on a Group"),
        "{}",
        stderr(&bad)
    );
    let removed = run(
        &[
            "acl",
            "remove",
            "--broker",
            b,
            "--principal",
            "alice",
            "--topic",
            "orders",
            "--operation",
            "read",
        ],
        &admin,
        None,
    );
    assert!(removed.status.success(), "{removed:?}");
    let again = run(
        &[
            "consume",
            "--broker",
            b,
            "--topic",
            "orders",
            "--idle-timeout-ms",
            "1000",
        ],
        &alice,
        None,
    );
    assert_refused(&again, "alice reading after her rule was removed");
    // Bob's refused create had no effect.
    let topics = run(&["topic", "list", "--broker", b], &admin, None);
    assert!(
        !String::from_utf8_lossy(&topics.stdout).contains("bobs"),
        "{topics:?}"
    );
}

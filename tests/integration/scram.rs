//! SCRAM-SHA-256 authentication (`--sasl`): users made with `shardline user`, stored salted
//! in the metadata log. An unauthenticated client, a wrong password and an unknown user are
//! refused and change nothing; an authenticated user is the principal its access rules name.

use super::harness::cli;
use super::tls::{
    as_strs, assert_refused, authority, check_every_message, consume, create_topic_tls,
    identity_flags, issue, lines, path, produce, tls_broker, VALID,
};

fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

#[test]
fn scram_users_log_in_and_everyone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "scram-ca");
    let broker = tls_broker(
        dir.path(),
        &ca,
        &[
            "--tls-client-ca",
            path(&ca.pem),
            "--sasl",
            "--authorization",
            "--super-users",
            "admin",
        ],
    );
    let address = broker.broker_arg();
    let b = address.as_str();
    let admin_identity = issue(dir.path(), &ca, "admin", &["admin"], VALID);
    let tls = ["--tls-ca", path(&ca.pem)];
    let admin = identity_flags(&ca.pem, &admin_identity);
    let admin = as_strs(&admin);
    let password = dir.path().join("alice.password");
    std::fs::write(&password, "correct horse\n").unwrap();
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "battery staple\n").unwrap();
    let mut create = vec![
        "user",
        "create",
        "--broker",
        b,
        "--name",
        "alice",
        "--password-file",
        path(&password),
    ];
    create.extend(&admin);
    let created = cli(&create, None);
    assert!(created.status.success(), "{created:?}");
    create_topic_tls(b, "ledger", &admin);
    assert!(produce(b, "ledger", &lines(50), &admin).status.success());
    let rule = [
        "acl",
        "add",
        "--broker",
        b,
        "--principal",
        "alice",
        "--topic",
        "ledger",
        "--operation",
        "read",
    ];
    let mut rule = rule.to_vec();
    rule.extend(&admin);
    assert!(cli(&rule, None).status.success());

    let alice = with(
        &tls,
        &[
            "--sasl-user",
            "alice",
            "--sasl-password-file",
            path(&password),
        ],
    );
    let alice = as_strs(&alice);
    check_every_message(50, &consume(b, "ledger", 50, &alice));
    // Her rules hold: she may read, not write, and her refused write changed nothing.
    assert_refused(&produce(b, "ledger", "k:x\n", &alice), "alice writing");

    let refusals: [(&str, Vec<String>, &str); 3] = [
        (
            "an unauthenticated client",
            with(&tls, &[]),
            "AuthenticationRequired",
        ),
        (
            "a wrong password",
            with(
                &tls,
                &["--sasl-user", "alice", "--sasl-password-file", path(&wrong)],
            ),
            "SaslAuthenticationFailed",
        ),
        (
            "an unknown user",
            with(
                &tls,
                &[
                    "--sasl-user",
                    "mallory",
                    "--sasl-password-file",
                    path(&password),
                ],
            ),
            "SaslAuthenticationFailed",
        ),
    ];
    for (who, flags, code) in &refusals {
        let flags = as_strs(flags);
        let output = produce(b, "ledger", "k:intruder\n", &flags);
        assert_refused(&output, who);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(code), "{who}: {stderr}");
        let mut list = vec!["topic", "list", "--broker", b];
        list.extend(&flags);
        assert_refused(&cli(&list, None), who);
    }
    check_every_message(50, &consume(b, "ledger", 51, &admin));

    // Users are listed without their keys; a deleted user can no longer log in.
    let mut listing = vec!["user", "list", "--broker", b];
    listing.extend(&admin);
    let listed = cli(&listing, None);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(text.contains("alice\tSCRAM-SHA-256\t4096"), "{text}");
    let mut delete = vec!["user", "delete", "--broker", b, "--name", "alice"];
    delete.extend(&admin);
    assert!(cli(&delete, None).status.success());
    let mut list = vec!["topic", "list", "--broker", b];
    list.extend(&alice);
    assert_refused(&cli(&list, None), "a deleted user");
    // A weak credential is refused with a reason.
    let mut weak = vec![
        "user",
        "create",
        "--broker",
        b,
        "--name",
        "bob",
        "--password-file",
        path(&password),
        "--iterations",
        "10",
    ];
    weak.extend(&admin);
    let output = cli(&weak, None);
    assert_refused(&output, "ten rounds");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("iterations"),
        "{output:?}"
    );
}

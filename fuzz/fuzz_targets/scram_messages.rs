//! Arbitrary bytes as every SCRAM message a peer can send: the client-first and the
//! client-final on the broker's side (against a real credential), the server-first and the
//! server-final on the client's. None may panic, and garbage never authenticates.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::security::scram::{credential, ClientExchange, ServerExchange};

fuzz_target!(|data: &[u8]| {
    let stored = credential("alice", "secret", 4096);
    let lookup = |name: &str| (name == "alice").then(|| stored.clone());
    if let Ok((server, _)) = ServerExchange::start(data, lookup) {
        assert!(server.finish(data).is_err(), "the same bytes are no proof");
    }
    let (server, _) = ServerExchange::start(b"n,,n=alice,r=abc", lookup).expect("a good first");
    assert!(server.finish(data).is_err(), "arbitrary bytes authenticated");
    let (mut client, _) = ClientExchange::start("alice", "secret");
    let _ = client.respond(data);
    let _ = client.verify(data);
});

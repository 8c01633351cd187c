//! Arbitrary bytes into every decoder of the cluster's own input: internal-listener frames
//! (Raft messages and controller calls), their conversion to raft's messages, metadata events
//! and image snapshots (as an observer installs them), and the controller's Raft log files on disk. None may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::cluster::metadata::decode_event;
use shardline::cluster::raft::RaftDisk;
use shardline::cluster::MetadataImage;
use shardline::server::internal::{decode, InternalFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(InternalFrame::Raft(message)) = decode(data) {
        // Node 2 of a group: whatever converts must be a message raft can be handed.
        let _ = message.into_raft(2);
    }
    if let Ok(event) = decode_event(data) {
        let mut image = MetadataImage::new();
        let _ = image.apply(event);
    }
    let _ = MetadataImage::from_snapshot(data);
    // An observer's install of a leader's image (refused or taken whole).
    let _ = shardline::cluster::observer::Observer::new(1).install(1, data);
    // The same bytes as a controller log and as a snapshot file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("raft.log"), data).expect("written");
    let _ = RaftDisk::open(dir.path());
    std::fs::write(dir.path().join("snapshot"), data).expect("written");
    let _ = RaftDisk::open(dir.path());
});

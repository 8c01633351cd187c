//! The one integration test binary: tests that start real `shardline` processes.
//! `harness` holds what they share.

mod acl;
mod bench_harness;
mod broker;
mod broker_bad_input;
mod cluster;
mod failover;
mod fetch_session;
mod groups;
mod harness;
mod history;
mod idempotence;
mod loadgen;
mod log_crash;
mod netns;
mod producer;
mod prometheus;
mod quota;
mod scram;
mod tls;
mod tuning;

//! The one integration test binary: tests that start real `shardline` processes.
//! `harness` holds what they share.

mod broker;
mod harness;
mod log_crash;

//! shardline-loadgen: drives a broker with producers and consumers, each on its own
//! unpinned glommio executor thread, and reports throughput, produce-ack and end-to-end
//! latency (from each message's intended send time, so stalls are not hidden) and whether
//! every acknowledged message was consumed once and in order.
//!
//! The run: create the topic when missing; start the consumers at the log end; producers
//! send for `--warmup-s` (not measured) then `--duration-s` (measured); once every
//! producer has its answers, the consumers read on to the log end. The main thread prints a
//! live line each second on stderr, then the table on stdout. Exit status: 0 when no
//! acknowledged message was lost, doubled or reordered and nothing failed; 1 otherwise.
//!
//! Example: `shardline-loadgen --broker 127.0.0.1:9092 --producers 2 --consumers 1
//! --rate 20000 --duration-s 10 --json run.json --hdr-dir hgrm/`
//!
//! `--topics N` spreads the run over topics `<topic>-0` .. `<topic>-<N-1>` (`topics.rs`);
//! `--consumer-group G` makes the consumers members of a consumer group (`group.rs`). The
//! JSON report has the live lines' per-second throughput as `results.timeline`.
//!
//! `--system kafka|nats|redis` drives a peer broker the same way (see `driver/`); those
//! drivers are built with the cargo feature `peers` only (`--list-systems` says which
//! this binary has).

mod args;
mod consumer;
mod driver;
mod group;
mod keys;
mod payload;
mod producer;
mod report;
mod run;
mod schedule;
mod sizes;
mod stats;
mod tally;
mod timeline;
mod topics;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;

/// mimalloc instead of glibc's allocator, as the broker (see the README, "The request path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = args::Args::parse();
    if args.list_systems {
        for system in driver::built_systems() {
            println!("{}", system.name());
        }
        return ExitCode::SUCCESS;
    }
    if let Err(error) = args.load_profile().and_then(|()| args.check()) {
        eprintln!("shardline-loadgen: {error}");
        return ExitCode::FAILURE;
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let driver = match driver::driver(args.system) {
        Ok(driver) => driver,
        Err(error) => {
            eprintln!("shardline-loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let results = match run::run(&args, driver.as_ref()) {
        Ok(results) => results,
        Err(error) => {
            eprintln!("shardline-loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    report::print_table(&results, &args);
    let mut failed = !results.errors.is_empty() || results.integrity_failed();
    if let Some(path) = &args.json {
        let json = report::report_json(&results, &args, started_unix_s);
        if let Err(error) = std::fs::write(path, format!("{json:#}\n")) {
            eprintln!("shardline-loadgen: writing {}: {error}", path.display());
            failed = true;
        }
    }
    if let Some(dir) = &args.hdr_dir {
        if let Err(error) = report::write_hdr_files(&results, dir) {
            eprintln!("shardline-loadgen: {error}");
            failed = true;
        }
    }
    if results.integrity_failed() {
        eprintln!(
            "shardline-loadgen: INTEGRITY FAILURE: {} acknowledged messages lost, {} \
             duplicated, {} out of order",
            results.lost, results.duplicated, results.out_of_order
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

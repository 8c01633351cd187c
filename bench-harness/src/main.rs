//! shardline-bench: runs named scenarios against each tuning profile and writes reports.
//! It drives brokers through shardline-loadgen and is built in issue #4.

fn main() -> std::process::ExitCode {
    eprintln!(
        "shardline-bench {}: not implemented yet; see README.md, 'State of the project'",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}

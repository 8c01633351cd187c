//! shardline-loadgen: drives a broker or cluster and reports throughput and latency.
//! It needs the broker's network protocol and client (issue #3) and is built in issue #4.

fn main() -> std::process::ExitCode {
    eprintln!(
        "shardline-loadgen {}: not implemented yet; it needs the broker protocol and client \
         (see README.md, 'State of the project')",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}

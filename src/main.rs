//! The `shardline` binary: broker, admin and data-plane command line.

fn main() -> std::process::ExitCode {
    shardline::cli::main()
}

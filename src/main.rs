//! The `shardline` binary: broker, admin and data-plane command line.

/// mimalloc instead of glibc's allocator (see README, "The request path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shardline::cli::main()
}

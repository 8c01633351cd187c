//! Shared helpers: the binary under test, a glommio executor for in-process checks, seeds.

use std::future::Future;
use std::path::PathBuf;

/// Path of the `shardline` binary Cargo built for these tests.
pub fn shardline_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardline"))
}

/// Runs `body` on an unpinned glommio executor (tests never pin cores) and returns its value.
pub fn on_executor<T, F, Fut>(body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(body)
        .expect("executor starts")
        .join()
        .expect("executor body completes")
}

/// A seed for randomized tests: `SHARDLINE_TEST_SEED` to replay one, else from the clock.
/// Printed so that a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHARDLINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("{test}: SHARDLINE_TEST_SEED={seed}");
    seed
}

//! The two costs a connection pays per request on top of its work, made cheap: its
//! timeouts, and the system calls that write a response.
//!
//! - **Timeouts without a timer per read.** A glommio timer is a userspace timer plus an
//!   io_uring timeout that is re-armed (a cancel and a new submission) whenever the nearest
//!   deadline changes: with a timer around every read, every request paid that. A
//!   `Deadline` is a cell that the reading loop moves for free; one `Deadline::expired`
//!   future per connection sleeps until it and re-arms only when it fires or the deadline
//!   moves earlier, so a busy connection arms about one timer per timeout period.
//! - **One system call per response.** `crate::net::send_now` writes a response's head and
//!   every batch of its trailer with one non-blocking `sendmsg` (vectored), instead of one
//!   `send` per piece. Only what the socket did not take then goes through the stream, and
//!   only that slow path waits (with a timer for the write-stall timeout).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A deadline owned by one connection's task on its shard; `None` while nothing is timed.
#[derive(Default)]
pub struct Deadline {
    at: Cell<Option<Instant>>,
    /// When the watchdog's timer fires, while it sleeps.
    armed: Cell<Option<Instant>>,
    /// The watchdog's waker, to re-arm it earlier.
    waker: Cell<Option<Waker>>,
    moved_earlier: Cell<bool>,
}

impl Deadline {
    /// Sets (or clears) the deadline. Only a deadline earlier than the one the watchdog
    /// sleeps on wakes it; a later one is seen when its timer fires.
    pub fn set(&self, at: Option<Instant>) {
        self.at.set(at);
        let earlier = match (at, self.armed.get()) {
            (Some(at), Some(armed)) => at < armed,
            _ => false,
        };
        if earlier {
            self.moved_earlier.set(true);
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    /// Completes once the deadline has passed. While none is set, it checks again every
    /// `idle_check` (a deadline set later wakes it only when earlier than that).
    pub async fn expired(&self, idle_check: Duration) {
        loop {
            let now = Instant::now();
            let wake_at = match self.at.get() {
                Some(at) if at <= now => return,
                Some(at) => at,
                None => now + idle_check,
            };
            self.armed.set(Some(wake_at));
            self.moved_earlier.set(false);
            futures_lite::future::or(glommio::timer::sleep(wake_at - now), MovedEarlier(self))
                .await;
            self.armed.set(None);
        }
    }
}

/// Completes when `Deadline::set` moved the deadline before the watchdog's timer.
struct MovedEarlier<'a>(&'a Deadline);

impl Future for MovedEarlier<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.0.moved_earlier.get() {
            return Poll::Ready(());
        }
        self.0.waker.set(Some(context.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When `deadline`'s watchdog fires, or `None` if it has not within `cap`.
    async fn fired_within(deadline: &std::rc::Rc<Deadline>, cap: Duration) -> Option<Instant> {
        let watchdog = {
            let deadline = deadline.clone();
            glommio::spawn_local(async move {
                deadline.expired(Duration::from_secs(3600)).await;
                Instant::now()
            })
        };
        futures_lite::future::or(async { Some(watchdog.await) }, async {
            glommio::timer::sleep(cap).await;
            None
        })
        .await
    }

    /// After `after_ms`, sets `deadline` to `in_ms` from then.
    fn set_later(deadline: &std::rc::Rc<Deadline>, after_ms: u64, in_ms: u64) -> glommio::Task<()> {
        let deadline = deadline.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(after_ms)).await;
            deadline.set(Some(Instant::now() + Duration::from_millis(in_ms)));
        })
    }

    #[test]
    fn a_deadline_fires_when_due_and_when_moved_earlier() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(|| async {
                let deadline = std::rc::Rc::new(Deadline::default());
                // Set while the watchdog sleeps on its hour-long idle check: moved earlier,
                // it wakes and fires at the deadline.
                let started = Instant::now();
                let setter = set_later(&deadline, 20, 30);
                let fired = fired_within(&deadline, Duration::from_secs(10)).await;
                setter.await;
                let elapsed = fired.expect("the moved deadline fired") - started;
                assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");

                // Pushed later before it is due: it fires at the later time, not the first.
                deadline.set(Some(Instant::now() + Duration::from_millis(30)));
                let started = Instant::now();
                let setter = set_later(&deadline, 10, 100);
                let fired = fired_within(&deadline, Duration::from_secs(10)).await;
                setter.await;
                let elapsed = fired.expect("the later deadline fired") - started;
                assert!(elapsed >= Duration::from_millis(110), "{elapsed:?}");

                // Cleared: it does not fire.
                deadline.set(None);
                assert_eq!(
                    fired_within(&deadline, Duration::from_millis(60)).await,
                    None
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

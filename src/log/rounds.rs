//! Shard-wide flush rounds: the partitions of one shard flush together.
//!
//! Each partition's writer decides on its own when it is due (its flush policy), then
//! enters the shard's round gate. While a round is in flight, partitions that become due
//! wait and go out together in the next one (or join the one in flight while none of its
//! members has finished writing yet), so a shard issues one burst of writes and then
//! one burst of fdatasyncs per round instead of a write and a sync per partition at scattered
//! times: the filesystem journal commits the burst's syncs together, and every partition's
//! batch grows while it waits. Inside a round, every member finishes its writes before any
//! syncs ([`RoundTicket::wrote`]), so the syncs reach the device together.
//!
//! One partition alone never waits (the gate is open when no round is in flight). With
//! `enabled = false` the gate admits at once and every partition flushes on its own, as
//! before shard-wide rounds existed (for comparison).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Debug, Default)]
struct GateState {
    /// The number of the round in flight (or of the last one).
    current: u64,
    /// Members of the current round that have not left it.
    in_round: usize,
    /// Members of the current round that have not finished writing.
    writing: usize,
    /// Partitions waiting for the next round.
    next: usize,
    /// Wakers of partitions waiting for the next round.
    next_waiters: Vec<Waker>,
    /// Wakers of members waiting for the others' writes.
    write_waiters: Vec<Waker>,
    /// Rounds started, and members over all rounds (for the round-size metric).
    rounds: u64,
    members: u64,
}

/// A shard's flush-round gate (one per `LogShard`).
#[derive(Debug)]
pub(crate) struct FlushRounds {
    enabled: bool,
    state: RefCell<GateState>,
}

impl FlushRounds {
    pub fn new(enabled: bool) -> FlushRounds {
        FlushRounds {
            enabled,
            state: RefCell::new(GateState::default()),
        }
    }

    /// Joins a round: the one in flight while none of its members has written yet, else a
    /// new one if none is in flight, else the next one (waits for the one in flight to end).
    pub async fn enter(self: &Rc<Self>) -> RoundTicket {
        if !self.enabled {
            return RoundTicket {
                rounds: None,
                wrote: true,
            };
        }
        let wanted = {
            let mut state = self.state.borrow_mut();
            if state.in_round == 0 {
                state.current += 1;
                state.in_round = 1;
                state.writing = 1;
                state.rounds += 1;
                state.members += 1;
                None
            } else if state.writing == state.in_round {
                // The round in flight is still writing and none of its members has reached
                // the sync barrier: join it (its syncs wait for this write too, which holds
                // them back by one write at most, since the round closes to newcomers as
                // soon as any member has written).
                state.in_round += 1;
                state.writing += 1;
                state.members += 1;
                None
            } else {
                state.next += 1;
                Some(state.current + 1)
            }
        };
        if let Some(round) = wanted {
            // Counted in `next` from here on: if this future is dropped before it is
            // admitted, the guard takes the place back; if dropped after its round began,
            // it leaves that round as a ticket would. Otherwise a cancelled entry would be
            // a member that never writes nor leaves, and every later round would wait on it.
            let mut waiting = Waiting {
                rounds: self,
                round,
                admitted: false,
            };
            poll_fn(|cx| {
                let mut state = self.state.borrow_mut();
                if state.current >= round {
                    return Poll::Ready(());
                }
                state.next_waiters.push(cx.waker().clone());
                Poll::Pending
            })
            .await;
            waiting.admitted = true;
        }
        RoundTicket {
            rounds: Some(self.clone()),
            wrote: false,
        }
    }

    /// Rounds started and their members so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.rounds, state.members)
    }

    fn finished_writing(state: &mut GateState) {
        state.writing -= 1;
        if state.writing == 0 {
            for waker in state.write_waiters.drain(..) {
                waker.wake();
            }
        }
    }
}

/// An `enter` waiting for the next round (see `enter`).
struct Waiting<'a> {
    rounds: &'a Rc<FlushRounds>,
    round: u64,
    admitted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        let began = {
            let mut state = self.rounds.state.borrow_mut();
            let began = state.current >= self.round;
            if !began {
                state.next -= 1;
                if state.next == 0 {
                    // Every waker left belongs to a dropped entry: let go of their tasks.
                    state.next_waiters.clear();
                }
            }
            began
        };
        if began {
            // A member of the round in flight: leave it unwritten, as a ticket does.
            drop(RoundTicket {
                rounds: Some(self.rounds.clone()),
                wrote: false,
            });
        }
    }
}

/// A partition's place in a flush round; leaving it (drop) may start the next round.
#[must_use = "the round lasts as long as its ticket"]
pub(crate) struct RoundTicket {
    rounds: Option<Rc<FlushRounds>>,
    wrote: bool,
}

impl RoundTicket {
    /// This member wrote what it had; waits until every member of the round has, so that
    /// the round's syncs go out together.
    pub async fn wrote(&mut self) {
        let Some(rounds) = &self.rounds else { return };
        if !self.wrote {
            self.wrote = true;
            FlushRounds::finished_writing(&mut rounds.state.borrow_mut());
        }
        poll_fn(|cx| {
            let mut state = rounds.state.borrow_mut();
            if state.writing == 0 {
                return Poll::Ready(());
            }
            state.write_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for RoundTicket {
    fn drop(&mut self) {
        let Some(rounds) = &self.rounds else { return };
        let mut state = rounds.state.borrow_mut();
        if !self.wrote {
            FlushRounds::finished_writing(&mut state);
        }
        state.in_round -= 1;
        if state.in_round == 0 && state.next > 0 {
            // Everyone who waited goes out together.
            state.current += 1;
            state.in_round = state.next;
            state.writing = state.next;
            state.rounds += 1;
            state.members += state.next as u64;
            state.next = 0;
            for waker in state.next_waiters.drain(..) {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::cell::Cell;

    fn on_executor(
        test: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    /// A partition alone goes at once, one due before any member wrote joins it; those due
    /// once the round wrote go together in the next, and no member of a round syncs before
    /// every member wrote.
    #[test]
    fn partitions_due_during_a_round_go_together_and_sync_after_all_wrote() {
        on_executor(|| {
            Box::pin(async {
                let rounds = Rc::new(FlushRounds::new(true));
                let log: Rc<RefCell<Vec<String>>> = Rc::default();
                let mut first = rounds.enter().await;
                assert_eq!(rounds.counts(), (1, 1));
                // A partition due before any member wrote joins the round in flight.
                let mut early = rounds.enter().await;
                assert_eq!(rounds.counts(), (1, 2));
                early.wrote().now_or_never();
                first.wrote().await;
                drop(early);
                let mut members = Vec::new();
                for name in ["a", "b", "c"] {
                    let rounds = rounds.clone();
                    let log = log.clone();
                    members.push(glommio::spawn_local(async move {
                        let mut ticket = rounds.enter().await;
                        log.borrow_mut().push(format!("{name} in"));
                        if name == "b" {
                            // b writes slowly: nobody may sync before it is done.
                            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        log.borrow_mut().push(format!("{name} wrote"));
                        ticket.wrote().await;
                        log.borrow_mut().push(format!("{name} syncs"));
                    }));
                }
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                assert!(log.borrow().is_empty(), "nobody enters while round 1 runs");
                drop(first);
                for member in members {
                    member.await;
                }
                assert_eq!(rounds.counts(), (2, 5), "the three went out in one round");
                let log = log.borrow();
                let last_write = log.iter().rposition(|l| l.ends_with("wrote")).unwrap();
                let first_sync = log.iter().position(|l| l.ends_with("syncs")).unwrap();
                assert!(last_write < first_sync, "{log:?}");
            })
        });
    }

    /// A member that leaves without writing (an error) does not hold the others at the
    /// write barrier, and a disabled gate never waits.
    #[test]
    fn a_member_leaving_early_frees_the_barrier_and_a_disabled_gate_never_waits() {
        on_executor(|| {
            Box::pin(async {
                let rounds = Rc::new(FlushRounds::new(true));
                let mut a = rounds.enter().await;
                let writer_done = Rc::new(Cell::new(false));
                let leaver = {
                    let rounds = rounds.clone();
                    glommio::spawn_local(async move {
                        let ticket = rounds.enter().await;
                        drop(ticket);
                    })
                };
                let writer = {
                    let rounds = rounds.clone();
                    let writer_done = writer_done.clone();
                    glommio::spawn_local(async move {
                        let mut ticket = rounds.enter().await;
                        ticket.wrote().await;
                        writer_done.set(true);
                    })
                };
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                a.wrote().await;
                drop(a);
                leaver.await;
                writer.await;
                assert!(writer_done.get());

                let open = Rc::new(FlushRounds::new(false));
                let mut one = open.enter().await;
                let mut two = open.enter().await;
                one.wrote().await;
                two.wrote().await;
                assert_eq!(open.counts(), (0, 0));
            })
        });
    }

    /// An entry dropped while it waits for the next round (before or after that round
    /// began) leaves no phantom member behind: the rounds after it still complete.
    #[test]
    fn an_entry_cancelled_while_waiting_does_not_stall_later_rounds() {
        on_executor(|| {
            Box::pin(async {
                for began_before_drop in [false, true] {
                    let rounds = Rc::new(FlushRounds::new(true));
                    let mut first = rounds.enter().await;
                    first.wrote().await;
                    // The round in flight wrote, so this entry waits for the next one.
                    let mut waiting = Box::pin(rounds.enter());
                    assert!(futures::poll!(waiting.as_mut()).is_pending());
                    if began_before_drop {
                        // Round 2 begins with the waiting entry as its only member.
                        drop(first);
                        assert_eq!(rounds.counts(), (2, 2));
                        drop(waiting);
                    } else {
                        drop(waiting);
                        assert!(
                            rounds.state.borrow().next_waiters.is_empty(),
                            "no waker kept for a cancelled entry"
                        );
                        drop(first);
                        assert_eq!(rounds.counts(), (1, 1), "no round for a cancelled entry");
                    }
                    // A later partition goes out, writes and leaves; then another does.
                    for _ in 0..2 {
                        let mut ticket = rounds
                            .enter()
                            .now_or_never()
                            .expect("no round in flight: the gate is open");
                        ticket
                            .wrote()
                            .now_or_never()
                            .expect("no other member holds the write barrier");
                    }
                }
            })
        });
    }
}

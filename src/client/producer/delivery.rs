//! Who learns each message's outcome: a `Delivery` waiting on a channel, or a callback
//! given to `Producer::send_with`.

use futures::channel::oneshot;

use super::RecordMetadata;
use crate::client::error::ClientError;

/// Who learns a message's outcome: a `Delivery` waiting on a channel, or a callback
/// (`Producer::send_with`), which costs no channel and no task per message. A callback that
/// is dropped unanswered (its producer went away) is called with `Disconnected`, so that no
/// message's outcome is lost without a word.
pub(super) enum Waiter {
    Channel(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    Callback(Callback),
}

pub(super) type OnDelivery = Box<dyn FnOnce(Result<RecordMetadata, ClientError>)>;

/// Who will learn a message's outcome once it is accepted. A callback is armed (given its
/// drop guard) only when its message joins a batch: a message refused, or a `send_with`
/// dropped before it was accepted, never calls it.
pub(super) enum Incoming {
    Channel(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    Callback(OnDelivery),
}

pub(super) struct Callback(pub(super) Option<OnDelivery>);

impl Waiter {
    pub(super) fn answer(self, outcome: Result<RecordMetadata, ClientError>) {
        match self {
            Waiter::Channel(sender) => {
                let _ = sender.send(outcome);
            }
            Waiter::Callback(mut callback) => {
                if let Some(callback) = callback.0.take() {
                    callback(outcome);
                }
            }
        }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            callback(Err(ClientError::Disconnected(
                "producer dropped the message".into(),
            )));
        }
    }
}

/// The outcome of one message, once the broker has acknowledged (or refused) it.
pub struct Delivery {
    pub(super) receiver: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Delivery {
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.receiver.await.unwrap_or_else(|_| {
            Err(ClientError::Disconnected(
                "producer dropped the message".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn a_callback_dropped_unanswered_is_told_the_message_was_dropped() {
        let told: Rc<RefCell<Vec<Result<RecordMetadata, ClientError>>>> = Rc::default();
        let answered = {
            let told = told.clone();
            Waiter::Callback(Callback(Some(Box::new(move |outcome| {
                told.borrow_mut().push(outcome)
            }))))
        };
        let dropped = {
            let told = told.clone();
            Waiter::Callback(Callback(Some(Box::new(move |outcome| {
                told.borrow_mut().push(outcome)
            }))))
        };
        let stored = RecordMetadata {
            partition: 3,
            offset: 7,
        };
        answered.answer(Ok(stored));
        drop(dropped);
        let told = told.borrow();
        assert_eq!(told.len(), 2, "each callback called exactly once");
        assert_eq!(told[0].as_ref().ok(), Some(&stored));
        assert!(
            matches!(&told[1], Err(ClientError::Disconnected(reason)) if reason.contains("dropped")),
            "{:?}",
            told[1]
        );
    }
}

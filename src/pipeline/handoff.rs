//! The reader → actor handoff of an account: a bounded channel whose receiving actor can *park*
//! (return from its handler with nothing to wait on) instead of waiting inside the handler on a
//! timer, and whose sender wakes it when it hands something over.
//!
//! An idle account then costs no wake-ups at all: before this, each one woke once a second for
//! its checkpoint timer even with nothing to checkpoint, about 10,000 wake-ups a second for a
//! fleet of 10,000 quiet accounts (issue 15). A parked actor's mailbox is also free at once for
//! `Status` and stop, which otherwise waited for the next tick.
//!
//! No wake-up is lost: the actor raises the `parked` flag and then looks at the channel again,
//! the sender sends and then takes the flag down; whichever of the two takes it down wakes the
//! actor, exactly once. A sender that goes (the reader ended or panicked) wakes it too, so it sees
//! the closed channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TryRecvError};

/// The flag and the wake-up both ends share.
struct Parked {
    flag: AtomicBool,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Parked {
    /// Wakes the receiver if it is parked (and takes the flag down, so only once).
    fn wake_if_parked(&self) {
        // Pairs with the fence in `Receiver::park`: either the receiver sees what was sent (or
        // that the channel closed), or this sees its flag.
        fence(Ordering::SeqCst);
        if self.flag.swap(false, Ordering::SeqCst) {
            (self.wake)();
        }
    }
}

/// A bounded channel of `capacity` whose receiver may park; `wake` is called (from the sending
/// task) when something is handed to a parked receiver, e.g. a `cast` of the actor's next step.
pub fn channel<T>(
    capacity: usize,
    wake: impl Fn() + Send + Sync + 'static,
) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let parked = Arc::new(Parked {
        flag: AtomicBool::new(false),
        wake: Box::new(wake),
    });
    (
        Sender {
            tx: Some(tx),
            parked: parked.clone(),
        },
        Receiver { rx, parked },
    )
}

/// The sending end: waits for room like a bounded channel, then wakes a parked receiver.
pub struct Sender<T> {
    /// `None` only while dropping: the channel closes before the receiver is woken.
    tx: Option<mpsc::Sender<T>>,
    parked: Arc<Parked>,
}

impl<T> Sender<T> {
    /// Sends `item` (waiting for room) and wakes the receiver if it parked; an error when the
    /// receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        match &self.tx {
            Some(tx) => tx.send(item).await?,
            None => return Err(SendError(item)),
        }
        self.parked.wake_if_parked();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Close first, so that the woken receiver finds the channel closed, not just empty.
        drop(self.tx.take());
        self.parked.wake_if_parked();
    }
}

/// The receiving end, read by the actor.
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    parked: Arc<Parked>,
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once the sender is gone and all is read.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// The next item if one is there, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Parks the receiver after `try_recv` found nothing: from now on the next send (or the
    /// sender going) calls `wake`. `false` when something arrived meanwhile and the caller must
    /// read again itself (then `wake` is not called for it).
    pub fn park(&self) -> bool {
        self.parked.flag.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let arrived = !self.rx.is_empty() || self.rx.is_closed();
        !(arrived && self.parked.flag.swap(false, Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn counted() -> (Arc<AtomicUsize>, impl Fn() + Send + Sync + 'static) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        (wakes, move || {
            w.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn a_send_to_a_parked_receiver_wakes_it_once() {
        let (wakes, wake) = counted();
        let (tx, mut rx) = channel::<u32>(4, wake);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        assert!(rx.park());
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv().ok(), Some(1));
        assert_eq!(rx.try_recv().ok(), Some(2));
    }

    #[tokio::test]
    async fn a_send_before_parking_makes_the_receiver_read_again_without_a_wake() {
        let (wakes, wake) = counted();
        let (tx, mut rx) = channel::<u32>(4, wake);
        tx.send(7).await.unwrap();
        assert!(!rx.park());
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
        assert_eq!(rx.try_recv().ok(), Some(7));
    }

    #[tokio::test]
    async fn a_receiver_that_did_not_park_is_not_woken() {
        let (wakes, wake) = counted();
        let (tx, mut rx) = channel::<u32>(4, wake);
        tx.send(1).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_sender_that_goes_wakes_a_parked_receiver_to_a_closed_channel() {
        let (wakes, wake) = counted();
        let (tx, mut rx) = channel::<u32>(4, wake);
        assert!(rx.park());
        drop(tx);
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    }

    #[tokio::test]
    async fn parking_after_the_sender_went_does_not_park() {
        let (wakes, wake) = counted();
        let (tx, rx) = channel::<u32>(4, wake);
        drop(tx);
        assert!(!rx.park());
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
    }
}

//! A target's bounded queue of copies, between the capture thread and the replay tasks.
//!
//! Unlike a tokio channel, putting a copy in wakes no one: the capture thread puts in
//! the copies of a whole read and then wakes the replay thread once (`wake`). A wake
//! from outside the runtime is a write to its eventfd and a switch to the replay thread;
//! with a channel there was one per copy that found a task waiting, several per read.
//! A task that takes a copy and sees more behind it wakes the next task itself, on its
//! own thread, which costs no system call.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

struct Shared<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    closed: AtomicBool,
    notify: Notify,
}

impl<T> Shared<T> {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The capture side. Dropping it closes the queue: the tasks take what is left and then
/// get `None`.
pub struct Sender<T>(Arc<Shared<T>>);

/// The replay side; clones share the queue.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// A queue of at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        capacity,
        closed: AtomicBool::new(false),
        notify: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Puts `item` at the back without waking anyone; gives it back when the queue is
    /// full. Call `wake` once the items of a batch are in.
    pub fn try_put(&self, item: T) -> Result<(), T> {
        let mut items = self.0.items();
        if items.len() >= self.0.capacity {
            return Err(item);
        }
        items.push_back(item);
        Ok(())
    }

    /// `try_put`, waiting (sleeping in 1 ms steps) while the queue is full: for replaying
    /// files, where every copy should go out. Wakes a task so that the queue drains.
    pub fn put_waiting(&self, mut item: T) {
        loop {
            match self.try_put(item) {
                Ok(()) => return,
                Err(back) => {
                    item = back;
                    self.wake();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Wakes one waiting task (or lets the next one to wait go on at once).
    pub fn wake(&self) {
        self.0.notify.notify_one();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and the queue is empty.
    pub async fn take(&self) -> Option<T> {
        let shared = &*self.0;
        loop {
            // Registered before looking, so that a wake between the look and the wait
            // is not lost.
            let mut notified = pin!(shared.notify.notified());
            notified.as_mut().enable();
            let (item, more) = {
                let mut items = shared.items();
                let item = items.pop_front();
                (item, !items.is_empty())
            };
            if let Some(item) = item {
                if more {
                    shared.notify.notify_one();
                }
                return Some(item);
            }
            if shared.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// Items in the queue.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.items().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn items_come_out_in_order_and_a_full_queue_gives_the_item_back() {
        let (tx, rx) = bounded(2);
        assert_eq!(tx.try_put(1), Ok(()));
        assert_eq!(tx.try_put(2), Ok(()));
        assert_eq!(tx.try_put(3), Err(3));
        assert_eq!(rx.len(), 2);
        runtime().block_on(async {
            assert_eq!(rx.take().await, Some(1));
            assert_eq!(tx.try_put(3), Ok(()));
            assert_eq!(rx.take().await, Some(2));
            assert_eq!(rx.take().await, Some(3));
        });
    }

    #[test]
    fn closing_lets_the_tasks_take_what_is_left_then_ends_them() {
        let (tx, rx) = bounded(4);
        tx.try_put("a").unwrap();
        drop(tx);
        runtime().block_on(async {
            assert_eq!(rx.take().await, Some("a"));
            assert_eq!(rx.take().await, None);
            assert_eq!(rx.take().await, None);
        });
    }

    #[test]
    fn one_wake_from_another_thread_lets_every_waiting_task_take_an_item() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let (tx, rx) = bounded(64);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        rt.block_on(async {
            // Four tasks wait on the empty queue.
            for _ in 0..4 {
                let rx = rx.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    while let Some(n) = rx.take().await {
                        done.send(n).unwrap();
                        // Hold on to the item for a while, as a replay does.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
            tokio::task::yield_now().await;
            let putter = std::thread::spawn(move || {
                for n in 0..4 {
                    tx.try_put(n).unwrap();
                }
                tx.wake();
                tx
            });
            // The wake is given before anyone runs again (the thread is joined), and
            // time is paused: however loaded the machine, within one task's hold time
            // all four items are taken only if the woken task passed the wake on.
            let tx = putter.join().unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut got: Vec<i32> = done_rx.try_iter().collect();
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 2, 3]);
            drop(tx);
        });
    }

    #[test]
    fn items_put_without_a_wake_wait_for_one() {
        let rt = runtime();
        let (tx, rx) = bounded(8);
        rt.block_on(async {
            let taker = tokio::spawn(async move { rx.take().await });
            tokio::task::yield_now().await;
            tx.try_put(7).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!taker.is_finished(), "taken before any wake");
            tx.wake();
            assert_eq!(taker.await.unwrap(), Some(7));
        });
    }

    #[test]
    fn put_waiting_waits_for_room() {
        let rt = runtime();
        let (tx, rx) = bounded(1);
        tx.try_put(0).unwrap();
        let putter = std::thread::spawn(move || {
            tx.put_waiting(1);
            tx
        });
        rt.block_on(async {
            assert_eq!(rx.take().await, Some(0));
            let tx = tokio::task::spawn_blocking(move || putter.join().unwrap())
                .await
                .unwrap();
            tx.wake();
            assert_eq!(rx.take().await, Some(1));
        });
    }
}

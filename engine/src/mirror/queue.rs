//! The per-core bounded queue between the client path and the mirror
//! writer. The client's task only ever `try_push`es (full: shed, counted)
//! and wakes the dispatcher; it never awaits anything here.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;

use super::tables::MirrorTables;
use crate::compare::Pair;
use crate::shared::{MirrorStats, ShedReason};

/// One copy waiting for the writer.
pub struct MirrorJob {
    pub state: Rc<MirrorTables>,
    pub route: usize,
    pub upstream: usize,
    pub stats: Arc<MirrorStats>,
    pub body: Vec<Bytes>,
    pub head_request: bool,
    pub compare_body: bool,
    /// Holds the copy's head and joins the two outcomes.
    pub pair: Rc<Pair>,
}

impl MirrorJob {
    /// The copy's head.
    #[inline]
    pub fn head(&self) -> &Bytes {
        &self.pair.head
    }
}

/// A single-waiter wake-up flag (same core only).
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    #[inline]
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The per-core queue and its dispatcher's wake-up.
pub struct MirrorQueue {
    pub queue: ArrayQueue<MirrorJob>,
    pub wake: Notify,
}

impl MirrorQueue {
    pub fn new(capacity: usize) -> Self {
        MirrorQueue {
            queue: ArrayQueue::new(capacity.max(1)),
            wake: Notify::default(),
        }
    }

    /// Enqueue without waiting; a full queue sheds the copy (counted).
    /// An accepted copy counts as in flight for its shadow until finished.
    #[inline]
    pub fn offer(&self, job: MirrorJob) {
        let state = job.state.clone();
        let upstream = job.upstream;
        if let Err(job) = self.queue.push(job) {
            job.stats.shed(ShedReason::QueueFull);
            return;
        }
        let inflight = &state.inflight[upstream];
        inflight.set(inflight.get() + 1);
        self.wake.notify();
    }
}

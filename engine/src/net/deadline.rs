//! Per-core deadlines for the request path, without a timer per request.
//!
//! A glommio timer per read costs an allocation, a clock read and a
//! `BTreeMap` insert and remove in the reactor, on every request. Here a
//! deadline is a slot in a per-core slab (a `Vec` index, reused), and one
//! sweeper task per core, which runs only while a deadline is armed, wakes
//! every [`TICK`] and fires the slots that are due. Deadlines therefore fire
//! up to one tick (plus glommio's timer lateness) after they are due; they
//! are timeouts of hundreds of milliseconds or more, where that is noise.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often armed deadlines are checked.
pub const TICK: Duration = Duration::from_millis(10);

struct Slot {
    at: Instant,
    waker: Option<Waker>,
    fired: bool,
}

/// One core's armed deadlines.
#[derive(Default)]
pub struct Deadlines {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    armed: Cell<usize>,
    /// No armed deadline is due before this (a scan is skipped until then;
    /// may be early after a disarm, never late).
    next_due: Cell<Option<Instant>>,
    /// The sweeper's waker while it is parked (nothing armed).
    sweeper: RefCell<Option<Waker>>,
}

impl Deadlines {
    /// A future that resolves at `at` (within a tick); dropping it disarms.
    pub fn at(self: &Rc<Self>, at: Instant) -> Expire {
        Expire {
            dl: self.clone(),
            at,
            slot: None,
        }
    }

    fn arm(&self, at: Instant, waker: Waker) -> usize {
        let slot = Slot {
            at,
            waker: Some(waker),
            fired: false,
        };
        let mut slots = self.slots.borrow_mut();
        let i = match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(slot);
                i
            }
            None => {
                slots.push(Some(slot));
                slots.len() - 1
            }
        };
        self.armed.set(self.armed.get() + 1);
        if self.next_due.get().is_none_or(|d| at < d) {
            self.next_due.set(Some(at));
        }
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
        i
    }

    fn disarm(&self, i: usize) {
        let mut slots = self.slots.borrow_mut();
        if slots.get_mut(i).and_then(Option::take).is_some() {
            self.free.borrow_mut().push(i);
            self.armed.set(self.armed.get() - 1);
        }
    }

    /// Fire every slot due at `now`; returns how many fired.
    fn sweep(&self, now: Instant) -> usize {
        if self.next_due.get().is_some_and(|d| now < d) {
            return 0; // idle keep-alive connections cost nothing per tick
        }
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut slots = self.slots.borrow_mut();
            for s in slots.iter_mut().flatten() {
                if s.fired {
                    continue;
                }
                if s.at <= now {
                    s.fired = true;
                    if let Some(w) = s.waker.take() {
                        due.push(w);
                    }
                } else if next.is_none_or(|d| s.at < d) {
                    next = Some(s.at);
                }
            }
        }
        self.next_due.set(next);
        let n = due.len();
        // Woken outside the borrow: a woken task may arm or disarm.
        due.into_iter().for_each(Waker::wake);
        n
    }

    /// The sweeper: run for the core's lifetime (spawned once per core, by `serve::run`).
    pub async fn run(self: Rc<Self>) {
        loop {
            if self.armed.get() == 0 {
                Park { dl: &self }.await;
                continue;
            }
            glommio::timer::sleep(TICK).await;
            self.sweep(Instant::now());
        }
    }
}

/// The sweeper's wait while nothing is armed; `arm` wakes it.
struct Park<'a> {
    dl: &'a Deadlines,
}

impl Future for Park<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.dl.armed.get() > 0 {
            self.dl.sweeper.borrow_mut().take();
            return Poll::Ready(());
        }
        *self.dl.sweeper.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A deadline: resolves once the sweeper found it due.
pub struct Expire {
    dl: Rc<Deadlines>,
    at: Instant,
    slot: Option<usize>,
}

impl Future for Expire {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.slot {
            None => {
                // Armed on first poll; the clock is read by the sweeper only.
                let i = self.dl.arm(self.at, cx.waker().clone());
                self.slot = Some(i);
                Poll::Pending
            }
            Some(i) => {
                let mut slots = self.dl.slots.borrow_mut();
                match slots.get_mut(i).and_then(Option::as_mut) {
                    Some(s) if s.fired => Poll::Ready(()),
                    Some(s) => {
                        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            s.waker = Some(cx.waker().clone());
                        }
                        Poll::Pending
                    }
                    // Unreachable while this future holds the slot; resolve
                    // rather than hang.
                    None => Poll::Ready(()),
                }
            }
        }
    }
}

impl Drop for Expire {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.dl.disarm(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<G, F>(make: G)
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(make)
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn fires_after_its_time_and_not_before() {
        run(|| async {
            let dl = Rc::new(Deadlines::default());
            glommio::spawn_local(dl.clone().run()).detach();
            let t0 = Instant::now();
            dl.at(t0 + Duration::from_millis(50)).await;
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(50), "fired early: {took:?}");
            assert!(
                took < Duration::from_secs(2),
                "fired far too late: {took:?}"
            );
            assert_eq!(dl.armed.get(), 0, "a fired deadline is disarmed on drop");
        });
    }

    #[test]
    fn a_dropped_deadline_never_fires_and_its_slot_is_reused() {
        run(|| async {
            let dl = Rc::new(Deadlines::default());
            glommio::spawn_local(dl.clone().run()).detach();
            let now = Instant::now();
            // Raced against a quicker future, the deadline is dropped unfired.
            let r = futures_lite::future::or(
                async {
                    dl.at(now + Duration::from_secs(3600)).await;
                    "deadline"
                },
                async {
                    dl.at(now + Duration::from_millis(20)).await;
                    "quick"
                },
            )
            .await;
            assert_eq!(r, "quick");
            assert_eq!(dl.armed.get(), 0);
            assert_eq!(dl.free.borrow().len(), 2);
            // The slots are reused, not grown.
            dl.at(Instant::now() + Duration::from_millis(5)).await;
            assert_eq!(dl.slots.borrow().len(), 2);
        });
    }

    #[test]
    fn an_earlier_deadline_armed_after_a_scan_still_fires_on_time() {
        run(|| async {
            let dl = Rc::new(Deadlines::default());
            glommio::spawn_local(dl.clone().run()).detach();
            let far = dl.at(Instant::now() + Duration::from_secs(3600));
            let far = std::pin::pin!(far);
            // Arm the far one and let the sweeper scan past it.
            futures_lite::future::or(far, async {
                glommio::timer::sleep(TICK * 5).await;
            })
            .await;
            let t0 = Instant::now();
            dl.at(t0 + Duration::from_millis(30)).await;
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(30), "early: {took:?}");
            assert!(took < Duration::from_secs(2), "late: {took:?}");
        });
    }
}

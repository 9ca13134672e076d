//! The mirror path: sampling decisions, the per-core bounded queue, and the
//! writer that sends copies to shadows and reads their answers to the end.
//!
//! Invariants:
//! - The client's task never awaits anything here: it `try_push`es a job
//!   (full queue: shed, counted) and wakes the dispatcher.
//! - A copy shares the request's head and body bytes by refcount; only the
//!   copy's own head (marker, edits, host suffix) is newly written.
//! - Writers run in a low-priority glommio task queue, bounded per shadow by
//!   `mirror.max_inflight` (over it: shed) and by `mirror.timeout_ms`.
//! - A shadow error is counted as `failed`; it never reaches the client.

use std::cell::{Cell, RefCell};
use std::hash::Hasher;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;

use crate::h1::{parse_response, Decoded};
use crate::shared::{MirrorStats, Mismatch, ShedReason};
use crate::worker::CoreState;

/// Largest response head read from a shadow.
const SHADOW_MAX_HEAD: usize = 64 * 1024;

/// What one side of a pair answered.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Status code; 0 when the shadow failed (no usable answer).
    pub status: u16,
    pub us: u64,
    pub digest: Option<u64>,
}

/// Joins a mirrored request's primary outcome with its shadow outcome;
/// whichever side finishes second records the comparison.
pub struct Pair {
    primary: Cell<Option<Outcome>>,
    shadow: Cell<Option<Outcome>>,
    stats: Arc<MirrorStats>,
    /// The copy's head, for the method and target of a mismatch record.
    head: Bytes,
}

impl Pair {
    pub fn new(stats: Arc<MirrorStats>, head: Bytes) -> Rc<Pair> {
        Rc::new(Pair {
            primary: Cell::new(None),
            shadow: Cell::new(None),
            stats,
            head,
        })
    }
    pub fn set_primary(&self, o: Outcome) {
        self.primary.set(Some(o));
        self.try_record();
    }
    pub fn set_shadow(&self, o: Outcome) {
        self.shadow.set(Some(o));
        self.try_record();
    }
    fn try_record(&self) {
        let (Some(p), Some(s)) = (self.primary.get(), self.shadow.get()) else {
            return;
        };
        let c = &self.stats.compare;
        c.pairs.inc();
        c.primary_codes.inc(p.status);
        c.shadow_codes.inc(s.status);
        c.primary_latency.record_us(p.us);
        c.shadow_latency.record_us(s.us);
        let status_differs = p.status != s.status;
        let mut body_differs = false;
        if let (Some(a), Some(b)) = (p.digest, s.digest) {
            c.body_compared.inc();
            if a != b {
                body_differs = true;
                c.body_mismatches.inc();
            }
        }
        if status_differs {
            c.status_mismatches.inc();
            c.count_pair(p.status, s.status);
        }
        if status_differs || body_differs {
            let line_end = self
                .head
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(self.head.len());
            let line = String::from_utf8_lossy(&self.head[..line_end]);
            let mut parts = line.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            c.push_recent(Mismatch {
                method,
                target,
                primary_status: p.status,
                shadow_status: s.status,
                primary_us: p.us,
                shadow_us: s.us,
                body_differs,
            });
        }
    }
}

/// One copy waiting for the writer.
pub struct MirrorJob {
    pub state: Rc<CoreState>,
    pub route: usize,
    pub upstream: usize,
    pub stats: Arc<MirrorStats>,
    pub head: Bytes,
    pub body: Vec<Bytes>,
    pub head_request: bool,
    pub compare_body: bool,
    pub pair: Option<Rc<Pair>>,
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
    #[inline]
    pub fn offer(&self, job: MirrorJob) {
        if let Err(job) = self.queue.push(job) {
            job.stats.shed(ShedReason::QueueFull);
            return;
        }
        self.wake.notify();
    }
}

/// Per-core per-shadow token bucket for `max_rps` (one-second burst).
pub struct RateLimiter {
    rate: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        RateLimiter {
            rate: rps as f64,
            tokens: Cell::new(rps as f64),
            last: Cell::new(Instant::now()),
        }
    }
    #[inline]
    pub fn allow(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        let t = (self.tokens.get() + elapsed * self.rate).min(self.rate);
        if t >= 1.0 {
            self.tokens.set(t - 1.0);
            true
        } else {
            self.tokens.set(t);
            false
        }
    }
}

/// Drain the queue forever, starting one writer task per copy within the
/// in-flight cap. Runs in the low-priority mirror task queue.
pub async fn run_dispatcher(q: Rc<MirrorQueue>, tq: glommio::TaskQueueHandle) {
    loop {
        while let Some(job) = q.queue.pop() {
            let st = job.state.clone();
            let inflight = &st.mirror_inflight[job.upstream];
            if inflight.get() >= st.gen.config.mirror.max_inflight {
                job.stats.shed(ShedReason::Inflight);
                continue;
            }
            inflight.set(inflight.get() + 1);
            let spawned = glommio::spawn_local_into(execute(job), tq);
            match spawned {
                Ok(t) => {
                    t.detach();
                }
                Err(_) => inflight.set(inflight.get() - 1),
            }
        }
        q.wake.wait().await;
    }
}

async fn execute(job: MirrorJob) {
    let st = job.state.clone();
    let timeout = st.gen.config.mirror.timeout;
    let start = Instant::now();
    let result = futures_lite::future::or(exchange(&job, start + timeout), async {
        glommio::timer::Timer::new(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "shadow timeout"))
    })
    .await;
    let inflight = &st.mirror_inflight[job.upstream];
    inflight.set(inflight.get().saturating_sub(1));
    let us = start.elapsed().as_micros() as u64;
    let status = result.as_ref().map_or(0, |(s, _)| *s);
    match result {
        Ok((status, digest)) => {
            job.stats.completed.inc();
            job.stats.duration.record_us(us);
            if let Some(p) = &job.pair {
                p.set_shadow(Outcome { status, us, digest });
            }
        }
        Err(_) => {
            job.stats.failed.inc();
            if let Some(p) = &job.pair {
                p.set_shadow(Outcome {
                    status: 0,
                    us,
                    digest: None,
                });
            }
        }
    }
    if let Some(log) = st.access_log.as_ref() {
        let route = &st.gen.config.routes[job.route].name;
        log.mirror_line(&job.head, status, us, route, &job.stats.upstream);
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "shadow timeout"))
    } else {
        Ok(left)
    }
}

/// Send one copy and read the shadow's answer to its end.
async fn exchange(job: &MirrorJob, deadline: Instant) -> io::Result<(u16, Option<u64>)> {
    let pool = &job.state.mirror_pools[job.upstream];
    let mut conn = match pool.take_idle() {
        Some(c) => c,
        None => pool.connect().await?,
    };
    conn.stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io::Error::from)?;
    let total: usize = job.body.iter().map(|b| b.len()).sum();
    if total <= 16 * 1024 {
        let mut out = BytesMut::with_capacity(job.head.len() + total);
        out.extend_from_slice(&job.head);
        for b in &job.body {
            out.extend_from_slice(b);
        }
        conn.write_all(&out).await?;
    } else {
        conn.write_all(&job.head).await?;
        for b in &job.body {
            conn.write_all(b).await?;
        }
    }
    let head = loop {
        match parse_response(&mut conn.buf, SHADOW_MAX_HEAD, job.head_request) {
            Ok(Some(h)) if h.is_informational() && h.status != 101 => continue,
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        conn.stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(io::Error::from)?;
        if conn.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shadow closed before answering",
            ));
        }
    };
    if head.status == 101 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected 101"));
    }
    let mut decoder = head.decoder();
    let mut hasher = job
        .compare_body
        .then(std::collections::hash_map::DefaultHasher::new);
    loop {
        match decoder
            .decode(&mut conn.buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            Decoded::Data(d) => {
                if let Some(h) = hasher.as_mut() {
                    h.write(&d);
                }
            }
            Decoded::Done => break,
            Decoded::NeedMore => {
                conn.stream
                    .set_read_timeout(Some(remaining(deadline)?))
                    .map_err(io::Error::from)?;
                if conn.fill().await? == 0 {
                    decoder
                        .on_eof()
                        .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))?;
                    break;
                }
            }
        }
    }
    if head.keep_alive && decoder.is_done() && !decoder.is_eof_delimited() {
        pool.put(conn);
    }
    Ok((head.status, hasher.map(|h| h.finish())))
}

//! The mirror writer: a dispatcher moves queued copies into per-shadow
//! lanes; lane writers send them on keep-alive shadow connections and read
//! each answer to its end. Runs in the low-priority mirror task queue and
//! never touches the client.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::hash::Hasher;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::queue::{MirrorJob, MirrorQueue, Notify};
use super::tables::MirrorTables;
use crate::compare::Outcome;
use crate::h1::{parse_response_reusing, Decoded};
use crate::net::UpConn;
use crate::shared::FailReason;

/// Largest response head read from a shadow.
const SHADOW_MAX_HEAD: usize = 64 * 1024;

/// Why a copy failed, with its cause.
#[derive(Debug)]
pub struct ShadowError {
    pub reason: FailReason,
    pub cause: io::Error,
}

impl ShadowError {
    fn new(reason: FailReason, cause: io::Error) -> Self {
        ShadowError { reason, cause }
    }
    /// An I/O error while talking to the shadow: a timeout or a closed connection.
    fn io(cause: io::Error) -> Self {
        let reason = if cause.kind() == io::ErrorKind::TimedOut {
            FailReason::Timeout
        } else {
            FailReason::Closed
        };
        ShadowError { reason, cause }
    }
    fn bad(why: impl std::fmt::Display) -> Self {
        ShadowError::new(
            FailReason::BadResponse,
            io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
        )
    }
    /// The same failure for the next copy of a batch.
    fn again(&self) -> Self {
        ShadowError::new(
            self.reason,
            io::Error::new(self.cause.kind(), self.cause.to_string()),
        )
    }
}

impl From<io::Error> for ShadowError {
    fn from(e: io::Error) -> Self {
        ShadowError::io(e)
    }
}

impl std::fmt::Display for ShadowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.cause)
    }
}

impl std::error::Error for ShadowError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Most copies written back-to-back on one shadow connection.
const MAX_BATCH: usize = 64;
/// Most writer tasks (so connections) per shadow per core when pipelining.
const MAX_WRITERS: usize = 16;
/// Pipelining depth adapts so that a copy waits at most about this long
/// behind the copies ahead of it on its connection: a slow shadow gets more
/// connections, not deeper pipelines, and its measured latency stays its own.
const BATCH_BUDGET_US: u64 = 1_000;
/// How often a parked writer checks whether it is still wanted.
const WRITER_IDLE_CHECK: Duration = Duration::from_secs(1);
/// Longest a writer holds a partial batch back for more copies (a glommio
/// timer: it may fire tens of ms late, which only delays copies, whose
/// measured latency starts when they are written).
const FILL_WAIT: Duration = Duration::from_millis(2);

/// One shadow's pending copies on one core, and its writers.
pub struct Lane {
    /// `mirror.pipeline_depth`: 1 writes each copy on a connection of its
    /// own at a time, as it is dispatched (the shadow sees the primary's
    /// concurrency; a copy's latency is its own); more pipelines batches.
    depth: usize,
    pending: RefCell<VecDeque<MirrorJob>>,
    writers: Cell<usize>,
    /// A writer with nothing to do waits here (at most one parks; others exit).
    idle: Notify,
    parked: Cell<bool>,
    /// A writer holding a partial batch back waits here until the lane has
    /// a full one (at most one waits; others take what there is).
    fill: Notify,
    filling: Cell<bool>,
    /// The shadow closed a connection after a response: stop pipelining.
    no_pipeline: Cell<bool>,
    /// Moving average of the shadow's time per answer (µs), from the gaps
    /// between consecutive answers of one pipelined batch (the first answer
    /// also carries the round trip, so it is not a sample).
    service_us: Cell<u64>,
}

impl Lane {
    pub fn new(depth: usize) -> Self {
        Lane {
            depth: depth.clamp(1, MAX_BATCH),
            pending: RefCell::default(),
            writers: Cell::default(),
            idle: Notify::default(),
            parked: Cell::default(),
            fill: Notify::default(),
            filling: Cell::default(),
            no_pipeline: Cell::default(),
            service_us: Cell::default(),
        }
    }

    /// Copies to pipeline on one connection now.
    fn batch_limit(&self) -> usize {
        if self.depth == 1 || self.no_pipeline.get() {
            return 1;
        }
        let per = self.service_us.get().max(1);
        ((BATCH_BUDGET_US / per) as usize).clamp(1, self.depth)
    }

    /// Writers (so connections) this lane may run at once: with one copy per
    /// connection, as many as copies may be in flight.
    fn max_writers(&self, max_inflight: usize) -> usize {
        if self.depth == 1 {
            max_inflight
        } else {
            MAX_WRITERS
        }
    }

    /// Whether `pending` copies need one more writer: unpipelined, any copy
    /// no writer has taken; pipelined, more than a batch.
    fn wants_writer(&self, pending: usize) -> bool {
        if self.depth == 1 {
            pending > 0
        } else {
            pending > self.batch_limit()
        }
    }

    /// Copies worth waiting for before a write (see `writer`): a full
    /// batch, but never so many that waiting for them fills the in-flight
    /// cap (they count against it while they wait).
    fn fill_target(&self, max_inflight: usize) -> usize {
        self.batch_limit().min(max_inflight / 2).max(1)
    }

    fn observe_service(&self, us: u64) {
        let old = self.service_us.get();
        self.service_us
            .set(if old == 0 { us } else { (old * 7 + us) / 8 });
    }

    /// A batch of one gives no gap to measure: let the estimate decay so
    /// that pipelining is tried (and measured) again.
    fn decay_service(&self) {
        self.service_us.set(self.service_us.get() * 15 / 16);
    }
}

/// Drain the queue forever, handing copies to per-shadow lanes (in flight
/// since `offer`; the cap was checked before the copy was built, in
/// `tap::choose`). Wakes the lane's parked writer, or starts one
/// more while the lane has more work than its writers take in a batch.
/// Runs in the low-priority mirror task queue.
pub async fn run_dispatcher(q: Rc<MirrorQueue>, tq: glommio::TaskQueueHandle) {
    loop {
        while let Some(job) = q.queue.pop() {
            let st = job.state.clone();
            let u = job.upstream;
            let lane = &st.lanes[u];
            let pending = {
                let mut p = lane.pending.borrow_mut();
                p.push_back(job);
                p.len()
            };
            if lane.parked.get() {
                lane.idle.notify();
            } else if lane.filling.get() {
                if pending >= lane.fill_target(st.gen.config.mirror.max_inflight) {
                    lane.fill.notify();
                }
            } else if lane.writers.get() == 0
                || (lane.wants_writer(pending)
                    && lane.writers.get() < lane.max_writers(st.gen.config.mirror.max_inflight))
            {
                lane.writers.set(lane.writers.get() + 1);
                match glommio::spawn_local_into(writer(st.clone(), u), tq) {
                    Ok(t) => {
                        t.detach();
                    }
                    Err(_) => lane.writers.set(lane.writers.get() - 1),
                }
            }
        }
        q.wake.wait().await;
    }
}

/// Buffers a writer keeps across batches.
#[derive(Default)]
struct WriterBufs {
    batch: Vec<MirrorJob>,
    out: BytesMut,
    fields: Vec<crate::h1::Field>,
}

/// A lane writer: takes batches of copies and pipelines each on one
/// keep-alive shadow connection. With nothing to do it parks on the lane
/// (if no other writer is parked) or exits.
async fn writer(st: Rc<MirrorTables>, u: usize) {
    let lane = &st.lanes[u];
    let mut bufs = WriterBufs::default();
    loop {
        // A pipelining lane with a partial batch waits a moment for a full
        // one: every write to the shadow costs a send, a wake-up of the
        // shadow and a receive of its answers, whatever its size.
        let pending = lane.pending.borrow().len();
        let fill = lane.fill_target(st.gen.config.mirror.max_inflight);
        if pending > 0 && pending < fill && !lane.filling.get() && !st.shared.is_draining() {
            lane.filling.set(true);
            futures_lite::future::or(lane.fill.wait(), glommio::timer::sleep(FILL_WAIT)).await;
            lane.filling.set(false);
        }
        {
            let mut p = lane.pending.borrow_mut();
            let n = lane.batch_limit();
            let n = n.min(p.len());
            bufs.batch.extend(p.drain(..n));
        }
        if bufs.batch.is_empty() {
            // Exit when another writer already waits, when draining, or when
            // a reload replaced this generation (its lanes get no new work).
            let stale = st.gen.id != st.shared.generation_id();
            if lane.parked.get() || st.shared.is_draining() || stale {
                break;
            }
            lane.parked.set(true);
            // Look again at least every second (coarse timer: fine, this only
            // bounds how long a replaced generation's writer lingers).
            futures_lite::future::or(lane.idle.wait(), glommio::timer::sleep(WRITER_IDLE_CHECK))
                .await;
            lane.parked.set(false);
            continue;
        }
        run_batch(&st, u, &mut bufs).await;
        bufs.batch.clear();
    }
    lane.writers.set(lane.writers.get() - 1);
}

fn finish(
    st: &MirrorTables,
    job: &MirrorJob,
    result: Result<(u16, Option<u64>), ShadowError>,
    us: u64,
) {
    let inflight = &st.inflight[job.upstream];
    inflight.set(inflight.get().saturating_sub(1));
    let status = result.as_ref().map_or(0, |(s, _)| *s);
    match result {
        Ok((status, digest)) => {
            job.stats.duration.record_us(us);
            job.stats.completed.inc();
            job.pair.set_shadow(Outcome { status, us, digest });
        }
        Err(e) => {
            job.stats.fail(e.reason);
            job.pair.set_shadow(Outcome {
                status: 0,
                us,
                digest: None,
            });
        }
    }
    if let Some(log) = st.access_log.as_ref() {
        let route = &st.gen.config.routes[job.route].name;
        log.mirror_line(job.head(), status, us, route, &job.stats.upstream);
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

/// Send a batch of copies back-to-back on one connection, then read the
/// answers in order, each to its end. Each answer gets `mirror.timeout_ms`
/// from the previous one (the first from the send), so a pipelined copy is
/// not failed for the time its predecessors took.
async fn run_batch(st: &Rc<MirrorTables>, u: usize, bufs: &mut WriterBufs) {
    let batch = &mut bufs.batch;
    let start = Instant::now();
    let timeout = st.gen.config.mirror.timeout;
    let mut deadline = start + timeout;
    let pool = &st.pools[u];
    let conn = match pool.take_idle(start) {
        Some(c) => Ok(c),
        None => {
            futures_lite::future::or(async { pool.connect().await.map_err(|e| e.cause) }, async {
                glommio::timer::Timer::new(st.gen.config.mirror.timeout).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "shadow connect timeout",
                ))
            })
            .await
        }
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let us = start.elapsed().as_micros() as u64;
            let e = ShadowError::new(FailReason::Connect, e);
            for job in batch.iter() {
                finish(st, job, Err(e.again()), us);
            }
            return;
        }
    };
    if let Err(e) = write_batch(&mut conn, batch, &mut bufs.out, deadline).await {
        let us = start.elapsed().as_micros() as u64;
        let e = ShadowError::io(e);
        for job in batch.iter() {
            finish(st, job, Err(e.again()), us);
        }
        return;
    }
    st.stats.mirror_batches.inc();
    let sent = Instant::now();
    deadline = sent + timeout;
    let mut reusable = true;
    let mut prev_done: Option<Instant> = None;
    if batch.len() == 1 {
        st.lanes[u].decay_service();
    }
    let mut jobs = batch.drain(..);
    let mut now = sent;
    while let Some(job) = jobs.next() {
        let mut waited = false;
        // The answer's deadline is a slot in the core's deadline sweeper, not
        // a reactor timer armed and cancelled per read.
        let r = futures_lite::future::or(
            read_answer(&mut conn, &job, &mut bufs.fields, &mut waited),
            async {
                st.deadlines.at(deadline).await;
                Err(ShadowError::new(
                    FailReason::Timeout,
                    io::Error::new(io::ErrorKind::TimedOut, "shadow timeout"),
                ))
            },
        )
        .await;
        // An answer found whole in what an earlier read brought arrived with
        // it: the clock is read only after a read.
        if waited || r.is_err() {
            now = Instant::now();
        }
        let us = now.saturating_duration_since(sent).as_micros() as u64;
        match r {
            Ok((status, digest, keep_alive)) => {
                if let Some(prev) = prev_done {
                    let gap = now.saturating_duration_since(prev).as_micros() as u64;
                    st.lanes[u].observe_service(gap);
                }
                prev_done = Some(now);
                finish(st, &job, Ok((status, digest)), us);
                deadline = now + timeout;
                if !keep_alive {
                    reusable = false;
                    // The shadow closes after this answer: the rest of the
                    // batch was not read by it. Send them again, one by one.
                    st.lanes[u].no_pipeline.set(true);
                    let rest: Vec<MirrorJob> = jobs.by_ref().collect();
                    if !rest.is_empty() {
                        let mut p = st.lanes[u].pending.borrow_mut();
                        for j in rest.into_iter().rev() {
                            p.push_front(j);
                        }
                    }
                    break;
                }
            }
            Err(e) => {
                for rest in jobs.by_ref() {
                    finish(st, &rest, Err(e.again()), us);
                }
                finish(st, &job, Err(e), us);
                reusable = false;
                break;
            }
        }
    }
    if reusable {
        pool.put(conn, now);
    }
}

async fn write_batch(
    conn: &mut UpConn,
    batch: &[MirrorJob],
    out: &mut BytesMut,
    deadline: Instant,
) -> io::Result<()> {
    conn.stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io::Error::from)?;
    out.clear();
    for job in batch {
        out.extend_from_slice(job.head());
        for b in &job.body {
            if b.len() >= 16 * 1024 {
                conn.write_all(out).await?;
                out.clear();
                conn.write_all(b).await?;
            } else {
                out.extend_from_slice(b);
            }
        }
        if out.len() >= 64 * 1024 {
            conn.write_all(out).await?;
            out.clear();
        }
    }
    if !out.is_empty() {
        conn.write_all(out).await?;
    }
    Ok(())
}

/// Read one shadow answer to its end: (status, body digest, keep-alive).
async fn read_answer(
    conn: &mut UpConn,
    job: &MirrorJob,
    fields: &mut Vec<crate::h1::Field>,
    waited: &mut bool,
) -> Result<(u16, Option<u64>, bool), ShadowError> {
    let head = loop {
        match parse_response_reusing(&mut conn.buf, SHADOW_MAX_HEAD, job.head_request, fields) {
            Ok(Some(h)) if h.is_informational() && h.status != 101 => {
                h.recycle(fields);
                continue;
            }
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => return Err(ShadowError::bad(e)),
        }
        *waited = true;
        if conn.fill().await? == 0 {
            return Err(ShadowError::new(
                FailReason::Closed,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "shadow closed before answering",
                ),
            ));
        }
    };
    if head.status == 101 {
        return Err(ShadowError::bad("unexpected 101"));
    }
    let mut decoder = head.decoder();
    let mut hasher = job
        .compare_body
        .then(std::collections::hash_map::DefaultHasher::new);
    loop {
        match decoder.decode(&mut conn.buf).map_err(ShadowError::bad)? {
            Decoded::Data(d) => {
                if let Some(h) = hasher.as_mut() {
                    h.write(&d);
                }
            }
            Decoded::Done => break,
            Decoded::NeedMore => {
                *waited = true;
                if conn.fill().await? == 0 {
                    decoder.on_eof().map_err(|e| {
                        ShadowError::new(
                            FailReason::Closed,
                            io::Error::new(io::ErrorKind::UnexpectedEof, e),
                        )
                    })?;
                    break;
                }
            }
        }
    }
    let keep_alive = head.keep_alive && !decoder.is_eof_delimited();
    let status = head.status;
    head.recycle(fields);
    Ok((status, hasher.map(|h| h.finish()), keep_alive))
}

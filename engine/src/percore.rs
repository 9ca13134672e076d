//! One core's toolbox: what every connection task on this executor reads
//! and nothing on another core touches. The config generation's per-core
//! tables ([`CoreState`]), picked up by comparing one relaxed-loaded number
//! per request; the connection table a drain walks; the wyrand RNG; spare
//! output buffers; the deadline sweeper; the mirror tap.
//!
//! Owns no policy: the accept loop (`serve`) and the exchange (`exchange`)
//! decide; this module only keeps their per-core state.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::accesslog::AccessLogger;
use crate::mirror::{MirrorTables, Tap};
use crate::net::{Deadlines, Pool, RxBuf};
use crate::shared::{CoreStats, Generation, Shared};

/// Per-core tables derived from one config generation.
pub struct CoreState {
    pub gen: Arc<Generation>,
    pub shared: Arc<Shared>,
    pub stats: Arc<CoreStats>,
    /// Primary pools, by upstream index.
    pub pools: Vec<Pool>,
    /// The mirror's tables for this generation (shared with queued copies).
    pub mirror: Rc<MirrorTables>,
    pub access_log: Option<Rc<AccessLogger>>,
}

impl CoreState {
    fn build(
        gen: Arc<Generation>,
        shared: Arc<Shared>,
        core: usize,
        access_log: Option<Rc<AccessLogger>>,
        deadlines: Rc<Deadlines>,
    ) -> Self {
        let pools = gen
            .config
            .upstreams
            .iter()
            .map(|u| {
                Pool::new(
                    u.endpoints.clone(),
                    u.max_idle_per_core,
                    u.connect_timeout,
                    u.request_timeout,
                )
            })
            .collect();
        let mirror = Rc::new(MirrorTables::build(
            gen.clone(),
            shared.clone(),
            core,
            access_log.clone(),
            deadlines,
        ));
        CoreState {
            stats: gen.stats[core].clone(),
            shared,
            gen,
            pools,
            mirror,
            access_log,
        }
    }
}

/// A registered client connection.
#[derive(Clone, Copy)]
struct ConnSlot {
    fd: RawFd,
    idle: bool,
}

/// The executor-local root object.
pub struct Core {
    pub core: usize,
    pub shared: Arc<Shared>,
    state: RefCell<Rc<CoreState>>,
    rng: Cell<u64>,
    /// Open client connections (their slots are held by [`ConnGuard`]s).
    active: Cell<usize>,
    /// Slot per open connection: its fd and whether it idles between
    /// requests (idle ones are closed at once on drain). A free list
    /// recycles slots; marking is an index store.
    conns: RefCell<Vec<ConnSlot>>,
    free_slots: RefCell<Vec<usize>>,
    pub access_log: Option<Rc<AccessLogger>>,
    /// Response output buffers, lent to one exchange at a time.
    spare_out: RefCell<Vec<BytesMut>>,
    /// Client connections' buffers, lent while a request is read or served.
    // Boxed: a connection holds its buffers as one pointer (its task stays
    // small while idle), and moves them in and out of this list as is.
    #[allow(clippy::vec_box)]
    spare_conn: RefCell<Vec<Box<ConnBufs>>>,
    /// Request-path timeouts (head, idle, primary response).
    pub deadlines: Rc<Deadlines>,
    /// The mirror's queue and copy-head buffer.
    pub tap: Tap,
    /// Heap blocks for connections' per-request state.
    pub request_blocks: Blocks,
    /// The error log's rate limit: when the last line was written, and how
    /// many were left out since.
    errors_at: Cell<Option<Instant>>,
    errors_left_out: Cell<u64>,
}

/// At most one error-log line per core per this interval (a dead primary
/// under load would otherwise write a line per request).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// A client connection's buffers while it has a request to read or answer:
/// the read buffer (heads and bodies are cut from it), the buffer engine
/// answers and upstream heads are written into, and the field list a head
/// parse reuses.
pub struct ConnBufs {
    pub rbuf: RxBuf,
    pub wbuf: BytesMut,
    pub fields: Vec<crate::h1::Field>,
}

/// Capacity of a connection's read buffer (and of its write buffer).
const CONN_BUF: usize = 8 * 1024;
/// Connection buffers grown beyond this (a large head, a burst of
/// pipelined requests) are not kept.
const MAX_KEPT_CONN: usize = 64 * 1024;
/// Spare connection buffers kept per core: about one per connection that
/// is busy at once, up to this many (4 MiB).
const MAX_SPARE_CONN: usize = 256;

/// Capacity of an exchange's output buffer.
const OUT_BUF: usize = 16 * 1024;
/// Larger buffers (grown by a big body) are not kept.
const MAX_KEPT_OUT: usize = 128 * 1024;
/// Spare output buffers kept per core (one per concurrent exchange, up to
/// this many: at most 8 MiB held per core after a burst of large bodies).
const MAX_SPARE_OUT: usize = 64;

impl Core {
    pub fn new(core: usize, shared: Arc<Shared>) -> Rc<Core> {
        let gen = shared.current();
        let access_log = AccessLogger::new(
            gen.config.log.access.clone(),
            gen.stats[core].access_log_dropped.clone(),
        );
        let queue_capacity = gen.config.mirror.queue_capacity;
        let deadlines: Rc<Deadlines> = Rc::default();
        let state = CoreState::build(
            gen,
            shared.clone(),
            core,
            access_log.clone(),
            deadlines.clone(),
        );
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (core as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ std::process::id() as u64
            ^ (&state as *const _ as u64);
        Rc::new(Core {
            core,
            shared,
            state: RefCell::new(Rc::new(state)),
            rng: Cell::new(seed | 1),
            active: Cell::new(0),
            conns: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            access_log,
            spare_out: RefCell::new(Vec::new()),
            spare_conn: RefCell::new(Vec::new()),
            deadlines,
            tap: Tap::new(queue_capacity),
            request_blocks: Blocks::default(),
            errors_at: Cell::new(None),
            errors_left_out: Cell::new(0),
        })
    }

    /// An output buffer for one exchange (from the spares when there is one).
    pub fn take_out_buf(&self) -> BytesMut {
        self.spare_out
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(OUT_BUF))
    }

    /// Give an exchange's output buffer back for the next one.
    pub fn put_out_buf(&self, mut b: BytesMut) {
        let mut spare = self.spare_out.borrow_mut();
        if spare.len() < MAX_SPARE_OUT && (OUT_BUF..=MAX_KEPT_OUT).contains(&b.capacity()) {
            b.clear();
            spare.push(b);
        }
    }

    /// Buffers for a connection whose request bytes arrived. Boxed, so
    /// that a connection's task holds one pointer for them.
    pub fn take_conn_bufs(&self) -> Box<ConnBufs> {
        self.spare_conn.borrow_mut().pop().unwrap_or_else(|| {
            Box::new(ConnBufs {
                rbuf: RxBuf::with_capacity(CONN_BUF),
                wbuf: BytesMut::with_capacity(CONN_BUF),
                fields: Vec::new(),
            })
        })
    }

    /// A connection going idle gives its (empty) buffers back.
    pub fn put_conn_bufs(&self, mut b: Box<ConnBufs>) {
        let mut spare = self.spare_conn.borrow_mut();
        if spare.len() < MAX_SPARE_CONN
            && b.rbuf.is_empty()
            && b.rbuf.capacity() <= MAX_KEPT_CONN
            && b.wbuf.capacity() <= MAX_KEPT_CONN
        {
            b.wbuf.clear();
            spare.push(b);
        }
    }

    /// Current per-core state, rebuilt when the generation changed.
    #[inline]
    pub fn state(&self) -> Rc<CoreState> {
        let id = self.shared.generation_id();
        let cur = self.state.borrow().clone();
        if cur.gen.id == id {
            return cur;
        }
        let gen = self.shared.current();
        let next = Rc::new(CoreState::build(
            gen,
            self.shared.clone(),
            self.core,
            self.access_log.clone(),
            self.deadlines.clone(),
        ));
        *self.state.borrow_mut() = next.clone();
        next
    }

    /// wyrand: fast, per-core, not cryptographic.
    #[inline]
    pub fn rand(&self) -> u64 {
        let s = self.rng.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.rng.set(s);
        let t = (s as u128).wrapping_mul((s ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Log an engine answer for a primary failure to stderr (nginx's error
    /// log): route, upstream, status, and why (the cause names the
    /// endpoint). At most one line per [`ERROR_LOG_EVERY`] per core; the
    /// next line says how many were left out.
    pub fn upstream_error(
        &self,
        route: &str,
        upstream: &str,
        status: u16,
        why: &dyn std::error::Error,
    ) {
        let now = Instant::now();
        if self
            .errors_at
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < ERROR_LOG_EVERY)
        {
            self.errors_left_out.set(self.errors_left_out.get() + 1);
            return;
        }
        self.errors_at.set(Some(now));
        let left_out = self.errors_left_out.replace(0);
        let more = if left_out > 0 {
            format!(" ({left_out} more since the last line)")
        } else {
            String::new()
        };
        eprintln!(
            "shadowtee: core {}: {status} on route {route:?}, upstream {upstream:?}: {why}{more}",
            self.core
        );
    }

    /// Open client connections on this core.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Register a connection: it counts as open (against
    /// `server.max_connections` and in `shadowtee_open_connections`) and a
    /// drain can find it, until the returned guard is dropped, however the
    /// connection's task ends (a return, an error, or a caught panic).
    pub fn register(self: &Rc<Self>, fd: RawFd) -> ConnGuard {
        let slot = ConnSlot { fd, idle: false };
        let index = {
            let mut conns = self.conns.borrow_mut();
            match self.free_slots.borrow_mut().pop() {
                Some(i) => {
                    conns[i] = slot;
                    i
                }
                None => {
                    conns.push(slot);
                    conns.len() - 1
                }
            }
        };
        self.active.set(self.active.get() + 1);
        let stats = self.state().stats.clone();
        stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnGuard {
            core: self.clone(),
            index,
            stats,
        }
    }

    /// Shut down every connection idle between requests (a drain); their
    /// tasks see EOF and end. Returns how many connections are still open.
    pub fn close_idle(&self) -> usize {
        for c in self
            .conns
            .borrow_mut()
            .iter_mut()
            .filter(|c| c.idle && c.fd >= 0)
        {
            // SAFETY: the fd belongs to a live connection task on this
            // executor (its guard clears the slot before the socket is
            // closed: the guard is dropped before the stream); shutdown only
            // wakes its pending read with EOF.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            c.idle = false;
        }
        self.active.get()
    }
}

/// A connection's registration on its core (see [`Core::register`]).
/// Dropping it frees the slot and the connection's count.
pub struct ConnGuard {
    core: Rc<Core>,
    index: usize,
    /// The stats table counted into at registration (a reload in between
    /// must not move the count to another table).
    stats: Arc<CoreStats>,
}

impl ConnGuard {
    /// Mark the connection idle (waiting for a next request: a drain may
    /// close it at once) or busy.
    #[inline]
    pub fn set_idle(&self, idle: bool) {
        self.core.conns.borrow_mut()[self.index].idle = idle;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.core.conns.borrow_mut()[self.index] = ConnSlot {
            fd: -1,
            idle: false,
        };
        self.core.free_slots.borrow_mut().push(self.index);
        self.core.active.set(self.core.active.get() - 1);
        self.stats
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Most spare blocks a [`Blocks`] keeps (one per request in flight on the
/// core, up to this many).
const MAX_SPARE_BLOCKS: usize = 256;

/// Reusable heap blocks for one future type: a connection's per-request
/// state lives on the heap (so an idle connection's task stays small)
/// without an allocation per request. [`Blocks::pin`] places a future in a
/// spare block (or a new one); the returned [`Pooled`] drops it in place and
/// gives the block back. A future of another layout than the first one seen
/// gets a block of its own, freed with it.
#[derive(Default)]
pub struct Blocks {
    layout: Cell<Option<std::alloc::Layout>>,
    free: RefCell<Vec<std::ptr::NonNull<u8>>>,
}

/// A future placed in a block of a [`Blocks`]; pinned there (never moved)
/// until it is dropped.
pub struct Pooled<'p, F> {
    ptr: std::ptr::NonNull<F>,
    /// Whether the block goes back to `blocks` (it has their layout).
    shared: bool,
    blocks: &'p Blocks,
}

impl Blocks {
    /// Place the future `make` returns in a block. Taking a maker rather
    /// than the future lets the future be built in the block (its return
    /// slot) instead of on the stack and then copied, all of its size, in.
    #[inline(always)]
    pub fn pin<F: std::future::Future>(&self, make: impl FnOnce() -> F) -> Pooled<'_, F> {
        let layout = std::alloc::Layout::new::<F>();
        if self.layout.get().is_none() {
            self.layout.set(Some(layout));
        }
        let shared = self.layout.get() == Some(layout) && layout.size() > 0;
        let block = if layout.size() == 0 {
            std::ptr::NonNull::<F>::dangling().cast::<u8>()
        } else if let Some(b) = shared.then(|| self.free.borrow_mut().pop()).flatten() {
            b
        } else {
            // SAFETY: `layout` has a non-zero size (checked above).
            let p = unsafe { std::alloc::alloc(layout) };
            std::ptr::NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        };
        let ptr = block.cast::<F>();
        // SAFETY: `block` is valid for writes of `F`'s layout (a spare block
        // of exactly that layout, a fresh allocation of it, or dangling for
        // a zero-sized `F`) and holds no live value.
        unsafe { ptr.as_ptr().write(make()) };
        Pooled {
            ptr,
            shared,
            blocks: self,
        }
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        if let Some(layout) = self.layout.get() {
            for b in self.free.get_mut().drain(..) {
                // SAFETY: every spare block was allocated with `layout` (only
                // blocks of that layout are given back) and holds no value.
                unsafe { std::alloc::dealloc(b.as_ptr(), layout) };
            }
        }
    }
}

impl<F: std::future::Future> std::future::Future for Pooled<'_, F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // SAFETY: the future lives in its block until `Pooled` is dropped and
        // is never moved out of it, so it stays pinned as `Box::pin` would.
        unsafe { std::pin::Pin::new_unchecked(self.ptr.as_mut()) }.poll(cx)
    }
}

impl<F> Drop for Pooled<'_, F> {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::new::<F>();
        // SAFETY: the block holds the live `F` written by `Blocks::pin`; it is
        // dropped exactly once, here, and not used after.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() == 0 {
            return;
        }
        let block = self.ptr.cast::<u8>();
        let mut free = self.blocks.free.borrow_mut();
        if self.shared && free.len() < MAX_SPARE_BLOCKS {
            free.push(block);
        } else {
            // SAFETY: the block was allocated with `layout` (shared blocks
            // have the pool's layout, which is `F`'s) and its value is dropped.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Blocks;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Blocks are reused, values are dropped once each, and a future of
    /// another layout gets a block of its own.
    #[test]
    fn blocks_are_reused_and_values_dropped() {
        struct Probe(Rc<Cell<u32>>, [u64; 8]);
        impl Drop for Probe {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(Cell::new(0));
        let blocks = Blocks::default();
        let mut seen = Vec::new();
        for i in 0..4 {
            let p = Probe(drops.clone(), [i; 8]);
            let f = blocks.pin(move || async move {
                let p = p;
                p.1[0]
            });
            seen.push(f.ptr.as_ptr() as usize);
            assert_eq!(futures_lite::future::block_on(f), i);
        }
        assert_eq!(drops.get(), 4);
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "one block reused: {seen:?}"
        );
        // Dropped unpolled: its value is still dropped.
        let p = Probe(drops.clone(), [9; 8]);
        drop(blocks.pin(move || async move {
            let p = p;
            p.1[0]
        }));
        assert_eq!(drops.get(), 5);
        // Another layout: works, and does not enter the pool.
        let big = [7u8; 4096];
        assert_eq!(
            futures_lite::future::block_on(blocks.pin(|| async move { big[4095] })),
            7
        );
        assert_eq!(blocks.free.borrow().len(), 1);
    }
}

//! One executor's world: its listener, its connections, its pools, its RNG,
//! its mirror queue and writer, its access log. Nothing here is shared with
//! another core; the config generation is picked up by comparing one
//! relaxed-loaded number per request.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, Shares};

use crate::accesslog::AccessLogger;
use crate::mirror::{run_dispatcher, MirrorQueue, Notify, RateLimiter};
use crate::shared::{CoreStats, Generation, Shared};
use crate::upstream::Pool;

/// Shares of the mirror task queue (the client queue has 1000): copies get
/// CPU only when the primary path leaves it.
const MIRROR_SHARES: usize = 50;

/// Per-core tables derived from one config generation.
pub struct CoreState {
    pub gen: Arc<Generation>,
    pub shared: Arc<Shared>,
    pub stats: Arc<CoreStats>,
    /// Primary pools, by upstream index.
    pub pools: Vec<Pool>,
    /// Shadow pools (separate from the primary's), by upstream index.
    pub mirror_pools: Vec<Pool>,
    /// Copies accepted by the writer and not finished, by upstream index.
    pub mirror_inflight: Vec<Cell<usize>>,
    /// Pipelined writer lanes, by upstream index.
    pub lanes: Vec<crate::mirror::Lane>,
    /// `[route][mirror]`: `max_rps` buckets.
    pub limiters: Vec<Vec<Option<RateLimiter>>>,
    pub access_log: Option<Rc<AccessLogger>>,
}

impl CoreState {
    fn build(
        gen: Arc<Generation>,
        shared: Arc<Shared>,
        core: usize,
        access_log: Option<Rc<AccessLogger>>,
    ) -> Self {
        let cfg = &gen.config;
        let pools = cfg
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
        let mirror_pools = cfg
            .upstreams
            .iter()
            .map(|u| {
                Pool::new(
                    u.endpoints.clone(),
                    u.max_idle_per_core.max(cfg.mirror.max_inflight.min(256)),
                    u.connect_timeout.min(cfg.mirror.timeout),
                    cfg.mirror.timeout,
                )
            })
            .collect();
        let limiters = cfg
            .routes
            .iter()
            .map(|r| {
                r.mirrors
                    .iter()
                    .map(|m| m.max_rps.map(RateLimiter::new))
                    .collect()
            })
            .collect();
        CoreState {
            stats: gen.stats[core].clone(),
            shared,
            mirror_inflight: cfg.upstreams.iter().map(|_| Cell::new(0)).collect(),
            lanes: cfg
                .upstreams
                .iter()
                .map(|_| crate::mirror::Lane::default())
                .collect(),
            gen,
            pools,
            mirror_pools,
            limiters,
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
pub struct Worker {
    pub core: usize,
    pub shared: Arc<Shared>,
    state: RefCell<Rc<CoreState>>,
    rng: Cell<u64>,
    pub active: Cell<usize>,
    pub mirror_q: Rc<MirrorQueue>,
    /// Connections idle between requests, closed at once on drain.
    /// Slot per open connection: its fd and whether it idles between
    /// requests. A free list recycles slots; marking is an index store.
    conns: RefCell<Vec<ConnSlot>>,
    free_slots: RefCell<Vec<usize>>,
    pub access_log: Option<Rc<AccessLogger>>,
    accept_stop: Notify,
    /// Response output buffers, lent to one exchange at a time.
    spare_out: RefCell<Vec<bytes::BytesMut>>,
    /// Where mirror copies' heads are written and cut from.
    pub mirror_heads: RefCell<bytes::BytesMut>,
    /// Request-path timeouts (head, idle, primary response).
    pub deadlines: Rc<crate::deadline::Deadlines>,
}

/// Capacity of an exchange's output buffer.
const OUT_BUF: usize = 16 * 1024;
/// Larger buffers (grown by a big body) are not kept.
const MAX_KEPT_OUT: usize = 128 * 1024;
/// Spare output buffers kept per core (one per concurrent exchange, up to
/// this many: at most 8 MiB held per core after a burst of large bodies).
const MAX_SPARE_OUT: usize = 64;

impl Worker {
    pub fn new(core: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let gen = shared.current();
        let access_log = AccessLogger::new(
            gen.config.log.access.clone(),
            gen.stats[core].access_log_dropped.clone(),
        );
        let queue_capacity = gen.config.mirror.queue_capacity;
        let state = CoreState::build(gen, shared.clone(), core, access_log.clone());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (core as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ std::process::id() as u64
            ^ (&state as *const _ as u64);
        Rc::new(Worker {
            core,
            shared,
            state: RefCell::new(Rc::new(state)),
            rng: Cell::new(seed | 1),
            active: Cell::new(0),
            mirror_q: Rc::new(MirrorQueue::new(queue_capacity)),
            conns: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            access_log,
            accept_stop: Notify::default(),
            spare_out: RefCell::new(Vec::new()),
            mirror_heads: RefCell::new(bytes::BytesMut::new()),
            deadlines: Rc::default(),
        })
    }

    /// An output buffer for one exchange (from the spares when there is one).
    pub fn take_out_buf(&self) -> bytes::BytesMut {
        self.spare_out
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| bytes::BytesMut::with_capacity(OUT_BUF))
    }

    /// Give an exchange's output buffer back for the next one.
    pub fn put_out_buf(&self, mut b: bytes::BytesMut) {
        let mut spare = self.spare_out.borrow_mut();
        if spare.len() < MAX_SPARE_OUT && (OUT_BUF..=MAX_KEPT_OUT).contains(&b.capacity()) {
            b.clear();
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

    /// Register a connection; returns its slot (release with `unregister`).
    pub fn register(&self, fd: RawFd) -> usize {
        let slot = ConnSlot { fd, idle: false };
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
    }
    pub fn unregister(&self, slot: usize) {
        self.conns.borrow_mut()[slot] = ConnSlot {
            fd: -1,
            idle: false,
        };
        self.free_slots.borrow_mut().push(slot);
    }
    #[inline]
    pub fn set_idle(&self, slot: usize, idle: bool) {
        self.conns.borrow_mut()[slot].idle = idle;
    }

    /// Serve until drained. `listener_fd` is this core's SO_REUSEPORT socket.
    pub async fn run(self: Rc<Self>, listener: TcpListener) {
        let mirror_tq = glommio::executor().create_task_queue(
            Shares::Static(MIRROR_SHARES),
            Latency::NotImportant,
            "mirror",
        );
        glommio::spawn_local_into(run_dispatcher(self.mirror_q.clone(), mirror_tq), mirror_tq)
            .map(|t| t.detach())
            .ok();
        if let Some(log) = self.access_log.clone() {
            glommio::spawn_local_into(log.run_flusher(), mirror_tq)
                .map(|t| t.detach())
                .ok();
        }
        glommio::spawn_local(self.deadlines.clone().run()).detach();
        let watcher = self.clone();
        let watch = self.shared.drain_watch();
        glommio::spawn_local(async move {
            watch_drain(&watcher.shared, watch).await;
            watcher.accept_stop.notify();
        })
        .detach();

        self.accept_loop(&listener).await;
        drop(listener);
        // Drain: close idle keep-alive connections, let in-flight ones finish.
        let deadline = Instant::now() + self.state().gen.config.server.drain_timeout;
        loop {
            for c in self
                .conns
                .borrow_mut()
                .iter_mut()
                .filter(|c| c.idle && c.fd >= 0)
            {
                // SAFETY: the fd belongs to a live connection task on this
                // executor (it unregisters before closing); shutdown only
                // wakes its pending read with EOF.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
                c.idle = false;
            }
            if self.active.get() == 0 || Instant::now() >= deadline {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        if let Some(log) = &self.access_log {
            log.flush().await;
        }
    }

    async fn accept_loop(self: &Rc<Self>, listener: &TcpListener) {
        let core = self.core;
        while let Some(stream) = accept_or_stop(
            listener,
            || self.accept_stop.wait(),
            |e| eprintln!("shadowtee: core {core}: accept failed: {e}"),
        )
        .await
        {
            self.spawn_conn(stream);
        }
    }

    fn spawn_conn(self: &Rc<Self>, stream: TcpStream) {
        let st = self.state();
        let max = st.gen.config.server.max_connections;
        let w = self.clone();
        if self.active.get() >= max {
            st.stats.unrouted.codes.inc(503);
            glommio::spawn_local(async move {
                crate::proxy::reject_overloaded(stream).await;
            })
            .detach();
            return;
        }
        self.active.set(self.active.get() + 1);
        st.stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        glommio::spawn_local(async move {
            // A panic is a bug; it must cost its own connection, not the
            // core's executor and every connection on it. The panic hook
            // has already written the message to stderr; the connection's
            // state is dropped during the unwind, which closes it.
            let conn = std::panic::AssertUnwindSafe(crate::proxy::serve_conn(w.clone(), stream));
            if futures_lite::FutureExt::catch_unwind(conn).await.is_err() {
                eprintln!(
                    "shadowtee: a connection task panicked (a bug); that connection was closed"
                );
            }
            w.active.set(w.active.get() - 1);
            w.state()
                .stats
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        })
        .detach();
    }
}

/// Back-off after a failed accept (EMFILE and friends), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The next accepted connection, or `None` once the future made by `stop`
/// resolves. A failed accept is reported to `on_error` and retried after
/// [`ACCEPT_BACKOFF`]. Shared by the engine's listeners and the test server's.
pub async fn accept_or_stop<S: std::future::Future<Output = ()>>(
    listener: &TcpListener,
    stop: impl Fn() -> S,
    on_error: impl Fn(&dyn std::fmt::Display),
) -> Option<TcpStream> {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop().await;
            None
        })
        .await;
        match accepted {
            None => return None,
            Some(Ok(s)) => return Some(s),
            Some(Err(e)) => {
                on_error(&e);
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Resolve once a drain has begun. Waits for EOF on the core's drain socket
/// (dropped by [`Shared::begin_drain`]), so an idle core sleeps; without
/// one (it could not be dup'ed), polls the flag every 25 ms.
async fn watch_drain(shared: &Shared, watch: std::io::Result<std::os::fd::OwnedFd>) {
    if let Ok(fd) = watch {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: `fd` is a freshly dup'ed, connected Unix stream socket
        // whose ownership moves into the glommio stream (it closes it).
        let mut sock = unsafe { glommio::net::UnixStream::from_raw_fd(fd.into_raw_fd()) };
        let mut byte = [0u8; 1];
        // Nothing is ever written: the read returns only at EOF (or on an
        // error, after which the flag is polled below).
        let _ = futures_lite::AsyncReadExt::read(&mut sock, &mut byte).await;
    }
    while !shared.is_draining() {
        glommio::timer::sleep(Duration::from_millis(25)).await;
    }
}

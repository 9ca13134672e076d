//! In-process HTTP/1.1 test upstream: the one origin used by `shadowtee demo`,
//! `loadtest serve`, the end-to-end tests and the benches.
//!
//! Owns: a listener per executor (SO_REUSEPORT, all on one port), one task per
//! connection, and a lock-free log of every fully received request
//! ([`RecordedRequest`]) readable from any thread.
//!
//! Speaks HTTP/1.1 through the engine's own sans-I/O codec (`shadowtee_h1`):
//! keep-alive, pipelining (answered in order), HTTP/1.0, `Connection: close`,
//! HEAD, 204/304, `Expect: 100-continue`, chunked bodies both ways and
//! WebSocket-style `Upgrade` (raw echo after `101`). Request bodies are
//! streamed through the decoder and never held whole: a 1 GiB upload costs a
//! read buffer plus the first [`RECORD_BODY_LIMIT`] bytes kept in the record.
//!
//! Invariants:
//! - a request is recorded (and counted) before the last byte of its answer is
//!   written, so a client that has read a response can rely on `count()`;
//! - `stop()` / `Drop` never hang: every connection task races a stop signal,
//!   and threads get a bounded join.
//!
//! A failure mode ([`Mode::Hung`], [`Mode::Garbage`], [`Mode::CloseMidBody`])
//! wins over the per-request path overrides (`/status/NNN`, `/delay/MS`,
//! `/size/N`, `/chunked`); every other mode yields to them.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};

use shadowtee_h1::chunked::{encode_chunk, LAST_CHUNK};
use shadowtee_h1::request::BodyFraming;
use shadowtee_h1::{
    list_items, parse_request, Decoded, Decoder, RequestHead, RequestLimits, Version,
};
use shadowtee_net::read_into;

/// Bytes of each request body kept in [`RecordedRequest::body`] (the length
/// and hash always cover the whole body).
pub const RECORD_BODY_LIMIT: usize = 1 << 20;
/// Echo buffers a Content-Length body up to this size and answers with
/// Content-Length; larger or chunked bodies are streamed back chunked.
const ECHO_BUFFER_LIMIT: u64 = 1 << 20;
/// Generated bodies are written in pieces of this size.
const PIECE: usize = 64 * 1024;
static XS: [u8; PIECE] = [b'x'; PIECE];
/// How often each executor checks the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// After answering with a close, how long unread request bytes are drained so
/// that the close is a FIN rather than a RST that could eat the response.
const CLOSE_LINGER: Duration = Duration::from_millis(200);
/// Registered io_uring buffer per executor: the memlock limit may be small.
const IO_MEMORY: usize = 64 << 10;
/// Bound on waiting for connection tasks, then for threads, when stopping.
const DRAIN_BUDGET: Duration = Duration::from_millis(500);
const JOIN_BUDGET: Duration = Duration::from_secs(2);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const GARBAGE: &[u8] = b"HTTP/1.1 ??? garbage\r\n\r\nxx";
/// What [`Mode::CloseMidBody`] announces and what it actually sends.
const MID_BODY_ANNOUNCED: usize = 1000;
const MID_BODY_SENT: usize = 10;

/// How the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200, body `hello from {name}\n` (or `body_size` bytes of `x`).
    Fast,
    /// That status, body `{name} {code}\n` (none for 1xx/204/304).
    Status(u16),
    /// Sleep, then answer like `Fast`.
    Delay(Duration),
    /// Read and record requests, never answer; close only when the peer does.
    Hung,
    /// Answer invalid bytes (`HTTP/1.1 ??? garbage`), then close.
    Garbage,
    /// Head announcing `Content-Length: 1000`, 10 body bytes, then close.
    CloseMidBody,
    /// 200 with the request body streamed back, plus `x-echo-method`,
    /// `x-echo-target` and (when the request had a Content-Length)
    /// `x-echo-body-len`. Chunked when the request was chunked or larger than
    /// 1 MiB (HTTP/1.1), else Content-Length.
    Echo,
    /// 200 with a chunked body: `hello `, `from `, name, `\n` as four chunks.
    Chunked,
    /// Nothing listens on `addr`: connects are refused.
    Refuse,
}

/// What to start. Fields are public; the builder methods are shorthands.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Sent as `x-upstream` on every response and used in generated bodies.
    pub name: String,
    pub mode: Mode,
    /// `Fast` (and `Delay`) bodies: this many bytes of `x` instead of the greeting.
    pub body_size: Option<usize>,
    /// Every Nth request (server-wide) answers 500.
    pub fail_every: Option<u32>,
    /// Extra delay before every answer, in any mode.
    pub delay: Option<Duration>,
    /// CPUs to pin one executor each to; empty: one unpinned executor.
    pub cores: Vec<usize>,
    pub listen: SocketAddr,
    /// Keep [`RecordedRequest`]s (default). `false` only counts, for benchmarks
    /// where an ever-growing log would skew memory.
    pub record: bool,
}

impl ServerConfig {
    /// Listen on 127.0.0.1:0 with one unpinned executor, recording requests.
    pub fn new(name: &str, mode: Mode) -> Self {
        ServerConfig {
            name: name.to_string(),
            mode,
            body_size: None,
            fail_every: None,
            delay: None,
            cores: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            record: true,
        }
    }
    pub fn body_size(mut self, n: usize) -> Self {
        self.body_size = Some(n);
        self
    }
    pub fn fail_every(mut self, n: u32) -> Self {
        self.fail_every = Some(n);
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
    pub fn cores(mut self, cores: Vec<usize>) -> Self {
        self.cores = cores;
        self
    }
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }
}

/// One fully received request, as the server saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// As forwarded in origin-form (absolute-form targets lose scheme and authority).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// As received, in order, original case.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The first [`RECORD_BODY_LIMIT`] bytes of the body.
    pub body: Vec<u8>,
    /// FNV-1a 64 of the whole body (see [`fnv1a64`]).
    pub body_hash: u64,
    /// When the request head was parsed.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// First value of the header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a 64 of `data`, the hash in [`RecordedRequest::body_hash`].
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv_update(FNV_OFFSET, data)
}

fn fnv_update(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Slots in the first segment of [`RecordLog`]; segment `k` holds `FIRST_SEG << k`.
const FIRST_SEG: usize = 64;
/// Enough segments for more records than memory could hold.
const SEGMENTS: usize = 40;

/// Append-only log written from any executor and read from any thread
/// without locks: a claimed index, then a set-once slot in a segment that is
/// itself allocated once, on first use.
struct RecordLog {
    next: AtomicUsize,
    done: AtomicUsize,
    segments: [OnceLock<Box<[OnceLock<RecordedRequest>]>>; SEGMENTS],
}

impl RecordLog {
    fn new() -> Self {
        RecordLog {
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            segments: [const { OnceLock::new() }; SEGMENTS],
        }
    }

    /// (segment, offset) of index `i`.
    fn locate(i: usize) -> (usize, usize) {
        let v = i / FIRST_SEG + 1;
        let seg = (usize::BITS - 1 - v.leading_zeros()) as usize;
        (seg, i - FIRST_SEG * ((1 << seg) - 1))
    }

    fn push(&self, rec: RecordedRequest) {
        let i = self.next.fetch_add(1, Ordering::AcqRel);
        let (seg, off) = Self::locate(i);
        if let Some(segment) = self.segments.get(seg) {
            let slots =
                segment.get_or_init(|| (0..FIRST_SEG << seg).map(|_| OnceLock::new()).collect());
            let _ = slots[off].set(rec);
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Count a request without keeping it.
    fn tick(&self) {
        self.done.fetch_add(1, Ordering::Release);
    }

    fn count(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }

    /// Every record stored so far, in claim order (a slot still being filled
    /// by another core is skipped).
    fn snapshot(&self) -> Vec<RecordedRequest> {
        let n = self.next.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (seg, off) = Self::locate(i);
            let rec = self
                .segments
                .get(seg)
                .and_then(OnceLock::get)
                .and_then(|s| s[off].get());
            if let Some(r) = rec {
                out.push(r.clone());
            }
        }
        out
    }
}

/// State shared by every executor of one server and the owning handle.
struct Shared {
    cfg: ServerConfig,
    log: RecordLog,
    /// Requests seen, server-wide; only touched when `fail_every` is set.
    served: AtomicU64,
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Requests whose delayed answer is being waited for now, and the most
    /// at once so far (how much concurrency a client put on this server).
    delaying: AtomicUsize,
    max_delaying: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn new(cfg: ServerConfig) -> Self {
        Shared {
            cfg,
            log: RecordLog::new(),
            served: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            delaying: AtomicUsize::new(0),
            max_delaying: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

/// A running test upstream. Stops on [`TestServer::stop`] or drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl TestServer {
    /// Bind (one SO_REUSEPORT listener per executor, all on one port), start
    /// the executor thread(s) and return once every listener is listening.
    pub fn spawn(cfg: ServerConfig) -> io::Result<TestServer> {
        if cfg.mode == Mode::Refuse {
            let probe = std::net::TcpListener::bind(cfg.listen)?;
            let addr = probe.local_addr()?;
            drop(probe);
            return Ok(TestServer {
                addr,
                shared: Arc::new(Shared::new(cfg)),
                threads: Vec::new(),
            });
        }
        let placements: Vec<Placement> = if cfg.cores.is_empty() {
            vec![Placement::Unbound]
        } else {
            cfg.cores.iter().map(|&c| Placement::Fixed(c)).collect()
        };
        let shared = Arc::new(Shared::new(cfg));
        let mut server = TestServer {
            addr: shared.cfg.listen,
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for (i, placement) in placements.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            // The first executor may bind port 0; the rest join its port.
            let bind_to = server.addr;
            let sh = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ts-{}-{i}", sh.cfg.name))
                .spawn(move || run_executor(placement, bind_to, sh, tx))?;
            server.threads.push(thread);
            match rx.recv() {
                Ok(Ok(addr)) => server.addr = addr,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(
                        "test server executor exited before listening",
                    ))
                }
            }
        }
        Ok(server)
    }

    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// Snapshot of every request recorded so far (fully received ones only).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.snapshot()
    }

    /// The most requests this server held at once while their (delayed)
    /// answers waited: the concurrency its clients put on it. Counts only
    /// answers with a delay (`Mode::Delay`, `/delay/MS`).
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_delaying.load(Ordering::Relaxed)
    }

    /// Fully received requests so far (counted even when `record` is off).
    pub fn count(&self) -> usize {
        self.shared.log.count()
    }

    /// Block until `count() >= n` or `timeout` passes; returns whether it got there.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Stop accepting, close every connection, join the threads.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let start = Instant::now();
        let deadline = start + JOIN_BUDGET;
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                // Detached; it exits on its own once its tasks see the flag.
                eprintln!(
                    "testserver {}: an executor did not stop within {JOIN_BUDGET:?}; detached",
                    self.addr
                );
            }
        }
        let took = start.elapsed();
        if took > Duration::from_millis(500) {
            eprintln!("testserver {}: stopping took {took:?}", self.addr);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run_executor(
    placement: Placement,
    bind_to: SocketAddr,
    shared: Arc<Shared>,
    ready: mpsc::Sender<io::Result<SocketAddr>>,
) {
    let ex = match LocalExecutorBuilder::new(placement)
        .io_memory(IO_MEMORY)
        .make()
    {
        Ok(ex) => ex,
        Err(e) => {
            let _ = ready.send(Err(io::Error::other(format!(
                "cannot start a glommio executor (io_uring unavailable or memlock too low?): {e}"
            ))));
            return;
        }
    };
    ex.run(async move {
        let listener = match TcpListener::bind(bind_to) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(io::Error::from(e)));
                return;
            }
        };
        match listener.local_addr() {
            Ok(addr) => {
                let _ = ready.send(Ok(addr));
            }
            Err(e) => {
                let _ = ready.send(Err(io::Error::from(e)));
                return;
            }
        }
        drop(ready);
        serve(listener, shared).await;
    });
}

/// Decrements the open-connection counts however the connection task ends.
struct ConnGuard {
    shared: Arc<Shared>,
    live: Rc<Cell<usize>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        self.live.set(self.live.get() - 1);
    }
}

/// Accept until stopped, then give connection tasks a bounded time to end.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Never signalled, only closed: closing wakes every waiter at once.
    let stop = Rc::new(Semaphore::new(0));
    let live = Rc::new(Cell::new(0usize));
    {
        let stop = stop.clone();
        let shared = shared.clone();
        glommio::spawn_local(async move {
            while !shared.stop.load(Ordering::Acquire) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            stop.close();
        })
        .detach();
    }
    while let Some(stream) = shadowtee_net::accept_or_stop(
        &listener,
        || async {
            let _ = stop.acquire(1).await;
        },
        |_| {},
    )
    .await
    {
        let _ = stream.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::AcqRel);
        shared.open.fetch_add(1, Ordering::AcqRel);
        live.set(live.get() + 1);
        let guard = ConnGuard {
            shared: shared.clone(),
            live: live.clone(),
        };
        let sh = shared.clone();
        let st = stop.clone();
        glommio::spawn_local(async move {
            let _guard = guard;
            futures_lite::future::or(
                async {
                    let _ = serve_conn(stream, &sh).await;
                },
                async {
                    let _ = st.acquire(1).await;
                },
            )
            .await;
        })
        .detach();
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_BUDGET;
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// What the connection does after one exchange.
enum Next {
    KeepAlive,
    /// Half-close, drain briefly, close.
    Close,
    /// The peer is gone or the stream is unusable: just drop it.
    Abort,
}

/// How reading a request body ended.
enum BodyEnd {
    Complete,
    Eof,
    Invalid,
}

async fn serve_conn(mut stream: TcpStream, sh: &Shared) -> io::Result<()> {
    let limits = RequestLimits::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Answers to pipelined requests, written together once no complete
    // request is left in `buf` (as hyper's `pipeline_flush` does).
    let mut pending = BytesMut::with_capacity(4 * 1024);
    loop {
        let head = loop {
            match parse_request(&mut buf, &limits) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    flush(&mut stream, &mut pending).await?;
                    if read_into(&mut stream, &mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                Err(kind) => {
                    if sh.cfg.mode == Mode::Hung {
                        drain_until_eof(&mut stream, &mut buf).await;
                        return Ok(());
                    }
                    flush(&mut stream, &mut pending).await?;
                    write_error(&mut stream, sh, kind.status(), kind.reason()).await?;
                    close_gracefully(&mut stream, &mut buf).await;
                    return Ok(());
                }
            }
        };
        match handle(&mut stream, &mut buf, &mut pending, head, sh).await? {
            Next::KeepAlive => {}
            Next::Close => {
                flush(&mut stream, &mut pending).await?;
                close_gracefully(&mut stream, &mut buf).await;
                return Ok(());
            }
            Next::Abort => return Ok(()),
        }
    }
}

/// Write out the answers held back for pipelining.
async fn flush(stream: &mut TcpStream, pending: &mut BytesMut) -> io::Result<()> {
    if !pending.is_empty() {
        stream.write_all(pending).await?;
        pending.clear();
    }
    Ok(())
}

/// Held-back answers beyond this are written at once.
const PENDING_LIMIT: usize = 32 * 1024;

/// A request being received: its record, filled as the body streams by.
struct Recording {
    rec: Option<RecordedRequest>,
}

impl Recording {
    fn start(head: &RequestHead, on: bool) -> Self {
        if !on {
            return Recording { rec: None };
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut target = text(head.target());
        if !target.starts_with('/') && target != "*" {
            target.insert(0, '/');
        }
        Recording {
            rec: Some(RecordedRequest {
                method: text(head.method()),
                target,
                version: match head.version {
                    Version::Http11 => "HTTP/1.1",
                    Version::Http10 => "HTTP/1.0",
                }
                .to_string(),
                headers: head
                    .fields
                    .iter()
                    .map(|f| (text(head.name(f)), text(head.value(f))))
                    .collect(),
                body_len: 0,
                body: Vec::new(),
                body_hash: FNV_OFFSET,
                received_at: Instant::now(),
            }),
        }
    }

    fn body(&mut self, data: &[u8]) {
        if let Some(r) = &mut self.rec {
            r.body_len += data.len() as u64;
            r.body_hash = fnv_update(r.body_hash, data);
            let room = RECORD_BODY_LIMIT.saturating_sub(r.body.len());
            r.body.extend_from_slice(&data[..room.min(data.len())]);
        }
    }

    fn finish(self, sh: &Shared) {
        match self.rec {
            Some(r) => sh.log.push(r),
            None => sh.log.tick(),
        }
    }
}

/// Read the whole request body through the codec, feeding the recording and
/// (when given) a sink.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &RequestHead,
    rec: &mut Recording,
    mut sink: Option<&mut Vec<u8>>,
) -> io::Result<BodyEnd> {
    let mut dec = match head.framing {
        BodyFraming::None => return Ok(BodyEnd::Complete),
        BodyFraming::Length(n) => Decoder::length(n),
        BodyFraming::Chunked => Decoder::chunked(),
    };
    loop {
        match dec.decode(buf) {
            Ok(Decoded::Data(d)) => {
                rec.body(&d);
                if let Some(s) = sink.as_deref_mut() {
                    s.extend_from_slice(&d);
                }
            }
            Ok(Decoded::NeedMore) => {
                if read_into(stream, buf).await? == 0 {
                    return Ok(BodyEnd::Eof);
                }
            }
            Ok(Decoded::Done) => return Ok(BodyEnd::Complete),
            Err(_) => return Ok(BodyEnd::Invalid),
        }
    }
}

/// What an answering mode sends.
enum Answer {
    Text {
        status: u16,
        body: String,
    },
    /// `n` bytes of `x` with Content-Length, written in [`PIECE`]s.
    Size(u64),
    /// A chunked body of these chunks (Content-Length for HTTP/1.0).
    Chunks(Vec<Vec<u8>>),
    Echo,
}

fn fast(cfg: &ServerConfig) -> Answer {
    match cfg.body_size {
        Some(n) => Answer::Size(n as u64),
        None => Answer::Text {
            status: 200,
            body: format!("hello from {}\n", cfg.name),
        },
    }
}

fn status_text(cfg: &ServerConfig, status: u16) -> Answer {
    Answer::Text {
        status,
        body: format!("{} {status}\n", cfg.name),
    }
}

fn chunks(cfg: &ServerConfig) -> Answer {
    Answer::Chunks(vec![
        b"hello ".to_vec(),
        b"from ".to_vec(),
        cfg.name.as_bytes().to_vec(),
        b"\n".to_vec(),
    ])
}

/// The number after `prefix` in `path`, if `path` is exactly `prefix` + digits.
fn path_number(path: &[u8], prefix: &[u8]) -> Option<u64> {
    let digits = path.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Decide the answer of an answering mode; path overrides first.
fn plan(head: &RequestHead, cfg: &ServerConfig, fail: bool, delay: &mut Duration) -> Answer {
    if fail {
        return status_text(cfg, 500);
    }
    let path = head.path();
    if let Some(code) = path_number(path, b"/status/").filter(|c| (200..=599).contains(c)) {
        return status_text(cfg, code as u16);
    }
    if let Some(ms) = path_number(path, b"/delay/") {
        *delay += Duration::from_millis(ms);
        return fast(cfg);
    }
    if let Some(n) = path_number(path, b"/size/") {
        return Answer::Size(n);
    }
    if path == b"/chunked" {
        return chunks(cfg);
    }
    match &cfg.mode {
        Mode::Status(code) => status_text(cfg, *code),
        Mode::Delay(d) => {
            *delay += *d;
            fast(cfg)
        }
        Mode::Echo => Answer::Echo,
        Mode::Chunked => chunks(cfg),
        Mode::Fast | Mode::Hung | Mode::Garbage | Mode::CloseMidBody | Mode::Refuse => fast(cfg),
    }
}

fn is_websocket(head: &RequestHead) -> bool {
    head.upgrade
        .map(|s| s.get(&head.raw))
        .is_some_and(|v| list_items(v).any(|p| p.eq_ignore_ascii_case(b"websocket")))
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        glommio::timer::sleep(d).await;
    }
}

/// Serve one request whose head was just parsed.
async fn handle(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    pending: &mut BytesMut,
    head: RequestHead,
    sh: &Shared,
) -> io::Result<Next> {
    let cfg = &sh.cfg;
    let mut rec = Recording::start(&head, cfg.record);
    let keep = head.keep_alive;
    let mut delay = cfg.delay.unwrap_or_default();

    if cfg.mode == Mode::Hung {
        return Ok(match read_body(stream, buf, &head, &mut rec, None).await? {
            BodyEnd::Complete => {
                rec.finish(sh);
                Next::KeepAlive
            }
            BodyEnd::Eof => Next::Abort,
            BodyEnd::Invalid => {
                drain_until_eof(stream, buf).await;
                Next::Abort
            }
        });
    }
    let websocket = cfg.mode != Mode::Garbage && is_websocket(&head);
    let fail = match cfg.fail_every {
        Some(k) if k > 0 && !websocket => {
            (sh.served.fetch_add(1, Ordering::AcqRel) + 1).checked_rem(u64::from(k)) == Some(0)
        }
        _ => false,
    };
    let answer = plan(&head, cfg, fail, &mut delay);
    let plain_mode = !matches!(cfg.mode, Mode::Garbage | Mode::CloseMidBody);
    if let Answer::Text { status, body } = &answer {
        if plain_mode && keep && !websocket && delay.is_zero() && !head.has_body() {
            // Held back while more pipelined requests are waiting in `buf`.
            rec.finish(sh);
            text_answer(pending, *status, body, &head, cfg, keep);
            if pending.len() >= PENDING_LIMIT {
                flush(stream, pending).await?;
            }
            return Ok(Next::KeepAlive);
        }
    }
    flush(stream, pending).await?;
    if head.expect_continue && head.has_body() {
        stream.write_all(CONTINUE).await?;
    }
    if matches!(answer, Answer::Echo) && cfg.mode == Mode::Echo && !websocket {
        return echo(stream, buf, &head, sh, rec, delay).await;
    }

    match read_body(stream, buf, &head, &mut rec, None).await? {
        BodyEnd::Complete => {}
        BodyEnd::Eof => return Ok(Next::Abort),
        BodyEnd::Invalid => {
            write_error(stream, sh, 400, "invalid chunked body").await?;
            return Ok(Next::Close);
        }
    }
    rec.finish(sh);
    if !delay.is_zero() {
        let now = sh.delaying.fetch_add(1, Ordering::Relaxed) + 1;
        sh.max_delaying.fetch_max(now, Ordering::Relaxed);
        pause(delay).await;
        sh.delaying.fetch_sub(1, Ordering::Relaxed);
    }

    match cfg.mode {
        Mode::Garbage => {
            stream.write_all(GARBAGE).await?;
            return Ok(Next::Close);
        }
        _ if websocket => {
            let mut out = String::from("HTTP/1.1 101 Switching Protocols\r\n");
            let _ = write!(
                out,
                "Connection: Upgrade\r\nUpgrade: websocket\r\nx-upstream: {}\r\n\r\n",
                cfg.name
            );
            stream.write_all(out.as_bytes()).await?;
            tunnel_echo(stream, buf).await?;
            return Ok(Next::Close);
        }
        Mode::CloseMidBody => {
            let mut out = String::from("HTTP/1.1 200 OK\r\n");
            let _ = write!(
                out,
                "Content-Length: {MID_BODY_ANNOUNCED}\r\nx-upstream: {}\r\n\r\n",
                cfg.name
            );
            if !head.is_head {
                out.push_str(&"x".repeat(MID_BODY_SENT));
            }
            stream.write_all(out.as_bytes()).await?;
            return Ok(Next::Close);
        }
        _ => {}
    }
    write_answer(stream, &head, cfg, answer, keep).await?;
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// Status line plus the headers every answer carries.
fn start_head(out: &mut BytesMut, status: u16, head: &RequestHead, cfg: &ServerConfig, keep: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nx-upstream: {}\r\n",
        shadowtee_h1::write::reason_phrase(status),
        cfg.name
    );
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// A short plain-text answer, appended to `out`.
fn text_answer(
    out: &mut BytesMut,
    status: u16,
    body: &str,
    head: &RequestHead,
    cfg: &ServerConfig,
    keep: bool,
) {
    start_head(out, status, head, cfg, keep);
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    if !bodiless {
        let _ = write!(
            out,
            "Content-Type: text/plain\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless && !head.is_head {
        out.extend_from_slice(body.as_bytes());
    }
}

async fn write_answer(
    stream: &mut TcpStream,
    head: &RequestHead,
    cfg: &ServerConfig,
    answer: Answer,
    keep: bool,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(256);
    match answer {
        Answer::Text { status, body } => {
            text_answer(&mut out, status, &body, head, cfg, keep);
            stream.write_all(&out).await
        }
        Answer::Size(n) => {
            start_head(&mut out, 200, head, cfg, keep);
            let _ = write!(out, "Content-Length: {n}\r\n\r\n");
            let mut left = if head.is_head { 0 } else { n };
            // The first piece rides with the head.
            let first = left.min(PIECE as u64) as usize;
            out.extend_from_slice(&XS[..first]);
            left -= first as u64;
            stream.write_all(&out).await?;
            while left > 0 {
                let piece = left.min(PIECE as u64) as usize;
                stream.write_all(&XS[..piece]).await?;
                left -= piece as u64;
            }
            Ok(())
        }
        Answer::Chunks(parts) => {
            start_head(&mut out, 200, head, cfg, keep);
            if head.version == Version::Http10 {
                let total: usize = parts.iter().map(Vec::len).sum();
                let _ = write!(out, "Content-Length: {total}\r\n\r\n");
                if !head.is_head {
                    parts.iter().for_each(|p| out.extend_from_slice(p));
                }
                return stream.write_all(&out).await;
            }
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(&out).await?;
            if head.is_head {
                return Ok(());
            }
            // One write per chunk, so they reach the wire as separate pieces.
            for p in &parts {
                out.clear();
                encode_chunk(&mut out, p);
                stream.write_all(&out).await?;
            }
            stream.write_all(LAST_CHUNK).await
        }
        Answer::Echo => {
            debug_assert!(false, "echo is answered by echo()");
            Ok(())
        }
    }
}

/// [`Mode::Echo`]: the request body back, buffered up to
/// [`ECHO_BUFFER_LIMIT`] with Content-Length, else streamed as it arrives.
async fn echo(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &RequestHead,
    sh: &Shared,
    mut rec: Recording,
    delay: Duration,
) -> io::Result<Next> {
    let cfg = &sh.cfg;
    let keep = head.keep_alive;
    let next = if keep { Next::KeepAlive } else { Next::Close };
    let mut out = BytesMut::with_capacity(512);
    start_head(&mut out, 200, head, cfg, keep);
    let _ = write!(
        out,
        "x-echo-method: {}\r\nx-echo-target: {}\r\n",
        String::from_utf8_lossy(head.method()),
        String::from_utf8_lossy(head.target())
    );
    let small = match head.framing {
        BodyFraming::None => Some(0),
        BodyFraming::Length(n) if n <= ECHO_BUFFER_LIMIT => Some(n),
        _ => None,
    };
    if let Some(n) = small {
        let mut body = Vec::with_capacity(n as usize);
        match read_body(stream, buf, head, &mut rec, Some(&mut body)).await? {
            BodyEnd::Complete => {}
            BodyEnd::Eof => return Ok(Next::Abort),
            BodyEnd::Invalid => {
                write_error(stream, sh, 400, "invalid body").await?;
                return Ok(Next::Close);
            }
        }
        rec.finish(sh);
        pause(delay).await;
        let _ = write!(out, "x-echo-body-len: {n}\r\nContent-Length: {n}\r\n\r\n");
        if !head.is_head {
            out.extend_from_slice(&body);
        }
        stream.write_all(&out).await?;
        return Ok(next);
    }

    // Streamed: the head goes out first, then each decoded piece as it comes.
    let (mut dec, chunked) = match head.framing {
        BodyFraming::Length(n) => {
            let _ = write!(out, "x-echo-body-len: {n}\r\n");
            (Decoder::length(n), head.version == Version::Http11)
        }
        _ => (Decoder::chunked(), true),
    };
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    } else if let Some(n) = head.content_length() {
        let _ = write!(out, "Content-Length: {n}\r\n\r\n");
    }
    pause(delay).await;
    stream.write_all(&out).await?;
    let mut rec = Some(rec);
    loop {
        match dec.decode(buf) {
            Ok(Decoded::Data(d)) => {
                if let Some(r) = rec.as_mut() {
                    r.body(&d);
                }
                if dec.is_done() {
                    // Recorded before the last byte of the answer is written.
                    if let Some(r) = rec.take() {
                        r.finish(sh);
                    }
                }
                if head.is_head {
                    continue;
                }
                if chunked {
                    out.clear();
                    encode_chunk(&mut out, &d);
                    stream.write_all(&out).await?;
                } else {
                    stream.write_all(&d).await?;
                }
            }
            Ok(Decoded::NeedMore) => {
                if read_into(stream, buf).await? == 0 {
                    return Ok(Next::Abort);
                }
            }
            Ok(Decoded::Done) => {
                if let Some(r) = rec.take() {
                    r.finish(sh);
                }
                if chunked && !head.is_head {
                    stream.write_all(LAST_CHUNK).await?;
                }
                return Ok(next);
            }
            // The answer has started: all that is left is to cut it short.
            Err(_) => return Ok(Next::Abort),
        }
    }
}

/// After a `101`: echo raw bytes (starting with any already buffered) until
/// the peer closes.
async fn tunnel_echo(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            stream.write_all(buf).await?;
            buf.clear();
        }
        if read_into(stream, buf).await? == 0 {
            return Ok(());
        }
    }
}

/// An error answer with a short plain-text reason, always closing.
async fn write_error(
    stream: &mut TcpStream,
    sh: &Shared,
    status: u16,
    why: &str,
) -> io::Result<()> {
    let mut out = String::new();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nx-upstream: {}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{why}\n",
        shadowtee_h1::write::reason_phrase(status),
        sh.cfg.name,
        why.len() + 1
    );
    stream.write_all(out.as_bytes()).await
}

/// Half-close, then discard what the peer still sends for a short while so
/// the kernel closes with FIN rather than RST (which could eat the answer).
async fn close_gracefully(stream: &mut TcpStream, buf: &mut BytesMut) {
    let _ = stream.shutdown(Shutdown::Write).await;
    futures_lite::future::or(
        async {
            loop {
                buf.clear();
                match read_into(stream, buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        },
        glommio::timer::sleep(CLOSE_LINGER),
    )
    .await;
}

/// Discard input until the peer closes (or the server stops).
async fn drain_until_eof(stream: &mut TcpStream, buf: &mut BytesMut) {
    loop {
        buf.clear();
        match read_into(stream, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream as StdStream;

    use super::*;
    use shadowtee_h1::parse_response;

    const READ_TIMEOUT: Duration = Duration::from_secs(3);

    fn start(mode: Mode) -> TestServer {
        TestServer::spawn(ServerConfig::new("t", mode)).expect("test server starts")
    }

    fn connect(s: &TestServer) -> StdStream {
        let c = StdStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        c
    }

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn fill(c: &mut StdStream, buf: &mut BytesMut) -> usize {
        let mut tmp = [0u8; 16 * 1024];
        let n = c.read(&mut tmp).unwrap();
        buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Read one response (interim ones included) with the engine's codec.
    fn read_resp(c: &mut StdStream, buf: &mut BytesMut, head_req: bool) -> Resp {
        let head = loop {
            if let Some(h) = parse_response(buf, 64 * 1024, head_req).unwrap() {
                break h;
            }
            assert!(fill(c, buf) > 0, "EOF before a response head");
        };
        let headers = head
            .fields
            .iter()
            .map(|f| {
                let t = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (t(head.name(f)), t(head.value(f)))
            })
            .collect();
        let mut body = Vec::new();
        let mut dec = head.decoder();
        if !head.is_informational() {
            loop {
                match dec.decode(buf).unwrap() {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::Done => break,
                    Decoded::NeedMore => {
                        if fill(c, buf) == 0 {
                            dec.on_eof().unwrap();
                            break;
                        }
                    }
                }
            }
        }
        Resp {
            status: head.status,
            headers,
            body,
        }
    }

    fn roundtrip(s: &TestServer, req: &[u8]) -> Resp {
        let mut c = connect(s);
        c.write_all(req).unwrap();
        read_resp(&mut c, &mut BytesMut::new(), req.starts_with(b"HEAD"))
    }

    fn read_to_eof(c: &mut StdStream) -> Vec<u8> {
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn fast_keeps_alive_and_records() {
        let s = start(Mode::Fast);
        let mut c = connect(&s);
        let mut buf = BytesMut::new();
        for _ in 0..2 {
            c.write_all(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-Case: V\r\n\r\n")
                .unwrap();
            let r = read_resp(&mut c, &mut buf, false);
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"hello from t\n");
            assert_eq!(r.header("x-upstream"), Some("t"));
        }
        assert_eq!(s.count(), 2);
        assert_eq!(s.connections(), 1);
        let reqs = s.requests();
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(reqs[0].target, "/x?y=1");
        assert_eq!(reqs[0].version, "HTTP/1.1");
        assert_eq!(reqs[0].headers[1], ("X-Case".to_string(), "V".to_string()));
        assert_eq!(reqs[1].header("x-case"), Some("V"));
        assert_eq!(reqs[1].body_hash, fnv1a64(b""));
        drop(c);
        assert!((0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            s.open_connections() == 0
        }));
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let s = start(Mode::Fast);
        let mut c = connect(&s);
        c.write_all(
            b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /size/70000 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
        let mut buf = BytesMut::new();
        let a = read_resp(&mut c, &mut buf, false);
        assert_eq!((a.status, a.body.as_slice()), (201, &b"t 201\n"[..]));
        let b = read_resp(&mut c, &mut buf, false);
        assert_eq!(b.header("transfer-encoding"), Some("chunked"));
        assert_eq!(b.body, b"hello from t\n");
        let d = read_resp(&mut c, &mut buf, false);
        assert_eq!(d.body.len(), 70000);
        assert!(d.body.iter().all(|&x| x == b'x'));
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn expect_continue_then_echo() {
        let s = start(Mode::Echo);
        let mut c = connect(&s);
        let mut buf = BytesMut::new();
        c.write_all(
            b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        let interim = read_resp(&mut c, &mut buf, false);
        assert_eq!(interim.status, 100);
        c.write_all(b"hello").unwrap();
        let r = read_resp(&mut c, &mut buf, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("x-echo-method"), Some("PUT"));
        assert_eq!(r.header("x-echo-target"), Some("/e"));
        assert_eq!(r.header("x-echo-body-len"), Some("5"));
        assert_eq!(r.header("content-length"), Some("5"));
        let rec = &s.requests()[0];
        assert_eq!((rec.body_len, rec.body.as_slice()), (5, &b"hello"[..]));
        assert_eq!(rec.body_hash, fnv1a64(b"hello"));
    }

    #[test]
    fn chunked_request_is_echoed_chunked() {
        let s = start(Mode::Echo);
        let r = roundtrip(
            &s,
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        );
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("x-echo-body-len"), None);
        assert_eq!(r.body, b"abcdefg");
        let rec = &s.requests()[0];
        assert_eq!(rec.body_len, 7);
        assert_eq!(rec.body_hash, fnv1a64(b"abcdefg"));
    }

    #[test]
    fn large_body_is_streamed_back() {
        let s = start(Mode::Echo);
        let len = 3 * 1024 * 1024 + 7;
        let mut c = connect(&s);
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(
                format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let piece = vec![b'z'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(piece.len());
                w.write_all(&piece[..n]).unwrap();
                left -= n;
            }
        });
        let r = read_resp(&mut c, &mut BytesMut::new(), false);
        writer.join().unwrap();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.body.len(), len);
        let rec = &s.requests()[0];
        assert_eq!(rec.body_len, len as u64);
        assert_eq!(rec.body.len(), RECORD_BODY_LIMIT);
        assert_eq!(rec.body_hash, fnv1a64(&r.body));
    }

    #[test]
    fn upgrade_echoes_raw_bytes() {
        let s = start(Mode::Fast);
        let mut c = connect(&s);
        c.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly")
            .unwrap();
        let mut buf = BytesMut::new();
        let r = read_resp(&mut c, &mut buf, false);
        assert_eq!(r.status, 101);
        assert_eq!(r.header("upgrade"), Some("websocket"));
        while buf.len() < 5 {
            fill(&mut c, &mut buf);
        }
        c.write_all(b"ping").unwrap();
        while buf.len() < 9 {
            fill(&mut c, &mut buf);
        }
        assert_eq!(&buf[..], b"earlyping");
        c.shutdown(Shutdown::Write).unwrap();
        assert!(read_to_eof(&mut c).is_empty());
    }

    #[test]
    fn head_has_length_but_no_body() {
        let s = start(Mode::Fast);
        let mut c = connect(&s);
        c.write_all(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
        c.write_all(GET).unwrap();
        let mut buf = BytesMut::new();
        let h = read_resp(&mut c, &mut buf, true);
        assert_eq!(h.header("content-length"), Some("13"));
        assert!(h.body.is_empty());
        let n = read_resp(&mut c, &mut buf, false);
        assert_eq!((n.status, n.header("content-length")), (204, None));
        let g = read_resp(&mut c, &mut buf, false);
        assert_eq!(g.body, b"hello from t\n");
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let s = start(Mode::Chunked);
        let mut c = connect(&s);
        c.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let mut buf = BytesMut::new();
        let r = read_resp(&mut c, &mut buf, false);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.header("content-length"), Some("13"));
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let r = read_resp(&mut c, &mut buf, false);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(read_to_eof(&mut c).is_empty());
    }

    #[test]
    fn status_mode_and_fail_every() {
        let s = start(Mode::Status(503));
        let r = roundtrip(&s, GET);
        assert_eq!((r.status, r.body.as_slice()), (503, &b"t 503\n"[..]));
        let s = TestServer::spawn(ServerConfig::new("f", Mode::Fast).fail_every(2)).unwrap();
        let codes: Vec<u16> = (0..4).map(|_| roundtrip(&s, GET).status).collect();
        assert_eq!(codes, [200, 500, 200, 500]);
    }

    #[test]
    fn hung_records_but_never_answers() {
        let s = start(Mode::Hung);
        let mut c = connect(&s);
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        c.write_all(GET).unwrap();
        let mut b = [0u8; 1];
        let e = c.read(&mut b).unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut
        ));
        assert!(s.wait_for(1, READ_TIMEOUT));
        assert_eq!(s.open_connections(), 1);
    }

    #[test]
    fn delays_add_up() {
        let s = TestServer::spawn(
            ServerConfig::new("d", Mode::Delay(Duration::from_millis(20)))
                .delay(Duration::from_millis(10)),
        )
        .unwrap();
        let started = Instant::now();
        let r = roundtrip(&s, b"GET /delay/20 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.body, b"hello from d\n");
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn refuse_refuses() {
        let s = start(Mode::Refuse);
        let e = StdStream::connect(s.addr).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    }

    #[test]
    fn close_mid_body_and_garbage() {
        let s = start(Mode::CloseMidBody);
        let mut c = connect(&s);
        c.write_all(GET).unwrap();
        let all = read_to_eof(&mut c);
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nxxxxxxxxxx"), "{text}");
        assert_eq!(s.count(), 1);

        let s = start(Mode::Garbage);
        let mut c = connect(&s);
        c.write_all(GET).unwrap();
        assert_eq!(read_to_eof(&mut c), GARBAGE);
    }

    #[test]
    fn malformed_request_gets_400_and_close() {
        let s = start(Mode::Fast);
        let mut c = connect(&s);
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n")
            .unwrap();
        let r = read_resp(&mut c, &mut BytesMut::new(), false);
        assert_eq!(r.status, 400);
        assert!(read_to_eof(&mut c).is_empty());
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn stop_closes_connections_and_several_cores_share_a_port() {
        let cores = if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            vec![0, 1]
        } else {
            Vec::new()
        };
        let s = TestServer::spawn(ServerConfig::new("m", Mode::Fast).cores(cores)).unwrap();
        let answered = (0..4).filter(|_| roundtrip(&s, GET).status == 200).count();
        assert_eq!(answered, 4);
        let mut idle = connect(&s);
        let started = Instant::now();
        s.stop();
        assert!(started.elapsed() < JOIN_BUDGET);
        assert!(read_to_eof(&mut idle).is_empty());
    }

    #[test]
    fn record_log_segments_cover_every_index() {
        assert_eq!(RecordLog::locate(0), (0, 0));
        assert_eq!(RecordLog::locate(63), (0, 63));
        assert_eq!(RecordLog::locate(64), (1, 0));
        assert_eq!(RecordLog::locate(191), (1, 127));
        assert_eq!(RecordLog::locate(192), (2, 0));
        let log = RecordLog::new();
        let rec = RecordedRequest {
            method: "GET".into(),
            target: "/".into(),
            version: "HTTP/1.1".into(),
            headers: Vec::new(),
            body_len: 0,
            body: Vec::new(),
            body_hash: fnv1a64(b""),
            received_at: Instant::now(),
        };
        for _ in 0..300 {
            log.push(rec.clone());
        }
        assert_eq!((log.count(), log.snapshot().len()), (300, 300));
    }
}

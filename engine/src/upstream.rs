//! Per-core upstream connection pools (primary and, separately, each
//! shadow): round-robin over endpoints, keep-alive reuse up to
//! `max_idle_per_core`, connect timeout. A connection goes back to the pool
//! only after its request was fully sent and its response fully read and
//! well framed (the caller decides; see `proxy`).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Read buffer size per upstream connection.
pub const UPSTREAM_BUF: usize = 16 * 1024;
/// A pooled connection idle longer than this is probed (non-blocking peek)
/// before reuse, since the upstream may have closed it.
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// A read buffer whose spare capacity is kept initialised, so reads go
/// straight into it without zero-filling on every call (`read_into` pays a
/// memset per read; this pays one per allocation).
pub struct RxBuf {
    bytes: BytesMut,
    /// End address of the allocation region known to be initialised.
    init_end: usize,
}

impl RxBuf {
    pub fn with_capacity(n: usize) -> Self {
        let mut bytes = BytesMut::zeroed(n);
        bytes.clear();
        let init_end = spare_end(&bytes);
        RxBuf { bytes, init_end }
    }

    /// Read more bytes from `stream`; `Ok(0)` on EOF.
    /// Cancel-safe: dropping the future mid-read leaves the buffer as it was.
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        const MIN_FREE: usize = 4096;
        let len = self.bytes.len();
        if self.bytes.capacity() - len < MIN_FREE {
            self.bytes.reserve(UPSTREAM_BUF.max(len));
        }
        let end = spare_end(&self.bytes);
        if end != self.init_end {
            // A new allocation: initialise its spare capacity once.
            let cap = self.bytes.capacity();
            self.bytes.resize(cap, 0);
            self.bytes.truncate(len);
            self.init_end = end;
        }
        let room = (self.bytes.capacity() - len).min(64 * 1024);
        // SAFETY: bytes [len, capacity) of this allocation were written (zeroed
        // above when the allocation was first seen, or by earlier reads) and
        // BytesMut never de-initialises memory; a reallocation moves the
        // allocation's end, which the check above detects.
        unsafe { self.bytes.set_len(len + room) };
        let mut guard = Truncate {
            buf: &mut self.bytes,
            keep: len,
        };
        let r = stream.read(&mut guard.buf[len..]).await;
        guard.keep = len + *r.as_ref().unwrap_or(&0);
        r
    }
}

fn spare_end(b: &BytesMut) -> usize {
    b.as_ptr() as usize + b.capacity()
}

impl std::ops::Deref for RxBuf {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.bytes
    }
}

impl std::ops::DerefMut for RxBuf {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.bytes
    }
}

/// One upstream connection with its read buffer.
pub struct UpConn {
    pub stream: TcpStream,
    pub buf: RxBuf,
    /// Taken from the pool (a stale keep-alive connection is possible).
    pub reused: bool,
    idle_since: Instant,
}

impl UpConn {
    /// Read more bytes into `buf`; `Ok(0)` on EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.buf.read_from(&mut self.stream).await
    }
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }
}

/// Truncates a buffer back to `keep` bytes when dropped: makes a read that
/// lengthened the buffer before awaiting cancel-safe.
struct Truncate<'a> {
    buf: &'a mut BytesMut,
    keep: usize,
}

impl Drop for Truncate<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.keep);
    }
}

/// Read into the spare capacity of `buf` (grown to at least 4 KiB free).
/// Zero-fills what it reads into; hot paths use [`RxBuf`]. Cancel-safe.
pub async fn read_into<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    const MIN_FREE: usize = 4096;
    if buf.capacity() - buf.len() < MIN_FREE {
        buf.reserve(UPSTREAM_BUF.max(buf.len()));
    }
    let len = buf.len();
    let room = (buf.capacity() - len).min(64 * 1024);
    buf.resize(len + room, 0);
    let mut guard = Truncate { buf, keep: len };
    let r = stream.read(&mut guard.buf[len..]).await;
    guard.keep = len + *r.as_ref().unwrap_or(&0);
    r
}

/// A pool for one upstream on one core.
pub struct Pool {
    endpoints: Vec<SocketAddr>,
    next: Cell<usize>,
    idle: RefCell<Vec<UpConn>>,
    max_idle: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Pool {
    pub fn new(
        endpoints: Vec<SocketAddr>,
        max_idle: usize,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Pool {
            endpoints,
            next: Cell::new(0),
            idle: RefCell::new(Vec::new()),
            max_idle,
            connect_timeout,
            request_timeout,
        }
    }

    /// A pooled connection if one is alive, else a new one. `now` is the
    /// caller's clock reading (one per exchange, not one per call).
    pub async fn get(&self, now: Instant) -> io::Result<UpConn> {
        if let Some(c) = self.take_idle(now) {
            return Ok(c);
        }
        self.connect().await
    }

    /// A pooled connection that still looks alive (probed when idle longer
    /// than `PROBE_AFTER` at `now`).
    pub fn take_idle(&self, now: Instant) -> Option<UpConn> {
        loop {
            let mut c = self.idle.borrow_mut().pop()?;
            if now.saturating_duration_since(c.idle_since) >= PROBE_AFTER && !alive(&c.stream) {
                continue;
            }
            c.reused = true;
            return Some(c);
        }
    }

    /// A fresh connection to the next endpoint (round-robin).
    pub async fn connect(&self) -> io::Result<UpConn> {
        if self.endpoints.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no endpoints"));
        }
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        let addr = self.endpoints[i % self.endpoints.len()];
        let stream = TcpStream::connect_timeout(addr, self.connect_timeout)
            .await
            .map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        Ok(UpConn {
            stream,
            buf: RxBuf::with_capacity(UPSTREAM_BUF),
            reused: false,
            idle_since: Instant::now(),
        })
    }

    /// Return a connection whose exchange completed cleanly at `now`.
    pub fn put(&self, mut c: UpConn, now: Instant) {
        if !c.buf.is_empty() {
            return; // unsolicited bytes: the framing is off, discard
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle {
            c.idle_since = now;
            idle.push(c);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// Non-blocking probe: false when the peer closed or sent unsolicited data.
fn alive(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a valid 1-byte stack buffer on an fd we own.
    let r = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

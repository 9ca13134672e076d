//! Per-core upstream connection pools (primary and, separately, each
//! shadow): round-robin over endpoints, keep-alive reuse up to
//! `max_idle_per_core`, connect timeout. A connection goes back to the pool
//! only after its request was fully sent and its response fully read and
//! well framed (the caller decides: `exchange::settle` for the primary, the
//! mirror writer for shadows).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::RxBuf;

/// Read buffer size per upstream connection.
pub const UPSTREAM_BUF: usize = 16 * 1024;
/// Spare read buffers kept per pool (about one per exchange in flight on it).
const MAX_SPARE_BUFS: usize = 64;
/// Read buffers grown beyond this (a large head) are not kept.
const MAX_KEPT_BUF: usize = 64 * 1024;
/// A pooled connection idle longer than this is probed (non-blocking peek)
/// before reuse, since the upstream may have closed it.
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// Connecting to an upstream failed.
#[derive(Debug)]
pub struct ConnectError {
    /// The endpoint tried (none when the upstream has no endpoints).
    pub endpoint: Option<SocketAddr>,
    pub cause: io::Error,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.endpoint {
            Some(a) => write!(f, "connect to {a}: {}", self.cause),
            None => write!(f, "connect: {}", self.cause),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// One upstream connection with its read buffer.
pub struct UpConn {
    pub stream: TcpStream,
    /// The endpoint it is connected to.
    pub endpoint: SocketAddr,
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

/// A pool for one upstream on one core.
pub struct Pool {
    endpoints: Vec<SocketAddr>,
    next: Cell<usize>,
    idle: RefCell<Vec<UpConn>>,
    /// Read buffers of pooled connections: an idle pooled connection holds
    /// none; one taken from the pool gets one back.
    spare_bufs: RefCell<Vec<RxBuf>>,
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
            spare_bufs: RefCell::new(Vec::new()),
            max_idle,
            connect_timeout,
            request_timeout,
        }
    }

    /// A pooled connection if one is alive, else a new one. `now` is the
    /// caller's clock reading (one per exchange, not one per call).
    pub async fn get(&self, now: Instant) -> Result<UpConn, ConnectError> {
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
            c.buf = self
                .spare_bufs
                .borrow_mut()
                .pop()
                .unwrap_or_else(|| RxBuf::with_capacity(UPSTREAM_BUF));
            return Some(c);
        }
    }

    /// A fresh connection to the next endpoint (round-robin).
    pub async fn connect(&self) -> Result<UpConn, ConnectError> {
        if self.endpoints.is_empty() {
            return Err(ConnectError {
                endpoint: None,
                cause: io::Error::new(io::ErrorKind::NotFound, "no endpoints"),
            });
        }
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        let addr = self.endpoints[i % self.endpoints.len()];
        let failed = |e: glommio::GlommioError<()>| ConnectError {
            endpoint: Some(addr),
            cause: io::Error::from(e),
        };
        let stream = TcpStream::connect_timeout(addr, self.connect_timeout)
            .await
            .map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        Ok(UpConn {
            stream,
            endpoint: addr,
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
            let buf = std::mem::replace(&mut c.buf, RxBuf::empty());
            let mut spare = self.spare_bufs.borrow_mut();
            if spare.len() < MAX_SPARE_BUFS && buf.capacity() <= MAX_KEPT_BUF {
                spare.push(buf);
            }
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

//! Small network helpers shared by the engine, the test origin and
//! `loadtest`: a cancel-safe read buffer ([`RxBuf`], [`read_into`]), an
//! accept loop that stops on a signal ([`accept_or_stop`]), and the blocking
//! admin client ([`get`]). Nothing here knows HTTP beyond that client.

use std::io;
use std::net::TcpStream as StdStream;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt};
use glommio::net::{TcpListener, TcpStream};

/// Read buffer growth step: a buffer with less than 4 KiB free grows by at
/// least this much.
pub const READ_CHUNK: usize = 16 * 1024;

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

    /// A buffer with no allocation (one is made by the first read).
    pub fn empty() -> Self {
        RxBuf {
            bytes: BytesMut::new(),
            init_end: 0,
        }
    }

    /// Read more bytes from `stream`; `Ok(0)` on EOF.
    /// Cancel-safe: dropping the future mid-read leaves the buffer as it was.
    #[inline]
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        const MIN_FREE: usize = 4096;
        let len = self.bytes.len();
        if self.bytes.capacity() - len < MIN_FREE {
            self.bytes.reserve(READ_CHUNK.max(len));
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
        buf.reserve(READ_CHUNK.max(buf.len()));
    }
    let len = buf.len();
    let room = (buf.capacity() - len).min(64 * 1024);
    buf.resize(len + room, 0);
    let mut guard = Truncate { buf, keep: len };
    let r = stream.read(&mut guard.buf[len..]).await;
    guard.keep = len + *r.as_ref().unwrap_or(&0);
    r
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

/// A blocking `GET path` for the admin API's own clients (`shadowtee
/// compare`, the demo, `loadtest`): returns the status and the body.
pub fn get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    use std::net::ToSocketAddrs;
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let mut s = StdStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    std::io::Write::write_fmt(
        &mut s,
        format_args!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    Ok((status, body.to_string()))
}

//! The client connection driver: read a request head, route it, stream the
//! body to the chosen primary while gathering the mirror copy by refcount,
//! hand copies to the mirror queue without waiting, stream the primary's
//! response back, and loop for keep-alive / pipelined requests (answered in
//! order: one exchange at a time, following bytes stay in the read buffer).
//!
//! Must never: await anything of the mirror path; forward a request the
//! engine rejected; reuse an upstream connection whose exchange did not
//! complete cleanly; panic on network input.

use std::cell::{Cell, RefCell};
use std::hash::Hasher;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::deadline::Deadlines;
use crate::error::Kind;
use crate::h1::chunked::{encode_chunk, LAST_CHUNK};
use crate::h1::request::BodyFraming;
use crate::h1::write::{
    client_framing, write_error_response, write_request_head, write_response_head, ClientFraming,
    OutFraming, RequestEdits,
};
use crate::h1::{
    parse_request_reusing, parse_response, Decoded, Decoder, RequestHead, RequestLimits, Version,
};
use crate::mirror::{MirrorJob, Outcome, Pair};
use crate::shared::{PrimaryStats, ShedReason, PPM};
use crate::upstream::{read_into, RxBuf, UpConn};
use crate::worker::{CoreState, Worker};

/// Flush buffered output once it reaches this size.
const FLUSH_AT: usize = 64 * 1024;
/// Largest upstream response head accepted (larger: 502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most mirrors one route can have that are tracked per request.
const MAX_MIRRORS: usize = 32;
/// Size of the allocations the copies' heads are cut from.
const MIRROR_ARENA: usize = 16 * 1024;
/// Room left for the copy's edits beyond the client's head (more only costs a
/// reallocation).
const MIRROR_HEAD_SLACK: usize = 256;

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
}

/// Answer 503 to a connection over `server.max_connections` and close it.
pub async fn reject_overloaded(mut stream: TcpStream) {
    let mut out = BytesMut::with_capacity(128);
    write_error_response(&mut out, 503, Kind::Overloaded.reason(), true);
    let _ = stream.write_all(&out).await;
}

/// Serve one client connection until it closes, errs, idles out or drains.
pub async fn serve_conn(w: Rc<Worker>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    // Formatted once per connection for X-Forwarded-For.
    let peer_ip_text = client.peer_addr().ok().map(|a| a.ip().to_string());
    let peer_ip = peer_ip_text.as_deref();
    let slot = w.register(client.as_raw_fd());
    serve_requests(&w, &mut client, slot, peer_ip).await;
    w.unregister(slot);
}

async fn serve_requests(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    slot: usize,
    peer_ip: Option<&str>,
) {
    let mut rbuf = RxBuf::with_capacity(8 * 1024);
    let mut wbuf = BytesMut::with_capacity(8 * 1024);
    let mut spare_fields = Vec::new();
    // Reused by every exchange of this connection (no allocation per request).
    let mut pairs: Vec<Rc<Pair>> = Vec::new();
    let mut first = true;
    loop {
        let st = w.state();
        let server = &st.gen.config.server;
        let limits = RequestLimits {
            max_header_bytes: server.max_header_bytes,
        };
        let mut head_deadline =
            (first || !rbuf.is_empty()).then(|| Instant::now() + server.header_timeout);
        let head = loop {
            match parse_request_reusing(&mut rbuf, &limits, &mut spare_fields) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(kind) => {
                    if let Some(log) = st.access_log.as_ref() {
                        log.rejected_line(&rbuf, kind.status());
                    }
                    reply_engine(&st, client, &mut wbuf, kind, None, &st.stats.unrouted).await;
                    return;
                }
            }
            let idle = head_deadline.is_none();
            let now = Instant::now();
            let deadline = head_deadline.unwrap_or(now + server.idle_timeout);
            let timed_out = now >= deadline || {
                // The deadline is kept by the core's sweeper, not a timer per
                // read (clear the one the body reads of an exchange use).
                let _ = client.set_read_timeout(None);
                // Nothing of a request received yet (a new or keep-alive
                // connection): a drain may close it at once.
                let waiting = rbuf.is_empty();
                if waiting {
                    if w.shared.is_draining() {
                        return;
                    }
                    w.set_idle(slot, true);
                }
                let r = futures_lite::future::or(rbuf.read_from(client), async {
                    w.deadlines.at(deadline).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client read timeout",
                    ))
                })
                .await;
                if waiting {
                    w.set_idle(slot, false);
                }
                match r {
                    Ok(0) => return,
                    Ok(_) => {
                        if head_deadline.is_none() {
                            head_deadline = Some(Instant::now() + server.header_timeout);
                        }
                        false
                    }
                    // An idle keep-alive connection just closes; a head
                    // begun but not finished in time gets 408.
                    Err(e) if e.kind() == io::ErrorKind::TimedOut && !idle => true,
                    Err(_) => return,
                }
            };
            if timed_out {
                reply_engine(
                    &st,
                    client,
                    &mut wbuf,
                    Kind::HeaderTimeout,
                    None,
                    &st.stats.unrouted,
                )
                .await;
                return;
            }
        };
        first = false;
        let next = exchange(
            w, &st, client, &mut rbuf, &mut wbuf, &head, peer_ip, &mut pairs,
        )
        .await;
        pairs.clear();
        head.recycle(&mut spare_fields);
        match next {
            Next::KeepAlive if !w.shared.is_draining() => {}
            _ => return,
        }
    }
}

/// Write an engine-made response; record it. Returns after the write.
async fn reply_engine(
    st: &CoreState,
    client: &mut TcpStream,
    wbuf: &mut BytesMut,
    kind: Kind,
    head: Option<(&RequestHead, &str)>,
    stats: &PrimaryStats,
) {
    stats.codes.inc(kind.status());
    wbuf.clear();
    write_error_response(wbuf, kind.status(), kind.reason(), true);
    let sent = client.write_all(wbuf).await.is_ok();
    wbuf.clear();
    if let (Some(log), Some((h, route))) = (st.access_log.as_ref(), head) {
        log.primary_line(h.method(), h.target(), kind.status(), 0, 0, route, "");
    }
    if sent {
        linger_close(client).await;
    }
}

/// Most time spent draining a closing connection's unread input.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes drained from a closing connection.
const LINGER_BYTES: usize = 64 << 20;

/// Close gracefully after an engine answer while the client may still be
/// sending (a rejected upload, an oversized head): send FIN, then read and
/// discard input until the client closes, `LINGER_TIME` or `LINGER_BYTES`,
/// so that the kernel does not answer the unread bytes with a reset that
/// destroys the response before the client reads it (nginx's lingering close).
async fn linger_close(client: &mut TcpStream) {
    let _ = client.shutdown(std::net::Shutdown::Write).await;
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match futures_lite::AsyncReadExt::read(client, &mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// A mirror chosen for this request.
struct Chosen {
    index: usize,
}

/// Decide which of the route's mirrors copy this request.
fn choose_mirrors(
    w: &Worker,
    st: &CoreState,
    route_idx: usize,
    head: &RequestHead,
    upgrade: bool,
    out: &mut [Option<Chosen>; MAX_MIRRORS],
) -> usize {
    let cfg = &st.gen.config;
    let route = &cfg.routes[route_idx];
    if route.mirrors.is_empty() || upgrade {
        return 0;
    }
    if let Some(marker) = &cfg.mirror.marker_header {
        if head.header(marker.as_bytes()).is_some() {
            return 0; // loop guard: a copy is never copied again
        }
    }
    let mut n = 0;
    let mut now = None;
    for (i, m) in route.mirrors.iter().enumerate().take(MAX_MIRRORS) {
        let ctl = &st.gen.controls[route_idx][i];
        if !ctl.enabled() || !m.copies_method(head.method()) {
            continue;
        }
        let ppm = ctl.percent_ppm();
        if ppm == 0 {
            continue;
        }
        if ppm < PPM {
            let roll = match &m.sample_key {
                Some(config_schema::SampleKey::Header(name)) => {
                    match head.header(name.as_bytes()) {
                        Some(v) => sticky_hash(v, i as u64),
                        None => w.rand(),
                    }
                }
                None => w.rand(),
            };
            if (roll % PPM as u64) as u32 >= ppm {
                continue;
            }
        }
        let stats = &st.stats.routes[route_idx].mirrors[i];
        if let Some(len) = head.content_length() {
            if len > cfg.mirror.max_body_bytes {
                stats.shed(ShedReason::BodyTooLarge);
                continue;
            }
        }
        // Shed before any work is spent on the copy when the shadow is
        // already at its in-flight cap (a hung shadow costs a compare and a
        // counter per request, nothing more).
        if st.mirror_inflight[m.upstream].get() >= cfg.mirror.max_inflight {
            stats.shed(ShedReason::Inflight);
            continue;
        }
        if let Some(Some(lim)) = st.limiters[route_idx].get(i) {
            let t = *now.get_or_insert_with(Instant::now);
            if !lim.allow(t) {
                stats.shed(ShedReason::RateLimited);
                continue;
            }
        }
        out[i] = Some(Chosen { index: i });
        n += 1;
    }
    n
}

/// FNV-1a then a finaliser: the same header value always samples alike.
fn sticky_hash(v: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in v {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// One request/response exchange with the primary (plus copies).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    w: &Rc<Worker>,
    st: &Rc<CoreState>,
    client: &mut TcpStream,
    rbuf: &mut RxBuf,
    wbuf: &mut BytesMut,
    head: &RequestHead,
    peer_ip: Option<&str>,
    pairs: &mut Vec<Rc<Pair>>,
) -> Next {
    let start = Instant::now();
    let cfg = &st.gen.config;
    let path = head.path();
    let Some(ri) = cfg
        .routes
        .iter()
        .position(|r| r.matcher.matches(head.method(), path, |n| head.header(n)))
    else {
        return reply_soft(
            st,
            client,
            wbuf,
            head,
            Kind::NoRoute,
            "",
            &st.stats.unrouted,
        )
        .await;
    };
    let route = &cfg.routes[ri];
    let rstats = &st.stats.routes[ri];
    if let (Some(max), Some(n)) = (cfg.server.max_body_bytes, head.content_length()) {
        if n > max {
            reply_engine(
                st,
                client,
                wbuf,
                Kind::BodyTooLarge,
                Some((head, &route.name)),
                &rstats.engine,
            )
            .await;
            return Next::Close;
        }
    }
    let upgrade = head.upgrade.is_some_and(|u| {
        let v = u.get(&head.raw);
        crate::h1::list_items(v).any(|t| !t.eq_ignore_ascii_case(b"h2c"))
    });
    let mut chosen: [Option<Chosen>; MAX_MIRRORS] = Default::default();
    let n_chosen = choose_mirrors(w, st, ri, head, upgrade, &mut chosen);

    let di = if route.destinations.len() == 1 {
        0
    } else {
        route
            .weights
            .pick((w.rand() % route.weights.total() as u64) as u32)
    };
    let up_idx = route.destinations[di].upstream;
    let up_name = cfg.upstreams[up_idx].name.as_str();
    let pstats = &rstats.dests[di];
    let pool = &st.pools[up_idx];
    let mut up = match pool.get(start).await {
        Ok(c) => c,
        Err(e) => {
            // Refused or connect timeout: the primary is unreachable (502);
            // 504 is for a primary that accepted but did not answer in time.
            let _ = e;
            let kind = Kind::BadGateway("primary unreachable");
            // A body-less request is complete: its copies are still due.
            if n_chosen > 0 && !head.has_body() {
                let mut done = Ok(Uploaded {
                    body_len: 0,
                    copy_dropped: false,
                    up_write_failed: false,
                    copy: Vec::new(),
                });
                dispatch_copies(w, st, ri, head, peer_ip, &chosen, &mut done, pairs);
            }
            let next = reply_soft(st, client, wbuf, head, kind, &route.name, pstats).await;
            let us = start.elapsed().as_micros() as u64;
            pstats.duration.record_us(us);
            finish_pairs(pairs, kind.status(), us, None);
            return next;
        }
    };
    if head.expect_continue
        && head.has_body()
        && head.version == Version::Http11
        && client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Next::Close;
    }

    // Request head and body to the primary, and the primary's response back
    // to the client, run concurrently (a primary may answer while it still
    // reads, e.g. an echo). The copy is gathered by refcount as the body passes.
    wbuf.clear();
    let edits = RequestEdits {
        client_ip: peer_ip,
        upgrade,
        ..Default::default()
    };
    write_request_head(wbuf, head, &edits, head.framing.into());
    // Rebuilt (not copied) in the rare case a stale pooled connection is retried.
    let retry = (!head.has_body() && head.is_idempotent() && up.reused).then_some(edits);
    let mut decoder = match head.framing {
        BodyFraming::None => Decoder::Done,
        BodyFraming::Length(n) => Decoder::length(n),
        BodyFraming::Chunked => Decoder::chunked(),
    };
    let server = &cfg.server;
    let _ = client.set_read_timeout(Some(server.idle_timeout));
    // The primary's timeouts are kept by `forward_response` (the head's
    // deadline starts only once the request is fully sent).
    let _ = up.stream.set_read_timeout(None);
    let upload_done: Cell<Option<Instant>> = Cell::new(None);
    // Set once response bytes may have reached the client: an upload error
    // after that can only close the connection, not answer it.
    let response_started = Cell::new(false);
    let mut rx = w.take_out_buf();
    let compare_body = n_chosen > 0
        && chosen
            .iter()
            .flatten()
            .any(|c| route.mirrors[c.index].compare_body);
    let body_limits = BodyLimits {
        chunked: head.framing == BodyFraming::Chunked,
        max_body: server.max_body_bytes,
        copy_cap: (n_chosen > 0).then_some(cfg.mirror.max_body_bytes),
    };
    let (up_result, down_result) = {
        let client_cell = RefCell::new(&mut *client);
        let up_cell = RefCell::new(&mut up.stream);
        let mut client_rd = Half(&client_cell);
        let mut client_wr = Half(&client_cell);
        let mut up_rd = Half(&up_cell);
        let mut up_wr = Half(&up_cell);
        let upload = upload_body(
            &mut client_rd,
            rbuf,
            &mut up_wr,
            wbuf,
            &mut decoder,
            &body_limits,
            &upload_done,
        );
        let download = forward_response(
            &mut up_rd,
            &mut up.buf,
            &mut client_wr,
            &mut rx,
            head,
            compare_body,
            w,
            (&upload_done, pool.request_timeout, &response_started),
        );
        let mut upload = std::pin::pin!(upload);
        let mut download = std::pin::pin!(download);
        let first = futures_lite::future::or(async { Either::Up((&mut upload).await) }, async {
            Either::Down((&mut download).await)
        })
        .await;
        match first {
            Either::Up(mut u) => {
                if u.is_ok() {
                    // The body arrived whole and well framed: dispatch the copies now.
                    dispatch_copies(w, st, ri, head, peer_ip, &chosen, &mut u, pairs);
                    let d = (&mut download).await;
                    (Some(u), Some(d))
                } else {
                    (Some(u), None)
                }
            }
            Either::Down(d) => (None, Some(d)),
        }
    };
    let result = finish_exchange(
        w,
        st,
        client,
        rbuf,
        wbuf,
        &mut rx,
        head,
        route,
        up_name,
        pstats,
        up,
        pool,
        retry,
        upgrade,
        up_result,
        down_result,
        pairs,
        start,
        compare_body,
        response_started.get(),
    )
    .await;
    w.put_out_buf(rx);
    result
}

/// Which of the two concurrent halves of an exchange finished first.
enum Either<U, D> {
    Up(U),
    Down(D),
}

/// A read or write half of a stream shared by two concurrent futures of one
/// task. The `RefCell` is borrowed only inside a single `poll_*` call, and
/// glommio keeps separate readiness sources for reads and writes.
struct Half<'a, 'b>(&'a RefCell<&'b mut TcpStream>);

impl AsyncRead for Half<'_, '_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half<'_, '_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_close(cx)
    }
}

/// Limits applied while the request body streams.
struct BodyLimits {
    chunked: bool,
    max_body: Option<u64>,
    /// `mirror.max_body_bytes` when a copy is being gathered.
    copy_cap: Option<u64>,
}

/// How the upload ended well.
struct Uploaded {
    body_len: u64,
    /// The copy outgrew `mirror.max_body_bytes` and was dropped.
    copy_dropped: bool,
    /// Writing to the primary failed (it may still have answered).
    up_write_failed: bool,
    /// The copy's body: refcounted slices of the read buffer.
    copy: Vec<Bytes>,
}

/// How the upload ended badly.
enum UploadError {
    /// Answer the client with this (400 bad chunk, 413) and close.
    Client(Kind),
    /// The client went away or timed out mid-body.
    ClientGone,
}

/// Stream the request body from the client to the primary, re-encoded,
/// gathering the copy's body by refcount.
async fn upload_body<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    client: &mut R,
    rbuf: &mut RxBuf,
    up: &mut W,
    out: &mut BytesMut,
    decoder: &mut Decoder,
    limits: &BodyLimits,
    done_at: &Cell<Option<Instant>>,
) -> Result<Uploaded, UploadError> {
    let mut done = Uploaded {
        body_len: 0,
        copy_dropped: false,
        up_write_failed: false,
        copy: Vec::new(),
    };
    let mut copy_len: u64 = 0;
    while !decoder.is_done() {
        match decoder.decode(rbuf) {
            Err(_) => {
                return Err(UploadError::Client(Kind::BadRequest(
                    "malformed chunked body",
                )))
            }
            Ok(Decoded::Data(d)) => {
                done.body_len += d.len() as u64;
                if limits.max_body.is_some_and(|m| done.body_len > m) {
                    return Err(UploadError::Client(Kind::BodyTooLarge));
                }
                if limits.chunked {
                    encode_chunk(out, &d);
                } else {
                    out.extend_from_slice(&d);
                }
                if let (Some(cap), false) = (limits.copy_cap, done.copy_dropped) {
                    copy_len += d.len() as u64;
                    if copy_len > cap {
                        done.copy_dropped = true;
                        done.copy = Vec::new();
                    } else {
                        done.copy.push(d);
                    }
                }
                if out.len() >= FLUSH_AT {
                    if !done.up_write_failed && up.write_all(out).await.is_err() {
                        done.up_write_failed = true;
                    }
                    out.clear();
                }
            }
            Ok(Decoded::NeedMore) => {
                if !out.is_empty() {
                    if !done.up_write_failed && up.write_all(out).await.is_err() {
                        done.up_write_failed = true;
                    }
                    out.clear();
                }
                match rbuf.read_from(client).await {
                    Ok(0) | Err(_) => return Err(UploadError::ClientGone),
                    Ok(_) => {}
                }
            }
            Ok(Decoded::Done) => break,
        }
    }
    if limits.chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    if !out.is_empty() {
        if !done.up_write_failed && up.write_all(out).await.is_err() {
            done.up_write_failed = true;
        }
        out.clear();
    }
    done_at.set(Some(Instant::now()));
    Ok(done)
}

/// Read more of the primary's response, within `request_timeout_ms`: for the
/// head, counted from when the request was fully sent (an upload in progress
/// never times the head out); for the body, per read.
async fn read_primary<R: AsyncRead + Unpin>(
    up: &mut R,
    ubuf: &mut RxBuf,
    sent_at: Option<&Cell<Option<Instant>>>,
    timeout: Duration,
    dl: &Rc<Deadlines>,
) -> io::Result<usize> {
    let timer = async {
        match sent_at {
            Some(sent) => loop {
                // Usually set already (the request is out); while an upload
                // still runs, look again later.
                if let Some(t) = sent.get() {
                    dl.at(t + timeout).await;
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            },
            None => dl.at(Instant::now() + timeout).await,
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "primary timeout"))
    };
    futures_lite::future::or(ubuf.read_from(up), timer).await
}

/// What the primary's response came to.
struct Downloaded {
    status: u16,
    resp_len: u64,
    digest: Option<u64>,
    /// The upstream connection may be reused.
    reusable: bool,
    /// The client connection may be kept.
    keep_alive: bool,
}

enum DownloadError {
    /// No response byte reached the client: answer with this.
    BeforeHead(Kind),
    /// EOF or reset before any response byte (a stale pooled connection?).
    Stale,
    /// A 101 for an offered upgrade (head not yet sent to the client).
    Upgrade(Box<crate::h1::ResponseHead>),
    /// The head (status) was sent, then the exchange broke: close.
    AfterHead(u16),
    /// The client went away while the response streamed.
    ClientGone(u16),
}

/// Read the primary's response and stream it to the client.
#[allow(clippy::too_many_arguments)]
async fn forward_response<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    up: &mut R,
    ubuf: &mut RxBuf,
    client: &mut W,
    out: &mut BytesMut,
    head: &RequestHead,
    hash: bool,
    w: &Worker,
    (sent_at, timeout, started): (&Cell<Option<Instant>>, Duration, &Cell<bool>),
) -> Result<Downloaded, DownloadError> {
    let mut got_any = !ubuf.is_empty();
    let resp = loop {
        match parse_response(ubuf, MAX_RESPONSE_HEAD, head.is_head) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => continue,
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(why) => return Err(DownloadError::BeforeHead(Kind::BadGateway(why))),
        }
        match read_primary(up, ubuf, Some(sent_at), timeout, &w.deadlines).await {
            Ok(0) if !got_any => return Err(DownloadError::Stale),
            Ok(0) => {
                return Err(DownloadError::BeforeHead(Kind::BadGateway(
                    "primary closed the connection early",
                )))
            }
            Ok(_) => got_any = true,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(DownloadError::BeforeHead(Kind::GatewayTimeout))
            }
            Err(_) if !got_any => return Err(DownloadError::Stale),
            Err(_) => {
                return Err(DownloadError::BeforeHead(Kind::BadGateway(
                    "primary connection failed",
                )))
            }
        }
    };
    if resp.status == 101 {
        return Err(DownloadError::Upgrade(Box::new(resp)));
    }
    let cf = client_framing(&resp, head.version);
    let keep_alive = head.keep_alive && cf != ClientFraming::Close && !w.shared.is_draining();
    out.clear();
    write_response_head(out, &resp, cf, head.version, keep_alive);
    started.set(true);
    let mut rdec = resp.decoder();
    let mut hasher = hash.then(std::collections::hash_map::DefaultHasher::new);
    let mut resp_len: u64 = 0;
    let status = resp.status;
    loop {
        match rdec.decode(ubuf) {
            Err(_) => {
                // Bad framing mid-body: the head may be out; the client connection must die.
                let _ = client.write_all(out).await;
                return Err(DownloadError::AfterHead(status));
            }
            Ok(Decoded::Data(d)) => {
                resp_len += d.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.write(&d);
                }
                if cf == ClientFraming::Chunked {
                    encode_chunk(out, &d);
                } else if d.len() >= 16 * 1024 {
                    if (!out.is_empty() && client.write_all(out).await.is_err())
                        || client.write_all(&d).await.is_err()
                    {
                        return Err(DownloadError::ClientGone(status));
                    }
                    out.clear();
                    continue;
                } else {
                    out.extend_from_slice(&d);
                }
                if out.len() >= FLUSH_AT {
                    if client.write_all(out).await.is_err() {
                        return Err(DownloadError::ClientGone(status));
                    }
                    out.clear();
                }
            }
            Ok(Decoded::NeedMore) => {
                if !out.is_empty() {
                    if client.write_all(out).await.is_err() {
                        return Err(DownloadError::ClientGone(status));
                    }
                    out.clear();
                }
                match read_primary(up, ubuf, None, timeout, &w.deadlines).await {
                    Ok(0) => {
                        if rdec.on_eof().is_err() {
                            return Err(DownloadError::AfterHead(status));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return Err(DownloadError::AfterHead(status)),
                }
            }
            Ok(Decoded::Done) => break,
        }
    }
    if cf == ClientFraming::Chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    if !out.is_empty() {
        if client.write_all(out).await.is_err() {
            return Err(DownloadError::ClientGone(status));
        }
        out.clear();
    }
    Ok(Downloaded {
        status,
        resp_len,
        digest: hasher.map(|h| h.finish()),
        reusable: resp.keep_alive && !rdec.is_eof_delimited(),
        keep_alive,
    })
}

/// Build each chosen copy's head and hand it to the mirror queue.
#[allow(clippy::too_many_arguments)]
fn dispatch_copies(
    w: &Worker,
    st: &Rc<CoreState>,
    ri: usize,
    head: &RequestHead,
    client_ip: Option<&str>,
    chosen: &[Option<Chosen>; MAX_MIRRORS],
    up: &mut Result<Uploaded, UploadError>,
    pairs: &mut Vec<Rc<Pair>>,
) {
    let Ok(u) = up else { return };
    let copy_body = std::mem::take(&mut u.copy);
    let cfg = &st.gen.config;
    let route = &cfg.routes[ri];
    let rstats = &st.stats.routes[ri];
    for c in chosen.iter().flatten() {
        if u.copy_dropped {
            rstats.mirrors[c.index].shed(ShedReason::BodyTooLarge);
            continue;
        }
        let m = &route.mirrors[c.index];
        let mstats = rstats.mirrors[c.index].clone();
        let mut arena = w.mirror_heads.borrow_mut();
        let need = head.raw.len() + MIRROR_HEAD_SLACK;
        if arena.capacity() < need {
            // Copies' heads are cut from one allocation shared by refcount:
            // one malloc per ~50 copies instead of one each.
            *arena = BytesMut::with_capacity(MIRROR_ARENA.max(need));
        }
        let copy_edits = RequestEdits {
            client_ip,
            upgrade: false,
            host_suffix: &cfg.mirror.host_suffix,
            marker: cfg.mirror.marker_header.as_deref(),
            set_headers: &m.set_headers,
            remove_headers: &m.remove_headers,
        };
        let framing = if u.body_len == 0 && !head.has_body() {
            OutFraming::None
        } else {
            OutFraming::Length(u.body_len)
        };
        write_request_head(&mut arena, head, &copy_edits, framing);
        let mh = arena.split().freeze();
        drop(arena);
        let pair = Pair::new(mstats.clone(), mh);
        pairs.push(pair.clone());
        w.mirror_q.offer(MirrorJob {
            state: st.clone(),
            route: ri,
            upstream: m.upstream,
            stats: mstats,
            body: copy_body.clone(),
            head_request: head.is_head,
            compare_body: m.compare_body,
            pair,
        });
    }
}

/// Settle an exchange: engine replies, retry, upgrade, stats, pooling.
#[allow(clippy::too_many_arguments)]
async fn finish_exchange(
    w: &Rc<Worker>,
    st: &Rc<CoreState>,
    client: &mut TcpStream,
    rbuf: &mut RxBuf,
    wbuf: &mut BytesMut,
    rx: &mut BytesMut,
    head: &RequestHead,
    route: &config_schema::Route,
    up_name: &str,
    pstats: &PrimaryStats,
    mut up: UpConn,
    pool: &crate::upstream::Pool,
    retry: Option<RequestEdits<'_>>,
    upgrade: bool,
    up_result: Option<Result<Uploaded, UploadError>>,
    down_result: Option<Result<Downloaded, DownloadError>>,
    pairs: &[Rc<Pair>],
    start: Instant,
    compare_body: bool,
    response_started: bool,
) -> Next {
    // Upload failures decide first when the response had not started.
    let uploaded = match up_result {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            // A rejected or abandoned request is never mirrored: its chosen
            // copies were never dispatched, so they were not due.
            return match e {
                UploadError::Client(_) if response_started => Next::Close,
                UploadError::Client(kind) => {
                    reply_engine(st, client, wbuf, kind, Some((head, &route.name)), pstats).await;
                    Next::Close
                }
                UploadError::ClientGone => Next::Close,
            };
        }
        None => None,
    };
    let mut down = down_result;
    // One retry on a fresh connection when a pooled one was found closed.
    if matches!(down, Some(Err(DownloadError::Stale))) {
        if let Some(edits) = &retry {
            wbuf.clear();
            write_request_head(wbuf, head, edits, head.framing.into());
            if let Ok(mut fresh) = pool.connect().await {
                if fresh.write_all(wbuf).await.is_ok() {
                    up = fresh;
                    let sent = Cell::new(Some(Instant::now()));
                    down = Some(
                        forward_response(
                            &mut up.stream,
                            &mut up.buf,
                            client,
                            rx,
                            head,
                            compare_body,
                            w,
                            (&sent, pool.request_timeout, &Cell::new(false)),
                        )
                        .await,
                    );
                }
            }
        }
    }
    let us = || start.elapsed().as_micros() as u64;
    let outcome = match down {
        Some(Ok(d)) => d,
        Some(Err(DownloadError::Stale)) | Some(Err(DownloadError::BeforeHead(_))) | None => {
            let kind = match down {
                Some(Err(DownloadError::BeforeHead(k))) => k,
                _ => Kind::BadGateway("primary closed the connection early"),
            };
            let keep_ok = uploaded.is_some();
            let next = if keep_ok {
                reply_soft(st, client, wbuf, head, kind, &route.name, pstats).await
            } else {
                reply_engine(st, client, wbuf, kind, Some((head, &route.name)), pstats).await;
                Next::Close
            };
            let us = us();
            pstats.duration.record_us(us);
            finish_pairs(pairs, kind.status(), us, None);
            return next;
        }
        Some(Err(DownloadError::Upgrade(resp))) => {
            let offered = |proto: &[u8]| {
                let name = |t: &[u8]| {
                    t.split(|&b| b == b'/')
                        .next()
                        .unwrap_or(t)
                        .to_ascii_lowercase()
                };
                head.upgrade.is_some_and(|u| {
                    crate::h1::list_items(u.get(&head.raw)).any(|t| name(t) == name(proto))
                })
            };
            let chosen_ok = resp
                .upgrade
                .is_some_and(|u| crate::h1::list_items(u.get(&resp.raw)).all(offered));
            if !upgrade || !chosen_ok {
                let next = reply_soft(
                    st,
                    client,
                    wbuf,
                    head,
                    Kind::BadGateway("unexpected 101 from primary"),
                    &route.name,
                    pstats,
                )
                .await;
                finish_pairs(pairs, 502, us(), None);
                return next;
            }
            wbuf.clear();
            write_response_head(wbuf, &resp, ClientFraming::None, head.version, true);
            pstats.codes.inc(101);
            if client.write_all(wbuf).await.is_err() {
                return Next::Close;
            }
            wbuf.clear();
            tunnel(client, rbuf, up, st.gen.config.server.idle_timeout).await;
            return Next::Close;
        }
        Some(Err(DownloadError::AfterHead(status)))
        | Some(Err(DownloadError::ClientGone(status))) => {
            pstats.codes.inc(status);
            let us = us();
            pstats.duration.record_us(us);
            finish_pairs(pairs, 502, us, None);
            return Next::Close;
        }
    };
    // The response completed. Was the request fully sent too?
    let request_done = uploaded.as_ref().is_some_and(|u| !u.up_write_failed);
    let end = Instant::now();
    if outcome.reusable && request_done {
        pool.put(up, end);
    }
    let elapsed = end.saturating_duration_since(start).as_micros() as u64;
    // Duration first: a scrape that sees the request counted sees its time.
    pstats.duration.record_us(elapsed);
    pstats.codes.inc(outcome.status);
    finish_pairs(pairs, outcome.status, elapsed, outcome.digest);
    if let Some(log) = st.access_log.as_ref() {
        log.primary_line(
            head.method(),
            head.target(),
            outcome.status,
            elapsed,
            outcome.resp_len,
            &route.name,
            up_name,
        );
    }
    if outcome.keep_alive && uploaded.is_some() {
        Next::KeepAlive
    } else {
        if uploaded.is_none() {
            // The primary answered before the body was all read.
            linger_close(client).await;
        }
        Next::Close
    }
}

/// Give every copy of this request the primary's outcome.
fn finish_pairs(pairs: &[Rc<Pair>], status: u16, us: u64, digest: Option<u64>) {
    for p in pairs {
        p.set_primary(Outcome { status, us, digest });
    }
}

/// An engine-made answer that keeps the connection when the request had no
/// body left unread (404, 502, 504); otherwise closes.
async fn reply_soft(
    st: &CoreState,
    client: &mut TcpStream,
    wbuf: &mut BytesMut,
    head: &RequestHead,
    kind: Kind,
    route: &str,
    stats: &PrimaryStats,
) -> Next {
    let keep = head.keep_alive && !head.has_body() && !kind.closes_connection() && !st_draining(st);
    stats.codes.inc(kind.status());
    wbuf.clear();
    write_error_response(wbuf, kind.status(), kind.reason(), !keep);
    let ok = client.write_all(wbuf).await.is_ok();
    wbuf.clear();
    if let Some(log) = st.access_log.as_ref() {
        log.primary_line(head.method(), head.target(), kind.status(), 0, 0, route, "");
    }
    if ok && keep {
        Next::KeepAlive
    } else {
        if ok && head.has_body() {
            linger_close(client).await;
        }
        Next::Close
    }
}

/// Relay bytes both ways after a 101 until both sides are done.
async fn tunnel(client: &mut TcpStream, rbuf: &mut RxBuf, mut up: UpConn, idle: Duration) {
    if !rbuf.is_empty() {
        if up.write_all(rbuf).await.is_err() {
            return;
        }
        rbuf.clear();
    }
    if !up.buf.is_empty() {
        let pending = up.buf.split();
        if client.write_all(&pending).await.is_err() {
            return;
        }
    }
    let mut cbuf = BytesMut::with_capacity(16 * 1024);
    let mut client_open = true;
    let mut up_open = true;
    let _ = client.set_read_timeout(Some(idle));
    let _ = up.stream.set_read_timeout(Some(idle));
    while client_open || up_open {
        enum Got {
            Client(io::Result<usize>),
            Up(io::Result<usize>),
        }
        let got = {
            let a = async {
                if client_open {
                    Got::Client(read_into(client, &mut cbuf).await)
                } else {
                    std::future::pending().await
                }
            };
            let b = async {
                if up_open {
                    Got::Up(up.fill().await)
                } else {
                    std::future::pending().await
                }
            };
            futures_lite::future::or(a, b).await
        };
        match got {
            Got::Client(Ok(n)) if n > 0 => {
                if up.write_all(&cbuf).await.is_err() {
                    return;
                }
                cbuf.clear();
            }
            Got::Client(Ok(_)) => {
                client_open = false;
                let _ = up.stream.shutdown(std::net::Shutdown::Write).await;
            }
            Got::Client(Err(_)) => return,
            Got::Up(Ok(n)) if n > 0 => {
                let data = up.buf.split();
                if client.write_all(&data).await.is_err() {
                    return;
                }
            }
            Got::Up(Ok(_)) => {
                up_open = false;
                let _ = client.shutdown(std::net::Shutdown::Write).await;
            }
            Got::Up(Err(_)) => return,
        }
    }
}

/// Whether the engine is draining (answers then say `connection: close`).
fn st_draining(st: &CoreState) -> bool {
    st.shared.is_draining()
}

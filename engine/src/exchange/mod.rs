//! One request/response exchange: route it, pick the weighted primary, let
//! the mirror tap choose copies, stream the body to the primary while the
//! primary's response streams back, hand the copies to the mirror queue
//! once the body arrived whole, then settle.
//!
//! - `upload`: the request body, client to primary, gathering the copy.
//! - `download`: the primary's response, primary to client.
//! - `settle`: the exchange as data and the pure decision of what follows
//!   (keep-alive, close, linger, retry once, tunnel, pool return).
//! - `reply`: engine-made answers and carrying out the client's next step.
//! - `tunnel`: the byte relay after a 101.
//!
//! Must never: await anything of the mirror path; forward a request the
//! engine rejected; reuse an upstream connection whose exchange did not
//! complete cleanly; panic on network input.

mod download;
pub mod reply;
pub mod settle;
mod tunnel;
mod upload;

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::compare::{Outcome, Pair};
use crate::error::Kind;
use crate::h1::request::BodyFraming;
use crate::h1::write::{write_request_head, write_response_head, ClientFraming, RequestEdits};
use crate::h1::{Decoder, RequestHead, ResponseHead, Version};
use crate::mirror::{self, CopyBody};
use crate::net::{RxBuf, UpConn};
use crate::percore::{Core, CoreState};
use crate::shared::PrimaryStats;
use download::{forward_response, DownloadError, Downloaded};
use reply::{finish_client, reply};
pub use reply::{reject_overloaded, Next};
use settle::{settle, Download, Exchange, Request, Step, Upload};
use upload::{upload_body, BodyLimits, UploadError, Uploaded};

/// Where an engine answer came from, for the error log.
struct Upstream<'a> {
    route: &'a str,
    name: &'a str,
    /// Its index in the config's upstreams (and the core's pools).
    index: usize,
}

/// One request/response exchange with the primary (plus copies).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    core: &Rc<Core>,
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
    let draining = core.shared.is_draining();
    let request = Request {
        keep_alive: head.keep_alive,
        has_body: head.has_body(),
    };
    let path = head.path();
    let Some(ri) = cfg
        .routes
        .iter()
        .position(|r| r.matcher.matches(head.method(), path, |n| head.header(n)))
    else {
        let then = settle::after_reply(Kind::NoRoute, true, request, draining);
        let logged = Some((head, ""));
        return reply(
            st,
            client,
            wbuf,
            Kind::NoRoute,
            then,
            logged,
            &st.stats.unrouted,
        )
        .await;
    };
    let route = &cfg.routes[ri];
    let rstats = &st.stats.routes[ri];
    if let (Some(max), Some(n)) = (cfg.server.max_body_bytes, head.content_length()) {
        if n > max {
            let kind = Kind::BodyTooLarge;
            let then = settle::after_reply(kind, false, request, draining);
            let logged = Some((head, route.name.as_str()));
            return reply(st, client, wbuf, kind, then, logged, &rstats.engine).await;
        }
    }
    let upgrade = head.upgrade.is_some_and(|u| {
        let v = u.get(&head.raw);
        crate::h1::list_items(v).any(|t| !t.eq_ignore_ascii_case(b"h2c"))
    });
    let chosen = mirror::choose(&st.mirror, ri, head, upgrade, || core.rand());

    let di = if route.destinations.len() == 1 {
        0
    } else {
        route
            .weights
            .pick((core.rand() % route.weights.total() as u64) as u32)
    };
    let up_idx = route.destinations[di].upstream;
    let upstream = Upstream {
        route: &route.name,
        name: cfg.upstreams[up_idx].name.as_str(),
        index: up_idx,
    };
    let pstats = &rstats.dests[di];
    let pool = &st.pools[up_idx];
    let mut up = match pool.get(start).await {
        Ok(c) => c,
        Err(e) => {
            // Refused or connect timeout: the primary is unreachable (502);
            // 504 is for a primary that accepted but did not answer in time.
            let kind = Kind::BadGateway("primary unreachable");
            core.upstream_error(upstream.route, upstream.name, kind.status(), &e);
            // A body-less request is complete: its copies are still due.
            if !chosen.is_empty() && !head.has_body() {
                let body = CopyBody::default();
                mirror::dispatch(
                    &core.tap, &st.mirror, ri, head, peer_ip, chosen, body, pairs,
                );
            }
            let then = settle::after_reply(kind, true, request, draining);
            let logged = Some((head, route.name.as_str()));
            let next = reply(st, client, wbuf, kind, then, logged, pstats).await;
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
    let retryable = !head.has_body() && head.is_idempotent() && up.reused;
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
    let mut rx = core.take_out_buf();
    let compare_body = chosen.iter().any(|c| route.mirrors[c].compare_body);
    let body_limits = BodyLimits {
        chunked: head.framing == BodyFraming::Chunked,
        max_body: server.max_body_bytes,
        copy_cap: (!chosen.is_empty()).then_some(cfg.mirror.max_body_bytes),
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
            core,
            (&upload_done, pool.request_timeout, &response_started),
        );
        let mut upload = std::pin::pin!(upload);
        let mut download = std::pin::pin!(download);
        let first = futures_lite::future::or(async { Either::Up((&mut upload).await) }, async {
            Either::Down((&mut download).await)
        })
        .await;
        match first {
            Either::Up(Ok(mut u)) => {
                // The body arrived whole and well framed: dispatch the copies now.
                if !chosen.is_empty() {
                    let body = CopyBody {
                        len: u.body_len,
                        dropped: u.copy_dropped,
                        parts: std::mem::take(&mut u.copy),
                    };
                    mirror::dispatch(
                        &core.tap, &st.mirror, ri, head, peer_ip, chosen, body, pairs,
                    );
                }
                let d = (&mut download).await;
                (Some(Ok(u)), Some(d))
            }
            Either::Up(Err(e)) => (Some(Err(e)), None),
            Either::Down(d) => (None, Some(d)),
        }
    };
    let ends = Ends {
        upload: up_result,
        download: down_result,
        response_started: response_started.get(),
        retryable,
        upgrade,
    };
    let sides = Sides {
        client,
        rbuf,
        wbuf,
        rx: &mut rx,
        up,
    };
    let result = finish(
        core,
        st,
        sides,
        head,
        &upstream,
        pstats,
        edits,
        ends,
        pairs,
        start,
        compare_body,
    )
    .await;
    core.put_out_buf(rx);
    result
}

/// The sockets and buffers of an exchange being settled.
struct Sides<'a> {
    client: &'a mut TcpStream,
    rbuf: &'a mut RxBuf,
    wbuf: &'a mut BytesMut,
    rx: &'a mut BytesMut,
    up: UpConn,
}

/// What the two halves of the exchange came to.
struct Ends {
    upload: Option<Result<Uploaded, UploadError>>,
    download: Option<Result<Downloaded, DownloadError>>,
    response_started: bool,
    retryable: bool,
    /// The client offered an upgrade.
    upgrade: bool,
}

/// Settle the exchange (see `settle`) and carry out each step: a retry on
/// a fresh connection, an engine answer, the tunnel, or the pool return,
/// stats, pairs and access log of a completed exchange.
#[allow(clippy::too_many_arguments)]
async fn finish(
    core: &Rc<Core>,
    st: &Rc<CoreState>,
    mut sides: Sides<'_>,
    head: &RequestHead,
    upstream: &Upstream<'_>,
    pstats: &PrimaryStats,
    edits: RequestEdits<'_>,
    mut ends: Ends,
    pairs: &[Rc<Pair>],
    start: Instant,
    compare_body: bool,
) -> Next {
    let mut retried = false;
    loop {
        let (download, response) = match &ends.download {
            None => (Download::NotRead, None),
            Some(Ok(d)) => (
                Download::Done {
                    reusable: d.reusable,
                    keep_alive: d.keep_alive,
                },
                None,
            ),
            Some(Err(DownloadError::Stale)) => (Download::Stale, None),
            Some(Err(DownloadError::BeforeHead(k))) => (Download::BeforeHead(*k), None),
            Some(Err(DownloadError::Upgrade(resp))) => (
                Download::Upgrade {
                    acceptable: ends.upgrade && upgrade_acceptable(head, resp),
                },
                Some(resp),
            ),
            Some(Err(DownloadError::AfterHead(_) | DownloadError::ClientGone(_))) => {
                (Download::Broken, None)
            }
        };
        let upload = match &ends.upload {
            None => Upload::Unfinished,
            Some(Ok(u)) => Upload::Done {
                primary_write_failed: u.up_write_failed,
            },
            Some(Err(UploadError::Client(k))) => Upload::Rejected(*k),
            Some(Err(UploadError::ClientGone)) => Upload::ClientGone,
        };
        let x = Exchange {
            upload,
            download,
            response_started: ends.response_started,
            retryable: ends.retryable,
            retried,
            request: Request {
                keep_alive: head.keep_alive,
                has_body: head.has_body(),
            },
            draining: core.shared.is_draining(),
        };
        let us = || start.elapsed().as_micros() as u64;
        match settle(&x) {
            Step::Retry => {
                retried = true;
                sides.wbuf.clear();
                write_request_head(sides.wbuf, head, &edits, head.framing.into());
                let pool = &st.pools[upstream.index];
                if let Ok(mut fresh) = Box::pin(pool.connect()).await {
                    if fresh.write_all(sides.wbuf).await.is_ok() {
                        sides.up = fresh;
                        let sent = Cell::new(Some(Instant::now()));
                        let up = &mut sides.up;
                        // Boxed, as are the other rare steps below: they
                        // would otherwise size every exchange's state.
                        ends.download = Some(
                            Box::pin(forward_response(
                                &mut up.stream,
                                &mut up.buf,
                                sides.client,
                                sides.rx,
                                head,
                                compare_body,
                                core,
                                (&sent, pool.request_timeout, &Cell::new(false)),
                            ))
                            .await,
                        );
                    }
                }
            }
            Step::Reply { kind, client: then } => {
                let rejected = matches!(upload, Upload::Rejected(_));
                if !rejected {
                    let why = kind.reason();
                    let e = io::Error::other(format!("{} (endpoint {})", why, sides.up.endpoint));
                    core.upstream_error(upstream.route, upstream.name, kind.status(), &e);
                }
                let logged = Some((head, upstream.route));
                let next = Box::pin(reply(
                    st,
                    sides.client,
                    sides.wbuf,
                    kind,
                    then,
                    logged,
                    pstats,
                ))
                .await;
                if !rejected {
                    let us = us();
                    pstats.duration.record_us(us);
                    finish_pairs(pairs, kind.status(), us, None);
                }
                return next;
            }
            Step::Tunnel => {
                let Some(resp) = response else {
                    // settle answers Tunnel only for a 101, which carries its head.
                    return Next::Close;
                };
                sides.wbuf.clear();
                write_response_head(sides.wbuf, resp, ClientFraming::None, head.version, true);
                pstats.codes.inc(101);
                if sides.client.write_all(sides.wbuf).await.is_err() {
                    return Next::Close;
                }
                sides.wbuf.clear();
                let idle = st.gen.config.server.idle_timeout;
                Box::pin(tunnel::tunnel(sides.client, sides.rbuf, sides.up, idle)).await;
                return Next::Close;
            }
            Step::Done { client: then, pool } => {
                match ends.download {
                    Some(Ok(d)) => {
                        let end = Instant::now();
                        if pool {
                            st.pools[upstream.index].put(sides.up, end);
                        }
                        let elapsed = end.saturating_duration_since(start).as_micros() as u64;
                        // Duration first: a scrape that sees the request counted sees its time.
                        pstats.duration.record_us(elapsed);
                        pstats.codes.inc(d.status);
                        finish_pairs(pairs, d.status, elapsed, d.digest);
                        if let Some(log) = st.access_log.as_ref() {
                            log.primary_line(
                                head.method(),
                                head.target(),
                                d.status,
                                elapsed,
                                d.resp_len,
                                upstream.route,
                                upstream.name,
                            );
                        }
                    }
                    Some(Err(
                        DownloadError::AfterHead(status) | DownloadError::ClientGone(status),
                    )) => {
                        pstats.codes.inc(status);
                        let us = us();
                        pstats.duration.record_us(us);
                        finish_pairs(pairs, 502, us, None);
                    }
                    // The upload failed first: the request was not answered
                    // and its copies were never dispatched.
                    _ => {}
                }
                return finish_client(sides.client, then).await;
            }
        }
    }
}

/// Whether a 101 chose only protocols the client offered.
fn upgrade_acceptable(head: &RequestHead, resp: &ResponseHead) -> bool {
    let name = |t: &[u8]| {
        t.split(|&b| b == b'/')
            .next()
            .unwrap_or(t)
            .to_ascii_lowercase()
    };
    let offered = |proto: &[u8]| {
        head.upgrade.is_some_and(|u| {
            crate::h1::list_items(u.get(&head.raw)).any(|t| name(t) == name(proto))
        })
    };
    resp.upgrade
        .is_some_and(|u| crate::h1::list_items(u.get(&resp.raw)).all(offered))
}

/// Give every copy of this request the primary's outcome.
fn finish_pairs(pairs: &[Rc<Pair>], status: u16, us: u64, digest: Option<u64>) {
    for p in pairs {
        p.set_primary(Outcome { status, us, digest });
    }
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

//! The primary's response: read its head within `request_timeout_ms`
//! (counted from when the request was fully sent), skip 1xx, and stream the
//! body to the client re-framed for it (`Content-Length`, chunked to
//! HTTP/1.1 clients, close-delimited to HTTP/1.0 ones), with a digest when
//! a copy compares bodies.

use std::cell::Cell;
use std::hash::Hasher;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::Kind;
use crate::h1::chunked::{encode_chunk, LAST_CHUNK};
use crate::h1::write::{client_framing, write_response_head, ClientFraming};
use crate::h1::{parse_response, Decoded, RequestHead};
use crate::net::{Deadlines, RxBuf};
use crate::percore::Core;

/// Flush buffered output once it reaches this size.
pub(super) const FLUSH_AT: usize = 64 * 1024;
/// Largest upstream response head accepted (larger: 502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Read more of the primary's response, within `request_timeout_ms`: for the
/// head, counted from when the request was fully sent (an upload in progress
/// never times the head out); for the body, per read.
pub(super) async fn read_primary<R: AsyncRead + Unpin>(
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
pub(super) struct Downloaded {
    pub status: u16,
    pub resp_len: u64,
    pub digest: Option<u64>,
    /// The upstream connection may be reused.
    pub reusable: bool,
    /// The client connection may be kept.
    pub keep_alive: bool,
}

pub(super) enum DownloadError {
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
pub(super) async fn forward_response<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    up: &mut R,
    ubuf: &mut RxBuf,
    client: &mut W,
    out: &mut BytesMut,
    head: &RequestHead,
    hash: bool,
    core: &Core,
    (sent_at, timeout, started): (&Cell<Option<Instant>>, Duration, &Cell<bool>),
) -> Result<Downloaded, DownloadError> {
    let mut got_any = !ubuf.is_empty();
    let resp = loop {
        match parse_response(ubuf, MAX_RESPONSE_HEAD, head.is_head) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => continue,
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(why) => return Err(DownloadError::BeforeHead(Kind::BadGateway(why.reason()))),
        }
        match read_primary(up, ubuf, Some(sent_at), timeout, &core.deadlines).await {
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
    let keep_alive = head.keep_alive && cf != ClientFraming::Close && !core.shared.is_draining();
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
                match read_primary(up, ubuf, None, timeout, &core.deadlines).await {
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

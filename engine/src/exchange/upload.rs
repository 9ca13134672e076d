//! The request body: decoded as it arrives (`Content-Length` or chunked),
//! re-encoded to the primary, and kept for the copies as refcounted slices
//! of the read buffer, up to `mirror.max_body_bytes`.

use std::cell::Cell;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::download::FLUSH_AT;
use crate::error::Kind;
use crate::h1::chunked::{encode_chunk, LAST_CHUNK};
use crate::h1::{Decoded, Decoder};
use crate::net::RxBuf;

/// Limits applied while the request body streams.
pub(super) struct BodyLimits {
    pub chunked: bool,
    pub max_body: Option<u64>,
    /// `mirror.max_body_bytes` when a copy is being gathered.
    pub copy_cap: Option<u64>,
}

/// How the upload ended well.
pub(super) struct Uploaded {
    pub body_len: u64,
    /// The copy outgrew `mirror.max_body_bytes` and was dropped.
    pub copy_dropped: bool,
    /// Writing to the primary failed (it may still have answered).
    pub up_write_failed: bool,
    /// The copy's body: refcounted slices of the read buffer.
    pub copy: Vec<Bytes>,
}

/// How the upload ended badly.
pub(super) enum UploadError {
    /// Answer the client with this (400 bad chunk, 413) and close.
    Client(Kind),
    /// The client went away or timed out mid-body.
    ClientGone,
}

/// Stream the request body from the client to the primary, re-encoded,
/// gathering the copy's body by refcount.
pub(super) async fn upload_body<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
            // The codec's reason is the answer's body (e.g. "invalid chunk size").
            Err(e) => return Err(UploadError::Client(Kind::from(e))),
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

//! Engine-made answers (docs/SPEC.md "Errors the engine itself produces")
//! and what the connection does after them: keep, close, or linger.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::settle::Client;
use crate::error::Kind;
use crate::h1::write::write_error_response;
use crate::h1::RequestHead;
use crate::percore::CoreState;
use crate::shared::PrimaryStats;

/// What the connection does after an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Answer 503 to a connection over `server.max_connections` and close it.
pub async fn reject_overloaded(mut stream: TcpStream) {
    let mut out = BytesMut::with_capacity(128);
    write_error_response(&mut out, 503, Kind::Overloaded.reason(), true);
    let _ = stream.write_all(&out).await;
}

/// Write the engine's answer for `kind` (with `Connection: close` unless
/// `then` keeps the connection), count it in `stats`, log it when the
/// request is known (`logged`: its head and route), then do `then`.
pub async fn reply(
    st: &CoreState,
    client: &mut TcpStream,
    wbuf: &mut BytesMut,
    kind: Kind,
    then: Client,
    logged: Option<(&RequestHead, &str)>,
    stats: &PrimaryStats,
) -> Next {
    stats.codes.inc(kind.status());
    wbuf.clear();
    write_error_response(
        wbuf,
        kind.status(),
        kind.reason(),
        then != Client::KeepAlive,
    );
    let sent = client.write_all(wbuf).await.is_ok();
    wbuf.clear();
    if let (Some(log), Some((h, route))) = (st.access_log.as_ref(), logged) {
        log.primary_line(h.method(), h.target(), kind.status(), 0, 0, route, "");
    }
    finish_client(client, if sent { then } else { Client::Close }).await
}

/// Carry out what the client connection does after an exchange.
pub async fn finish_client(client: &mut TcpStream, then: Client) -> Next {
    match then {
        Client::KeepAlive => Next::KeepAlive,
        Client::Close => Next::Close,
        Client::Linger => {
            linger_close(client).await;
            Next::Close
        }
    }
}

/// Most time spent draining a closing connection's unread input.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes drained from a closing connection.
const LINGER_BYTES: usize = 64 << 20;

/// Close gracefully after an answer while the client may still be sending
/// (a rejected upload, an oversized head): send FIN, then read and discard
/// input until the client closes, `LINGER_TIME` or `LINGER_BYTES`, so that
/// the kernel does not answer the unread bytes with a reset that destroys
/// the response before the client reads it (nginx's lingering close).
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

//! The client connection driver: read a request head (within
//! `header_timeout_ms`; between requests within `idle_timeout_ms`, idle so a
//! drain can close it), answer it with one exchange, and loop for
//! keep-alive and pipelined requests (answered in order: one exchange at a
//! time, following bytes stay in the read buffer).

use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use glommio::net::TcpStream;

use crate::compare::Pair;
use crate::error::Kind;
use crate::exchange::reply::reply;
use crate::exchange::settle::Client;
use crate::exchange::{self, Next};
use crate::h1::{parse_request_reusing, RequestLimits};
use crate::net::RxBuf;
use crate::percore::{ConnGuard, Core};

/// Serve one client connection until it closes, errs, idles out or drains.
/// `conn` is its registration on the core, released when this returns or
/// unwinds.
pub async fn serve_conn(core: Rc<Core>, mut client: TcpStream, conn: ConnGuard) {
    let _ = client.set_nodelay(true);
    // Formatted once per connection for X-Forwarded-For.
    let peer_ip_text = client.peer_addr().ok().map(|a| a.ip().to_string());
    let peer_ip = peer_ip_text.as_deref();
    serve_requests(&core, &mut client, &conn, peer_ip).await;
    drop(conn);
}

async fn serve_requests(
    core: &Rc<Core>,
    client: &mut TcpStream,
    conn: &ConnGuard,
    peer_ip: Option<&str>,
) {
    let mut rbuf = RxBuf::with_capacity(8 * 1024);
    let mut wbuf = BytesMut::with_capacity(8 * 1024);
    let mut spare_fields = Vec::new();
    // Reused by every exchange of this connection (no allocation per request).
    let mut pairs: Vec<Rc<Pair>> = Vec::new();
    let mut first = true;
    loop {
        let st = core.state();
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
                Err(e) => {
                    let kind = Kind::from(e);
                    if let Some(log) = st.access_log.as_ref() {
                        log.rejected_line(&rbuf, kind.status());
                    }
                    reply(
                        &st,
                        client,
                        &mut wbuf,
                        kind,
                        Client::Linger,
                        None,
                        &st.stats.unrouted,
                    )
                    .await;
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
                    if core.shared.is_draining() {
                        return;
                    }
                    conn.set_idle(true);
                }
                let r = futures_lite::future::or(rbuf.read_from(client), async {
                    core.deadlines.at(deadline).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client read timeout",
                    ))
                })
                .await;
                if waiting {
                    conn.set_idle(false);
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
                let kind = Kind::HeaderTimeout;
                reply(
                    &st,
                    client,
                    &mut wbuf,
                    kind,
                    Client::Linger,
                    None,
                    &st.stats.unrouted,
                )
                .await;
                return;
            }
        };
        first = false;
        let next = exchange::run(
            core, &st, client, &mut rbuf, &mut wbuf, &head, peer_ip, &mut pairs,
        )
        .await;
        pairs.clear();
        head.recycle(&mut spare_fields);
        match next {
            Next::KeepAlive if !core.shared.is_draining() => {}
            _ => return,
        }
    }
}

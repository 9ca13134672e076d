//! The client connection driver: read a request head (within
//! `header_timeout_ms`; between requests within `idle_timeout_ms`, idle so a
//! drain can close it), answer it with one exchange, and loop for
//! keep-alive and pipelined requests (answered in order: one exchange at a
//! time, following bytes stay in the read buffer).

use std::io;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::compare::Pair;
use crate::error::Kind;
use crate::exchange::reply::reply;
use crate::exchange::settle::Client;
use crate::exchange::{self, Next};
use crate::h1::{parse_request_reusing, RequestLimits};
use crate::percore::{ConnBufs, ConnGuard, Core, CoreState};

/// Serve one client connection until it closes, errs, idles out or drains.
/// `conn` is its registration on the core, released when this returns or
/// unwinds.
///
/// An `async` block over the captured values rather than an `async fn`,
/// whose parameters would be stored twice in the task (as arguments, and
/// again as the locals they are moved into).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve_conn(
    core: Rc<Core>,
    mut client: TcpStream,
    conn: ConnGuard,
) -> impl std::future::Future<Output = ()> {
    async move {
        let _ = client.set_nodelay(true);
        // Formatted once per connection for X-Forwarded-For.
        let peer_ip_text = client.peer_addr().ok().map(|a| a.ip().to_string());
        serve_requests(&core, &mut client, &conn, peer_ip_text.as_deref()).await;
        drop(conn);
    }
}

async fn serve_requests(
    core: &Rc<Core>,
    client: &mut TcpStream,
    conn: &ConnGuard,
    peer_ip: Option<&str>,
) {
    // Taken from the core when a request's first bytes arrive, given back
    // when the connection goes idle with nothing pipelined left: an idle
    // connection holds no buffer.
    let mut bufs: Option<Box<ConnBufs>> = None;
    // Reused by every exchange of this connection (no allocation per request).
    let mut pairs: Vec<Rc<Pair>> = Vec::new();
    let mut first = true;
    loop {
        let st = core.state();
        let server = &st.gen.config.server;
        let pending = bufs.as_ref().is_some_and(|b| !b.rbuf.is_empty());
        let head_deadline = (first || pending).then(|| Instant::now() + server.header_timeout);
        if !pending {
            // Nothing of a request received yet (a new or keep-alive
            // connection): wait for its first byte without a buffer; a drain
            // may close the connection at once.
            if let Some(b) = bufs.take() {
                core.put_conn_bufs(b);
            }
            if core.shared.is_draining() {
                return;
            }
            let deadline = head_deadline.unwrap_or_else(|| Instant::now() + server.idle_timeout);
            // The deadline is kept by the core's sweeper, not a timer per
            // read (clear the one the body reads of an exchange use).
            let _ = client.set_read_timeout(None);
            conn.set_idle(true);
            let r = futures_lite::future::or(client.readable(), async {
                core.deadlines.at(deadline).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read timeout",
                ))
            })
            .await;
            conn.set_idle(false);
            match r {
                Ok(()) => {}
                // A new connection that sent nothing in time gets 408; an
                // idle keep-alive one just closes.
                Err(e) if e.kind() == io::ErrorKind::TimedOut && head_deadline.is_some() => {
                    let b = bufs.get_or_insert_with(|| core.take_conn_bufs());
                    let kind = Kind::HeaderTimeout;
                    let unrouted = &st.stats.unrouted;
                    // Boxed: an error path; the idle task stays small.
                    Box::pin(reply(
                        &st,
                        client,
                        &mut b.wbuf,
                        kind,
                        Client::Linger,
                        None,
                        unrouted,
                    ))
                    .await;
                    return;
                }
                Err(_) => return,
            }
        }
        // On the heap: only a connection with a request to read or answer
        // needs this state (the exchange's is large), so an idle
        // connection's own task stays small. The block is the core's,
        // reused request after request (no allocation per request).
        let b = bufs.get_or_insert_with(|| core.take_conn_bufs());
        let pairs = &mut pairs;
        let next = core
            .request_blocks
            .pin(|| one_request(core, &st, client, b, pairs, head_deadline, peer_ip))
            .await;
        first = false;
        match next {
            Next::KeepAlive if !core.shared.is_draining() => {}
            _ => return,
        }
    }
}

/// Read one request head (the first bytes may already be in `b.rbuf`) and
/// answer it with one exchange.
#[allow(clippy::too_many_arguments)]
async fn one_request(
    core: &Rc<Core>,
    st: &Rc<CoreState>,
    client: &mut TcpStream,
    b: &mut ConnBufs,
    pairs: &mut Vec<Rc<Pair>>,
    mut head_deadline: Option<Instant>,
    peer_ip: Option<&str>,
) -> Next {
    let server = &st.gen.config.server;
    let limits = RequestLimits {
        max_header_bytes: server.max_header_bytes,
    };
    let head = loop {
        match parse_request_reusing(&mut b.rbuf, &limits, &mut b.fields) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => {
                let kind = Kind::from(e);
                if let Some(log) = st.access_log.as_ref() {
                    log.rejected_line(&b.rbuf, kind.status());
                }
                let unrouted = &st.stats.unrouted;
                reply(
                    st,
                    client,
                    &mut b.wbuf,
                    kind,
                    Client::Linger,
                    None,
                    unrouted,
                )
                .await;
                return Next::Close;
            }
        }
        let idle = head_deadline.is_none();
        let now = Instant::now();
        let deadline = head_deadline.unwrap_or(now + server.idle_timeout);
        let timed_out = now >= deadline || {
            let _ = client.set_read_timeout(None);
            let r = futures_lite::future::or(b.rbuf.read_from(client), async {
                core.deadlines.at(deadline).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read timeout",
                ))
            })
            .await;
            match r {
                Ok(0) => return Next::Close,
                Ok(_) => {
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + server.header_timeout);
                    }
                    false
                }
                // An idle keep-alive connection just closes; a head
                // begun but not finished in time gets 408.
                Err(e) if e.kind() == io::ErrorKind::TimedOut && !idle => true,
                Err(_) => return Next::Close,
            }
        };
        if timed_out {
            let kind = Kind::HeaderTimeout;
            let unrouted = &st.stats.unrouted;
            reply(
                st,
                client,
                &mut b.wbuf,
                kind,
                Client::Linger,
                None,
                unrouted,
            )
            .await;
            return Next::Close;
        }
    };
    let next = exchange::run(
        core,
        st,
        client,
        &mut b.rbuf,
        &mut b.wbuf,
        &head,
        peer_ip,
        pairs,
    )
    .await;
    pairs.clear();
    head.recycle(&mut b.fields);
    next
}

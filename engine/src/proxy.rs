//! The client connection driver: read a request head, route it, stream the
//! body to the chosen primary while gathering the mirror copy by refcount,
//! hand copies to the mirror queue without waiting, stream the primary's
//! response back, and loop for keep-alive / pipelined requests (answered in
//! order: one exchange at a time, following bytes stay in the read buffer).
//!
//! Must never: await anything of the mirror path; forward a request the
//! engine rejected; reuse an upstream connection whose exchange did not
//! complete cleanly; panic on network input.

use std::hash::Hasher;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::error::Kind;
use crate::h1::chunked::{encode_chunk, LAST_CHUNK};
use crate::h1::request::BodyFraming;
use crate::h1::write::{
    client_framing, write_error_response, write_request_head, write_response_head, ClientFraming,
    OutFraming, RequestEdits,
};
use crate::h1::{
    parse_request, parse_response, Decoded, Decoder, RequestHead, RequestLimits, Version,
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
    let peer_ip = client.peer_addr().ok().map(|a| a.ip());
    let id = w.conn_id();
    let fd = client.as_raw_fd();
    let mut rbuf = RxBuf::with_capacity(8 * 1024);
    let mut wbuf = BytesMut::with_capacity(8 * 1024);
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
            match parse_request(&mut rbuf, &limits) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(kind) => {
                    reply_engine(&st, &mut client, &mut wbuf, kind, None, &st.stats.unrouted).await;
                    return;
                }
            }
            let idle = head_deadline.is_none();
            let timeout = match head_deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => server.idle_timeout,
            };
            if timeout.is_zero() {
                reply_engine(
                    &st,
                    &mut client,
                    &mut wbuf,
                    Kind::HeaderTimeout,
                    None,
                    &st.stats.unrouted,
                )
                .await;
                return;
            }
            let _ = client.set_read_timeout(Some(timeout));
            if idle {
                if w.shared.is_draining() {
                    return;
                }
                w.mark_idle(id, fd);
            }
            let r = rbuf.read_from(&mut client).await;
            if idle {
                w.mark_busy(id);
            }
            match r {
                Ok(0) => return,
                Ok(_) => {
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + server.header_timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut && !idle => {
                    reply_engine(
                        &st,
                        &mut client,
                        &mut wbuf,
                        Kind::HeaderTimeout,
                        None,
                        &st.stats.unrouted,
                    )
                    .await;
                    return;
                }
                Err(_) => return,
            }
        };
        first = false;
        match exchange(&w, &st, &mut client, &mut rbuf, &mut wbuf, head, peer_ip).await {
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
    let _ = client.write_all(wbuf).await;
    wbuf.clear();
    if let (Some(log), Some((h, route))) = (st.access_log.as_ref(), head) {
        log.primary_line(h.method(), h.target(), kind.status(), 0, 0, route, "");
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
    out: &mut [Option<Chosen>; MAX_MIRRORS],
) -> usize {
    let cfg = &st.gen.config;
    let route = &cfg.routes[route_idx];
    if route.mirrors.is_empty() || head.upgrade.is_some() {
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
        if let Some(Some(lim)) = st.limiters[route_idx].get(i) {
            let t = *now.get_or_insert_with(Instant::now);
            if !lim.allow(t) {
                stats.shed(ShedReason::RateLimited);
                continue;
            }
        }
        if let Some(len) = head.content_length() {
            if len > cfg.mirror.max_body_bytes {
                stats.shed(ShedReason::BodyTooLarge);
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
    head: RequestHead,
    peer_ip: Option<IpAddr>,
) -> Next {
    let start = Instant::now();
    let cfg = &st.gen.config;
    let Some(ri) = cfg.routes.iter().position(|r| {
        r.matcher
            .matches(head.method(), head.path(), |n| head.header(n))
    }) else {
        return reply_soft(
            st,
            client,
            wbuf,
            &head,
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
                Some((&head, &route.name)),
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
    let mut n_chosen = choose_mirrors(w, st, ri, &head, &mut chosen);

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
    let mut up = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            let kind = if e.kind() == io::ErrorKind::TimedOut {
                Kind::GatewayTimeout
            } else {
                Kind::BadGateway("primary unreachable")
            };
            let next = reply_soft(st, client, wbuf, &head, kind, &route.name, pstats).await;
            pstats
                .duration
                .record_us(start.elapsed().as_micros() as u64);
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

    // Request head and body to the primary; the copy is gathered by refcount.
    wbuf.clear();
    let mut edits = RequestEdits {
        client_ip: peer_ip,
        upgrade,
        ..Default::default()
    };
    write_request_head(wbuf, &head, &edits, head.framing.into());
    let retry_head = (!head.has_body() && head.is_idempotent() && up.reused)
        .then(|| Bytes::copy_from_slice(wbuf));
    let chunked = head.framing == BodyFraming::Chunked;
    let mut decoder = match head.framing {
        BodyFraming::None => Decoder::Done,
        BodyFraming::Length(n) => Decoder::length(n),
        BodyFraming::Chunked => Decoder::chunked(),
    };
    let mut copy_body: Vec<Bytes> = Vec::new();
    let mut copy_len: u64 = 0;
    let mut body_len: u64 = 0;
    let mut up_write_failed = false;
    let server = &cfg.server;
    while !decoder.is_done() {
        match decoder.decode(rbuf) {
            Err(_) => {
                reply_engine(
                    st,
                    client,
                    wbuf,
                    Kind::BadRequest("malformed chunked body"),
                    Some((&head, &route.name)),
                    pstats,
                )
                .await;
                return Next::Close;
            }
            Ok(Decoded::Data(d)) => {
                body_len += d.len() as u64;
                if server.max_body_bytes.is_some_and(|m| body_len > m) {
                    reply_engine(
                        st,
                        client,
                        wbuf,
                        Kind::BodyTooLarge,
                        Some((&head, &route.name)),
                        pstats,
                    )
                    .await;
                    return Next::Close;
                }
                if chunked {
                    encode_chunk(wbuf, &d);
                } else {
                    wbuf.extend_from_slice(&d);
                }
                if n_chosen > 0 {
                    copy_len += d.len() as u64;
                    if copy_len > cfg.mirror.max_body_bytes {
                        for c in chosen.iter_mut() {
                            if let Some(c) = c.take() {
                                rstats.mirrors[c.index].shed(ShedReason::BodyTooLarge);
                            }
                        }
                        n_chosen = 0;
                        copy_body = Vec::new();
                    } else {
                        copy_body.push(d);
                    }
                }
                if wbuf.len() >= FLUSH_AT {
                    if !up_write_failed && up.write_all(wbuf).await.is_err() {
                        up_write_failed = true;
                    }
                    wbuf.clear();
                }
            }
            Ok(Decoded::NeedMore) => {
                if !wbuf.is_empty() {
                    if !up_write_failed && up.write_all(wbuf).await.is_err() {
                        up_write_failed = true;
                    }
                    wbuf.clear();
                }
                let _ = client.set_read_timeout(Some(server.idle_timeout));
                match rbuf.read_from(client).await {
                    Ok(0) | Err(_) => return Next::Close, // client gone mid-body: drop the upstream too
                    Ok(_) => {}
                }
            }
            Ok(Decoded::Done) => break,
        }
    }
    if chunked {
        wbuf.extend_from_slice(LAST_CHUNK);
    }
    if !wbuf.is_empty() {
        if !up_write_failed && up.write_all(wbuf).await.is_err() {
            up_write_failed = true;
        }
        wbuf.clear();
    }

    // The body arrived whole and well framed: dispatch the copies.
    let mut pairs: Vec<Rc<Pair>> = Vec::new();
    if n_chosen > 0 {
        for c in chosen.iter().flatten() {
            let m = &route.mirrors[c.index];
            let mstats = rstats.mirrors[c.index].clone();
            edits.upgrade = false;
            edits.host_suffix = &cfg.mirror.host_suffix;
            edits.marker = cfg.mirror.marker_header.as_deref();
            edits.set_headers = &m.set_headers;
            edits.remove_headers = &m.remove_headers;
            let mut mh = BytesMut::with_capacity(head.raw.len() + 64);
            let framing = if body_len == 0 && !head.has_body() {
                OutFraming::None
            } else {
                OutFraming::Length(body_len)
            };
            write_request_head(&mut mh, &head, &edits, framing);
            let mh = mh.freeze();
            let pair = Pair::new(mstats.clone(), mh.clone());
            pairs.push(pair.clone());
            w.mirror_q.offer(MirrorJob {
                state: st.clone(),
                route: ri,
                upstream: m.upstream,
                stats: mstats,
                head: mh,
                body: copy_body.clone(),
                head_request: head.is_head,
                compare_body: m.compare_body,
                pair: Some(pair),
            });
        }
    }
    drop(copy_body);
    let compare_body = n_chosen > 0
        && chosen
            .iter()
            .flatten()
            .any(|c| route.mirrors[c.index].compare_body);

    // Response head from the primary (1xx skipped; one retry on a stale
    // pooled connection for idempotent body-less requests).
    let deadline = Instant::now() + pool.request_timeout;
    let mut retried = false;
    let resp = loop {
        match parse_response(&mut up.buf, MAX_RESPONSE_HEAD, head.is_head) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => continue,
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(why) => {
                let next = reply_soft(
                    st,
                    client,
                    wbuf,
                    &head,
                    Kind::BadGateway(why),
                    &route.name,
                    pstats,
                )
                .await;
                finish_pairs(&pairs, 502, start, None);
                return next;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let r = if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "request timeout"))
        } else {
            let _ = up.stream.set_read_timeout(Some(left));
            up.fill().await
        };
        let stale =
            matches!(&r, Ok(0)) || matches!(&r, Err(e) if e.kind() != io::ErrorKind::TimedOut);
        if stale && up.buf.is_empty() && !retried {
            if let Some(h) = &retry_head {
                retried = true;
                if let Ok(mut fresh) = pool.connect().await {
                    if fresh.write_all(h).await.is_ok() {
                        up = fresh;
                        continue;
                    }
                }
            }
        }
        match r {
            Ok(0) => {
                let next = reply_soft(
                    st,
                    client,
                    wbuf,
                    &head,
                    Kind::BadGateway("primary closed the connection early"),
                    &route.name,
                    pstats,
                )
                .await;
                finish_pairs(&pairs, 502, start, None);
                return next;
            }
            Ok(_) => {}
            Err(e) => {
                let kind = if e.kind() == io::ErrorKind::TimedOut {
                    Kind::GatewayTimeout
                } else {
                    Kind::BadGateway("primary connection failed")
                };
                let next = reply_soft(st, client, wbuf, &head, kind, &route.name, pstats).await;
                finish_pairs(&pairs, kind.status(), start, None);
                return next;
            }
        }
    };

    if resp.status == 101 {
        if !upgrade {
            let next = reply_soft(
                st,
                client,
                wbuf,
                &head,
                Kind::BadGateway("unexpected 101 from primary"),
                &route.name,
                pstats,
            )
            .await;
            finish_pairs(&pairs, 502, start, None);
            return next;
        }
        wbuf.clear();
        write_response_head(wbuf, &resp, ClientFraming::None, head.version, true);
        pstats.codes.inc(101);
        if client.write_all(wbuf).await.is_err() {
            return Next::Close;
        }
        wbuf.clear();
        tunnel(client, rbuf, up, server.idle_timeout).await;
        return Next::Close;
    }

    // Response to the client, streamed.
    let cf = client_framing(&resp, head.version);
    let keep_alive = head.keep_alive && cf != ClientFraming::Close && !w.shared.is_draining();
    wbuf.clear();
    write_response_head(wbuf, &resp, cf, head.version, keep_alive);
    let mut rdec = resp.decoder();
    let mut hasher = compare_body.then(std::collections::hash_map::DefaultHasher::new);
    let mut resp_len: u64 = 0;
    let read_timeout = pool.request_timeout;
    loop {
        match rdec.decode(&mut up.buf) {
            Err(_) => {
                // Bad framing mid-body: the head is out, so the client connection must die.
                let _ = client.write_all(wbuf).await;
                pstats.codes.inc(resp.status);
                finish_pairs(&pairs, 502, start, None);
                return Next::Close;
            }
            Ok(Decoded::Data(d)) => {
                resp_len += d.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.write(&d);
                }
                if cf == ClientFraming::Chunked {
                    encode_chunk(wbuf, &d);
                } else if d.len() >= 16 * 1024 {
                    if (!wbuf.is_empty() && client.write_all(wbuf).await.is_err())
                        || client.write_all(&d).await.is_err()
                    {
                        return Next::Close;
                    }
                    wbuf.clear();
                    continue;
                } else {
                    wbuf.extend_from_slice(&d);
                }
                if wbuf.len() >= FLUSH_AT {
                    if client.write_all(wbuf).await.is_err() {
                        return Next::Close;
                    }
                    wbuf.clear();
                }
            }
            Ok(Decoded::NeedMore) => {
                if !wbuf.is_empty() {
                    if client.write_all(wbuf).await.is_err() {
                        return Next::Close;
                    }
                    wbuf.clear();
                }
                let _ = up.stream.set_read_timeout(Some(read_timeout));
                match up.fill().await {
                    Ok(0) => {
                        if rdec.on_eof().is_err() {
                            // Truncated body: abort the client connection.
                            pstats.codes.inc(resp.status);
                            finish_pairs(&pairs, 502, start, None);
                            return Next::Close;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        pstats.codes.inc(resp.status);
                        finish_pairs(&pairs, 502, start, None);
                        return Next::Close;
                    }
                }
            }
            Ok(Decoded::Done) => break,
        }
    }
    if cf == ClientFraming::Chunked {
        wbuf.extend_from_slice(LAST_CHUNK);
    }
    let client_ok = wbuf.is_empty() || client.write_all(wbuf).await.is_ok();
    wbuf.clear();
    if resp.keep_alive && !rdec.is_eof_delimited() && !up_write_failed {
        pool.put(up);
    }
    let us = start.elapsed().as_micros() as u64;
    pstats.codes.inc(resp.status);
    pstats.duration.record_us(us);
    finish_pairs(&pairs, resp.status, start, hasher.map(|h| h.finish()));
    if let Some(log) = st.access_log.as_ref() {
        log.primary_line(
            head.method(),
            head.target(),
            resp.status,
            us,
            resp_len,
            &route.name,
            up_name,
        );
    }
    if client_ok && keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Give every copy of this request the primary's outcome.
fn finish_pairs(pairs: &[Rc<Pair>], status: u16, start: Instant, digest: Option<u64>) {
    if pairs.is_empty() {
        return;
    }
    let us = start.elapsed().as_micros() as u64;
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
    let keep = head.keep_alive && !head.has_body() && !kind.closes_connection();
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

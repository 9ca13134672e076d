//! Primary path, end to end (docs/SPEC.md "Wire behaviour" and "Framing
//! policy"): the real `shadowtee run` binary between plain blocking clients
//! and the real test upstream. Every wait is bounded; no sleep synchronises.

use shadowtee_e2e::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A config: `[server]` (listen, cores = 1, plus `server_extra` lines), an
/// admin listener, `upstreams` as (name, addr, extra lines), then `routes`.
fn config(server_extra: &str, upstreams: &[(&str, SocketAddr, &str)], routes: &str) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\n{server_extra}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    for (name, addr, extra) in upstreams {
        t.push_str(&format!(
            "\n[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n{extra}\n"
        ));
    }
    t.push('\n');
    t.push_str(routes);
    t
}

/// One `[[routes]]` table: `match_toml` is the body of `[routes.match]`
/// ("" for none), `dests` are (upstream, weight).
fn route(name: &str, match_toml: &str, dests: &[(&str, u32)]) -> String {
    let mut t = format!("\n[[routes]]\nname = \"{name}\"\n");
    if !match_toml.is_empty() {
        t.push_str(&format!("[routes.match]\n{match_toml}\n"));
    }
    for (up, w) in dests {
        t.push_str(&format!(
            "[[routes.destinations]]\nupstream = \"{up}\"\nweight = {w}\n"
        ));
    }
    t
}

/// A keep-alive client: one connection, one reader keeping leftover bytes.
struct Client {
    s: TcpStream,
    r: ResponseReader,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            s: connect(addr),
            r: ResponseReader::new(),
        }
    }
    fn write(&mut self, raw: &[u8]) {
        self.s.write_all(raw).expect("write request");
    }
    fn read(&mut self, head_request: bool) -> std::io::Result<Response> {
        self.r.read(&mut self.s, head_request)
    }
    /// Write one request and read its (final) response.
    fn send(&mut self, raw: &str) -> Response {
        self.write(raw.as_bytes());
        self.read(raw.starts_with("HEAD "))
            .unwrap_or_else(|e| panic!("no response to {raw:?}: {e}"))
    }
    fn get(&mut self, path: &str) -> Response {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }
    /// Whether the peer closes within 3 s (EOF or reset), with no stray bytes.
    fn closed(&mut self) -> bool {
        is_closed(&mut self.s)
    }
}

fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Send `raw` on a fresh connection (write errors ignored: the engine may
/// stop reading early); returns the status (0: no response) and whether the
/// connection was closed afterwards.
fn one_shot(addr: SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut c = Client::new(addr);
    let _ = c.s.write_all(raw);
    match c.read(raw.starts_with(b"HEAD ")) {
        Ok(r) => (r.status, c.closed()),
        Err(_) => (0, true),
    }
}

fn greeting(name: &str) -> Vec<u8> {
    format!("hello from {name}\n").into_bytes()
}

/// Wait (bounded) until `shadowtee_requests_total` with `labels` equals `n`.
fn wait_metric(proxy: &Proxy, labels: &[(&str, &str)], n: f64) -> f64 {
    let mut last = 0.0;
    proxy.wait_until(Duration::from_secs(5), || {
        last = proxy.metric("shadowtee_requests_total", labels);
        last == n
    });
    last
}

// ------------------------------------------------------------------ tests

#[test]
fn weights_split_80_20_and_weight_zero_is_never_chosen() {
    let a = upstream("a", Mode::Fast);
    let b = upstream("b", Mode::Fast);
    let z = upstream("z", Mode::Fast);
    let proxy = Proxy::start(&config(
        "",
        &[("a", a.addr, ""), ("b", b.addr, ""), ("z", z.addr, "")],
        &route("w", "", &[("a", 80), ("b", 20), ("z", 0)]),
    ));
    let (mut na, mut nb) = (0u32, 0u32);
    let mut c = Client::new(proxy.addr);
    for i in 0..1000 {
        if i > 0 && i % 250 == 0 {
            c = Client::new(proxy.addr); // a few connections, all keep-alive
        }
        let r = c.get("/w");
        assert_eq!(r.status, 200);
        match r.header("x-upstream") {
            Some("a") => na += 1,
            Some("b") => nb += 1,
            other => panic!("request {i} answered by {other:?}"),
        }
    }
    assert_eq!(na + nb, 1000);
    assert!((750..=850).contains(&na), "80/20 split gave a={na} b={nb}");
    assert_eq!(z.count(), 0, "weight-0 destination was chosen");
    assert_eq!((a.count(), b.count()), (na as usize, nb as usize));
    // Metrics count exactly what was sent, per upstream.
    fn per(up: &str) -> [(&str, &str); 3] {
        [("route", "w"), ("upstream", up), ("code", "200")]
    }
    assert_eq!(wait_metric(&proxy, &per("a"), f64::from(na)), f64::from(na));
    assert_eq!(wait_metric(&proxy, &per("b"), f64::from(nb)), f64::from(nb));
    assert_eq!(
        proxy.metric("shadowtee_requests_total", &[("upstream", "z")]),
        0.0
    );
}

#[test]
fn requests_total_counts_what_was_sent() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let mut c = Client::new(proxy.addr);
    for _ in 0..7 {
        assert_eq!(c.get("/ok").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/status/503").status, 503);
    }
    let ok = [("route", "default"), ("upstream", "v1"), ("code", "200")];
    let unavailable = [("route", "default"), ("upstream", "v1"), ("code", "503")];
    assert_eq!(wait_metric(&proxy, &ok, 7.0), 7.0);
    assert_eq!(wait_metric(&proxy, &unavailable, 3.0), 3.0);
    let all = [("route", "default"), ("upstream", "v1")];
    assert_eq!(wait_metric(&proxy, &all, 10.0), 10.0);
}

#[test]
fn match_kinds_first_match_wins_and_no_match_is_404() {
    let ups: Vec<TestServer> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| upstream(n, Mode::Fast))
        .collect();
    let mut routes = String::new();
    routes += &route("exact", "path_exact = \"/exact\"", &[("a", 1)]);
    routes += &route(
        "canary",
        "path_prefix = \"/api\"\nheaders = { \"X-Canary\" = \"1\" }",
        &[("d", 1)],
    );
    routes += &route("api", "path_prefix = \"/api\"", &[("b", 1)]);
    routes += &route("api-v2", "path_prefix = \"/api/v2\"", &[("a", 1)]);
    routes += &route(
        "writes",
        "path_prefix = \"/m\"\nmethods = [\"POST\", \"PUT\"]",
        &[("c", 1)],
    );
    let up_list: Vec<(&str, SocketAddr, &str)> =
        ups.iter().map(|u| (u.name(), u.addr, "")).collect();
    let proxy = Proxy::start(&config("", &up_list, &routes));
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        // (method, target, extra header lines, expected upstream; None = 404)
        ("GET", "/exact", "", Some("a")),
        ("GET", "/exact?q=/api", "", Some("a")),
        ("GET", "/exact/", "", None),
        ("GET", "/exactly", "", None),
        ("GET", "/api/x", "x-CANARY: 1\r\n", Some("d")),
        ("GET", "/api/x", "X-Canary: 2\r\n", Some("b")),
        ("GET", "/api/x", "", Some("b")),
        ("GET", "/api/v2/x", "", Some("b")),
        ("POST", "/m/1", "Content-Length: 0\r\n", Some("c")),
        ("PUT", "/m/1", "Content-Length: 0\r\n", Some("c")),
        ("GET", "/m/1", "", None),
        ("DELETE", "/m/1", "", None),
        ("GET", "/nothing?/api", "", None),
        ("GET", "/", "", None),
    ];
    let mut c = Client::new(proxy.addr);
    let mut not_found = 0;
    for (m, t, extra, want) in cases {
        let r = c.send(&format!("{m} {t} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
        match want {
            Some(up) => {
                assert_eq!(r.status, 200, "{m} {t} {extra:?}");
                assert_eq!(r.header("x-upstream"), Some(*up), "{m} {t} {extra:?}");
            }
            None => {
                not_found += 1;
                assert_eq!(r.status, 404, "{m} {t} {extra:?} should match nothing");
                assert_eq!(r.header("x-upstream"), None);
                assert!(!r.body.is_empty(), "engine-made 404 names its reason");
            }
        }
    }
    let routed = cases.iter().filter(|c| c.3.is_some()).count();
    let seen: usize = ups.iter().map(TestServer::count).sum();
    assert_eq!(seen, routed, "a 404 request reached an upstream");
    let targets: Vec<String> = ups
        .iter()
        .flat_map(|u| u.requests())
        .map(|r| r.target)
        .collect();
    assert!(!targets
        .iter()
        .any(|t| t.starts_with("/nothing") || t == "/"));
    let n404 = f64::from(not_found);
    assert_eq!(wait_metric(&proxy, &[("code", "404")], n404), n404);
}

/// A 502 for a failed primary says on stderr which route, upstream and
/// endpoint, and why; under a stream of failures, at most one line per
/// second per core, the next one counting those left out.
#[test]
fn primary_failures_are_logged_with_their_endpoint() {
    let refuse = upstream("refuse", Mode::Refuse);
    let garbage = upstream("garbage", Mode::Garbage);
    let mut routes = String::new();
    for n in ["refuse", "garbage"] {
        routes += &route(n, &format!("path_prefix = \"/{n}\""), &[(n, 1)]);
    }
    let proxy = Proxy::start(&config(
        "",
        &[("refuse", refuse.addr, ""), ("garbage", garbage.addr, "")],
        &routes,
    ));
    let lines = |p: &Proxy| -> Vec<String> {
        p.stderr()
            .lines()
            .filter(|l| l.contains(" on route "))
            .map(str::to_string)
            .collect()
    };
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(proxy.get("/refuse").status, 502);
    }
    let first = lines(&proxy);
    let want = format!("{}", refuse.addr);
    assert!(
        first[0].contains("502 on route \"refuse\", upstream \"refuse\"")
            && first[0].contains(&want),
        "{first:?}"
    );
    let secs = started.elapsed().as_secs() as usize;
    assert!(first.len() <= secs + 1, "not rate limited: {first:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(proxy.get("/garbage").status, 502);
    let all = lines(&proxy);
    let last = all.last().expect("a line for the garbage primary");
    assert!(
        last.contains("upstream \"garbage\"") && last.contains(&format!("{}", garbage.addr)),
        "{all:?}"
    );
    assert!(last.contains("more since the last line"), "{all:?}");
}

#[test]
fn unreachable_bad_truncated_and_hung_primaries() {
    let refuse = upstream("refuse", Mode::Refuse);
    let garbage = upstream("garbage", Mode::Garbage);
    let cut = upstream("cut", Mode::CloseMidBody);
    let hung = upstream("hung", Mode::Hung);
    let mut routes = String::new();
    for n in ["refuse", "garbage", "cut", "hung"] {
        routes += &route(n, &format!("path_prefix = \"/{n}\""), &[(n, 1)]);
    }
    let proxy = Proxy::start(&config(
        "",
        &[
            ("refuse", refuse.addr, ""),
            ("garbage", garbage.addr, ""),
            ("cut", cut.addr, ""),
            ("hung", hung.addr, "request_timeout_ms = 300"),
        ],
        &routes,
    ));
    for path in ["/refuse", "/garbage"] {
        let r = proxy.get(path);
        assert_eq!(r.status, 502, "{path}");
        assert!(
            !r.body.is_empty(),
            "{path}: engine-made 502 names its reason"
        );
    }
    // A head then a short body: the client must not see a complete response.
    let mut c = Client::new(proxy.addr);
    c.write(b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n");
    match c.read(false) {
        Err(_) => {}
        Ok(r) => panic!(
            "truncated upstream body reached the client as a complete response: {} {:?} {} bytes",
            r.status,
            r.headers,
            r.body.len()
        ),
    }
    assert!(cut.wait_for(1, Duration::from_secs(5)));
    // No response head within request_timeout_ms -> 504, on time.
    let started = Instant::now();
    let r = proxy.get("/hung");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert!(!r.body.is_empty());
    assert!(took >= Duration::from_millis(250), "504 after {took:?}");
    assert!(took < Duration::from_secs(5), "504 after {took:?}");
    assert_eq!(hung.count(), 1);
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    // Keep-alive: several requests on one client connection.
    let mut c = Client::new(proxy.addr);
    for i in 0..5 {
        let r = c.get(&format!("/ka/{i}"));
        assert_eq!((r.status, r.body.clone()), (200, greeting("v1")));
        assert_ne!(r.header("connection"), Some("close"));
    }
    let seen: Vec<String> = v1.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, (0..5).map(|i| format!("/ka/{i}")).collect::<Vec<_>>());
    assert_eq!(
        v1.requests()[0].header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    // Pipelining: four requests in one write, answered in order.
    let mut p = Client::new(proxy.addr);
    p.write(
        b"GET /status/201 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /size/70000 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /status/404 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let r1 = p.read(false).unwrap();
    assert_eq!((r1.status, r1.body.as_slice()), (201, &b"v1 201\n"[..]));
    let r2 = p.read(false).unwrap();
    assert_eq!((r2.status, r2.body), (200, greeting("v1")));
    let r3 = p.read(false).unwrap();
    assert_eq!(r3.body.len(), 70000);
    assert!(r3.body.iter().all(|&b| b == b'x'));
    let r4 = p.read(false).unwrap();
    assert_eq!((r4.status, r4.body.as_slice()), (404, &b"v1 404\n"[..]));
    assert_eq!(
        p.get("/after").status,
        200,
        "connection usable after pipelining"
    );
    // Pipelined requests with bodies of both framings stay separated.
    p.write(
        b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
          GET /p2 HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /p3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n\
          GET /p4 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    for _ in 0..4 {
        assert_eq!(p.read(false).unwrap().status, 200);
    }
    let tail: Vec<(String, u64)> = v1
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/p"))
        .map(|r| (r.target, r.body_len))
        .collect();
    let want = [("/p1", 5), ("/p2", 0), ("/p3", 1), ("/p4", 0)];
    let want: Vec<(String, u64)> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    assert_eq!(tail, want);
    // Connection: close is honoured: said in the response, then EOF.
    let mut k = Client::new(proxy.addr);
    let r = k.send("GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    assert!(k.closed(), "Connection: close was not honoured");
    let bye = v1
        .requests()
        .into_iter()
        .find(|r| r.target == "/bye")
        .unwrap();
    assert_eq!(bye.header("connection"), None);
}

#[test]
fn chunked_bodies_both_ways() {
    let echo = upstream("echo", Mode::Echo);
    let chunky = upstream("chunky", Mode::Chunked);
    let routes =
        route("c", "path_prefix = \"/chunky\"", &[("chunky", 1)]) + &route("e", "", &[("echo", 1)]);
    let proxy = Proxy::start(&config(
        "",
        &[("echo", echo.addr, ""), ("chunky", chunky.addr, "")],
        &routes,
    ));
    // A chunked request body reaches the upstream intact.
    let mut c = Client::new(proxy.addr);
    let r = c.send(
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nabc\r\n4;ext=1\r\ndefg\r\n1a\r\nhijklmnopqrstuvwxyz0123456\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_string(), "abcdefghijklmnopqrstuvwxyz0123456");
    let rec = &echo.requests()[0];
    assert_eq!(rec.body, b"abcdefghijklmnopqrstuvwxyz0123456");
    assert_eq!(rec.body_len, 33);
    let te = rec
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .count();
    let cl = rec.header("content-length");
    assert!(
        (te == 1 && cl.is_none()) || (te == 0 && cl == Some("33")),
        "one framing forwarded: {:?}",
        rec.headers
    );
    assert_eq!(
        c.get("/next").status,
        200,
        "connection reusable after chunked upload"
    );
    let r = c.send(
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hi"[..]),
        "TE is case-insensitive"
    );
    // A chunked response reaches a 1.1 client chunked ...
    let r = c.get("/chunky");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, greeting("chunky"));
    // ... and an HTTP/1.0 client close-delimited.
    let mut old = Client::new(proxy.addr);
    let r = old.send("GET /chunky HTTP/1.0\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "chunked sent to HTTP/1.0"
    );
    assert_eq!(r.body, greeting("chunky"));
}

#[test]
fn expect_100_continue() {
    let echo = upstream("echo", Mode::Echo);
    let proxy = Proxy::start(&simple_config(echo.addr, &[]));
    let mut c = Client::new(proxy.addr);
    c.write(b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.r.read_one(&mut c.s, false).expect("interim response");
    assert_eq!(interim.status, 100, "no 100 Continue before the body");
    c.write(b"hello");
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let rec = &echo.requests()[0];
    assert_eq!(rec.body, b"hello");
    assert_eq!(rec.header("expect"), None, "Expect reached the upstream");
    assert_eq!(c.get("/again").status, 200);
}

#[test]
fn websocket_upgrade_is_tunnelled_both_ways() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let mut c = Client::new(proxy.addr);
    c.write(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.r.read_one(&mut c.s, false).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket")
    );
    let rec = &v1.requests()[0];
    assert_eq!(rec.header("upgrade"), Some("websocket"));
    // Bytes echo both ways through the tunnel, several rounds.
    for msg in [&b"ping"[..], &[7u8; 100_000][..], b"last"] {
        c.write(msg);
        let mut back = vec![0u8; msg.len()];
        c.s.read_exact(&mut back).expect("tunnelled echo");
        assert_eq!(back, msg);
    }
    c.s.shutdown(Shutdown::Write).unwrap();
    assert!(
        c.closed(),
        "tunnel not closed after the client's half-close"
    );
}

#[test]
fn h2c_upgrade_alone_is_not_tunnelled() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    // h2c alone is not tunnelled: a normal 200, Upgrade stripped upstream.
    let mut h = Client::new(proxy.addr);
    let r = h.send(
        "GET /h2c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!((r.status, r.body), (200, greeting("v1")));
    let rec = v1
        .requests()
        .into_iter()
        .find(|r| r.target == "/h2c")
        .unwrap();
    assert_eq!(rec.header("upgrade"), None);
    assert_eq!(rec.header("http2-settings"), None);
    assert_eq!(h.get("/next").status, 200);
}

#[test]
fn head_204_304_have_no_body_and_keep_the_connection() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let mut c = Client::new(proxy.addr);
    let r = c.send("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    let len = greeting("v1").len().to_string();
    assert_eq!(r.header("content-length"), Some(len.as_str()));
    let r = c.send("HEAD /size/100000 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.header("content-length"), Some("100000"));
    let r = c.send("HEAD /chunked HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = c.get("/status/204");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("transfer-encoding"), None);
    let r = c.get("/status/304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("transfer-encoding"), None);
    // Any stray body byte above would corrupt this response.
    let r = c.get("/");
    assert_eq!((r.status, r.body), (200, greeting("v1")));
    c.s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(c.s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "stray bytes or close after bodiless responses"
    );
    assert_eq!(v1.count(), 6);
}

#[test]
fn http10_clients_with_and_without_keep_alive() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    // Without keep-alive (and without Host, legal in 1.0): answered, closed.
    let mut c = Client::new(proxy.addr);
    let r = c.send("GET /plain HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.body), (200, greeting("v1")));
    assert!(c.closed(), "HTTP/1.0 without keep-alive must close");
    // With keep-alive: the connection persists and says so.
    let mut k = Client::new(proxy.addr);
    for i in 0..3 {
        let r = k.send(&format!(
            "GET /ka/{i} HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert_eq!((r.status, &r.body), (200, &greeting("v1")));
        assert_eq!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("keep-alive")
        );
    }
    let r = k.send("GET /last HTTP/1.0\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(k.closed());
    assert_eq!(v1.count(), 5);
}

#[test]
fn hop_by_hop_headers_are_removed_and_xff_appended() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let r = request(
        proxy.addr,
        "GET /hop HTTP/1.1\r\nHost: h\r\n\
         Connection: keep-alive, X-Custom-Hop\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nx-custom-hop: secret\r\n\
         X-Keep: yes\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let chunked = request(
        proxy.addr,
        "POST /te HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         2\r\nhi\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 200);
    let multi = request(
        proxy.addr,
        "GET http://example.com:8080/abs?q=1 HTTP/1.1\r\nHost: other\r\n\
         X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(multi.status, 200);
    let reqs = v1.requests();
    let abs = reqs
        .iter()
        .find(|r| r.target == "/abs?q=1")
        .expect("origin-form target");
    assert_eq!(
        abs.header("host"),
        Some("example.com:8080"),
        "authority becomes Host"
    );
    assert_eq!(
        abs.header("x-forwarded-for"),
        Some("1.1.1.1, 2.2.2.2, 127.0.0.1")
    );
    let rec = reqs.iter().find(|r| r.target == "/hop").unwrap();
    for hop in [
        "connection",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
        "x-custom-hop",
    ] {
        assert_eq!(
            rec.header(hop),
            None,
            "{hop} reached the upstream: {:?}",
            rec.headers
        );
    }
    assert_eq!(rec.header("x-keep"), Some("yes"));
    assert_eq!(rec.header("host"), Some("h"));
    assert_eq!(rec.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    let xff = rec
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .count();
    assert_eq!(xff, 1);
    // The client's Transfer-Encoding is not relayed verbatim: at most one,
    // the engine's own "chunked", never alongside a Content-Length.
    let te = reqs.iter().find(|r| r.target == "/te").unwrap();
    assert_eq!(te.body, b"hi");
    assert_eq!(te.header("connection"), None);
    let tes: Vec<&str> = te
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(tes.is_empty() || (tes == ["chunked"] && te.header("content-length").is_none()));
}

#[test]
fn framing_rejections_close_and_reach_no_upstream() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let cases: &[(&str, &str, u16)] = &[
        ("CL+TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE+CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        ("conflicting CLs", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
        ("CL sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("CL overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("TE gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("TE in 1.0", "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("missing Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
        ("duplicate Host", "GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", 400),
        ("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400),
        ("no colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A b\r\n\r\n", 400),
        ("invalid name", "GET / HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n", 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\0c\r\n\r\n", 400),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\rc\r\n\r\n", 400),
    ];
    let mut failures = Vec::new();
    for (name, raw, want) in cases {
        let (status, closed) = one_shot(proxy.addr, raw.as_bytes());
        if status != *want || !closed {
            failures.push(format!(
                "{name}: got {status} (closed: {closed}), want {want} + close"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        v1.count(),
        0,
        "a rejected request reached the upstream: {:?}",
        v1.requests()
    );
    // Rejections are counted with the engine's status.
    let n400 = cases.iter().filter(|c| c.2 == 400).count() as f64;
    assert_eq!(wait_metric(&proxy, &[("code", "400")], n400), n400);
}

#[test]
fn smuggling_attempts_never_yield_a_second_request() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let attacks: Vec<(&str, String)> = vec![
        ("CL.TE", format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE.CL", format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len())),
        ("TE.TE", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE space", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}")),
        ("xchunked", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("short chunk", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc{smuggled}")),
        ("LF chunk", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n{smuggled}")),
        ("size overflow", format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n{smuggled}")),
    ];
    let mut failures = Vec::new();
    for (name, raw) in &attacks {
        let (status, closed) = one_shot(proxy.addr, raw.as_bytes());
        if !matches!(status, 400 | 501) || !closed {
            failures.push(format!("{name}: got {status} (closed: {closed})"));
        }
    }
    // A request inside a well-framed body is just body bytes.
    let body = smuggled;
    let (status, _) = one_shot(
        proxy.addr,
        format!("POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(failures.is_empty(), "{failures:#?}");
    let reqs = v1.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/one"], "upstream saw {targets:?}");
    assert_eq!(reqs[0].body, body.as_bytes());
}

#[test]
fn limits_431_414_413_408() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        "max_header_bytes = 4096\nmax_body_bytes = 1000\nheader_timeout_ms = 300",
        &[("v1", v1.addr, "")],
        &route("default", "", &[("v1", 1)]),
    ));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "x".repeat(5000)
    );
    assert_eq!(one_shot(proxy.addr, big_head.as_bytes()), (431, true));
    let many: String = (0..300).map(|i| format!("x-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    assert!(many.len() < 4096);
    assert_eq!(
        one_shot(proxy.addr, many.as_bytes()),
        (431, true),
        "too many fields"
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(20 * 1024));
    assert_eq!(one_shot(proxy.addr, long.as_bytes()), (414, true));
    // Content-Length over the limit: refused before any body is read.
    let over = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n";
    assert_eq!(one_shot(proxy.addr, over.as_bytes()), (413, true));
    assert_eq!(v1.count(), 0);
    // Exactly at the limit passes.
    let at = format!(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
        "b".repeat(1000)
    );
    assert_eq!(request(proxy.addr, &at).status, 200);
    assert_eq!(v1.count(), 1);
    // A chunked body crossing the limit mid-stream: 413, upstream never
    // gets the complete request even though the client sent all of it.
    let mut c = Client::new(proxy.addr);
    let chunk = format!("258\r\n{}\r\n", "c".repeat(600));
    c.write(
        format!("POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}")
            .as_bytes(),
    );
    let _ = c.s.write_all(format!("{chunk}0\r\n\r\n").as_bytes());
    let r = c.read(false).expect("413 for an oversized chunked body");
    assert_eq!(r.status, 413);
    assert!(c.closed());
    assert!(
        !v1.wait_for(2, Duration::from_millis(300)),
        "upstream got the oversized chunked request: {:?}",
        v1.requests().last().map(|r| (&r.target, r.body_len))
    );
    // A head not completed in header_timeout_ms: 408, then close.
    let mut slow = Client::new(proxy.addr);
    let started = Instant::now();
    slow.write(b"GET / HTTP/1.1\r\nHost: h\r\n");
    let r = slow.read(false).expect("408 for a slow head");
    let took = started.elapsed();
    assert_eq!(r.status, 408);
    assert!(took >= Duration::from_millis(250), "408 after {took:?}");
    assert!(took < Duration::from_secs(5), "408 after {took:?}");
    assert!(slow.closed());
    assert_eq!(v1.count(), 1);
}

#[test]
fn idle_keep_alive_connection_closes_after_idle_timeout() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        "idle_timeout_ms = 300",
        &[("v1", v1.addr, "")],
        &route("default", "", &[("v1", 1)]),
    ));
    let mut c = Client::new(proxy.addr);
    c.write(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read(false).expect("answer").status, 200);
    // Kept alive while used: a second request inside the idle time passes.
    std::thread::sleep(Duration::from_millis(100));
    c.write(b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read(false).expect("answer").status, 200);
    // Then idle: closed (no answer bytes) after about idle_timeout_ms.
    let idle_from = Instant::now();
    assert!(c.closed(), "idle connection not closed");
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(v1.count(), 2);
}

#[test]
fn connection_cap_answers_503() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        "max_connections = 2",
        &[("v1", v1.addr, "")],
        &route("default", "", &[("v1", 1)]),
    ));
    let mut held: Vec<Client> = (0..2).map(|_| Client::new(proxy.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/hold").status, 200);
    }
    let mut third = Client::new(proxy.addr);
    let r = third
        .read(false)
        .expect("503 for a connection over the cap");
    assert_eq!(r.status, 503);
    assert!(third.closed());
    // The held connections still work; freeing one admits a new one.
    assert_eq!(held[0].get("/still").status, 200);
    drop(held.pop());
    let admitted = proxy.wait_until(Duration::from_secs(5), || {
        let mut c = Client::new(proxy.addr);
        c.get("/again").status == 200
    });
    assert!(admitted, "a freed slot was never reused");
    assert_eq!(held[0].get("/still").status, 200);
}

/// Byte `i` of the upload.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// FNV-1a 64 step, the hash of `RecordedRequest::body_hash`.
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const TOTAL: usize = 64 << 20;

/// Peak RSS of a process, sampled every 20 ms on a thread until `finish`.
struct RssPeak {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Acquire) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(0);
                p.fetch_max(rss, Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(20)); // sampling period
            }
        });
        RssPeak { peak, done, thread }
    }
    fn finish(self) -> u64 {
        self.done.store(true, Ordering::Release);
        let _ = self.thread.join();
        self.peak.load(Ordering::Acquire)
    }
}

/// POST `TOTAL` pattern bytes on `c` from a writer thread while this thread
/// reads the response; returns it and the FNV-1a 64 of what was sent.
fn upload(c: &mut Client, path: &str) -> (Response, u64) {
    let mut w = c.s.try_clone().unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {TOTAL}\r\n\r\n");
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        w.write_all(head.as_bytes())?;
        const PIECE: usize = 64 * 1024;
        let buf: Vec<u8> = (0..PIECE + 251).map(pattern).collect();
        let (mut sent, mut h) = (0, FNV_OFFSET);
        while sent < TOTAL {
            let n = PIECE.min(TOTAL - sent);
            let piece = &buf[sent % 251..sent % 251 + n];
            w.write_all(piece)?;
            h = fnv(h, piece);
            sent += n;
        }
        Ok(h)
    });
    let r = c.read(false);
    let hash = writer.join().unwrap();
    let r = r.expect("response to a 64 MiB upload");
    (r, hash.expect("upload written"))
}

fn large_proxy(echo: &TestServer, sink: &TestServer) -> Proxy {
    let routes =
        route("up", "path_prefix = \"/echo\"", &[("echo", 1)]) + &route("sink", "", &[("sink", 1)]);
    let proxy = Proxy::start(&config(
        "",
        &[("echo", echo.addr, ""), ("sink", sink.addr, "")],
        &routes,
    ));
    assert_eq!(proxy.get("/warm").status, 200);
    proxy
}

#[test]
fn large_upload_and_download_are_byte_exact_in_bounded_memory() {
    let echo = upstream("echo", Mode::Echo);
    let sink = upstream("sink", Mode::Fast);
    let proxy = large_proxy(&echo, &sink);
    let idle = proxy.rss_kib();
    assert!(idle > 0);
    let rss = RssPeak::start(proxy.pid());
    let mut c = Client::new(proxy.addr);
    // Upload: 64 MiB to an upstream that answers after reading it all.
    let (r, sent_hash) = upload(&mut c, "/sink");
    assert_eq!((r.status, r.body), (200, greeting("sink")));
    let rec = sink
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(rec.body_len, TOTAL as u64, "uploaded length");
    assert_eq!(rec.body_hash, sent_hash, "uploaded bytes differ");
    // Download: 64 MiB with Content-Length.
    let r = c.get(&format!("/size/{TOTAL}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(TOTAL.to_string().as_str()));
    assert_eq!(r.body.len(), TOTAL, "downloaded length");
    assert!(r.body.iter().all(|&b| b == b'x'), "downloaded bytes differ");
    drop(r);
    assert_eq!(
        c.get("/size/3").body,
        b"xxx",
        "connection reusable after large bodies"
    );
    let grew = rss.finish().saturating_sub(idle);
    assert!(
        grew < 64 * 1024,
        "engine RSS grew by {grew} KiB over idle {idle} KiB"
    );
}

#[test]
fn large_upload_to_echo_streams_back_in_bounded_memory() {
    let echo = upstream("echo", Mode::Echo);
    let sink = upstream("sink", Mode::Fast);
    let proxy = large_proxy(&echo, &sink);
    let idle = proxy.rss_kib();
    let rss = RssPeak::start(proxy.pid());
    let mut c = Client::new(proxy.addr);
    let (r, sent_hash) = upload(&mut c, "/echo");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), TOTAL, "echoed length");
    let first_bad = r
        .body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern(i));
    assert_eq!(first_bad, None, "echoed bytes differ");
    assert_eq!(fnv(FNV_OFFSET, &r.body), sent_hash);
    let rec = &echo.requests()[0];
    assert_eq!((rec.body_len, rec.body_hash), (TOTAL as u64, sent_hash));
    drop(r);
    assert_eq!(c.get("/echo/again").status, 200);
    let grew = rss.finish().saturating_sub(idle);
    assert!(
        grew < 64 * 1024,
        "engine RSS grew by {grew} KiB over idle {idle} KiB"
    );
}

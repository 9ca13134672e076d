//! The mirror path, end to end: what a shadow receives, sampling, the loop
//! guard, copy-only edits, shedding (rate, body size, in-flight, queue),
//! runtime switches on the admin API, and shadow faults that must never
//! reach or slow the client.
use shadowtee_e2e::*;
use shadowtee_origin::fnv1a64;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on every wait for an observable outcome.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
const PRIMARY_BODY: &[u8] = b"hello from v1\n";

/// One route "default" to upstream v1 with the given mirrors
/// (name, address, extra TOML lines for its `[[routes.mirrors]]` table);
/// `mirror` is the body of the `[mirror]` table.
fn config(primary: SocketAddr, mirror: &str, mirrors: &[(&str, SocketAddr, &str)]) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [mirror]\n{mirror}\n\n[[upstreams]]\nname = \"v1\"\nendpoints = [\"{primary}\"]\n"
    );
    for (name, addr, _) in mirrors {
        t.push_str(&format!(
            "\n[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n"
        ));
    }
    t.push_str("\n[[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v1\"\n");
    for (name, _, extra) in mirrors {
        t.push_str(&format!(
            "[[routes.mirrors]]\nupstream = \"{name}\"\n{extra}\n"
        ));
    }
    t
}

/// A keep-alive client connection.
struct Conn {
    s: TcpStream,
    r: ResponseReader,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        Conn {
            s: connect(addr),
            r: ResponseReader::new(),
        }
    }
    fn send(&mut self, raw: &[u8]) -> Response {
        self.s.write_all(raw).expect("write request");
        self.r
            .read(&mut self.s, raw.starts_with(b"HEAD "))
            .expect("read response")
    }
    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }
}

/// `n` GETs of `path` over one keep-alive connection; every answer must be
/// the primary's 200. Returns how long the batch took.
fn batch(addr: SocketAddr, n: usize, path: &str) -> Duration {
    let mut c = Conn::open(addr);
    let started = Instant::now();
    for i in 0..n {
        let r = c.get(path);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.body, PRIMARY_BODY, "request {i}");
        assert_eq!(r.header("x-upstream"), Some("v1"));
    }
    started.elapsed()
}

fn mirror_metric(text: &str, up: &str, outcome: &str) -> f64 {
    metric_sum(
        text,
        "shadowtee_mirror_requests_total",
        &[("route", "default"), ("upstream", up), ("outcome", outcome)],
    )
}

fn shed(p: &Proxy, up: &str, reason: &str) -> f64 {
    p.metric(
        "shadowtee_mirror_requests_total",
        &[
            ("route", "default"),
            ("upstream", up),
            ("outcome", "shed"),
            ("reason", reason),
        ],
    )
}

/// (completed, failed, shed) of one mirror, from one scrape.
fn outcomes(p: &Proxy, up: &str) -> (f64, f64, f64) {
    let text = p.metrics();
    (
        mirror_metric(&text, up, "completed"),
        mirror_metric(&text, up, "failed"),
        mirror_metric(&text, up, "shed"),
    )
}

/// Wait until completed + failed + shed of `up` reaches `due`, then assert
/// it is exactly `due`; returns the outcomes.
fn accounted(p: &Proxy, up: &str, due: usize) -> (f64, f64, f64) {
    let mut last = (0.0, 0.0, 0.0);
    p.wait_until(WAIT, || {
        last = outcomes(p, up);
        last.0 + last.1 + last.2 >= due as f64
    });
    assert_eq!(
        last.0 + last.1 + last.2,
        due as f64,
        "completed+failed+shed of {up} vs copies due: {last:?}"
    );
    last
}

/// Wait until every copy the fast shadow received is counted completed and
/// nothing more arrives; returns the number of copies.
fn settle(p: &Proxy, shadow: &TestServer, up: &str) -> usize {
    loop {
        assert!(
            p.wait_until(WAIT, || outcomes(p, up).0 == shadow.count() as f64),
            "copies received {} never matched completed {:?}",
            shadow.count(),
            outcomes(p, up)
        );
        let n = shadow.count();
        std::thread::sleep(QUIET);
        if shadow.count() == n && outcomes(p, up).0 == n as f64 {
            return n;
        }
    }
}

/// Nothing more than `n` requests reaches `s` (checked after a quiet spell).
fn stays_at(s: &TestServer, n: usize) {
    std::thread::sleep(QUIET);
    assert_eq!(s.count(), n, "{} got {:?}", s.name(), targets(s));
}

fn targets(s: &TestServer) -> Vec<String> {
    s.requests().into_iter().map(|r| r.target).collect()
}

fn headers_lower(r: &RecordedRequest) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    h.sort();
    h
}

fn status_of(raw: &[u8]) -> u16 {
    raw.get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn copy_has_the_primary_request_plus_marker() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(v1.addr, "", &[("test-v1", shadow.addr, "")]));
    let mut c = Conn::open(proxy.addr);
    let r = c.send(
        b"POST /submit?q=1&r=%20 HTTP/1.1\r\nHost: api.test\r\nX-Custom: abc\r\n\
          Connection: keep-alive, x-hop\r\nX-Hop: drop-me\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\nAccept: text/plain\r\n\
          Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!((r.status, r.body.as_slice()), (200, PRIMARY_BODY));
    assert!(shadow.wait_for(1, WAIT), "shadow got no copy");
    let p = &v1.requests()[0];
    let s = &shadow.requests()[0];
    assert_eq!((s.method.as_str(), p.method.as_str()), ("POST", "POST"));
    assert_eq!(s.target, "/submit?q=1&r=%20");
    assert_eq!(s.target, p.target);
    assert_eq!(s.body, b"hello world");
    assert_eq!(s.body, p.body);
    assert_eq!(s.header("x-shadowtee-mirror"), Some("1"));
    assert_eq!(p.header("x-shadowtee-mirror"), None);
    for hop in ["x-hop", "keep-alive", "te"] {
        assert_eq!(s.header(hop), None, "hop-by-hop {hop} reached the shadow");
        assert_eq!(p.header(hop), None, "hop-by-hop {hop} reached the primary");
    }
    let mut expected = headers_lower(p);
    expected.push(("x-shadowtee-mirror".into(), "1".into()));
    expected.sort();
    assert_eq!(
        headers_lower(s),
        expected,
        "copy headers vs primary headers"
    );

    // A chunked upload: the copy carries the same bytes.
    let r = c.send(
        b"PUT /up HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(shadow.wait_for(2, WAIT));
    let p = &v1.requests()[1];
    let s = &shadow.requests()[1];
    assert_eq!((s.method.as_str(), s.target.as_str()), ("PUT", "/up"));
    assert_eq!(
        (p.body.as_slice(), s.body.as_slice()),
        (&b"hello world"[..], &b"hello world"[..])
    );
    assert_eq!(s.body_hash, p.body_hash);

    // Expect: 100-continue, then a body bigger than one write.
    let big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    c.s.write_all(
        b"POST /big HTTP/1.1\r\nHost: api.test\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    let interim = c.r.read_one(&mut c.s, false).expect("100 Continue");
    assert_eq!(interim.status, 100);
    c.s.write_all(&big).unwrap();
    let r = c.r.read(&mut c.s, false).expect("response");
    assert_eq!((r.status, r.body.as_slice()), (200, PRIMARY_BODY));
    assert!(shadow.wait_for(3, WAIT));
    let s = &shadow.requests()[2];
    assert_eq!((s.target.as_str(), s.body_len), ("/big", 100_000));
    assert_eq!(s.body_hash, fnv1a64(&big));
    assert_eq!(accounted(&proxy, "test-v1", 3).0, 3.0);
}

#[test]
fn upgrade_is_tunnelled_but_not_mirrored() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(v1.addr, "", &[("test-v1", shadow.addr, "")]));
    let mut c = Conn::open(proxy.addr);
    let r =
        c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(r.status, 101);
    assert!(v1.wait_for(1, WAIT));
    assert_eq!(proxy.get("/after").status, 200);
    assert!(shadow.wait_for(1, WAIT));
    stays_at(&shadow, 1);
    assert_eq!(targets(&shadow), ["/after"]);
}

#[test]
fn upgrade_tunnel_relays_bytes_exactly() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&config(v1.addr, "", &[]));
    let mut c = Conn::open(proxy.addr);
    let r =
        c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(r.status, 101);
    c.s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.s, &mut got).expect("tunnel echo");
    assert_eq!(&got, b"ping");
}

#[test]
fn percent_50_copies_about_half() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[("test-v1", shadow.addr, "percent = 50.0")],
    ));
    batch(proxy.addr, 1000, "/p");
    let n = settle(&proxy, &shadow, "test-v1");
    assert!((440..=560).contains(&n), "percent 50 copied {n} of 1000");
    let (completed, failed, shed) = outcomes(&proxy, "test-v1");
    assert_eq!((completed, failed, shed), (n as f64, 0.0, 0.0));
}

#[test]
fn percent_0_never_copies() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[("test-v1", shadow.addr, "percent = 0.0")],
    ));
    batch(proxy.addr, 200, "/p");
    stays_at(&shadow, 0);
    assert_eq!(outcomes(&proxy, "test-v1"), (0.0, 0.0, 0.0));
}

#[test]
fn two_mirrors_both_get_copies() {
    let v1 = upstream("v1", Mode::Fast);
    let a = upstream("test-v1", Mode::Fast);
    let b = upstream("test-v2", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[("test-v1", a.addr, ""), ("test-v2", b.addr, "")],
    ));
    batch(proxy.addr, 20, "/both");
    assert!(a.wait_for(20, WAIT) && b.wait_for(20, WAIT));
    assert_eq!(accounted(&proxy, "test-v1", 20).0, 20.0);
    assert_eq!(accounted(&proxy, "test-v2", 20).0, 20.0);
    stays_at(&a, 20);
    stays_at(&b, 20);
    assert!(b.requests().iter().all(|r| r.target == "/both"));
}

#[test]
fn loop_guard_skips_requests_carrying_the_marker() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(v1.addr, "", &[("test-v1", shadow.addr, "")]));
    let mut c = Conn::open(proxy.addr);
    for v in ["1", "0", "yes"] {
        let r = c.send(
            format!("GET /looped HTTP/1.1\r\nHost: t\r\nX-ShadowTee-Mirror: {v}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!((r.status, r.body.as_slice()), (200, PRIMARY_BODY));
    }
    assert_eq!(c.get("/fresh").status, 200);
    assert!(shadow.wait_for(1, WAIT));
    stays_at(&shadow, 1);
    assert_eq!(targets(&shadow), ["/fresh"]);
    assert_eq!(v1.count(), 4, "the primary still answers marked requests");
    assert_eq!(accounted(&proxy, "test-v1", 1).0, 1.0);
}

#[test]
fn custom_marker_header_is_set_and_guards() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "marker_header = \"x-copy\"",
        &[("test-v1", shadow.addr, "")],
    ));
    let mut c = Conn::open(proxy.addr);
    assert_eq!(
        c.send(b"GET /looped HTTP/1.1\r\nHost: t\r\nX-Copy: 1\r\n\r\n")
            .status,
        200
    );
    assert_eq!(c.get("/fresh").status, 200);
    assert!(shadow.wait_for(1, WAIT));
    stays_at(&shadow, 1);
    let s = &shadow.requests()[0];
    assert_eq!(
        (s.target.as_str(), s.header("x-copy")),
        ("/fresh", Some("1"))
    );
    assert_eq!(s.header("x-shadowtee-mirror"), None);
}

#[test]
fn empty_marker_header_disables_marking_and_the_guard() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "marker_header = \"\"",
        &[("test-v1", shadow.addr, "")],
    ));
    let mut c = Conn::open(proxy.addr);
    assert_eq!(c.get("/plain").status, 200);
    assert_eq!(
        c.send(b"GET /marked HTTP/1.1\r\nHost: t\r\nx-shadowtee-mirror: 1\r\n\r\n")
            .status,
        200
    );
    assert!(shadow.wait_for(2, WAIT), "got {:?}", targets(&shadow));
    let reqs = shadow.requests();
    let plain = reqs
        .iter()
        .find(|r| r.target == "/plain")
        .expect("/plain copied");
    assert_eq!(plain.header("x-shadowtee-mirror"), None);
    assert!(reqs.iter().any(|r| r.target == "/marked"));
}

#[test]
fn header_edits_apply_to_the_copy_only() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[(
            "test-v1",
            shadow.addr,
            "set_headers = { \"x-env\" = \"shadow\", \"x-new\" = \"n\" }\n\
             remove_headers = [\"authorization\", \"Cookie\"]",
        )],
    ));
    let r = request(
        proxy.addr,
        "GET /e HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nCookie: a=1\r\n\
         cookie: b=2\r\nX-Env: prod\r\nX-Keep: k\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(shadow.wait_for(1, WAIT));
    let p = &v1.requests()[0];
    let s = &shadow.requests()[0];
    assert_eq!(p.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(p.header("cookie"), Some("a=1"));
    assert_eq!(p.header("x-env"), Some("prod"));
    assert_eq!(p.header("x-new"), None);
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("cookie"), None);
    let envs: Vec<&str> = s
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-env"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(envs, ["shadow"]);
    assert_eq!(s.header("x-new"), Some("n"));
    assert_eq!(s.header("x-keep"), Some("k"));
}

#[test]
fn host_suffix_goes_before_the_port() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "host_suffix = \"-shadow\"",
        &[("test-v1", shadow.addr, "")],
    ));
    let mut c = Conn::open(proxy.addr);
    assert_eq!(
        c.send(b"GET /1 HTTP/1.1\r\nHost: a.b:8080\r\n\r\n").status,
        200
    );
    assert_eq!(c.send(b"GET /2 HTTP/1.1\r\nHost: a.b\r\n\r\n").status, 200);
    assert!(shadow.wait_for(2, WAIT));
    let mut got: Vec<(String, String)> = shadow
        .requests()
        .iter()
        .map(|r| (r.target.clone(), r.header("host").unwrap_or("").to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/1".to_string(), "a.b-shadow:8080".to_string()),
            ("/2".to_string(), "a.b-shadow".to_string())
        ]
    );
    let hosts: Vec<String> = v1
        .requests()
        .iter()
        .map(|r| r.header("host").unwrap_or("").to_string())
        .collect();
    assert_eq!(hosts, ["a.b:8080", "a.b"], "primary Host must be unchanged");
}

#[test]
fn methods_filter_limits_what_is_copied() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[("test-v1", shadow.addr, "methods = [\"GET\", \"HEAD\"]")],
    ));
    let mut c = Conn::open(proxy.addr);
    for m in ["POST", "PUT", "DELETE", "GET", "HEAD", "OPTIONS"] {
        let r =
            c.send(format!("{m} /m HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{m}");
    }
    assert!(shadow.wait_for(2, WAIT));
    stays_at(&shadow, 2);
    let mut methods: Vec<String> = shadow.requests().into_iter().map(|r| r.method).collect();
    methods.sort();
    assert_eq!(methods, ["GET", "HEAD"]);
    assert_eq!(v1.count(), 6);
    assert_eq!(
        accounted(&proxy, "test-v1", 2),
        (2.0, 0.0, 0.0),
        "HEAD copy completes"
    );
}

#[test]
fn sticky_sample_key_mirrors_all_or_none_per_user() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[(
            "test-v1",
            shadow.addr,
            "percent = 50.0\nsample_key = \"header:x-user-id\"",
        )],
    ));
    const USERS: usize = 24;
    const EACH: usize = 5;
    let mut c = Conn::open(proxy.addr);
    for round in 0..EACH {
        for u in 0..USERS {
            let r = c.send(
                format!("GET /u/{round} HTTP/1.1\r\nHost: t\r\nX-User-Id: user-{u}\r\n\r\n")
                    .as_bytes(),
            );
            assert_eq!(r.status, 200);
        }
    }
    settle(&proxy, &shadow, "test-v1");
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for r in shadow.requests() {
        *per_user
            .entry(r.header("x-user-id").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    for (u, n) in &per_user {
        assert_eq!(
            *n, EACH,
            "{u} was mirrored {n} of {EACH} times: {per_user:?}"
        );
    }
    assert!(
        (1..USERS).contains(&per_user.len()),
        "percent 50 over {USERS} users mirrored {} of them",
        per_user.len()
    );
}

#[test]
fn max_rps_sheds_the_excess_as_rate_limited() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "",
        &[("test-v1", shadow.addr, "max_rps = 5")],
    ));
    let took = batch(proxy.addr, 100, "/rps");
    let (completed, failed, _) = accounted(&proxy, "test-v1", 100);
    // One second of burst plus what the batch's duration refilled.
    let allowed = 5.0 + 5.0 * took.as_secs_f64() + 1.0;
    assert!(
        completed + failed <= allowed,
        "{completed} copies sent in {took:?} with max_rps 5"
    );
    assert!(completed >= 1.0, "the first copies fit the burst");
    assert_eq!(
        shed(&proxy, "test-v1", "rate_limited"),
        100.0 - completed - failed
    );
    assert_eq!(shadow.count(), completed as usize);
}

#[test]
fn body_over_mirror_limit_reaches_only_the_primary() {
    let v1 = upstream("v1", Mode::Echo);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        "max_body_bytes = 1024",
        &[("test-v1", shadow.addr, "")],
    ));
    let mut c = Conn::open(proxy.addr);
    let big = vec![b'b'; 4096];
    let mut raw = b"POST /big-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n".to_vec();
    raw.extend_from_slice(&big);
    let r = c.send(&raw);
    assert_eq!((r.status, r.body.len()), (200, 4096));
    assert_eq!(r.body, big);

    let mut raw =
        b"POST /big-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&big[..1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = c.send(&raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big, "chunked body reached the primary intact");
    assert_eq!(v1.requests()[1].body_len, 4096);

    // Exactly at the limit is still copied, both framings.
    let mut raw = b"POST /at-limit-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n".to_vec();
    raw.extend_from_slice(&big[..1024]);
    assert_eq!(c.send(&raw).status, 200);
    let mut raw =
        b"POST /at-limit-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n"
            .to_vec();
    raw.extend_from_slice(&big[..512]);
    raw.extend_from_slice(b"\r\n200\r\n");
    raw.extend_from_slice(&big[..512]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(c.send(&raw).status, 200);

    assert!(shadow.wait_for(2, WAIT));
    stays_at(&shadow, 2);
    let mut got: Vec<(String, u64)> = shadow
        .requests()
        .into_iter()
        .map(|r| (r.target, r.body_len))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/at-limit-chunked".to_string(), 1024),
            ("/at-limit-cl".to_string(), 1024)
        ]
    );
    let (completed, failed, sh) = accounted(&proxy, "test-v1", 4);
    assert_eq!((completed, failed, sh), (2.0, 0.0, 2.0));
    assert_eq!(shed(&proxy, "test-v1", "body_too_large"), 2.0);
}

#[test]
fn rejected_requests_reach_no_upstream() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\nmax_body_bytes = 100\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"v1\"\nendpoints = [\"{}\"]\n\
         [[upstreams]]\nname = \"test-v1\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"default\"\n[routes.match]\npath_prefix = \"/api\"\n\
         [[routes.destinations]]\nupstream = \"v1\"\n[[routes.mirrors]]\nupstream = \"test-v1\"\n",
        v1.addr, shadow.addr
    );
    let proxy = Proxy::start(&toml);
    let body200 = "z".repeat(200);
    let cases: Vec<(u16, String)> = vec![
        (404, "GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into()),
        (
            400,
            "POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".into(),
        ),
        (
            400,
            "POST /api/b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
        ),
        (400, "GET /api/c HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n".into()),
        (400, "GET /api/d HTTP/1.1\r\n\r\n".into()),
        (
            413,
            format!("POST /api/e HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n{body200}"),
        ),
        (
            413,
            format!("POST /api/f HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nc8\r\n{body200}\r\n0\r\n\r\n"),
        ),
        (
            400,
            "POST /api/g HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n\r\n".into(),
        ),
    ];
    for (want, raw) in &cases {
        let got = send_raw(proxy.addr, raw.as_bytes());
        assert_eq!(
            status_of(&got),
            *want,
            "{raw:?} -> {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(proxy.get("/api/ok").status, 200);
    assert!(shadow.wait_for(1, WAIT));
    stays_at(&shadow, 1);
    assert_eq!(targets(&shadow), ["/api/ok"]);
    assert_eq!(
        targets(&v1),
        ["/api/ok"],
        "no rejected request fully reached the primary"
    );
    assert_eq!(accounted(&proxy, "test-v1", 1).0, 1.0);
}

#[test]
fn admin_switches_mirror_at_once() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    // Two cores: the switch must reach both.
    let toml =
        config(v1.addr, "", &[("test-v1", shadow.addr, "")]).replace("cores = 1", "cores = 2");
    let proxy = Proxy::start(&toml);
    let mut c = Conn::open(proxy.addr);
    assert_eq!(c.get("/one").status, 200);
    assert!(shadow.wait_for(1, WAIT));

    assert_eq!(
        proxy
            .admin("POST", "/mirrors/default/test-v1?percent=0")
            .status,
        200
    );
    for _ in 0..20 {
        assert_eq!(c.get("/off-by-percent").status, 200);
        // New connections land on either core.
        assert_eq!(proxy.get("/off-by-percent").status, 200);
    }
    assert_eq!(
        proxy
            .admin("POST", "/mirrors/default/test-v1?percent=100")
            .status,
        200
    );
    assert_eq!(c.get("/two").status, 200);
    assert!(shadow.wait_for(2, WAIT));

    assert_eq!(
        proxy
            .admin("POST", "/mirrors/default/test-v1?enabled=false")
            .status,
        200
    );
    let v: serde_json::Value =
        serde_json::from_slice(&proxy.admin("GET", "/config").body).expect("/config is JSON");
    assert_eq!(v["routes"][0]["mirrors"][0]["enabled"], false, "{v}");
    for _ in 0..20 {
        assert_eq!(c.get("/off-by-switch").status, 200);
        assert_eq!(proxy.get("/off-by-switch").status, 200);
    }
    assert_eq!(
        proxy
            .admin("POST", "/mirrors/default/test-v1?enabled=true")
            .status,
        200
    );
    assert_eq!(c.get("/three").status, 200);
    assert!(shadow.wait_for(3, WAIT));
    stays_at(&shadow, 3);
    assert_eq!(targets(&shadow), ["/one", "/two", "/three"]);

    assert_eq!(
        proxy
            .admin("POST", "/mirrors/default/test-v1?percent=25")
            .status,
        200
    );
    for (path, want) in [
        ("/mirrors/nope/test-v1?percent=5", 404),
        ("/mirrors/default/nope?percent=5", 404),
        ("/mirrors/default/v1?percent=5", 404),
        ("/mirrors/default/test-v1?percent=150", 400),
        ("/mirrors/default/test-v1?percent=abc", 400),
        ("/mirrors/default/test-v1?percent=-1", 400),
        ("/mirrors/default/test-v1?percent=", 400),
        ("/mirrors/default/test-v1?enabled=maybe", 400),
    ] {
        assert_eq!(proxy.admin("POST", path).status, want, "POST {path}");
    }
    let cfg = proxy.admin("GET", "/config");
    assert_eq!(cfg.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&cfg.body).expect("/config is JSON");
    let m = &v["routes"][0]["mirrors"][0];
    assert_eq!(m["percent"].as_f64(), Some(25.0), "/config mirror: {m}");
}

// ---- shadow faults: the client never notices ----

/// `n` requests over keep-alive with a broken shadow; every answer is the
/// primary's and the batch stays under `limit`. Returns the proxy.
fn fault_run(shadow: &TestServer, mirror: &str, n: usize, limit: Duration) -> Proxy {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&config(v1.addr, mirror, &[("test-v1", shadow.addr, "")]));
    let took = batch(proxy.addr, n, "/f");
    assert!(
        took < limit,
        "{n} primary requests took {took:?} with a bad shadow"
    );
    assert_eq!(v1.count(), n);
    proxy
}

#[test]
fn refused_shadow_counts_failed() {
    let shadow = upstream("test-v1", Mode::Refuse);
    let proxy = fault_run(&shadow, "", 50, Duration::from_secs(3));
    assert_eq!(accounted(&proxy, "test-v1", 50), (0.0, 50.0, 0.0));
}

#[test]
fn garbage_shadow_counts_failed() {
    let shadow = upstream("test-v1", Mode::Garbage);
    let proxy = fault_run(&shadow, "", 50, Duration::from_secs(3));
    assert_eq!(accounted(&proxy, "test-v1", 50), (0.0, 50.0, 0.0));
}

#[test]
fn shadow_closing_mid_body_counts_failed() {
    let shadow = upstream("test-v1", Mode::CloseMidBody);
    let proxy = fault_run(&shadow, "", 50, Duration::from_secs(3));
    assert_eq!(accounted(&proxy, "test-v1", 50), (0.0, 50.0, 0.0));
}

/// Only answered pairs are compared (docs/SPEC.md "Shadow fidelity"): a
/// shadow that refuses every connection has no match percentage (`null`;
/// `-` in the table) and no latency, and its copies are counted as
/// `pairs.shadow_failed` with reason `connect`, never as matches.
#[test]
fn a_refused_shadow_has_no_match_percentage() {
    let shadow = upstream("test-v1", Mode::Refuse);
    let proxy = fault_run(&shadow, "", 20, Duration::from_secs(3));
    assert_eq!(accounted(&proxy, "test-v1", 20), (0.0, 20.0, 0.0));
    let mut row = serde_json::Value::Null;
    assert!(
        proxy.wait_until(WAIT, || {
            row = proxy.compare()["comparisons"][0].clone();
            row["pairs"]["shadow_failed"].as_u64() == Some(20)
        }),
        "{row:#}"
    );
    assert_eq!(row["pairs"]["both_answered"].as_u64(), Some(0), "{row:#}");
    assert_eq!(row["pairs"]["shed"].as_u64(), Some(0), "{row:#}");
    assert!(row["status_matching_percent"].is_null(), "{row:#}");
    assert!(row["shadow_side"]["latency_ms"]["p50"].is_null(), "{row:#}");
    assert_eq!(row["shadow_side"]["count"].as_u64(), Some(0), "{row:#}");
    assert_eq!(
        row["mirror"]["failed_reasons"]["connect"].as_u64(),
        Some(20),
        "{row:#}"
    );
    assert!(
        row["shadow_side"]["status"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{row:#}"
    );
    let out = std::process::Command::new(binary())
        .args(["compare", "--admin", &proxy.admin.to_string()])
        .output()
        .expect("run shadowtee compare");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("default") && l.contains("test-v1"))
        .unwrap_or_else(|| panic!("no row:\n{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[3], "-", "match column: {line}");
    assert!(!line.contains('%'), "{line}");
}

/// With some answers that differ, the match percentage is over the answered
/// pairs only (a shadow answering 500 to all: 0%, not diluted by nothing).
#[test]
fn match_percentage_is_over_answered_pairs() {
    let shadow = upstream("test-v1", Mode::Status(500));
    let proxy = fault_run(&shadow, "", 10, Duration::from_secs(3));
    let mut row = serde_json::Value::Null;
    assert!(
        proxy.wait_until(WAIT, || {
            row = proxy.compare()["comparisons"][0].clone();
            row["pairs"]["both_answered"].as_u64() == Some(10)
        }),
        "{row:#}"
    );
    assert_eq!(
        row["status_matching_percent"].as_f64(),
        Some(0.0),
        "{row:#}"
    );
    assert_eq!(
        row["shadow_side"]["status"]["500"].as_u64(),
        Some(10),
        "{row:#}"
    );
    assert_eq!(
        row["primary"]["status"]["200"].as_u64(),
        Some(10),
        "{row:#}"
    );
    assert!(
        row["shadow_side"]["latency_ms"]["p50"].as_f64().is_some(),
        "{row:#}"
    );
}

/// A failed copy is counted with its reason (`connect`, `timeout`,
/// `bad_response`, `closed`), and the reasons add up to what failed.
#[test]
fn failed_copies_carry_their_reason() {
    for (mode, mirror, reason) in [
        (Mode::Refuse, "", "connect"),
        (Mode::Garbage, "", "bad_response"),
        (Mode::CloseMidBody, "", "closed"),
        (Mode::Hung, "timeout_ms = 200", "timeout"),
    ] {
        let shadow = upstream("test-v1", mode);
        let proxy = fault_run(&shadow, mirror, 20, Duration::from_secs(3));
        assert_eq!(accounted(&proxy, "test-v1", 20), (0.0, 20.0, 0.0));
        let text = proxy.metrics();
        let failed = |r: &str| {
            metric_sum(
                &text,
                "shadowtee_mirror_requests_total",
                &[
                    ("upstream", "test-v1"),
                    ("outcome", "failed"),
                    ("reason", r),
                ],
            )
        };
        assert_eq!(failed(reason), 20.0, "{reason}:\n{text}");
        let all: f64 = ["connect", "timeout", "bad_response", "closed"]
            .iter()
            .map(|r| failed(r))
            .sum();
        assert_eq!(all, 20.0, "{reason}: other reasons counted:\n{text}");
    }
}

#[test]
fn hung_shadow_never_delays_the_primary() {
    let shadow = upstream("test-v1", Mode::Hung);
    // Waiting on the shadow would cost 200 x 200 ms = 40 s.
    let proxy = fault_run(&shadow, "timeout_ms = 200", 200, Duration::from_secs(4));
    // 200 copies fit max_inflight (256) and the queue: every one times out.
    assert_eq!(accounted(&proxy, "test-v1", 200), (0.0, 200.0, 0.0));
}

#[test]
fn hung_shadow_over_inflight_limit_is_shed() {
    let shadow = upstream("test-v1", Mode::Hung);
    let proxy = fault_run(
        &shadow,
        "timeout_ms = 1000\nmax_inflight = 2",
        40,
        Duration::from_secs(2),
    );
    let (completed, failed, _) = accounted(&proxy, "test-v1", 40);
    assert_eq!(completed, 0.0);
    assert!(failed >= 2.0, "the two in flight time out: {failed}");
    let inflight = shed(&proxy, "test-v1", "inflight");
    assert!(inflight >= 20.0, "shed inflight {inflight}");
    assert_eq!(failed + inflight, 40.0);
}

#[test]
fn slow_shadow_never_delays_the_primary() {
    let shadow = upstream("test-v1", Mode::Delay(Duration::from_millis(50)));
    // Waiting on the shadow would cost 100 x 50 ms = 5 s.
    let proxy = fault_run(&shadow, "", 100, Duration::from_millis(2500));
    let (completed, failed, shed) = accounted(&proxy, "test-v1", 100);
    assert_eq!(shed, 0.0);
    assert!(completed >= 1.0 && completed + failed == 100.0);
}

#[test]
fn slow_shadow_within_timeout_completes_every_copy() {
    let shadow = upstream("test-v1", Mode::Delay(Duration::from_millis(50)));
    let proxy = fault_run(&shadow, "", 100, Duration::from_millis(2500));
    assert_eq!(accounted(&proxy, "test-v1", 100), (100.0, 0.0, 0.0));
}

#[test]
fn full_queue_sheds_as_queue_full() {
    let v1 = upstream("v1", Mode::Fast);
    let a = upstream("test-v1", Mode::Fast);
    let b = upstream("test-v2", Mode::Fast);
    // Two copies per request into a queue of one, pushed without a yield in
    // between: at least one of each pair finds the queue full.
    let proxy = Proxy::start(&config(
        v1.addr,
        "queue_capacity = 1",
        &[("test-v1", a.addr, ""), ("test-v2", b.addr, "")],
    ));
    batch(proxy.addr, 30, "/q");
    let (ca, fa, sa) = accounted(&proxy, "test-v1", 30);
    let (cb, fb, sb) = accounted(&proxy, "test-v2", 30);
    assert_eq!((fa, fb), (0.0, 0.0));
    let full = shed(&proxy, "test-v1", "queue_full") + shed(&proxy, "test-v2", "queue_full");
    assert_eq!(full, sa + sb);
    assert!(full >= 30.0, "queue_full {full}");
    assert_eq!(a.count() + b.count(), (ca + cb) as usize);
}

/// `clients` connections at once, each sending `each` GETs of `path`.
fn burst(addr: SocketAddr, clients: usize, each: usize, path: &str) {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..each {
                    assert_eq!(c.get(&path).status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

/// The comparison row of `shadow` once `answered` of its pairs are answered.
fn comparison_row(p: &Proxy, shadow: &str, answered: u64) -> serde_json::Value {
    let mut row = serde_json::Value::Null;
    let done = p.wait_until(WAIT, || {
        row = p.compare()["comparisons"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["shadow"] == shadow).cloned())
            .unwrap_or_default();
        row["pairs"]["both_answered"].as_u64() == Some(answered)
    });
    assert!(done, "{shadow}: {row:#}");
    row
}

/// The shadow sees the primary's concurrency: with 32 client connections
/// each keeping one request in flight at a primary that takes 20 ms, a
/// shadow that also takes 20 ms holds at least 24 copies at once.
#[test]
fn the_shadow_sees_the_primarys_concurrency() {
    let v1 = upstream("v1", Mode::Delay(Duration::from_millis(20)));
    let shadow = upstream("test-v1", Mode::Delay(Duration::from_millis(20)));
    let proxy = Proxy::start(&config(v1.addr, "", &[("test-v1", shadow.addr, "")]));
    burst(proxy.addr, 32, 5, "/c");
    comparison_row(&proxy, "test-v1", 160);
    let (primary, copies) = (v1.max_concurrent(), shadow.max_concurrent());
    assert!(
        primary >= 24,
        "the primary itself saw only {primary} at once"
    );
    assert!(
        copies >= 24,
        "the shadow saw {copies} copies at once (primary: {primary})"
    );
}

//! Observability, end to end: Prometheus metrics, the `/compare` JSON,
//! `/healthz` and draining, SIGHUP reload, the access log, and the `check`
//! and `compare` subcommands.
use serde_json::Value;
use shadowtee_e2e::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// The `le` bounds every shadowtee histogram exposes, in order.
const LE: [&str; 17] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

fn header(extra_server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\n{extra_server}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

fn upstream_toml(name: &str, addr: SocketAddr) -> String {
    format!("\n[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n")
}

/// Route "default" to v1 with the given mirrors (name, address, extra lines).
fn config(primary: SocketAddr, mirrors: &[(&str, SocketAddr, &str)], extra_top: &str) -> String {
    let mut t = header("");
    t.push_str(extra_top);
    t.push_str(&upstream_toml("v1", primary));
    for (name, addr, _) in mirrors {
        t.push_str(&upstream_toml(name, *addr));
    }
    t.push_str("\n[[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v1\"\n");
    for (name, _, extra) in mirrors {
        t.push_str(&format!(
            "[[routes.mirrors]]\nupstream = \"{name}\"\n{extra}\n"
        ));
    }
    t
}

fn get(addr: SocketAddr, method: &str, path: &str) -> Response {
    request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ),
    )
}

/// `n` GETs over one keep-alive connection, each answered 200.
fn batch(addr: SocketAddr, n: usize, path: &str) {
    use std::io::Write;
    let mut s = connect(addr);
    let mut r = ResponseReader::new();
    for i in 0..n {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let resp = r.read(&mut s, false).expect("response");
        assert_eq!(resp.status, 200, "request {i}");
    }
}

/// The `/compare` entry of (route, shadow), once it holds `pairs` pairs.
fn comparison(p: &Proxy, route: &str, shadow: &str, pairs: u64) -> Value {
    let mut last = Value::Null;
    p.wait_until(WAIT, || {
        last = p.compare()["comparisons"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c["route"] == route && c["shadow"] == shadow)
                    .cloned()
            })
            .unwrap_or(Value::Null);
        last["requests"].as_u64() == Some(pairs)
    });
    assert_eq!(
        last["requests"].as_u64(),
        Some(pairs),
        "comparison {route}/{shadow}: {last:#}"
    );
    last
}

/// Every sample line of a histogram's `_bucket` series with these labels,
/// as (le, value), in exposition order.
fn buckets(text: &str, name: &str, labels: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{{labels},le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A histogram is well formed and counted `count` observations.
fn check_histogram(text: &str, name: &str, route: &str, up: &str, count: f64) {
    let labels = format!("route=\"{route}\",upstream=\"{up}\"");
    assert!(
        text.contains(&format!("# TYPE {name} histogram")),
        "no TYPE line for {name}"
    );
    let b = buckets(text, name, &labels);
    let les: Vec<&str> = b.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(les, LE, "{name}{{{labels}}} buckets");
    assert!(
        b.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name} buckets are cumulative: {b:?}"
    );
    let sel = [("route", route), ("upstream", up)];
    let total = metric_sum(text, &format!("{name}_count"), &sel);
    assert_eq!(total, count, "{name}_count{{{labels}}}");
    assert_eq!(b.last().map(|x| x.1), Some(count), "+Inf bucket == count");
    let sum = metric_sum(text, &format!("{name}_sum"), &sel);
    assert!(sum > 0.0 || count == 0.0, "{name}_sum {sum}");
}

/// A proxy with routes "broken" (/down -> a refusing upstream) and "main"
/// (GET/HEAD/POST -> v1, mirrored to test-v1), after 13 requests:
/// 5 x 200, 2 x 503 from v1, 3 x 404 (no route), 2 x 502, 1 x 413.
struct Scenario {
    proxy: Proxy,
    _servers: Vec<TestServer>,
}

fn scenario() -> Scenario {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let dead = upstream("dead", Mode::Refuse);
    let mut t = header("max_body_bytes = 10");
    t.push_str(&upstream_toml("v1", v1.addr));
    t.push_str(&upstream_toml("test-v1", shadow.addr));
    t.push_str(&upstream_toml("dead", dead.addr));
    t.push_str(
        "\n[[routes]]\nname = \"broken\"\n[routes.match]\npath_prefix = \"/down\"\n\
         [[routes.destinations]]\nupstream = \"dead\"\n\
         [[routes]]\nname = \"main\"\n[routes.match]\nmethods = [\"GET\", \"HEAD\", \"POST\"]\n\
         [[routes.destinations]]\nupstream = \"v1\"\n[[routes.mirrors]]\nupstream = \"test-v1\"\n",
    );
    let proxy = Proxy::start(&t);
    for _ in 0..5 {
        assert_eq!(get(proxy.addr, "GET", "/ok").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(proxy.addr, "GET", "/status/503").status, 503);
    }
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "DELETE", "/nowhere").status, 404);
    }
    for _ in 0..2 {
        assert_eq!(get(proxy.addr, "GET", "/down").status, 502);
    }
    let r = request(
        proxy.addr,
        "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n01234567890123456789",
    );
    assert_eq!(r.status, 413);
    assert!(
        proxy.wait_until(WAIT, || proxy.metric("shadowtee_requests_total", &[])
            >= 13.0)
    );
    Scenario {
        proxy,
        _servers: vec![v1, shadow, dead],
    }
}

#[test]
fn requests_total_counts_every_response_by_route_upstream_code() {
    let s = scenario();
    let text = s.proxy.metrics();
    let m = |labels: &[(&str, &str)]| metric_sum(&text, "shadowtee_requests_total", labels);
    assert_eq!(m(&[]), 13.0, "{text}");
    assert_eq!(
        m(&[("route", "main"), ("upstream", "v1"), ("code", "200")]),
        5.0
    );
    assert_eq!(
        m(&[("route", "main"), ("upstream", "v1"), ("code", "503")]),
        2.0
    );
    assert_eq!(m(&[("route", ""), ("code", "404")]), 3.0);
    assert_eq!(
        m(&[("route", "broken"), ("upstream", "dead"), ("code", "502")]),
        2.0
    );
    assert_eq!(m(&[("route", "main"), ("code", "413")]), 1.0);
    assert!(text.contains("# TYPE shadowtee_requests_total counter"));
}

#[test]
fn request_duration_histogram_is_complete() {
    let s = scenario();
    let text = s.proxy.metrics();
    let name = "shadowtee_request_duration_seconds";
    check_histogram(&text, name, "main", "v1", 7.0);
    check_histogram(&text, name, "broken", "dead", 2.0);
}

#[test]
fn mirror_outcomes_add_up_to_copies_due() {
    let s = scenario();
    let p = &s.proxy;
    // Due: the 7 requests the main route answered from v1 (the 413 was rejected).
    let sel = [("route", "main"), ("upstream", "test-v1")];
    let mut text = String::new();
    p.wait_until(WAIT, || {
        text = p.metrics();
        metric_sum(&text, "shadowtee_mirror_requests_total", &sel) >= 7.0
    });
    let outcome = |o: &str| {
        metric_sum(
            &text,
            "shadowtee_mirror_requests_total",
            &[sel[0], sel[1], ("outcome", o)],
        )
    };
    assert_eq!(
        (outcome("completed"), outcome("failed"), outcome("shed")),
        (7.0, 0.0, 0.0),
        "{text}"
    );
    for reason in ["queue_full", "inflight", "body_too_large", "rate_limited"] {
        assert!(
            text.contains(&format!(
                "shadowtee_mirror_requests_total{{route=\"main\",upstream=\"test-v1\",outcome=\"shed\",reason=\"{reason}\"}}"
            )),
            "shed reason {reason} exposed"
        );
    }
    check_histogram(
        &text,
        "shadowtee_mirror_duration_seconds",
        "main",
        "test-v1",
        7.0,
    );
}

#[test]
fn compare_reports_status_mismatches() {
    let v1 = upstream("v1", Mode::Fast);
    let half = TestServer::spawn(ServerConfig::new("half", Mode::Fast).fail_every(2)).unwrap();
    let broken = upstream("broken", Mode::Status(500));
    let proxy = Proxy::start(&config(
        v1.addr,
        &[("half", half.addr, ""), ("broken", broken.addr, "")],
        "",
    ));
    batch(proxy.addr, 10, "/c");

    let c = comparison(&proxy, "default", "half", 10);
    assert_eq!(c["status_mismatches"].as_u64(), Some(5), "{c:#}");
    assert_eq!(c["primary"]["status"]["200"].as_u64(), Some(10));
    assert_eq!(c["shadow_side"]["status"]["200"].as_u64(), Some(5));
    assert_eq!(c["shadow_side"]["status"]["500"].as_u64(), Some(5));
    let pairs = c["mismatch_pairs"].as_array().expect("mismatch_pairs");
    assert!(
        pairs
            .iter()
            .any(|p| p["primary"] == 200 && p["shadow"] == 500 && p["count"] == 5),
        "{pairs:?}"
    );

    let c = comparison(&proxy, "default", "broken", 10);
    assert_eq!(c["status_mismatches"].as_u64(), Some(10), "{c:#}");
    assert_eq!(c["mirror"]["completed"].as_u64(), Some(10));
    let recent = c["recent_mismatches"]
        .as_array()
        .expect("recent_mismatches");
    assert!(recent
        .iter()
        .any(|m| m["target"] == "/c" && m["primary_status"] == 200 && m["shadow_status"] == 500));
    assert!(
        proxy.metric(
            "shadowtee_compare_status_mismatches_total",
            &[("upstream", "broken")]
        ) == 10.0
    );
}

#[test]
fn compare_shows_the_slower_shadow() {
    let v1 = upstream("v1", Mode::Fast);
    let slow = TestServer::spawn(
        ServerConfig::new("test-v1", Mode::Fast).delay(Duration::from_millis(20)),
    )
    .unwrap();
    let proxy = Proxy::start(&config(v1.addr, &[("test-v1", slow.addr, "")], ""));
    batch(proxy.addr, 20, "/lat");
    let c = comparison(&proxy, "default", "test-v1", 20);
    let p50 = |side: &str| c[side]["latency_ms"]["p50"].as_f64().expect("p50");
    let (primary, shadow) = (p50("primary"), p50("shadow_side"));
    assert!(
        shadow >= primary + 15.0,
        "shadow p50 {shadow} ms vs primary p50 {primary} ms: {c:#}"
    );
    assert!(c["shadow_side"]["latency_ms"]["p99"].as_f64().unwrap() >= shadow);
}

#[test]
fn compare_body_counts_differing_bodies_only() {
    let v1 = TestServer::spawn(ServerConfig::new("v1", Mode::Fast).body_size(64)).unwrap();
    let same = TestServer::spawn(ServerConfig::new("same", Mode::Fast).body_size(64)).unwrap();
    let diff = upstream("diff", Mode::Fast);
    let unchecked = upstream("unchecked", Mode::Fast);
    let proxy = Proxy::start(&config(
        v1.addr,
        &[
            ("same", same.addr, "compare_body = true"),
            ("diff", diff.addr, "compare_body = true"),
            ("unchecked", unchecked.addr, ""),
        ],
        "",
    ));
    batch(proxy.addr, 8, "/b");
    let c = comparison(&proxy, "default", "same", 8);
    assert_eq!(
        (c["body_compared"].as_u64(), c["body_mismatches"].as_u64()),
        (Some(8), Some(0)),
        "{c:#}"
    );
    let c = comparison(&proxy, "default", "diff", 8);
    assert_eq!(
        (c["body_compared"].as_u64(), c["body_mismatches"].as_u64()),
        (Some(8), Some(8)),
        "{c:#}"
    );
    assert_eq!(c["status_mismatches"].as_u64(), Some(0));
    let c = comparison(&proxy, "default", "unchecked", 8);
    assert_eq!(c["body_mismatches"].as_u64(), Some(0), "{c:#}");
}

#[test]
fn compare_body_ignores_framing() {
    // Same bytes, chunked from the primary and Content-Length from the shadow.
    let v1 = TestServer::spawn(ServerConfig::new("v1", Mode::Chunked)).unwrap();
    let shadow = TestServer::spawn(ServerConfig::new("v1", Mode::Fast)).unwrap();
    let proxy = Proxy::start(&config(
        v1.addr,
        &[("test-v1", shadow.addr, "compare_body = true")],
        "",
    ));
    batch(proxy.addr, 5, "/f");
    let c = comparison(&proxy, "default", "test-v1", 5);
    assert_eq!(
        (c["body_compared"].as_u64(), c["body_mismatches"].as_u64()),
        (Some(5), Some(0)),
        "{c:#}"
    );
}

#[test]
fn healthz_turns_503_on_sigterm_while_in_flight_requests_finish() {
    let v1 = upstream("v1", Mode::Delay(Duration::from_millis(500)));
    let mut proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let h = proxy.admin("GET", "/healthz");
    assert_eq!(h.status, 200);
    let addr = proxy.addr;
    // Keep-alive: while draining, the answer must close the connection.
    let slow = std::thread::spawn(move || request(addr, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert!(v1.wait_for(1, WAIT), "the slow request reached the primary");
    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_until(Duration::from_secs(2), || proxy
            .admin("GET", "/healthz")
            .status
            == 503),
        "/healthz did not turn 503 while draining"
    );
    let r = slow.join().expect("client thread");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello from v1\n"[..])
    );
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(proxy.wait_exit(WAIT), Some(0), "stderr: {}", proxy.stderr());
}

#[test]
fn sighup_reloads_and_keeps_the_old_config_when_invalid() {
    let v1 = upstream("v1", Mode::Fast);
    let v2 = upstream("v2", Mode::Fast);
    let mut proxy = Proxy::start(&simple_config(v1.addr, &[]));
    assert_eq!(proxy.get("/api/x").header("x-upstream"), Some("v1"));
    let generation = proxy.metric("shadowtee_config_generation", &[]);

    let mut t = header("");
    t.push_str(&upstream_toml("v1", v1.addr));
    t.push_str(&upstream_toml("v2", v2.addr));
    t.push_str(
        "\n[[routes]]\nname = \"api\"\n[routes.match]\npath_prefix = \"/api\"\n\
         [[routes.destinations]]\nupstream = \"v2\"\n\
         [[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v1\"\n",
    );
    std::fs::write(&proxy.config_path, &t).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_until(WAIT, || proxy.get("/api/x").header("x-upstream")
            == Some("v2")),
        "reload did not take effect; stderr: {}",
        proxy.stderr()
    );
    assert_eq!(proxy.get("/other").header("x-upstream"), Some("v1"));
    assert!(proxy.metric("shadowtee_config_generation", &[]) > generation);
    assert!(
        proxy.metric(
            "shadowtee_requests_total",
            &[("route", "api"), ("upstream", "v2")]
        ) >= 1.0
    );

    std::fs::write(
        &proxy.config_path,
        "[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n[[routes]]\n[[routes.destinations]]\nupstream = \"nope\"\n",
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_until(WAIT, || proxy.stderr().contains("rejected")),
        "invalid reload not reported; stderr: {}",
        proxy.stderr()
    );
    assert!(proxy.is_running());
    assert_eq!(proxy.get("/api/y").header("x-upstream"), Some("v2"));
    assert_eq!(proxy.get("/other").header("x-upstream"), Some("v1"));
    assert_eq!(proxy.stop(), Some(0));
}

#[test]
fn access_log_has_a_line_per_request_and_per_copy() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let dir = scratch_dir();
    let log = dir.join("access.log");
    let toml = config(
        v1.addr,
        &[("test-v1", shadow.addr, "")],
        &format!("[log]\naccess = \"{}\"\n", log.display()),
    )
    .replace(
        "name = \"default\"\n",
        "name = \"default\"\n[routes.match]\nmethods = [\"GET\", \"POST\"]\n",
    );
    let proxy = Proxy::start(&toml);
    assert_eq!(get(proxy.addr, "GET", "/a?x=1").status, 200);
    assert_eq!(get(proxy.addr, "POST", "/b").status, 200);
    assert_eq!(get(proxy.addr, "GET", "/status/404").status, 404);
    assert_eq!(get(proxy.addr, "DELETE", "/nowhere").status, 404);
    let mut text = String::new();
    let complete = proxy.wait_until(WAIT, || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().count() >= 7
    });
    assert!(complete, "access log:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    let (copies, primaries): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|l| l.starts_with("mirror "));
    assert_eq!((primaries.len(), copies.len()), (4, 3), "{text}");
    let unrouted = primaries
        .iter()
        .find(|l| l.starts_with("DELETE /nowhere "))
        .unwrap_or_else(|| panic!("no line for the unrouted request:\n{text}"));
    assert!(
        unrouted.split_whitespace().any(|w| w == "404"),
        "{unrouted}"
    );
    for (method, target, status) in [
        ("GET", "/a?x=1", "200"),
        ("POST", "/b", "200"),
        ("GET", "/status/404", "404"),
    ] {
        let line = primaries
            .iter()
            .find(|l| l.starts_with(&format!("{method} {target} ")))
            .unwrap_or_else(|| panic!("no line for {method} {target}:\n{text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.contains(&status), "{line}");
        assert!(words.contains(&"route=default"), "{line}");
        assert!(words.contains(&"upstream=v1"), "{line}");
        let copy = copies
            .iter()
            .find(|l| l.contains(&format!(" {method} {target} ")))
            .unwrap_or_else(|| panic!("no mirror line for {method} {target}:\n{text}"));
        assert!(copy.contains("upstream=test-v1"), "{copy}");
        assert!(copy.contains("route=default"), "{copy}");
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn access_log_has_a_line_for_engine_rejected_requests() {
    let v1 = upstream("v1", Mode::Fast);
    let dir = scratch_dir();
    let log = dir.join("access.log");
    let proxy = Proxy::start(&config(
        v1.addr,
        &[],
        &format!("[log]\naccess = \"{}\"\n", log.display()),
    ));
    let out = send_raw(
        proxy.addr,
        b"POST /both HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(out.starts_with(b"HTTP/1.1 400 "));
    assert_eq!(get(proxy.addr, "GET", "/after").status, 200);
    let mut text = String::new();
    proxy.wait_until(WAIT, || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().count() >= 2
    });
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().any(|w| w == "400")),
        "no access log line for the 400:\n{text}"
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_lists_every_error_with_its_key_path() {
    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:8080\"\nbogus = 1\n\
         [[upstreams]]\nname = \"v1\"\nendpoints = [\"127.0.0.1:3001\"]\n\
         [[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v3\"\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run shadowtee check");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("server.bogus"), "{all}");
    assert!(
        all.contains("routes[0].destinations[0].upstream: no upstream named \"v3\""),
        "{all}"
    );

    let good = dir.join("good.toml");
    std::fs::write(&good, simple_config("127.0.0.1:3001".parse().unwrap(), &[])).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run shadowtee check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_subcommand_prints_the_table() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Status(500));
    let proxy = Proxy::start(&simple_config(v1.addr, &[("test-v1", shadow.addr)]));
    batch(proxy.addr, 4, "/t");
    comparison(&proxy, "default", "test-v1", 4);
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["compare", "--admin", &proxy.admin.to_string()])
        .output()
        .expect("run shadowtee compare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < WAIT);
    let row = text
        .lines()
        .find(|l| l.contains("default") && l.contains("test-v1"))
        .unwrap_or_else(|| panic!("no row for default/test-v1:\n{text}"));
    assert!(row.split_whitespace().any(|w| w == "4"), "{row}");
}

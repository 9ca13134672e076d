//! Edge cases: rejected uploads are read by the client (lingering close, no
//! reset), a taken port fails start-up, a failed shadow is not a status
//! mismatch, h2c is stripped from a mixed Upgrade offer.
use std::io::{Read, Write};
use std::time::Duration;

use shadowtee_e2e::*;

#[test]
fn oversized_upload_gets_413_not_a_reset() {
    let v1 = upstream("v1", Mode::Fast);
    let cfg =
        simple_config(v1.addr, &[]).replace("cores = 1\n", "cores = 1\nmax_body_bytes = 1000\n");
    let proxy = Proxy::start(&cfg);
    // A client that writes its whole 4 MiB body before reading, like most do.
    let mut s = connect(proxy.addr);
    let body = vec![b'x'; 4 << 20];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&body); // may fail once the engine has answered and closed
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "got {:?}",
        &text[..text.len().min(80)]
    );
    assert_eq!(v1.count(), 0, "the rejected upload reached the upstream");
}

#[test]
fn a_port_already_served_fails_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = scratch_dir();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "stderr: {err}");
    drop(taken);
}

#[test]
fn a_failed_shadow_is_not_a_status_mismatch() {
    let v1 = upstream("v1", Mode::Fast);
    let dead = upstream("test-v1", Mode::Refuse);
    let proxy = Proxy::start(&simple_config(v1.addr, &[("test-v1", dead.addr)]));
    for _ in 0..5 {
        assert_eq!(proxy.get("/x").status, 200);
    }
    assert!(proxy.wait_until(Duration::from_secs(5), || {
        proxy.metric(
            "shadowtee_mirror_requests_total",
            &[("upstream", "test-v1"), ("outcome", "failed")],
        ) == 5.0
    }));
    let c = proxy.compare();
    let row = &c["comparisons"][0];
    assert_eq!(row["status_mismatches"].as_u64(), Some(0), "{row:#}");
    assert_eq!(row["mirror"]["failed"].as_u64(), Some(5), "{row:#}");
}

#[test]
fn h2c_is_stripped_from_a_mixed_upgrade_offer() {
    let v1 = upstream("v1", Mode::Fast);
    let proxy = Proxy::start(&simple_config(v1.addr, &[]));
    let mut s = connect(proxy.addr);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .unwrap();
    let r = ResponseReader::new().read_one(&mut s, false).unwrap();
    assert_eq!(r.status, 101);
    assert!(v1.wait_for(1, Duration::from_secs(5)));
    let seen = &v1.requests()[0];
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("http2-settings"), None);
}

/// An upstream that answers each connection's first request with a
/// keep-alive response and then closes the connection (without saying so):
/// the engine's pooled connection is stale by the next request.
fn closing_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            seen.fetch_add(1, Ordering::Relaxed);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            // Dropped: closed with no `Connection: close` announced.
        }
    });
    (addr, conns)
}

#[test]
fn a_stale_pooled_connection_is_retried_once_for_idempotent_requests() {
    let (addr, conns) = closing_upstream();
    let proxy = Proxy::start(&simple_config(addr, &[]));
    let mut s = connect(proxy.addr);
    let mut r = ResponseReader::new();
    for i in 0..5 {
        s.write_all(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = r.read(&mut s, false).expect("response");
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    assert!(conns.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[test]
fn a_stale_pooled_connection_is_not_retried_for_a_post() {
    let (addr, _conns) = closing_upstream();
    let proxy = Proxy::start(&simple_config(addr, &[]));
    let mut s = connect(proxy.addr);
    let mut r = ResponseReader::new();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(r.read(&mut s, false).expect("first").status, 200);
    // The pooled connection is closed (or closing) on the upstream's side:
    // a POST must fail rather than be sent a second time.
    s.write_all(b"POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let resp = r.read(&mut s, false).expect("answer to the POST");
    assert_eq!(
        resp.status, 502,
        "a POST must not be replayed on a fresh connection"
    );
}

/// An upstream that answers each request head it reads (keep-alive,
/// pipelined heads too) with the next of `answers`, in turn.
fn canned_upstream(answers: &'static [&'static [u8]]) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let (mut buf, mut chunk, mut i) = (Vec::new(), [0u8; 4096], 0);
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(answers[i % answers.len()]).is_err() {
                            return;
                        }
                        i += 1;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn status_lines_without_a_reason_or_with_obs_text_are_relayed() {
    // httparse reports an empty reason for both, as a string that is not
    // part of the head; the engine once took its offset in the head and
    // panicked on the bad range.
    const ANSWERS: &[&[u8]] = &[
        b"HTTP/1.1 204\r\n\r\n",
        b"HTTP/1.1 200 \xc3\x96k\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    ];
    let (v1, shadow) = (canned_upstream(ANSWERS), canned_upstream(ANSWERS));
    let mut proxy = Proxy::start(&simple_config(v1, &[("test-v1", shadow)]));
    let mut s = connect(proxy.addr);
    let mut r = ResponseReader::new();
    for i in 0..6 {
        s.write_all(b"GET /odd HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = r.read(&mut s, false).expect("response");
        let want: (u16, &[u8]) = if i % 3 == 0 { (204, b"") } else { (200, b"ok") };
        assert_eq!((resp.status, resp.body.as_slice()), want, "request {i}");
    }
    assert!(proxy.wait_until(Duration::from_secs(5), || {
        proxy.metric(
            "shadowtee_mirror_requests_total",
            &[("upstream", "test-v1"), ("outcome", "completed")],
        ) == 6.0
    }));
    assert_eq!(proxy.get("/after").status, 204, "the proxy stopped serving");
    assert!(proxy.is_running(), "{}", proxy.stderr());
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}

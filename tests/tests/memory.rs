//! What idle keep-alive connections cost the engine: a loose guard on RSS
//! growth per connection (`loadtest scenario idle` measures the real figure,
//! in a release build, beside nginx).
use shadowtee_e2e::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IDLE: usize = 2000;

/// One GET on `c`, read to the end of its (Content-Length) answer.
fn get(c: &mut TcpStream) {
    c.write_all(b"GET /idle HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = c.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if got.len() >= end + 4 + len {
            return;
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// 2000 keep-alive connections, each served one request with 100%
/// mirroring and then left idle, grow the engine's RSS by under 4 KiB each
/// (they hold no read or write buffer while idle; before, each held 8 KiB
/// of zeroed read buffer alone), and a new connection is still served.
#[test]
fn idle_connections_hold_no_buffers() {
    let v1 = upstream("v1", Mode::Fast);
    let shadow = upstream("test-v1", Mode::Fast);
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\nmax_connections = 5000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"v1\"\nendpoints = [\"{}\"]\n\
         [[upstreams]]\nname = \"test-v1\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v1\"\n\
         [[routes.mirrors]]\nupstream = \"test-v1\"\n",
        v1.addr, shadow.addr
    ));
    // Warm up: pools, spare buffers, the allocator's arenas.
    for _ in 0..4 {
        let mut c = connect(proxy.addr);
        for _ in 0..50 {
            get(&mut c);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = proxy.rss_kib();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut c = connect(proxy.addr);
        get(&mut c);
        idle.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = proxy.rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as usize / IDLE;
    assert!(
        per_conn < 4096,
        "{IDLE} idle connections grew RSS from {before} KiB to {after} KiB: {per_conn} bytes each"
    );
    let mut fresh = connect(proxy.addr);
    get(&mut fresh);
    assert_eq!(
        proxy.metric("shadowtee_open_connections", &[]),
        (IDLE + 1) as f64,
        "every idle connection is still open"
    );
    // Every idle connection still answers.
    for c in idle.iter_mut().step_by(97) {
        get(c);
    }
    eprintln!("{IDLE} idle connections: {per_conn} bytes each ({before} -> {after} KiB)");
}

//! `shadowtee demo`: the embedded default. Starts demo upstreams v1, v2 and
//! test-v1 (slower, and answering some 500s) on loopback, the engine with
//! `demo.toml`, sends a burst through it, and prints what the client saw,
//! what each upstream saw, and the primary-vs-shadow comparison.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shadowtee_origin::{Mode, ServerConfig, TestServer};

/// The embedded config (upstream addresses substituted at start).
pub const DEMO_TOML: &str = include_str!("demo.toml");

struct Seen {
    status: u16,
    upstream: String,
    us: u64,
    method: &'static str,
    target: String,
}

/// One keep-alive client sending `n` requests; returns what it saw.
fn client(addr: SocketAddr, n: usize, offset: usize) -> std::io::Result<Vec<Seen>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut seen = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(4096);
    for i in 0..n {
        let k = offset + i;
        let (method, target, extra, body): (&'static str, String, &str, &str) = match k % 10 {
            0 => (
                "POST",
                "/orders".into(),
                "content-type: application/json\r\n",
                "{\"item\":42}",
            ),
            1 => ("GET", "/hello".into(), "x-canary: 1\r\n", ""),
            _ => ("GET", format!("/hello?user={}", k % 7), "", ""),
        };
        let req = format!(
            "{method} {target} HTTP/1.1\r\nhost: demo.local:8080\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let t = Instant::now();
        s.write_all(req.as_bytes())?;
        let (status, upstream) = read_response(&mut s, &mut buf)?;
        seen.push(Seen {
            status,
            upstream,
            us: t.elapsed().as_micros() as u64,
            method,
            target,
        });
    }
    Ok(seen)
}

/// Read one Content-Length-framed response; (status, x-upstream).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, String)> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut len = 0usize;
            let mut upstream = String::from("?");
            for line in head.lines().skip(1) {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("x-upstream") {
                        upstream = v.trim().to_string();
                    }
                }
            }
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..end + 4 + len);
            return Ok((status, upstream));
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    shadowtee_net::get(&addr.to_string(), path).map(|(_, body)| body)
}

/// Run the demo; exit 0 when the burst went through.
pub fn run(serve: bool, cores: Option<usize>, requests: usize) -> ExitCode {
    match run_inner(serve, cores, requests) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shadowtee demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(
    serve: bool,
    cores: Option<usize>,
    requests: usize,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Same 64-byte body everywhere, so compare_body flags only real differences
    // (the shadow's 500s); `x-upstream` says who answered.
    let mut v1_cfg = ServerConfig::new("v1", Mode::Fast);
    v1_cfg.body_size = Some(64);
    let mut v2_cfg = ServerConfig::new("v2", Mode::Fast);
    v2_cfg.body_size = Some(64);
    let v1 = TestServer::spawn(v1_cfg)?;
    let v2 = TestServer::spawn(v2_cfg)?;
    let mut shadow_cfg = ServerConfig::new("test-v1", Mode::Fast);
    shadow_cfg.body_size = Some(64);
    shadow_cfg.delay = Some(Duration::from_millis(3));
    shadow_cfg.fail_every = Some(10);
    let shadow = TestServer::spawn(shadow_cfg)?;
    let toml = DEMO_TOML
        .replace("{v1}", &v1.addr.to_string())
        .replace("{v2}", &v2.addr.to_string())
        .replace("{test-v1}", &shadow.addr.to_string());
    let cfg = config_schema::parse(&toml)?;
    let running = shadowtee::runtime::start(cfg, None, cores.or(Some(1)))?;
    let listen = running.listen;
    let admin = running.admin.ok_or("admin listener did not start")?;
    println!("shadowtee demo");
    println!(
        "  upstreams: v1 {}  v2 {}  test-v1 {} (shadow: +3 ms, every 10th answer is 500)",
        v1.addr, v2.addr, shadow.addr
    );
    println!("  engine:    {listen}  admin: {admin}");
    println!("  routes:    canary (x-canary: 1) -> v2;  default -> v1 90% / v2 10%, mirror 100% -> test-v1\n");

    let clients = 4.min(requests.max(1));
    let per = requests.div_ceil(clients);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| std::thread::spawn(move || client(listen, per, c * per)))
        .collect();
    let mut seen = Vec::new();
    for h in handles {
        seen.extend(h.join().map_err(|_| "client thread panicked")??);
    }
    let elapsed = started.elapsed();
    let sent = seen.len();

    println!("first requests, as the client saw them:");
    for s in seen.iter().take(6) {
        println!(
            "  {} {} {} {}.{:03} ms — {}",
            s.method,
            s.target,
            s.status,
            s.us / 1000,
            s.us % 1000,
            s.upstream
        );
    }
    let mut by_upstream: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &seen {
        *by_upstream.entry(s.upstream.clone()).or_default() += 1;
        *by_status.entry(s.status).or_default() += 1;
    }
    println!(
        "\nclient: {sent} requests in {:.1} ms; answered by {:?}; statuses {:?}",
        elapsed.as_secs_f64() * 1000.0,
        by_upstream,
        by_status
    );

    // Copies are asynchronous: wait (bounded) until the shadow saw them all.
    // The canary route (the bare `/hello` requests) has no mirror.
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = sent - seen.iter().filter(|s| s.target == "/hello").count();
    while shadow.count() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    println!(
        "upstreams saw: v1 {}  v2 {}  test-v1 {} (copies; {} were due)",
        v1.count(),
        v2.count(),
        shadow.count(),
        want
    );
    let client_saw_shadow = seen.iter().any(|s| s.upstream == "test-v1");
    println!(
        "the client {} a test-v1 answer",
        if client_saw_shadow {
            "DID see"
        } else {
            "never saw"
        }
    );
    if let Some(r) = shadow.requests().first() {
        println!(
            "a copy as test-v1 got it: {} {} host={} x-shadowtee-mirror={}",
            r.method,
            r.target,
            r.header("host").unwrap_or("-"),
            r.header("x-shadowtee-mirror").unwrap_or("-")
        );
    }
    let metrics = get(admin, "/metrics")?;
    println!("\nmirror outcomes (from /metrics):");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("shadowtee_mirror_requests_total"))
    {
        println!("  {line}");
    }
    let cmp: serde_json::Value = serde_json::from_str(&get(admin, "/compare")?)?;
    println!("\nprimary vs shadow (shadowtee compare --admin {admin}):");
    print!("{}", super::table::render_table(&cmp));

    if serve {
        println!("\nserving until Ctrl-C. Try:\n  curl -i http://{listen}/hello\n  curl -i -H 'x-canary: 1' http://{listen}/hello\n  curl http://{admin}/metrics\n  shadowtee compare --admin {admin}");
        let _ = std::io::stdout().flush();
        let signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        shadowtee::runtime::serve_signals(running, signals, None);
    } else {
        running.drain();
        running.join();
    }
    let ok = sent == requests.div_ceil(clients) * clients
        && !client_saw_shadow
        && by_status.keys().all(|s| *s == 200);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `loadtest scenario idle`: what an idle keep-alive client connection costs
//! a proxy. For each proxy (shadowtee with 100% mirroring, and nginx as a
//! plain proxy when it is installed), one after the other on the same CPU:
//! warm it up, read its RSS, open N connections and serve one request on
//! each, leave them open and idle, read its RSS again, then time requests
//! on a fresh connection while the N idle ones stay open. The growth per
//! connection is (RSS after - RSS before) / N.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shadowtee_origin::{Mode, ServerConfig, TestServer};

use crate::scenario::{free_port, start_nginx, start_shadowtee, which, Proc, TempDir};
use crate::{Error, Result};

/// What the scenario is asked to do.
pub struct IdleArgs {
    pub connections: usize,
    pub proxy_cpu: usize,
    pub load_cpu: usize,
    /// The shadowtee binary (default: next to this executable).
    pub shadowtee: Option<PathBuf>,
    /// Also measure nginx (when installed).
    pub nginx: bool,
    /// Also measure shadowtee without a mirror (a plain proxy, like the nginx row).
    pub plain: bool,
}

/// One proxy's figures.
pub struct IdleRow {
    pub proxy: String,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Served on a fresh connection while the idle ones were open.
    pub p50_us: u64,
    pub p99_us: u64,
}

impl IdleRow {
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.connections as f64
    }
}

/// Requests timed on a fresh connection with the idle ones open.
const PROBES: usize = 500;

/// RSS of these processes (KiB), from /proc/PID/status.
fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// One GET on `c`, read to the end of its answer (Content-Length framing,
/// as the benchmark upstream answers).
fn get(c: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    c.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "proxy closed before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                if !head.starts_with("http/1.1 200") {
                    return Err(std::io::Error::other(format!(
                        "not a 200: {}",
                        head.lines().next().unwrap_or("")
                    )));
                }
                return Ok(());
            }
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| Error::io(format!("cannot connect to {addr}"), e))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|_| c.set_nodelay(true))
        .map_err(|e| Error::io("cannot set socket options", e))?;
    Ok(c)
}

/// Measure one started proxy listening on `addr`.
fn measure(name: &str, proc_: &Proc, addr: SocketAddr, n: usize) -> Result<IdleRow> {
    let mut buf = Vec::with_capacity(4096);
    // Warm up: pools, buffers and the allocator's first arenas.
    for _ in 0..4 {
        let mut c = connect(addr)?;
        for _ in 0..100 {
            get(&mut c, &mut buf).map_err(|e| Error::io(format!("{name}: warm-up"), e))?;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids = proc_.pids();
    let before = rss_kib(&pids);
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = connect(addr)?;
        get(&mut c, &mut buf)
            .map_err(|e| Error::io(format!("{name}: request on idle connection {i}"), e))?;
        idle.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&pids);
    let mut c = connect(addr)?;
    let mut lat = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let t = Instant::now();
        get(&mut c, &mut buf).map_err(|e| Error::io(format!("{name}: probe"), e))?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    drop(idle);
    Ok(IdleRow {
        proxy: name.to_string(),
        connections: n,
        rss_before_kib: before,
        rss_after_kib: after,
        p50_us: lat[lat.len() / 2],
        p99_us: lat[lat.len() * 99 / 100],
    })
}

fn shadowtee_config(primary: SocketAddr, shadow: SocketAddr, n: usize, mirror: bool) -> String {
    let mut c = format!(
        r#"# written by `loadtest scenario idle`
[server]
listen = "127.0.0.1:0"
cores = 1
max_connections = {max}
idle_timeout_ms = 600000

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "primary"
endpoints = ["{primary}"]

[[upstreams]]
name = "shadow"
endpoints = ["{shadow}"]

[[routes]]
name = "default"
[[routes.destinations]]
upstream = "primary"
"#,
        max = n + 100
    );
    if mirror {
        c.push_str("[[routes.mirrors]]\nupstream = \"shadow\"\npercent = 100.0\n");
    }
    c
}

fn nginx_config(
    dir: &std::path::Path,
    port: u16,
    cpu: usize,
    primary: SocketAddr,
    n: usize,
) -> String {
    let d = dir.display();
    let mask = format!("1{}", "0".repeat(cpu));
    format!(
        r#"# written by `loadtest scenario idle`
worker_processes 1;
worker_cpu_affinity {mask};
worker_rlimit_nofile {files};
pid {d}/nginx-i.pid;
error_log {d}/nginx-i.error.log warn;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    upstream primary {{ server {primary}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://primary;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#,
        files = n + 1000,
        conns = n + 500,
    )
}

/// Run the scenario.
pub fn idle(args: &IdleArgs) -> Result<Vec<IdleRow>> {
    let bin = match &args.shadowtee {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::io("cannot locate this executable", e))?
            .with_file_name("shadowtee"),
    };
    if !bin.is_file() {
        return Err(Error::Invalid(format!(
            "no shadowtee binary at {} (cargo build --release -p shadowtee, or --shadowtee PATH)",
            bin.display()
        )));
    }
    if which("taskset").is_none() {
        return Err(Error::Invalid("taskset not found (util-linux)".into()));
    }
    let dir = TempDir::new()?;
    let upstream = |name: &str| {
        TestServer::spawn(
            ServerConfig::new(name, Mode::Fast)
                .cores(vec![args.load_cpu])
                .record(false),
        )
        .map_err(|e| Error::io(format!("cannot start the {name} upstream"), e))
    };
    let primary = upstream("primary")?;
    let shadow = upstream("shadow")?;
    let mut rows = Vec::new();
    let mut variants = vec![(true, "shadowtee (100% mirror)")];
    if args.plain {
        variants.push((false, "shadowtee (plain)"));
    }
    for (mirror, name) in variants {
        let cfg = shadowtee_config(primary.addr, shadow.addr, args.connections, mirror);
        let (p, addr, _) = start_shadowtee(&bin, &dir.0, 'i', args.proxy_cpu, &cfg)?;
        rows.push(measure(name, &p, addr, args.connections)?);
    }
    if args.nginx {
        match which("nginx") {
            None => eprintln!("loadtest: nginx not installed; its row is skipped"),
            Some(nginx) => {
                let port = free_port()?;
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let cfg =
                    nginx_config(&dir.0, port, args.proxy_cpu, primary.addr, args.connections);
                let p = start_nginx(&nginx, &dir.0, 'i', args.proxy_cpu, &cfg, addr)?;
                rows.push(measure("nginx (plain)", &p, addr, args.connections)?);
            }
        }
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn render(rows: &[IdleRow]) -> String {
    let mut s = String::from(
        "| proxy | idle connections | RSS before | RSS after | bytes per connection | fresh-connection p50 | p99 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} KiB | {} KiB | {:.0} | {} µs | {} µs |\n",
            r.proxy,
            r.connections,
            r.rss_before_kib,
            r.rss_after_kib,
            r.bytes_per_connection(),
            r.p50_us,
            r.p99_us
        ));
    }
    s
}

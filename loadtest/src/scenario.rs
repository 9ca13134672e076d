//! `loadtest scenario tee`: the standard comparison, one command, one run.
//!
//! Owns every process it starts: the proxies under test (shadowtee, nginx)
//! run as children pinned with `taskset` to the proxy CPU; the upstreams
//! (fast primary, healthy shadow, hung shadow) and the load generator run in
//! this process, pinned to the load CPU. Every child is stopped by a guard
//! ([`Proc`]) on success, error or panic: SIGTERM, a bounded wait, SIGKILL.
//!
//! Rows: (a) upstream direct, (b) shadowtee no mirror, (c) shadowtee 100%
//! mirror to a healthy shadow, (d) shadowtee mirror to a hung shadow,
//! (e) nginx plain proxy, (f) nginx `mirror` to the healthy shadow,
//! (g) nginx `mirror` to the hung shadow. A row is: warm-up (not counted),
//! then `duration` of closed-loop load; the proxy's CPU cost is the
//! utime+stime delta of its process(es) over the measured window divided by
//! the requests completed in it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shadowtee::testserver::{Mode, ServerConfig, TestServer};

use crate::run::{self, fmt_us, Report, RunConfig, Target};
use crate::{Error, Result};

/// How long a proxy gets to start listening.
const START_BUDGET: Duration = Duration::from_secs(10);
/// How long a proxy gets to exit after SIGTERM before SIGKILL.
const STOP_BUDGET: Duration = Duration::from_secs(3);
/// Mirror settings of the comparison (the engine's defaults, written out).
const MIRROR_MAX_INFLIGHT: u32 = 256;
const MIRROR_TIMEOUT_MS: u64 = 1000;

/// What `loadtest scenario tee` does.
#[derive(Clone, Debug)]
pub struct TeeArgs {
    pub duration: Duration,
    pub connections: usize,
    pub proxy_cpu: usize,
    pub load_cpu: usize,
    pub install_peers: bool,
    /// The shadowtee binary; `None`: `shadowtee` next to the running executable.
    pub shadowtee: Option<PathBuf>,
}

impl TeeArgs {
    fn warmup(&self) -> Duration {
        (self.duration / 5).min(Duration::from_secs(1))
    }
}

/// One row of the comparison.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: char,
    pub setup: &'static str,
    /// Why the row did not run.
    pub skipped: Option<String>,
    pub report: Option<Report>,
    /// Proxy CPU per request, microseconds (utime+stime / requests).
    pub cpu_us_per_req: Option<f64>,
    /// Requests the row's shadow upstream received during the measured window.
    pub shadow_received: Option<u64>,
    /// shadowtee's own mirror outcomes `[completed, failed, shed]` during the
    /// measured window, from `/metrics`.
    pub mirror_outcomes: Option<[u64; 3]>,
}

impl Row {
    fn new(key: char, setup: &'static str) -> Row {
        Row {
            key,
            setup,
            skipped: None,
            report: None,
            cpu_us_per_req: None,
            shadow_received: None,
            mirror_outcomes: None,
        }
    }
    fn rps(&self) -> Option<f64> {
        self.report.as_ref().map(Report::requests_per_sec)
    }
    fn p99(&self) -> Option<f64> {
        self.report.as_ref().map(|r| r.latency_us(0.99))
    }
}

/// The whole comparison.
#[derive(Clone, Debug)]
pub struct TeeResult {
    pub args: TeeArgs,
    pub environment: Vec<String>,
    pub rows: Vec<Row>,
}

/// A started child process; stopped (with any children of its own, such as
/// nginx workers) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and its direct children (nginx: master + workers).
    fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(children_of(self.pid()));
        v
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let kids = children_of(self.pid());
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_BUDGET;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            eprintln!(
                "loadtest: {} did not stop on SIGTERM; killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Children that outlived their parent (re-parented): by their id only.
        for k in kids {
            if process_alive(k) {
                signal(k, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a process
    // this module started (or its child), never 0 or -1.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !matches!(stat_fields(&s).first(), Some(&"Z") | None))
}

/// Fields of `/proc/PID/stat` after the `(comm)`: index 0 is `state`
/// (field 3), so field `n` is at `n - 3`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| stat_fields(&s).get(1).and_then(|v| v.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

/// utime + stime of the processes, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let f = stat_fields(&s);
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            get(11) + get(12)
        })
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("shadowtee-scenario-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(p.join("nginx-tmp"))
            .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Blocking `GET /path`; returns status and body. For readiness and /metrics.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Poll until `GET /` answers 200 (an external process has no other
/// readiness signal), bounded by [`START_BUDGET`].
fn wait_ready(addr: SocketAddr, proc_: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + START_BUDGET;
    loop {
        if let Ok((200, _)) = http_get(addr, "/") {
            return Ok(());
        }
        if let Ok(Some(st)) = proc_.child.try_wait() {
            return Err(Error::Invalid(format!(
                "{} exited during start-up ({st})",
                proc_.name
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "{} did not answer 200 on {addr} within {START_BUDGET:?}",
                proc_.name
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("cannot find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

fn shadowtee_config(primary: SocketAddr, shadow: Option<SocketAddr>) -> String {
    let mut c = format!(
        r#"# written by `loadtest scenario tee`
[server]
listen = "127.0.0.1:0"
cores = 1
drain_timeout_ms = 1000

[admin]
listen = "127.0.0.1:0"

[mirror]
max_inflight = {MIRROR_MAX_INFLIGHT}
timeout_ms = {MIRROR_TIMEOUT_MS}

[[upstreams]]
name = "primary"
endpoints = ["{primary}"]
"#
    );
    if let Some(s) = shadow {
        let _ = write!(
            c,
            "\n[[upstreams]]\nname = \"shadow\"\nendpoints = [\"{s}\"]\n"
        );
    }
    c.push_str("\n[[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"primary\"\nweight = 100\n");
    if shadow.is_some() {
        c.push_str("[[routes.mirrors]]\nupstream = \"shadow\"\npercent = 100.0\n");
    }
    c
}

fn nginx_config(
    dir: &Path,
    key: char,
    port: u16,
    proxy_cpu: usize,
    primary: SocketAddr,
    shadow: Option<SocketAddr>,
) -> String {
    let d = dir.display();
    let mask = format!("1{}", "0".repeat(proxy_cpu));
    let mirror = if shadow.is_some() { "mirror /m;" } else { "" };
    let shadow_upstream = shadow.map_or(String::new(), |s| {
        format!("    upstream shadow {{ server {s}; keepalive 64; keepalive_requests 1000000; }}\n")
    });
    let mirror_location = if shadow.is_some() {
        format!(
            r#"        location = /m {{
            internal;
            proxy_pass http://shadow$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout {t}ms;
            proxy_send_timeout {t}ms;
            proxy_read_timeout {t}ms;
        }}
"#,
            t = MIRROR_TIMEOUT_MS
        )
    } else {
        String::new()
    };
    format!(
        r#"# written by `loadtest scenario tee`, row ({key})
worker_processes 1;
worker_cpu_affinity {mask};
pid {d}/nginx-{key}.pid;
error_log {d}/nginx-{key}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    upstream primary {{ server {primary}; keepalive 64; keepalive_requests 1000000; }}
{shadow_upstream}    server {{
        listen 127.0.0.1:{port};
        location / {{
            {mirror}
            proxy_pass http://primary;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
{mirror_location}    }}
}}
"#
    )
}

/// Start shadowtee under `taskset`; returns the guard and its listen and
/// admin addresses, read from its ready line on stdout.
fn start_shadowtee(
    bin: &Path,
    dir: &Path,
    key: char,
    cpu: usize,
    config: &str,
) -> Result<(Proc, SocketAddr, Option<SocketAddr>)> {
    let cfg_path = dir.join(format!("shadowtee-{key}.toml"));
    write_file(&cfg_path, config)?;
    let log = std::fs::File::create(dir.join(format!("shadowtee-{key}.log")))
        .map_err(|e| Error::io("cannot create the shadowtee log", e))?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .args(["--cores", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io(format!("cannot start taskset {}", bin.display()), e))?;
    let mut p = Proc {
        name: format!("shadowtee ({key})"),
        child,
    };
    let stdout = p.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // Reads the ready line, then keeps draining stdout until the child exits.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_BUDGET;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("shadowtee listening on ") {
                    let listen = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    let admin = rest
                        .rsplit_once("admin on ")
                        .and_then(|(_, a)| a.trim().parse().ok());
                    let Some(listen) = listen else {
                        return Err(Error::Invalid(format!(
                            "cannot parse shadowtee's ready line {line:?}"
                        )));
                    };
                    return Ok((p, listen, admin));
                }
            }
            Err(_) => {
                let log = std::fs::read_to_string(dir.join(format!("shadowtee-{key}.log")))
                    .unwrap_or_default();
                return Err(Error::Invalid(format!(
                    "shadowtee ({key}) did not report listening within {START_BUDGET:?}; its stderr:\n{log}"
                )));
            }
        }
    }
}

fn start_nginx(
    bin: &Path,
    dir: &Path,
    key: char,
    cpu: usize,
    config: &str,
    addr: SocketAddr,
) -> Result<Proc> {
    let cfg_path = dir.join(format!("nginx-{key}.conf"));
    write_file(&cfg_path, config)?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&cfg_path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("cannot start nginx", e))?;
    let mut p = Proc {
        name: format!("nginx ({key})"),
        child,
    };
    if let Err(e) = wait_ready(addr, &mut p) {
        let log =
            std::fs::read_to_string(dir.join(format!("nginx-{key}.error.log"))).unwrap_or_default();
        return Err(Error::Invalid(format!("{e}; nginx error log:\n{log}")));
    }
    Ok(p)
}

/// Sum `shadowtee_mirror_requests_total` by outcome from `/metrics`:
/// `[completed, failed, shed]`.
fn mirror_outcomes(admin: SocketAddr) -> Option<[u64; 3]> {
    let (status, body) = http_get(admin, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    let (mut completed, mut failed, mut shed) = (0f64, 0f64, 0f64);
    for line in body
        .lines()
        .filter(|l| l.starts_with("shadowtee_mirror_requests_total{"))
    {
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        if line.contains("outcome=\"completed\"") {
            completed += value;
        } else if line.contains("outcome=\"failed\"") {
            failed += value;
        } else if line.contains("outcome=\"shed\"") {
            shed += value;
        }
    }
    Some([completed as u64, failed as u64, shed as u64])
}

/// Warm up (not counted), then measure one row. CPU time, the shadow's
/// request count and shadowtee's mirror counters (`admin`) are read before
/// and after the measured window only.
fn measure(
    args: &TeeArgs,
    target: SocketAddr,
    proxy: Option<&Proc>,
    shadow: Option<&TestServer>,
    admin: Option<SocketAddr>,
    row: &mut Row,
) -> Result<()> {
    let base = |d: Duration| {
        let mut c = RunConfig::new(Target::from_addr(target, "/"));
        c.connections = args.connections;
        c.duration = d;
        c.threads = 1;
        c.cpus = vec![args.load_cpu];
        c
    };
    if !args.warmup().is_zero() {
        run::run(&base(args.warmup()))?;
    }
    let pids = proxy.map(Proc::pids).unwrap_or_default();
    // Scrapes cost proxy CPU: they stay outside the CPU window.
    let before_mirror = admin.and_then(mirror_outcomes);
    let before_shadow = shadow.map(TestServer::count);
    let before_cpu = cpu_ticks(&pids);
    let report = run::run(&base(args.duration))?;
    let after_cpu = cpu_ticks(&pids);
    let after_mirror = admin.and_then(mirror_outcomes);
    row.mirror_outcomes = before_mirror
        .zip(after_mirror)
        .map(|(b, a)| [0, 1, 2].map(|i| a[i].saturating_sub(b[i])));
    row.shadow_received = shadow
        .map(TestServer::count)
        .zip(before_shadow)
        .map(|(a, b)| a.saturating_sub(b) as u64);
    if proxy.is_some() && report.stats.requests > 0 {
        let secs = after_cpu.saturating_sub(before_cpu) as f64 / clock_ticks_per_sec();
        row.cpu_us_per_req = Some(secs * 1e6 / report.stats.requests as f64);
    }
    row.report = Some(report);
    Ok(())
}

fn environment(nginx: Option<&Path>) -> Vec<String> {
    let mut env = Vec::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    env.push(format!("kernel {}, {cpus} CPUs ({cpu})", kernel.trim()));
    if let Some(n) = nginx {
        let v = Command::new(n)
            .arg("-v")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        env.push(v);
    }
    env
}

/// Run the comparison. Rows that fail are reported as skipped with the
/// reason; only a failure to set up the common parts is an error.
pub fn tee(args: &TeeArgs) -> Result<TeeResult> {
    if args.install_peers {
        eprintln!("loadtest: apt-get install -y nginx wrk");
        let st = Command::new("apt-get")
            .args(["install", "-y", "nginx", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| Error::io("cannot run apt-get", e))?;
        if !st.success() {
            eprintln!("loadtest: apt-get failed ({st}); continuing with what is installed");
        }
    }
    let shadowtee_bin = match &args.shadowtee {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::io("cannot locate this executable", e))?
            .with_file_name("shadowtee"),
    };
    if !shadowtee_bin.is_file() {
        return Err(Error::Invalid(format!(
            "no shadowtee binary at {} (build it: cargo build -p shadowtee --release, or pass --shadowtee PATH)",
            shadowtee_bin.display()
        )));
    }
    if which("taskset").is_none() {
        return Err(Error::Invalid("taskset not found (util-linux)".into()));
    }
    let nginx = which("nginx");
    let dir = TempDir::new()?;
    let upstream = |name: &str, mode: Mode| {
        TestServer::spawn(
            ServerConfig::new(name, mode)
                .cores(vec![args.load_cpu])
                .record(false),
        )
        .map_err(|e| Error::io(format!("cannot start the {name} upstream"), e))
    };
    let primary = upstream("primary", Mode::Fast)?;
    let healthy = upstream("shadow", Mode::Fast)?;
    let hung = upstream("hung", Mode::Hung)?;

    let mut rows = Vec::new();
    let total = 7;
    let progress = |key: char, setup: &str| eprintln!("loadtest: row ({key})/{total}: {setup}");

    // (a) upstream direct
    let mut a = Row::new('a', "upstream direct");
    progress(a.key, a.setup);
    if let Err(e) = measure(args, primary.addr, None, None, None, &mut a) {
        a.skipped = Some(e.to_string());
    }
    rows.push(a);

    // (b)-(d) shadowtee
    let st_rows: [(char, &'static str, Option<&TestServer>); 3] = [
        ('b', "shadowtee, no mirror", None),
        (
            'c',
            "shadowtee, 100% mirror, healthy shadow",
            Some(&healthy),
        ),
        ('d', "shadowtee, 100% mirror, hung shadow", Some(&hung)),
    ];
    for (key, setup, shadow) in st_rows {
        let mut row = Row::new(key, setup);
        progress(key, setup);
        let config = shadowtee_config(primary.addr, shadow.map(|s| s.addr));
        let r = start_shadowtee(&shadowtee_bin, &dir.0, key, args.proxy_cpu, &config).and_then(
            |(mut p, listen, admin)| {
                wait_ready(listen, &mut p)?;
                let admin = if shadow.is_some() { admin } else { None };
                measure(args, listen, Some(&p), shadow, admin, &mut row)
            },
        );
        if let Err(e) = r {
            row.skipped = Some(e.to_string());
            row.report = None;
        }
        rows.push(row);
    }

    // (e)-(g) nginx
    let ng_rows: [(char, &'static str, Option<&TestServer>); 3] = [
        ('e', "nginx, plain proxy", None),
        ('f', "nginx, mirror, healthy shadow", Some(&healthy)),
        ('g', "nginx, mirror, hung shadow", Some(&hung)),
    ];
    for (key, setup, shadow) in ng_rows {
        let mut row = Row::new(key, setup);
        progress(key, setup);
        let Some(nginx_bin) = nginx.as_deref() else {
            row.skipped = Some("nginx not installed (use --install-peers)".into());
            rows.push(row);
            continue;
        };
        let r = free_port().and_then(|port| {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let conf = nginx_config(
                &dir.0,
                key,
                port,
                args.proxy_cpu,
                primary.addr,
                shadow.map(|s| s.addr),
            );
            let p = start_nginx(nginx_bin, &dir.0, key, args.proxy_cpu, &conf, addr)?;
            measure(args, addr, Some(&p), shadow, None, &mut row)
        });
        if let Err(e) = r {
            row.skipped = Some(e.to_string());
            row.report = None;
        }
        rows.push(row);
    }

    primary.stop();
    healthy.stop();
    hung.stop();
    Ok(TeeResult {
        args: args.clone(),
        environment: environment(nginx.as_deref()),
        rows,
    })
}

impl TeeResult {
    fn row(&self, key: char) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.key == key && r.report.is_some())
    }

    /// (label, value) pairs; a ratio whose rows did not run is absent.
    pub fn ratios(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut pair = |label: &str, x: char, y: char, f: fn(&Row) -> Option<f64>| {
            if let (Some(a), Some(b)) = (self.row(x).and_then(f), self.row(y).and_then(f)) {
                if b > 0.0 {
                    out.push((format!("({x})/({y}) {label}"), a / b));
                }
            }
        };
        for (x, y) in [('b', 'a'), ('c', 'b'), ('d', 'c')] {
            pair("throughput", x, y, Row::rps);
            pair("p99", x, y, Row::p99);
        }
        pair("CPU/req", 'c', 'e', |r| r.cpu_us_per_req);
        pair("throughput", 'c', 'f', Row::rps);
        out
    }

    /// A markdown section ready to paste into BENCHMARKS.md.
    pub fn render_markdown(&self) -> String {
        let a = &self.args;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "### shadowtee tee comparison (`loadtest scenario tee`)\n"
        );
        let _ = writeln!(
            o,
            "{} keep-alive connections, closed loop, {:.0}s per row after {:.1}s warm-up; \
             proxy on CPU {}, load generator and upstreams on CPU {}; mirror.max_inflight {}, \
             mirror timeout {} ms. {}.\n",
            a.connections,
            a.duration.as_secs_f64(),
            a.warmup().as_secs_f64(),
            a.proxy_cpu,
            a.load_cpu,
            MIRROR_MAX_INFLIGHT,
            MIRROR_TIMEOUT_MS,
            self.environment.join("; ")
        );
        let _ = writeln!(
            o,
            "| row | setup | req/s | p50 | p99 | errors | non-2xx | proxy CPU µs/req | shadow got | mirror done/failed/shed |"
        );
        let _ = writeln!(
            o,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for r in &self.rows {
            match &r.report {
                Some(rep) => {
                    let _ = writeln!(
                        o,
                        "| ({}) | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                        r.key,
                        r.setup,
                        rep.requests_per_sec(),
                        fmt_us(rep.latency_us(0.5)),
                        fmt_us(rep.latency_us(0.99)),
                        rep.stats.errors.total(),
                        rep.stats.non_2xx,
                        r.cpu_us_per_req.map_or("-".into(), |c| format!("{c:.1}")),
                        r.shadow_received.map_or("-".into(), |c| c.to_string()),
                        r.mirror_outcomes
                            .map_or("-".into(), |[c, f, s]| format!("{c}/{f}/{s}")),
                    );
                }
                None => {
                    let why = r.skipped.as_deref().unwrap_or("not run").replace('\n', " ");
                    let _ = writeln!(
                        o,
                        "| ({}) | {} | skipped: {} | | | | | | | |",
                        r.key, r.setup, why
                    );
                }
            }
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(o, "\n| ratio | value |\n| --- | ---: |");
            for (label, v) in ratios {
                let _ = writeln!(o, "| {label} | {v:.2} |");
            }
        }
        o
    }

    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "row": r.key.to_string(),
                    "setup": r.setup,
                    "skipped": r.skipped,
                    "result": r.report.as_ref().map(Report::to_json),
                    "proxy_cpu_us_per_req": r.cpu_us_per_req,
                    "shadow_received": r.shadow_received,
                    "mirror": r.mirror_outcomes.map(|[c, f, s]| serde_json::json!({
                        "completed": c, "failed": f, "shed": s,
                    })),
                })
            })
            .collect();
        let ratios: serde_json::Map<String, serde_json::Value> = self
            .ratios()
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!((v * 1000.0).round() / 1000.0)))
            .collect();
        serde_json::json!({
            "scenario": "tee",
            "duration_s": self.args.duration.as_secs_f64(),
            "connections": self.args.connections,
            "proxy_cpu": self.args.proxy_cpu,
            "load_cpu": self.args.load_cpu,
            "environment": self.environment,
            "rows": rows,
            "ratios": ratios,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let s =
            "1234 (nginx: worker (x)) S 1200 1234 1234 0 -1 4194560 100 0 0 0 57 13 0 0 20 0 1 0";
        let f = stat_fields(s);
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1200");
        assert_eq!(f[11], "57");
        assert_eq!(f[12], "13");
    }

    #[test]
    fn configs_mention_their_peers() {
        let p: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        let s: SocketAddr = "127.0.0.1:3002".parse().unwrap();
        let c = shadowtee_config(p, Some(s));
        assert!(c.contains("127.0.0.1:3002") && c.contains("[[routes.mirrors]]"));
        assert!(!shadowtee_config(p, None).contains("mirrors"));
        let n = nginx_config(Path::new("/tmp/x"), 'f', 8080, 1, p, Some(s));
        assert!(n.contains("mirror /m;") && n.contains("worker_cpu_affinity 10;"));
        assert!(!nginx_config(Path::new("/tmp/x"), 'e', 8080, 1, p, None).contains("mirror"));
    }
}

//! `loadtest scenario tee`: the standard comparison, one command, one run.
//!
//! Owns every process it starts: the proxies under test (shadowtee, nginx)
//! run as children pinned with `taskset` to the proxy CPU; the upstreams
//! (fast primary, healthy shadow, hung shadow) and the load generator run in
//! this process, pinned to the load CPU. Every child is stopped by a guard
//! ([`Proc`]) on success, error or panic: SIGTERM, a bounded wait, SIGKILL.
//!
//! Rows ([`ROWS`]): (a) upstream direct, (b) shadowtee no mirror,
//! (c) shadowtee 100% mirror to a healthy shadow, (d) shadowtee mirror to a
//! hung shadow, (h) as (c) with `compare_body = true`, (e) nginx plain proxy,
//! (f) nginx `mirror` to the healthy shadow, (g) nginx `mirror` to the hung
//! shadow. A run of a row is: start its proxy, warm-up (not counted), then
//! `duration` of closed-loop load, stop the proxy; the proxy's CPU cost is
//! the utime+stime delta of its process(es) over the measured window divided
//! by the requests completed in it.
//!
//! With `repeat` N the selected rows run N times, interleaved (a,b,c,...,
//! a,b,c,...), so slow drift of a noisy host hits every row alike; each row
//! reports the median of its runs (req/s, p50, p99, CPU/req, each taken
//! separately) and the ratios are computed from those medians.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shadowtee_origin::{Mode, ServerConfig, TestServer};

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
    /// Times the row sequence is run (interleaved); at least 1.
    pub repeat: usize,
    /// Keys of the rows to run, in [`ROWS`] order (see [`parse_rows`]);
    /// empty: all.
    pub rows: Vec<char>,
}

impl TeeArgs {
    fn warmup(&self) -> Duration {
        (self.duration / 5).min(Duration::from_secs(1))
    }

    fn selected(&self) -> Vec<&'static RowSpec> {
        ROWS.iter()
            .filter(|r| self.rows.is_empty() || self.rows.contains(&r.key))
            .collect()
    }
}

/// What a row puts between the load generator and the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    Direct,
    Shadowtee { compare_body: bool },
    Nginx,
}

/// Which shadow a row mirrors to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shadow {
    None,
    Healthy,
    Hung,
}

/// One row of the comparison, before it runs.
#[derive(Clone, Copy, Debug)]
pub struct RowSpec {
    pub key: char,
    pub setup: &'static str,
    pub proxy: Proxy,
    pub shadow: Shadow,
}

/// Every row, in table (and run) order. The letters are stable: (h) came
/// later than (e)-(g) and keeps its letter; it sits next to (c), which it is
/// compared with.
pub const ROWS: [RowSpec; 8] = [
    RowSpec {
        key: 'a',
        setup: "upstream direct",
        proxy: Proxy::Direct,
        shadow: Shadow::None,
    },
    RowSpec {
        key: 'b',
        setup: "shadowtee, no mirror",
        proxy: Proxy::Shadowtee {
            compare_body: false,
        },
        shadow: Shadow::None,
    },
    RowSpec {
        key: 'c',
        setup: "shadowtee, 100% mirror, healthy shadow",
        proxy: Proxy::Shadowtee {
            compare_body: false,
        },
        shadow: Shadow::Healthy,
    },
    RowSpec {
        key: 'd',
        setup: "shadowtee, 100% mirror, hung shadow",
        proxy: Proxy::Shadowtee {
            compare_body: false,
        },
        shadow: Shadow::Hung,
    },
    RowSpec {
        key: 'h',
        setup: "shadowtee, 100% mirror, healthy shadow, compare_body = true",
        proxy: Proxy::Shadowtee { compare_body: true },
        shadow: Shadow::Healthy,
    },
    RowSpec {
        key: 'e',
        setup: "nginx, plain proxy",
        proxy: Proxy::Nginx,
        shadow: Shadow::None,
    },
    RowSpec {
        key: 'f',
        setup: "nginx, mirror, healthy shadow",
        proxy: Proxy::Nginx,
        shadow: Shadow::Healthy,
    },
    RowSpec {
        key: 'g',
        setup: "nginx, mirror, hung shadow",
        proxy: Proxy::Nginx,
        shadow: Shadow::Hung,
    },
];

/// Parse `--rows`: row letters separated by commas (`a,b,c,h`); the result
/// is in [`ROWS`] order without duplicates. Unknown letters are an error.
pub fn parse_rows(s: &str) -> Result<Vec<char>> {
    let known: String = ROWS.iter().map(|r| r.key).collect();
    let mut want = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if known.contains(c.to_ascii_lowercase()) => {
                want.push(c.to_ascii_lowercase());
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "bad row {part:?} in --rows {s:?} (rows are single letters out of {known}, e.g. a,b,c,h)"
                )))
            }
        }
    }
    if want.is_empty() {
        return Err(Error::Invalid(format!(
            "--rows {s:?} names no row (rows: {known})"
        )));
    }
    Ok(ROWS
        .iter()
        .map(|r| r.key)
        .filter(|k| want.contains(k))
        .collect())
}

/// One measured run of a row.
#[derive(Clone, Debug)]
pub struct Sample {
    pub report: Report,
    /// Proxy CPU per request, microseconds (utime+stime / requests).
    pub cpu_us_per_req: Option<f64>,
    /// Requests the row's shadow upstream received during the measured window.
    pub shadow_received: Option<u64>,
    /// shadowtee's own mirror counters during the measured window, from
    /// `/metrics`.
    pub mirror: Option<MirrorCounters>,
}

/// shadowtee's mirror and comparison counters (summed over routes and
/// shadows), or their change over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorCounters {
    pub completed: u64,
    pub failed: u64,
    pub shed: u64,
    /// `shadowtee_compare_pairs_total`.
    pub compare_pairs: u64,
    /// `shadowtee_compare_body_mismatches_total`.
    pub body_mismatches: u64,
}

impl MirrorCounters {
    fn delta(after: MirrorCounters, before: MirrorCounters) -> MirrorCounters {
        MirrorCounters {
            completed: after.completed.saturating_sub(before.completed),
            failed: after.failed.saturating_sub(before.failed),
            shed: after.shed.saturating_sub(before.shed),
            compare_pairs: after.compare_pairs.saturating_sub(before.compare_pairs),
            body_mismatches: after.body_mismatches.saturating_sub(before.body_mismatches),
        }
    }
    fn add(self, o: MirrorCounters) -> MirrorCounters {
        MirrorCounters {
            completed: self.completed + o.completed,
            failed: self.failed + o.failed,
            shed: self.shed + o.shed,
            compare_pairs: self.compare_pairs + o.compare_pairs,
            body_mismatches: self.body_mismatches + o.body_mismatches,
        }
    }
}

/// One row of the comparison: its runs and what went wrong.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: char,
    pub setup: &'static str,
    pub proxy: Proxy,
    /// Why the row has no result (no run succeeded).
    pub skipped: Option<String>,
    /// Errors of the runs that failed (a row with some successful runs is
    /// still reported, from those).
    pub failures: Vec<String>,
    /// The successful runs, in order.
    pub samples: Vec<Sample>,
}

/// Median of the values (mean of the middle two for an even count); `None`
/// for none.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Row {
    fn new(spec: &RowSpec) -> Row {
        Row {
            key: spec.key,
            setup: spec.setup,
            proxy: spec.proxy,
            skipped: None,
            failures: Vec::new(),
            samples: Vec::new(),
        }
    }
    fn has_result(&self) -> bool {
        !self.samples.is_empty()
    }
    fn median_of(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(self.samples.iter().filter_map(f).collect())
    }
    /// Median requests/s over the runs.
    pub fn rps(&self) -> Option<f64> {
        self.median_of(|s| Some(s.report.requests_per_sec()))
    }
    /// Median p50 latency over the runs, microseconds.
    pub fn p50(&self) -> Option<f64> {
        self.median_of(|s| Some(s.report.latency_us(0.5)))
    }
    /// Median p99 latency over the runs, microseconds.
    pub fn p99(&self) -> Option<f64> {
        self.median_of(|s| Some(s.report.latency_us(0.99)))
    }
    /// Median proxy CPU per request over the runs, microseconds.
    pub fn cpu_us_per_req(&self) -> Option<f64> {
        self.median_of(|s| s.cpu_us_per_req)
    }
    /// Lowest and highest requests/s over the runs.
    pub fn rps_range(&self) -> Option<(f64, f64)> {
        let v = self.samples.iter().map(|s| s.report.requests_per_sec());
        let lo = v.clone().reduce(f64::min)?;
        let hi = v.reduce(f64::max)?;
        Some((lo, hi))
    }
    fn errors(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| s.report.stats.errors.total())
            .sum()
    }
    fn non_2xx(&self) -> u64 {
        self.samples.iter().map(|s| s.report.stats.non_2xx).sum()
    }
    fn shadow_received(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.shadow_received).sum()
    }
    fn mirror(&self) -> Option<MirrorCounters> {
        self.samples
            .iter()
            .map(|s| s.mirror)
            .try_fold(MirrorCounters::default(), |acc, m| Some(acc.add(m?)))
    }
    /// The run whose throughput is the (lower) median one.
    fn median_sample(&self) -> Option<&Sample> {
        let mut v: Vec<&Sample> = self.samples.iter().collect();
        v.sort_by(|a, b| {
            a.report
                .requests_per_sec()
                .total_cmp(&b.report.requests_per_sec())
        });
        v.get(v.len().saturating_sub(1) / 2).copied()
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
pub(crate) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and its direct children (nginx: master + workers).
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(children_of(self.pid()));
        v
    }

    pub(crate) fn stop(&mut self) {
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
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<TempDir> {
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
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    shadowtee_net::get(&addr.to_string(), path)
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

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("cannot find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

pub(crate) fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

fn shadowtee_config(primary: SocketAddr, shadow: Option<SocketAddr>, compare_body: bool) -> String {
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
        if compare_body {
            c.push_str("compare_body = true\n");
        }
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
pub(crate) fn start_shadowtee(
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

pub(crate) fn start_nginx(
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

/// Sum `shadowtee_mirror_requests_total` by outcome, and the comparison
/// counters, from `/metrics`.
fn mirror_counters(admin: SocketAddr) -> Option<MirrorCounters> {
    let (status, body) = http_get(admin, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    parse_mirror_counters(&body)
}

fn parse_mirror_counters(body: &str) -> Option<MirrorCounters> {
    let mut m = MirrorCounters::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, _)) = line.split_once('{') else {
            continue;
        };
        let slot = match name {
            "shadowtee_mirror_requests_total" if line.contains("outcome=\"completed\"") => {
                &mut m.completed
            }
            "shadowtee_mirror_requests_total" if line.contains("outcome=\"failed\"") => {
                &mut m.failed
            }
            "shadowtee_mirror_requests_total" if line.contains("outcome=\"shed\"") => &mut m.shed,
            "shadowtee_compare_pairs_total" => &mut m.compare_pairs,
            "shadowtee_compare_body_mismatches_total" => &mut m.body_mismatches,
            _ => continue,
        };
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *slot += value as u64;
    }
    Some(m)
}

/// Warm up (not counted), then measure one run of a row. CPU time, the
/// shadow's request count and shadowtee's mirror counters (`admin`) are read
/// before and after the measured window only.
fn measure(
    args: &TeeArgs,
    target: SocketAddr,
    proxy: Option<&Proc>,
    shadow: Option<&TestServer>,
    admin: Option<SocketAddr>,
) -> Result<Sample> {
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
    let before_mirror = admin.and_then(mirror_counters);
    let before_shadow = shadow.map(TestServer::count);
    let before_cpu = cpu_ticks(&pids);
    let report = run::run(&base(args.duration))?;
    let after_cpu = cpu_ticks(&pids);
    let after_mirror = admin.and_then(mirror_counters);
    let mirror = before_mirror
        .zip(after_mirror)
        .map(|(b, a)| MirrorCounters::delta(a, b));
    let shadow_received = shadow
        .map(TestServer::count)
        .zip(before_shadow)
        .map(|(a, b)| a.saturating_sub(b) as u64);
    let cpu_us_per_req = (proxy.is_some() && report.stats.requests > 0).then(|| {
        let secs = after_cpu.saturating_sub(before_cpu) as f64 / clock_ticks_per_sec();
        secs * 1e6 / report.stats.requests as f64
    });
    Ok(Sample {
        report,
        cpu_us_per_req,
        shadow_received,
        mirror,
    })
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

    let specs = args.selected();
    let mut rows: Vec<Row> = specs.iter().map(|s| Row::new(s)).collect();
    let repeat = args.repeat.max(1);
    for rep in 1..=repeat {
        for (i, (spec, row)) in specs.iter().zip(rows.iter_mut()).enumerate() {
            eprintln!(
                "loadtest: run {rep}/{repeat}, row ({}) [{}/{}]: {}",
                spec.key,
                i + 1,
                specs.len(),
                spec.setup
            );
            let shadow = match spec.shadow {
                Shadow::None => None,
                Shadow::Healthy => Some(&healthy),
                Shadow::Hung => Some(&hung),
            };
            let r = match spec.proxy {
                Proxy::Direct => measure(args, primary.addr, None, None, None),
                Proxy::Shadowtee { compare_body } => {
                    let config =
                        shadowtee_config(primary.addr, shadow.map(|s| s.addr), compare_body);
                    start_shadowtee(&shadowtee_bin, &dir.0, spec.key, args.proxy_cpu, &config)
                        .and_then(|(mut p, listen, admin)| {
                            wait_ready(listen, &mut p)?;
                            let admin = if shadow.is_some() { admin } else { None };
                            measure(args, listen, Some(&p), shadow, admin)
                        })
                }
                Proxy::Nginx => match nginx.as_deref() {
                    None => Err(Error::Invalid(
                        "nginx not installed (use --install-peers)".into(),
                    )),
                    Some(nginx_bin) => free_port().and_then(|port| {
                        let addr = SocketAddr::from(([127, 0, 0, 1], port));
                        let conf = nginx_config(
                            &dir.0,
                            spec.key,
                            port,
                            args.proxy_cpu,
                            primary.addr,
                            shadow.map(|s| s.addr),
                        );
                        let p =
                            start_nginx(nginx_bin, &dir.0, spec.key, args.proxy_cpu, &conf, addr)?;
                        measure(args, addr, Some(&p), shadow, None)
                    }),
                },
            };
            match r {
                Ok(sample) => row.samples.push(sample),
                Err(e) => {
                    eprintln!("loadtest: row ({}) run {rep} failed: {e}", spec.key);
                    row.failures.push(e.to_string());
                }
            }
        }
    }
    for row in &mut rows {
        if !row.has_result() {
            row.skipped = Some(
                row.failures
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "not run".into()),
            );
        }
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
        self.rows.iter().find(|r| r.key == key && r.has_result())
    }

    /// (label, value) pairs, from the rows' medians; a ratio whose rows did
    /// not run is absent.
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
        pair("CPU/req", 'c', 'e', Row::cpu_us_per_req);
        pair("throughput", 'c', 'f', Row::rps);
        pair("throughput", 'h', 'c', Row::rps);
        pair("CPU/req", 'h', 'c', Row::cpu_us_per_req);
        out
    }

    fn repeat(&self) -> usize {
        self.args.repeat.max(1)
    }

    /// A markdown section ready to paste into BENCHMARKS.md.
    pub fn render_markdown(&self) -> String {
        let a = &self.args;
        let n = self.repeat();
        let multi = n > 1;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "### shadowtee tee comparison (`loadtest scenario tee`)\n"
        );
        let runs = if multi {
            format!(
                "; {n} interleaved runs of the row sequence, each row's req/s, p50, p99 and CPU/req \
                 the median of its runs (errors, non-2xx, shadow and mirror counts: totals over the runs)"
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "{} keep-alive connections, closed loop, {:.0}s per row after {:.1}s warm-up{runs}; \
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
        let (range_head, range_rule) = if multi {
            (" req/s min–max |", " ---: |")
        } else {
            ("", "")
        };
        let _ = writeln!(
            o,
            "| row | setup | req/s |{range_head} p50 | p99 | errors | non-2xx | proxy CPU µs/req | shadow got | mirror done/failed/shed |"
        );
        let _ = writeln!(
            o,
            "| --- | --- | ---: |{range_rule} ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        let mut notes = Vec::new();
        for r in &self.rows {
            if !r.has_result() {
                let why = r.skipped.as_deref().unwrap_or("not run").replace('\n', " ");
                let blank = if multi { " |" } else { "" };
                let _ = writeln!(
                    o,
                    "| ({}) | {} | skipped: {} |{blank} | | | | | | |",
                    r.key, r.setup, why
                );
                continue;
            }
            let range = match r.rps_range() {
                Some((lo, hi)) if multi => format!(" {lo:.0}–{hi:.0} |"),
                _ if multi => " - |".into(),
                _ => String::new(),
            };
            let mirror = r.mirror();
            let _ = writeln!(
                o,
                "| ({}) | {} | {:.0} |{range} {} | {} | {} | {} | {} | {} | {} |",
                r.key,
                r.setup,
                r.rps().unwrap_or(0.0),
                fmt_us(r.p50().unwrap_or(0.0)),
                fmt_us(r.p99().unwrap_or(0.0)),
                r.errors(),
                r.non_2xx(),
                r.cpu_us_per_req().map_or("-".into(), |c| format!("{c:.1}")),
                r.shadow_received().map_or("-".into(), |c| c.to_string()),
                mirror.map_or("-".into(), |m| format!(
                    "{}/{}/{}",
                    m.completed, m.failed, m.shed
                )),
            );
            if !r.failures.is_empty() {
                notes.push(format!(
                    "({}): {} of {} runs failed, reported from the rest; last error: {}",
                    r.key,
                    r.failures.len(),
                    n,
                    r.failures
                        .last()
                        .map_or("", |s| s.as_str())
                        .replace('\n', " ")
                ));
            }
            if r.proxy == (Proxy::Shadowtee { compare_body: true }) {
                if let Some(m) = mirror {
                    notes.push(format!(
                        "({}): {} primary/shadow pairs compared, {} with differing body digests \
                         (the fast upstreams answer `hello from primary` and `hello from shadow`: \
                         every pair differs, which costs a counter increment)",
                        r.key, m.compare_pairs, m.body_mismatches
                    ));
                }
            }
        }
        for note in notes {
            let _ = writeln!(o, "\n{note}");
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
        let mirror_json = |m: Option<MirrorCounters>| {
            m.map(|m| {
                serde_json::json!({
                    "completed": m.completed,
                    "failed": m.failed,
                    "shed": m.shed,
                    "compare_pairs": m.compare_pairs,
                    "body_mismatches": m.body_mismatches,
                })
            })
        };
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                let runs: Vec<_> = r
                    .samples
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "result": s.report.to_json(),
                            "proxy_cpu_us_per_req": s.cpu_us_per_req,
                            "shadow_received": s.shadow_received,
                            "mirror": mirror_json(s.mirror),
                        })
                    })
                    .collect();
                let range = r.rps_range();
                serde_json::json!({
                    "row": r.key.to_string(),
                    "setup": r.setup,
                    "skipped": r.skipped,
                    "failures": r.failures,
                    // The run with the median throughput.
                    "result": r.median_sample().map(|s| s.report.to_json()),
                    "median": r.has_result().then(|| serde_json::json!({
                        "requests_per_sec": r.rps(),
                        "p50_us": r.p50(),
                        "p99_us": r.p99(),
                        "proxy_cpu_us_per_req": r.cpu_us_per_req(),
                    })),
                    "requests_per_sec_min": range.map(|(lo, _)| lo),
                    "requests_per_sec_max": range.map(|(_, hi)| hi),
                    "proxy_cpu_us_per_req": r.cpu_us_per_req(),
                    "shadow_received": r.has_result().then(|| r.shadow_received()).flatten(),
                    "mirror": r.has_result().then(|| mirror_json(r.mirror())).flatten(),
                    "runs": runs,
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
            "repeat": self.repeat(),
            "environment": self.environment,
            "rows": rows,
            "ratios": ratios,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_args(repeat: usize, rows: Vec<char>) -> TeeArgs {
        TeeArgs {
            duration: Duration::from_secs(1),
            connections: 1,
            proxy_cpu: 1,
            load_cpu: 0,
            install_peers: false,
            shadowtee: None,
            repeat,
            rows,
        }
    }

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
        let c = shadowtee_config(p, Some(s), false);
        assert!(c.contains("127.0.0.1:3002") && c.contains("[[routes.mirrors]]"));
        assert!(!c.contains("compare_body"));
        let c = shadowtee_config(p, Some(s), true);
        assert!(c.ends_with("percent = 100.0\ncompare_body = true\n"), "{c}");
        assert!(!shadowtee_config(p, None, false).contains("mirrors"));
        let n = nginx_config(Path::new("/tmp/x"), 'f', 8080, 1, p, Some(s));
        assert!(n.contains("mirror /m;") && n.contains("worker_cpu_affinity 10;"));
        assert!(!nginx_config(Path::new("/tmp/x"), 'e', 8080, 1, p, None).contains("mirror"));
    }

    #[test]
    fn rows_parse_in_table_order() {
        assert_eq!(parse_rows("h, c,a,b").unwrap(), vec!['a', 'b', 'c', 'h']);
        assert_eq!(parse_rows("a,a,B").unwrap(), vec!['a', 'b']);
        assert!(parse_rows("a,x").is_err());
        assert!(parse_rows("ab").is_err());
        assert!(parse_rows(" , ").is_err());
        let keys: String = ROWS.iter().map(|r| r.key).collect();
        assert_eq!(keys, "abcdhefg");
        let args = |rows: Vec<char>| test_args(1, rows);
        assert_eq!(args(Vec::new()).selected().len(), ROWS.len());
        let sel: String = args(vec!['a', 'h'])
            .selected()
            .iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(sel, "ah");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn metrics_are_summed() {
        let body = "# HELP shadowtee_compare_pairs_total x\n\
            shadowtee_mirror_requests_total{route=\"r\",upstream=\"s\",outcome=\"completed\"} 10\n\
            shadowtee_mirror_requests_total{route=\"r\",upstream=\"s\",outcome=\"failed\"} 2\n\
            shadowtee_mirror_requests_total{route=\"r\",upstream=\"s\",outcome=\"shed\",reason=\"queue_full\"} 3\n\
            shadowtee_mirror_requests_total{route=\"r\",upstream=\"s\",outcome=\"shed\",reason=\"inflight\"} 4\n\
            shadowtee_compare_pairs_total{route=\"r\",upstream=\"s\"} 9\n\
            shadowtee_compare_body_mismatches_total{route=\"r\",upstream=\"s\"} 8\n\
            shadowtee_compare_status_mismatches_total{route=\"r\",upstream=\"s\"} 1\n";
        let m = parse_mirror_counters(body).unwrap();
        assert_eq!(
            m,
            MirrorCounters {
                completed: 10,
                failed: 2,
                shed: 7,
                compare_pairs: 9,
                body_mismatches: 8,
            }
        );
    }

    fn sample(requests: u64, latency_us: u64, cpu: f64) -> Sample {
        let mut latency = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        latency.record(latency_us * 1000).unwrap();
        Sample {
            report: Report {
                url: "http://127.0.0.1:1/".into(),
                connections: 1,
                threads: 1,
                cpus: vec![0],
                rate: None,
                pipeline: 1,
                elapsed: Duration::from_secs(1),
                stats: run::Stats {
                    requests,
                    bytes: 0,
                    non_2xx: 0,
                    errors: run::Errors::default(),
                    latency,
                },
            },
            cpu_us_per_req: Some(cpu),
            shadow_received: None,
            mirror: None,
        }
    }

    #[test]
    fn repeated_rows_report_medians_and_ratios_use_them() {
        let row = |key: char, samples: Vec<Sample>| {
            let spec = ROWS.iter().find(|r| r.key == key).unwrap();
            let mut r = Row::new(spec);
            r.samples = samples;
            r
        };
        let res = TeeResult {
            args: test_args(3, vec!['c', 'h']),
            environment: vec![],
            rows: vec![
                row(
                    'c',
                    vec![
                        sample(1000, 100, 10.0),
                        sample(3000, 300, 30.0),
                        sample(2000, 200, 20.0),
                    ],
                ),
                row(
                    'h',
                    vec![
                        sample(1900, 190, 21.0),
                        sample(500, 900, 99.0),
                        sample(1800, 180, 22.0),
                    ],
                ),
            ],
        };
        let c = &res.rows[0];
        assert_eq!(c.rps(), Some(2000.0));
        // HDR buckets: 3 significant digits.
        assert!((c.p99().unwrap() - 200.0).abs() < 0.5, "{:?}", c.p99());
        assert_eq!(c.cpu_us_per_req(), Some(20.0));
        assert_eq!(c.rps_range(), Some((1000.0, 3000.0)));
        let ratios: std::collections::HashMap<_, _> = res.ratios().into_iter().collect();
        assert!((ratios["(h)/(c) throughput"] - 0.9).abs() < 1e-9);
        assert!((ratios["(h)/(c) CPU/req"] - 1.1).abs() < 1e-9);
        assert_eq!(ratios.len(), 2);
        let md = res.render_markdown();
        assert!(
            md.contains("| (c) | shadowtee, 100% mirror, healthy shadow | 2000 | 1000–3000 |"),
            "{md}"
        );
        assert!(md.contains("| (h)/(c) throughput | 0.90 |"), "{md}");
        let j = res.to_json();
        assert_eq!(j["repeat"], 3);
        assert_eq!(j["rows"][1]["median"]["requests_per_sec"], 1800.0);
        assert_eq!(j["rows"][1]["runs"].as_array().unwrap().len(), 3);
    }
}

//! `loadtest run`: an HTTP/1.1 load generator in the manner of wrk and wrk2.
//!
//! Owns: one glommio executor (io_uring) per thread, optionally pinned, each
//! driving its share of keep-alive connections as one task per connection.
//!
//! - Closed loop (no rate): a connection writes `pipeline` requests in one
//!   write, reads their responses in order, and repeats. Latency runs from
//!   the write.
//! - Open loop (`rate`): request `k` of connection `c` is *scheduled* at
//!   `start + (c + k * connections) / rate`; the total is `rate` req/s evenly
//!   spaced. A connection writes every request that is due (at most
//!   `pipeline` at once) and latency runs from the scheduled time, so a
//!   stalled server is charged for the requests it delayed (wrk2's
//!   coordinated-omission correction).
//!
//! Only responses completed before the deadline count. Errors by kind:
//! connect, read (incl. EOF with requests outstanding), write, timeout (no
//! progress within `timeout`), parse (response framing the `shadowtee_h1`
//! codec rejects). A connection that failed or was closed is reopened.
//!
//! Never shares measurement state across threads: each executor owns a
//! [`Stats`]; they are merged after the threads join.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use shadowtee_h1::{parse_response, Decoded};
use shadowtee_net::read_into;

use crate::{Error, Result};

/// Registered io_uring buffer per executor: the memlock limit may be small.
const IO_MEMORY: usize = 64 << 10;
/// Largest response head accepted before it counts as a parse error.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Pause after a failed connect so that a refused port is not a busy loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// Highest latency the histogram tracks (larger values saturate): 1 hour.
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Read buffer per connection.
const READ_BUF: usize = 16 << 10;

/// Where the load goes: `http://HOST:PORT/path`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value (as written in the URL).
    pub authority: String,
    /// Request target, origin-form (`/path?query`).
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| Error::Invalid(format!("{url:?}: only http:// URLs are supported")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(Error::Invalid(format!("{url:?}: no host")));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("cannot resolve {authority}"), e))?
            .min_by_key(|a| a.is_ipv6())
            .ok_or_else(|| Error::Invalid(format!("{authority} resolves to no address")))?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    pub fn from_addr(addr: SocketAddr, path: &str) -> Target {
        Target {
            addr,
            authority: addr.to_string(),
            path: path.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// What `run` does. Fields are public; [`RunConfig::new`] gives wrk's defaults.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: Target,
    /// Keep-alive connections in total, spread over the threads.
    pub connections: usize,
    pub duration: Duration,
    /// Executors (threads); thread `i` is pinned to `cpus[i % cpus.len()]`.
    pub threads: usize,
    /// Empty: threads are not pinned.
    pub cpus: Vec<usize>,
    /// Open loop at this many requests/s in total; `None`: closed loop.
    pub rate: Option<f64>,
    /// Requests in flight per connection.
    pub pipeline: usize,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Connect, write, and read-progress budget.
    pub timeout: Duration,
}

impl RunConfig {
    pub fn new(target: Target) -> Self {
        RunConfig {
            target,
            connections: 10,
            duration: Duration::from_secs(10),
            threads: 1,
            cpus: Vec::new(),
            rate: None,
            pipeline: 1,
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.connections == 0 {
            return bad("--connections must be at least 1");
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1");
        }
        if self.pipeline == 0 {
            return bad("--pipeline must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be positive");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return bad("--rate must be a positive number");
        }
        if self.method.is_empty() || !self.method.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("--method must be a token such as GET");
        }
        for (k, v) in &self.headers {
            if k.is_empty() || k.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
                return Err(Error::Invalid(format!("bad header name {k:?}")));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(Error::Invalid(format!("bad value for header {k:?}")));
            }
        }
        Ok(())
    }

    /// The bytes of one request, as written on the wire.
    pub fn request_bytes(&self) -> Vec<u8> {
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target.path);
        if !has("host") {
            let _ = write!(head, "Host: {}\r\n", self.target.authority);
        }
        for (k, v) in &self.headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        let needs_length =
            !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if needs_length && !has("content-length") && !has("transfer-encoding") {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Parse `--header 'name: value'`.
pub fn parse_header(s: &str) -> Result<(String, String)> {
    match s.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(Error::Invalid(format!(
            "bad header {s:?} (want 'name: value')"
        ))),
    }
}

/// Errors by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    pub parse: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.parse
    }
    fn add(&mut self, kind: Fail) {
        match kind {
            Fail::Connect => self.connect += 1,
            Fail::Read => self.read += 1,
            Fail::Write => self.write += 1,
            Fail::Timeout => self.timeout += 1,
            Fail::Parse => self.parse += 1,
        }
    }
    fn merge(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.parse += o.parse;
    }
}

#[derive(Clone, Copy, Debug)]
enum Fail {
    Connect,
    Read,
    Write,
    Timeout,
    Parse,
}

impl Fail {
    fn of(e: &io::Error, otherwise: Fail) -> Fail {
        if e.kind() == io::ErrorKind::TimedOut {
            Fail::Timeout
        } else {
            otherwise
        }
    }
}

/// Counters and latencies of one executor (or, merged, of a whole run).
#[derive(Clone, Debug)]
pub struct Stats {
    /// Responses completed before the deadline.
    pub requests: u64,
    /// Bytes read from the sockets for those responses.
    pub bytes: u64,
    pub non_2xx: u64,
    pub errors: Errors,
    /// Nanoseconds, 3 significant digits.
    pub latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            requests: 0,
            bytes: 0,
            non_2xx: 0,
            errors: Errors::default(),
            latency: Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.non_2xx += o.non_2xx;
        self.errors.merge(&o.errors);
        // Same bounds on both sides: addition cannot fail.
        let _ = self.latency.add(&o.latency);
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub url: String,
    pub connections: usize,
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub rate: Option<f64>,
    pub pipeline: usize,
    pub elapsed: Duration,
    pub stats: Stats,
}

impl Report {
    pub fn requests_per_sec(&self) -> f64 {
        self.stats.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn bytes_per_sec(&self) -> f64 {
        self.stats.bytes as f64 / self.elapsed.as_secs_f64()
    }
    /// Latency at quantile `q` (0..=1) in microseconds; 0 without samples.
    pub fn latency_us(&self, q: f64) -> f64 {
        if self.stats.latency.is_empty() {
            return 0.0;
        }
        self.stats.latency.value_at_quantile(q) as f64 / 1e3
    }
    pub fn max_us(&self) -> f64 {
        self.stats.latency.max() as f64 / 1e3
    }
    pub fn mean_us(&self) -> f64 {
        self.stats.latency.mean() / 1e3
    }

    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.stats.errors;
        serde_json::json!({
            "url": self.url,
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "connections": self.connections,
            "threads": self.threads,
            "cpus": self.cpus,
            "pipeline": self.pipeline,
            "duration_s": self.elapsed.as_secs_f64(),
            "requests": self.stats.requests,
            "bytes": self.stats.bytes,
            "requests_per_sec": round2(self.requests_per_sec()),
            "bytes_per_sec": round2(self.bytes_per_sec()),
            "latency_us": {
                "p50": self.latency_us(0.5),
                "p90": self.latency_us(0.9),
                "p99": self.latency_us(0.99),
                "p99_9": self.latency_us(0.999),
                "max": self.max_us(),
                "mean": round2(self.mean_us()),
            },
            "errors": {
                "connect": e.connect,
                "read": e.read,
                "write": e.write,
                "timeout": e.timeout,
                "parse": e.parse,
                "total": e.total(),
            },
            "non_2xx": self.stats.non_2xx,
        })
    }

    /// wrk-like text summary.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let pinned = if self.cpus.is_empty() {
            "unpinned".to_string()
        } else {
            format!("on cpus {:?}", self.cpus)
        };
        let e = &self.stats.errors;
        let _ = writeln!(
            o,
            "{:.2}s test @ {} ({mode})",
            self.elapsed.as_secs_f64(),
            self.url
        );
        let _ = writeln!(
            o,
            "  {} thread(s) {pinned}, {} connections, pipeline {}",
            self.threads, self.connections, self.pipeline
        );
        let _ = writeln!(
            o,
            "  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            fmt_us(self.latency_us(0.5)),
            fmt_us(self.latency_us(0.9)),
            fmt_us(self.latency_us(0.99)),
            fmt_us(self.latency_us(0.999)),
            fmt_us(self.max_us()),
            fmt_us(self.mean_us()),
        );
        let _ = writeln!(
            o,
            "  {} requests, {} read",
            self.stats.requests,
            fmt_bytes(self.stats.bytes as f64)
        );
        let _ = writeln!(
            o,
            "  errors     connect {}, read {}, write {}, timeout {}, parse {}",
            e.connect, e.read, e.write, e.timeout, e.parse
        );
        let _ = writeln!(o, "  non-2xx    {}", self.stats.non_2xx);
        let _ = writeln!(o, "Requests/sec: {:.2}", self.requests_per_sec());
        let _ = writeln!(o, "Transfer/sec: {}", fmt_bytes(self.bytes_per_sec()));
        o
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `41.2us`, `1.23ms`, `2.50s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn fmt_bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}MB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}GB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// What every connection of a run shares (read-only).
struct Plan {
    addr: SocketAddr,
    /// One request repeated `pipeline` times; a batch of `k` is a prefix.
    batch: Vec<u8>,
    request_len: usize,
    pipeline: usize,
    head_request: bool,
    timeout: Duration,
    connections: usize,
    rate: Option<f64>,
    duration: Duration,
}

/// Run the load and return the merged report. Blocks for `cfg.duration`
/// (plus executor start-up).
pub fn run(cfg: &RunConfig) -> Result<Report> {
    cfg.validate()?;
    let threads = cfg.threads.min(cfg.connections);
    let request = cfg.request_bytes();
    let plan = Arc::new(Plan {
        addr: cfg.target.addr,
        batch: request.repeat(cfg.pipeline),
        request_len: request.len(),
        pipeline: cfg.pipeline,
        head_request: cfg.method.eq_ignore_ascii_case("HEAD"),
        timeout: cfg.timeout,
        connections: cfg.connections,
        rate: cfg.rate,
        duration: cfg.duration,
    });
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[t % cfg.cpus.len()]);
        let (plan, barrier) = (plan.clone(), barrier.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{t}"))
            .spawn(move || run_thread(plan, t, threads, cpu, barrier))
            .map_err(|e| Error::io("cannot start a load thread", e))?;
        handles.push(h);
    }
    let mut total = Stats::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => total.merge(&s),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(Error::Invalid("a load thread panicked".into()));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Report {
        url: cfg.target.url(),
        connections: cfg.connections,
        threads,
        cpus: cfg.cpus.clone(),
        rate: cfg.rate,
        pipeline: cfg.pipeline,
        elapsed: cfg.duration,
        stats: total,
    })
}

fn run_thread(
    plan: Arc<Plan>,
    t: usize,
    threads: usize,
    cpu: Option<usize>,
    barrier: Arc<Barrier>,
) -> Result<Stats> {
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    let ex = LocalExecutorBuilder::new(placement)
        .name(&format!("loadtest-{t}"))
        .io_memory(IO_MEMORY)
        .make();
    // Every thread reaches the barrier, even one whose executor failed.
    barrier.wait();
    let ex = ex.map_err(|e| {
        let on = cpu.map_or("unpinned".to_string(), |c| format!("on CPU {c}"));
        Error::Invalid(format!(
            "cannot start a glommio executor {on}: {e} (io_uring available? memlock limit: `ulimit -l`)"
        ))
    })?;
    Ok(ex.run(async move {
        let stats = Rc::new(RefCell::new(Stats::new()));
        let start = Instant::now();
        let deadline = start + plan.duration;
        for c in (t..plan.connections).step_by(threads) {
            let schedule = plan.rate.map(|r| Schedule {
                next: start + Duration::from_secs_f64(c as f64 / r),
                interval: Duration::from_secs_f64(plan.connections as f64 / r),
            });
            glommio::spawn_local(connection(plan.clone(), stats.clone(), deadline, schedule))
                .detach();
        }
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        // Connection tasks still blocked in I/O are dropped with the executor;
        // nothing they do after the deadline is counted.
        stats.replace(Stats::new())
    }))
}

/// Open-loop send times of one connection.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    next: Instant,
    interval: Duration,
}

/// One client connection slot: connect, exchange until failure or close,
/// reconnect, until the deadline.
async fn connection(
    plan: Arc<Plan>,
    stats: Rc<RefCell<Stats>>,
    deadline: Instant,
    mut schedule: Option<Schedule>,
) {
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline);
    let mut buf = BytesMut::with_capacity(READ_BUF);
    while Instant::now() < deadline {
        let budget = plan
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let mut stream = match TcpStream::connect_timeout(plan.addr, budget).await {
            Ok(s) => s,
            Err(e) => {
                let e = io::Error::from(e);
                if Instant::now() < deadline {
                    stats.borrow_mut().errors.add(Fail::of(&e, Fail::Connect));
                }
                glommio::timer::sleep(CONNECT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(plan.timeout));
        let _ = stream.set_write_timeout(Some(plan.timeout));
        sent.clear();
        buf.clear();
        let mut conn = Conn {
            plan: &plan,
            stream: &mut stream,
            buf: &mut buf,
            sent: &mut sent,
            unaccounted: 0,
        };
        let r = conn.exchange(&stats, deadline, &mut schedule).await;
        if let Err(kind) = r {
            if Instant::now() < deadline {
                stats.borrow_mut().errors.add(kind);
            }
        }
    }
}

struct Conn<'a> {
    plan: &'a Plan,
    stream: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    /// Send (closed loop) or scheduled (open loop) time of each outstanding request.
    sent: &'a mut VecDeque<Instant>,
    /// Bytes read and not yet attributed to a counted response.
    unaccounted: u64,
}

impl Conn<'_> {
    /// Send batches and read their responses until the deadline (`Ok`), a
    /// close by the server (`Ok`), or a failure.
    async fn exchange(
        &mut self,
        stats: &RefCell<Stats>,
        deadline: Instant,
        schedule: &mut Option<Schedule>,
    ) -> std::result::Result<(), Fail> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let k = match schedule {
                None => {
                    for _ in 0..self.plan.pipeline {
                        self.sent.push_back(now);
                    }
                    self.plan.pipeline
                }
                Some(s) => {
                    if s.next >= deadline {
                        glommio::timer::sleep(deadline - now).await;
                        return Ok(());
                    }
                    if s.next > now {
                        glommio::timer::sleep(s.next - now).await;
                    }
                    let now = Instant::now();
                    let mut k = 0;
                    while k < self.plan.pipeline && s.next <= now {
                        self.sent.push_back(s.next);
                        s.next += s.interval;
                        k += 1;
                    }
                    k
                }
            };
            self.stream
                .write_all(&self.plan.batch[..k * self.plan.request_len])
                .await
                .map_err(|e| Fail::of(&e, Fail::Write))?;
            while let Some(&t0) = self.sent.front() {
                let (status, keep_alive) = self.read_response().await?;
                self.sent.pop_front();
                let now = Instant::now();
                if now <= deadline {
                    let mut st = stats.borrow_mut();
                    st.requests += 1;
                    st.bytes += std::mem::take(&mut self.unaccounted);
                    if !(200..300).contains(&status) {
                        st.non_2xx += 1;
                    }
                    st.latency
                        .saturating_record(now.saturating_duration_since(t0).as_nanos() as u64);
                }
                if !keep_alive {
                    // Requests pipelined behind a closing response are lost.
                    return if self.sent.is_empty() {
                        Ok(())
                    } else {
                        Err(Fail::Read)
                    };
                }
            }
        }
    }

    /// Read bytes; `Ok(0)` on EOF.
    async fn fill(&mut self) -> std::result::Result<usize, Fail> {
        let n = read_into(self.stream, self.buf)
            .await
            .map_err(|e| Fail::of(&e, Fail::Read))?;
        self.unaccounted += n as u64;
        Ok(n)
    }

    /// Read one final response (skipping 1xx) through the engine's codec;
    /// returns its status and whether the connection stays open.
    async fn read_response(&mut self) -> std::result::Result<(u16, bool), Fail> {
        let head = loop {
            match parse_response(self.buf, MAX_RESPONSE_HEAD, self.plan.head_request) {
                Ok(Some(h)) if h.is_informational() && h.status != 101 => continue,
                Ok(Some(h)) => break h,
                Ok(None) => {
                    if self.fill().await? == 0 {
                        return Err(Fail::Read);
                    }
                }
                Err(_) => return Err(Fail::Parse),
            }
        };
        let mut decoder = head.decoder();
        loop {
            match decoder.decode(self.buf) {
                Ok(Decoded::Data(_)) => {}
                Ok(Decoded::Done) => break,
                Ok(Decoded::NeedMore) => {
                    if self.fill().await? == 0 {
                        decoder.on_eof().map_err(|_| Fail::Read)?;
                        break;
                    }
                }
                Err(_) => return Err(Fail::Parse),
            }
        }
        Ok((head.status, head.keep_alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_request() {
        let t = Target::parse("http://127.0.0.1:3001/a?b=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(t.path, "/a?b=1");
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.path, "/");
        assert!(Target::parse("https://x/").is_err());

        let mut cfg = RunConfig::new(t);
        assert_eq!(
            cfg.request_bytes(),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".to_vec()
        );
        cfg.method = "POST".into();
        cfg.headers.push(parse_header("x-a:  1 ").unwrap());
        cfg.body = b"hi".to_vec();
        assert_eq!(
            cfg.request_bytes(),
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nx-a: 1\r\nContent-Length: 2\r\n\r\nhi"
                .to_vec()
        );
    }
}

//! End-to-end fixtures: the real `shadowtee` binary, real upstream servers
//! (`shadowtee_origin`) and plain blocking TCP clients, all on 127.0.0.1
//! with port 0. No sleeps as synchronisation: readiness is the binary's
//! "listening" line; waits are bounded polls on observable state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use shadowtee_origin::{Mode, RecordedRequest, ServerConfig, TestServer};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Path of the `shadowtee` binary. `cargo test --workspace` builds it; when
/// only this crate's tests run, it may be missing or older than the library
/// the tests link, so it is (re)built once per test process.
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/shadowtee
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            let bin = dir.join("shadowtee");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let stale = match (mtime(&bin), mtime(&exe)) {
                (Some(b), Some(e)) => b < e,
                _ => true,
            };
            if stale {
                let release = dir.file_name().is_some_and(|n| n == "release");
                let mut cmd =
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                cmd.args(["build", "-q", "-p", "shadowtee", "--bin", "shadowtee"]);
                if release {
                    cmd.arg("--release");
                }
                let status = cmd
                    .status()
                    .expect("run cargo build for the shadowtee binary");
                assert!(status.success(), "building shadowtee failed");
            }
            bin
        })
        .clone()
}

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shadowtee-e2e-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Start a test upstream.
pub fn upstream(name: &str, mode: Mode) -> TestServer {
    TestServer::spawn(ServerConfig::new(name, mode)).expect("spawn test upstream")
}

/// A running `shadowtee run` process.
pub struct Proxy {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub dir: PathBuf,
    stderr_path: PathBuf,
}

impl Proxy {
    /// Start with a config. `listen` and admin `listen` should be
    /// "127.0.0.1:0"; the real ports are read from the start-up line.
    pub fn start(toml: &str) -> Proxy {
        Self::start_with_args(toml, &[])
    }

    pub fn start_with_args(toml: &str, extra: &[&str]) -> Proxy {
        let dir = scratch_dir();
        let config_path = dir.join("shadowtee.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn shadowtee");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap_or(0);
        if n == 0 || !line.starts_with("shadowtee listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shadowtee did not start: stdout {line:?}, stderr {:?}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        // Keep draining stdout (access log may go there).
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let addr: SocketAddr = line["shadowtee listening on ".len()..]
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .expect("listen address in start-up line");
        let admin: SocketAddr = line
            .rsplit("admin on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .expect("admin address in start-up line");
        Proxy {
            child: Some(child),
            addr,
            admin,
            config_path,
            dir,
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Send a signal (libc constant) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGTERM and wait (bounded) for exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Resident set size of the engine process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn metrics(&self) -> String {
        admin_request(self.admin, "GET", "/metrics").body_string()
    }

    /// Sum of every sample of `name` whose labels include all of `labels`
    /// (e.g. `&[("route", "default"), ("code", "200")]`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    pub fn compare(&self) -> serde_json::Value {
        let r = admin_request(self.admin, "GET", "/compare");
        serde_json::from_slice(&r.body).expect("/compare is JSON")
    }

    pub fn admin(&self, method: &str, path: &str) -> Response {
        admin_request(self.admin, method, path)
    }

    /// Poll `cond` every 10 ms until true or `timeout`; returns the last value.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        wait_until(timeout, &mut cond)
    }

    /// One GET over a new connection.
    pub fn get(&self, path: &str) -> Response {
        request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll until `cond` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, cond: &mut dyn FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sum samples of a Prometheus metric matching all given labels.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, lbls) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let ok = labels
            .iter()
            .all(|(k, v)| lbls.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if ok {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// A parsed HTTP response as a client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_string(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connect with a 10 s read/write timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Send raw bytes on a new connection and read one response.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).expect("write request");
    let mut r = ResponseReader::new();
    r.read(&mut s, raw.starts_with("HEAD "))
        .expect("read response")
}

/// Send raw bytes, read until the server closes (or 5 s); all bytes.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn admin_request(addr: SocketAddr, method: &str, path: &str) -> Response {
    request(addr, &format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
}

/// Incremental response reader keeping leftover bytes (for pipelining).
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    pub fn new() -> Self {
        ResponseReader { buf: Vec::new() }
    }

    fn fill(&mut self, s: &mut impl Read) -> std::io::Result<usize> {
        let mut tmp = [0u8; 16384];
        let n = s.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Read one response (1xx interim responses are skipped).
    pub fn read(&mut self, s: &mut impl Read, head_request: bool) -> std::io::Result<Response> {
        loop {
            let r = self.read_one(s, head_request)?;
            if (100..200).contains(&r.status) && r.status != 101 {
                continue;
            }
            return Ok(r);
        }
    }

    /// Read one response including 1xx.
    pub fn read_one(&mut self, s: &mut impl Read, head_request: bool) -> std::io::Result<Response> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.fill(s)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "eof before head",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let no_body =
            head_request || status == 204 || status == 304 || (100..200).contains(&status);
        if no_body {
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if self.fill(s)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let size_line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                        })?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // trailers until empty line
                    loop {
                        let p = loop {
                            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                                break p;
                            }
                            if self.fill(s)? == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                        };
                        self.buf.drain(..p + 2);
                        if p == 0 {
                            break;
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    if self.fill(s)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < len {
                if self.fill(s)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            body = self.buf.drain(..len).collect();
        } else if status != 101 {
            // close-delimited
            while self.fill(s)? > 0 {}
            body = std::mem::take(&mut self.buf);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A minimal config with one route to `primary` and optional mirrors.
pub fn simple_config(primary: SocketAddr, mirrors: &[(&str, SocketAddr)]) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"v1\"\nendpoints = [\"{primary}\"]\n"
    );
    for (name, addr) in mirrors {
        t.push_str(&format!(
            "\n[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n"
        ));
    }
    t.push_str("\n[[routes]]\nname = \"default\"\n[[routes.destinations]]\nupstream = \"v1\"\n");
    for (name, _) in mirrors {
        t.push_str(&format!("[[routes.mirrors]]\nupstream = \"{name}\"\n"));
    }
    t
}

impl Proxy {
    /// Wait (bounded) for the process to exit on its own, without signalling
    /// it; returns the exit code, or `None` on timeout or death by signal.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

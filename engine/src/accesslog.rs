//! Access log: one compact line per request (and per copy, marked
//! `mirror`), buffered per core and written by a background flush on
//! glommio's blocking pool, so the request path never blocks on the log.
//! When the buffer is full (the writer fell behind), lines are dropped and
//! counted (`shadowtee_access_log_dropped_total`).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use config_schema::AccessLog as Target;

use crate::stats::Counter;

/// Buffered bytes per core before lines are dropped.
const MAX_BUFFERED: usize = 1 << 20;
/// How often the buffer is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

pub struct AccessLogger {
    buf: RefCell<String>,
    dropped: Arc<Counter>,
    flushing: Cell<bool>,
    target: Target,
}

impl AccessLogger {
    pub fn new(target: Target, dropped: Arc<Counter>) -> Option<Rc<Self>> {
        if target == Target::Off {
            return None;
        }
        Some(Rc::new(AccessLogger {
            buf: RefCell::new(String::with_capacity(64 * 1024)),
            dropped,
            flushing: Cell::new(false),
            target,
        }))
    }

    fn line(&self, f: impl FnOnce(&mut String)) {
        let mut b = self.buf.borrow_mut();
        if b.len() >= MAX_BUFFERED {
            self.dropped.inc();
            return;
        }
        f(&mut b);
    }

    /// `GET /hello 200 9.303 ms — 59 route=default upstream=v1`
    #[allow(clippy::too_many_arguments)]
    pub fn primary_line(
        &self,
        method: &[u8],
        target: &[u8],
        status: u16,
        us: u64,
        bytes: u64,
        route: &str,
        upstream: &str,
    ) {
        self.line(|b| {
            let _ = writeln!(
                b,
                "{} {} {} {}.{:03} ms — {} route={} upstream={}",
                String::from_utf8_lossy(method),
                String::from_utf8_lossy(target),
                status,
                us / 1000,
                us % 1000,
                bytes,
                if route.is_empty() { "-" } else { route },
                if upstream.is_empty() { "-" } else { upstream },
            );
        })
    }

    /// A request refused while its head was read: the raw request line
    /// (truncated, made printable) and the status, no route.
    pub fn rejected_line(&self, raw: &[u8], status: u16) {
        let end = raw
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(raw.len())
            .min(200);
        let line: String = raw[..end]
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        let line = if line.is_empty() {
            "-".to_string()
        } else {
            line
        };
        self.line(|b| {
            let _ = writeln!(
                b,
                "{line} {status} 0.000 ms — 0 route=- upstream=- rejected"
            );
        })
    }

    /// `mirror GET /hello 200 0.811 ms route=default upstream=test-v1`
    pub fn mirror_line(&self, head: &[u8], status: u16, us: u64, route: &str, upstream: &str) {
        let end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
        let line = &head[..end];
        let line = line.strip_suffix(b" HTTP/1.1").unwrap_or(line);
        self.line(|b| {
            let _ = writeln!(
                b,
                "mirror {} {} {}.{:03} ms route={} upstream={}",
                String::from_utf8_lossy(line),
                if status == 0 {
                    "failed".to_string()
                } else {
                    status.to_string()
                },
                us / 1000,
                us % 1000,
                route,
                upstream,
            );
        })
    }

    /// Flush loop; runs for the life of the executor.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(FLUSH_EVERY).await;
            self.flush().await;
        }
    }

    pub async fn flush(&self) {
        if self.flushing.get() || self.buf.borrow().is_empty() {
            return;
        }
        let data = std::mem::replace(
            &mut *self.buf.borrow_mut(),
            String::with_capacity(64 * 1024),
        );
        self.flushing.set(true);
        let target = self.target.clone();
        let _ = glommio::executor()
            .spawn_blocking(move || write_out(&target, data.as_bytes()))
            .await;
        self.flushing.set(false);
    }
}

fn write_out(target: &Target, data: &[u8]) {
    match target {
        Target::Off => {}
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        Target::File(path) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(data);
            }
        }
    }
}

//! `loadtest serve`: the benchmark upstream, the test origin
//! (`shadowtee_origin`) behind a command line. Serves until SIGINT or
//! SIGTERM, then stops (bounded) and prints how many requests it answered.

use std::net::SocketAddr;
use std::time::Duration;

use shadowtee_origin::{Mode, ServerConfig, TestServer};

use crate::{Error, Result};

/// Parse `fast`, `status:NNN`, `delay:MS`, `hung`, `garbage`, `echo`,
/// `chunked`, `close-mid-body`, `refuse`.
pub fn parse_mode(s: &str) -> Result<Mode> {
    let bad = || {
        Error::Invalid(format!(
            "bad mode {s:?} (want fast, status:NNN, delay:MS, hung, garbage, echo, chunked, close-mid-body or refuse)"
        ))
    };
    let (kind, arg) = match s.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (s, None),
    };
    let mode = match (kind.to_ascii_lowercase().as_str(), arg) {
        ("fast", None) => Mode::Fast,
        ("status", Some(a)) => match a.parse::<u16>() {
            Ok(c) if (100..=999).contains(&c) => Mode::Status(c),
            _ => return Err(bad()),
        },
        ("delay", Some(a)) => Mode::Delay(Duration::from_millis(a.parse().map_err(|_| bad())?)),
        ("hung", None) => Mode::Hung,
        ("garbage", None) => Mode::Garbage,
        ("echo", None) => Mode::Echo,
        ("chunked", None) => Mode::Chunked,
        ("close-mid-body", None) => Mode::CloseMidBody,
        ("refuse", None) => Mode::Refuse,
        _ => return Err(bad()),
    };
    Ok(mode)
}

/// What `loadtest serve` starts.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    pub name: String,
    pub mode: Mode,
    pub listen: SocketAddr,
    /// One executor pinned to each; empty: one unpinned executor.
    pub cpus: Vec<usize>,
    pub body_size: Option<usize>,
    pub fail_every: Option<u32>,
}

/// Build the test server's config. Request recording is off: a benchmark
/// upstream only counts, so its memory stays flat.
pub fn server_config(a: &ServeArgs) -> ServerConfig {
    let mut cfg = ServerConfig::new(&a.name, a.mode.clone())
        .listen(a.listen)
        .cores(a.cpus.clone())
        .record(false);
    cfg.body_size = a.body_size;
    cfg.fail_every = a.fail_every;
    cfg
}

/// Start the server, print where it listens, block until SIGINT/SIGTERM.
pub fn serve(a: &ServeArgs) -> Result<()> {
    use std::io::Write;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let server = TestServer::spawn(server_config(a))
        .map_err(|e| Error::io(format!("cannot start upstream on {}", a.listen), e))?;
    let cpus = if a.cpus.is_empty() {
        "unpinned".to_string()
    } else {
        format!("cpus {:?}", a.cpus)
    };
    println!(
        "loadtest serve: {} ({:?}) listening on {} ({cpus})",
        a.name, a.mode, server.addr
    );
    let _ = std::io::stdout().flush();
    let sig = signals.forever().next();
    let count = server.count();
    server.stop();
    println!(
        "loadtest serve: {} stopped (signal {}), {count} requests",
        a.name,
        sig.unwrap_or(0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("fast").unwrap(), Mode::Fast);
        assert_eq!(parse_mode("status:503").unwrap(), Mode::Status(503));
        assert_eq!(
            parse_mode("delay:20").unwrap(),
            Mode::Delay(Duration::from_millis(20))
        );
        assert_eq!(parse_mode("hung").unwrap(), Mode::Hung);
        assert!(parse_mode("status:abc").is_err());
        assert!(parse_mode("fast:1").is_err());
        assert!(parse_mode("nope").is_err());
    }
}

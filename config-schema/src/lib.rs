//! Typed shadowtee configuration: TOML text in, a validated [`Config`] out.
//!
//! Owns: the config keys, their defaults (SPEC.md "Config (TOML)") and every
//! validation rule. [`parse`] walks the TOML document itself instead of
//! stopping at serde's first error, so `shadowtee check` can print *every*
//! problem, each naming its key path (`routes[1].destinations[0].upstream`).
//!
//! Invariants a [`Config`] guarantees to the engine, so it never re-checks:
//! - every `Destination::upstream` / `Mirror::upstream` is an index into
//!   [`Config::upstreams`]; every upstream has at least one endpoint;
//! - upstream names are unique, route names are unique, and a route's mirror
//!   upstreams are unique (the admin API addresses a mirror by route+upstream);
//! - each route has at least one destination and a [`WeightTable`] whose total
//!   is positive and fits in `u32`;
//! - header names are lowercase RFC 9110 §5.6.2 tokens, header values contain
//!   no CTL other than HTAB (RFC 9110 §5.5), methods are uppercase tokens;
//! - every duration is at least 1 ms; percents are finite and in `0..=100`.
//!
//! Must never: perform network I/O other than resolving endpoint host names
//! (`ToSocketAddrs`) while loading, or depend on a runtime.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod json;
mod summary;
mod validate;

#[cfg(test)]
mod tests;

/// Parses and validates a TOML config, collecting every error.
pub fn parse(toml_text: &str) -> Result<Config, ConfigErrors> {
    validate::parse(toml_text)
}

/// True when `s` is an RFC 9110 §5.6.2 token: the rule a header name or a
/// method must follow to be accepted by [`parse`]. Exposed so that config
/// generators (the Istio importer) emit only what `parse` accepts.
pub fn is_token(s: &str) -> bool {
    validate::is_token(s)
}

/// Reads `path` and [`parse`]s it. A read failure is one error whose path is
/// the file name.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text)
}

/// One validation problem, located by its key path (`upstreams[2].name`).
/// `path` is empty for problems that have no key, such as TOML syntax errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config; never empty when returned as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// True when some error is located at exactly `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration; see the module docs for its invariants.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub server: Server,
    pub log: Log,
    pub admin: Admin,
    pub mirror: MirrorSettings,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
}

impl Config {
    /// Human-readable summary printed by `shadowtee check`.
    pub fn summary(&self) -> String {
        summary::render(self)
    }

    /// The effective config (defaults filled in) with the TOML key names;
    /// durations as the `*_ms` integers. Absent optional keys (`cores`,
    /// `methods`, `sample_key`, `max_rps`, path matchers) are omitted, exactly
    /// as in TOML, where absence means the default.
    pub fn to_json(&self) -> serde_json::Value {
        json::render(self)
    }

    /// Index of the upstream called `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }

    /// Index of the route called `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.name == name)
    }
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub listen: SocketAddr,
    /// `None`: one executor per available CPU.
    pub cores: Option<NonZeroUsize>,
    pub max_header_bytes: usize,
    /// `None` (TOML `0`): unlimited.
    pub max_body_bytes: Option<u64>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Per core.
    pub max_connections: usize,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub access: AccessLog,
}

/// `log.access`: `""`, `"stdout"`, or a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// True when the file had an `[admin]` table.
    pub explicit: bool,
}

/// `[mirror]`: engine-wide limits of the shadow path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSettings {
    /// Per core; at least 1.
    pub queue_capacity: usize,
    /// Per core per shadow upstream; at least 1.
    pub max_inflight: usize,
    /// Copies written back-to-back on one shadow connection before their
    /// answers are read, 1..=64. 1 (the default): each copy on a connection
    /// of its own at a time, written as it is dispatched, so the shadow sees
    /// the primary's concurrency and each copy's latency is its own. More:
    /// cheaper copies, but the shadow sees a serial stream per connection
    /// and a copy's latency includes the service time of those ahead of it.
    pub pipeline_depth: usize,
    pub max_body_bytes: u64,
    pub timeout: Duration,
    /// No whitespace, `/` or `:`; may be empty.
    pub host_suffix: String,
    /// Lowercase token; `None` when the TOML value is `""`.
    pub marker_header: Option<String>,
}

/// `[[upstreams]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// Never empty; host names already resolved.
    pub endpoints: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_idle_per_core: usize,
}

/// `[[routes]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// From the TOML, or `route{index}` when absent.
    pub name: String,
    pub matcher: Match,
    /// Never empty.
    pub destinations: Vec<Destination>,
    /// Built from `destinations`, same indices.
    pub weights: WeightTable,
    pub mirrors: Vec<Mirror>,
}

/// `[routes.match]`: all present conditions must hold (AND); empty matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub path: Option<PathMatch>,
    /// Uppercase tokens, compared byte for byte (methods are case-sensitive,
    /// RFC 9110 §9.1).
    pub methods: Option<Vec<String>>,
    /// (lowercase name, exact value).
    pub headers: Vec<(String, String)>,
}

/// Compared against the request path without its query string, byte for
/// byte (no percent-decoding or dot-segment normalisation). `Prefix` is a
/// plain string prefix, as in Envoy/Istio: `/api` also matches `/apix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl Match {
    /// True when the request satisfies every condition. `header` looks a
    /// field up by lowercase name; the value it returns borrows from the
    /// request (`'h`), not from the name.
    pub fn matches<'h>(
        &self,
        method: &[u8],
        path_without_query: &[u8],
        header: impl Fn(&[u8]) -> Option<&'h [u8]>,
    ) -> bool {
        match &self.path {
            Some(PathMatch::Exact(p)) if path_without_query != p.as_bytes() => return false,
            Some(PathMatch::Prefix(p)) if !path_without_query.starts_with(p.as_bytes()) => {
                return false
            }
            _ => {}
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.as_bytes() == method) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| header(name.as_bytes()) == Some(value.as_bytes()))
    }
}

/// One weighted primary destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub weight: u32,
}

/// Cumulative weights, built once per config generation; picking is a
/// binary search. A weight of 0 is never picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightTable {
    cumulative: Vec<u32>,
    total: u32,
}

impl WeightTable {
    /// `None` when the weights are empty, sum to 0, or overflow `u32`.
    pub fn new(weights: &[u32]) -> Option<WeightTable> {
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut total: u32 = 0;
        for &w in weights {
            total = total.checked_add(w)?;
            cumulative.push(total);
        }
        (total > 0).then_some(WeightTable { cumulative, total })
    }

    /// Destination index for a uniform random `r` in `0..total()`. An
    /// out-of-range `r` is a caller bug (debug assertion); release builds
    /// reduce it modulo the total.
    pub fn pick(&self, r: u32) -> usize {
        debug_assert!(r < self.total, "r {r} out of 0..{}", self.total);
        let r = if r < self.total { r } else { r % self.total };
        // First index whose cumulative weight exceeds r: zero-weight entries
        // share their predecessor's cumulative value and are skipped.
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// Sum of all weights; always positive.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// `[[routes.mirrors]]`: one shadow of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// Index into [`Config::upstreams`]; unique within its route.
    pub upstream: usize,
    /// Finite, `0..=100`.
    pub percent: f64,
    /// Uppercase tokens; `None` copies every method.
    pub methods: Option<Vec<String>>,
    pub sample_key: Option<SampleKey>,
    /// Per core; never 0.
    pub max_rps: Option<u32>,
    /// (lowercase name, value); never framing, hop-by-hop, Host or marker
    /// headers.
    pub set_headers: Vec<(String, String)>,
    /// Lowercase names; never framing, Host or marker headers.
    pub remove_headers: Vec<String>,
    pub compare_body: bool,
}

impl Mirror {
    /// True when this mirror copies requests with `method`.
    pub fn copies_method(&self, method: &[u8]) -> bool {
        match &self.methods {
            None => true,
            Some(ms) => ms.iter().any(|m| m.as_bytes() == method),
        }
    }
}

/// Sticky sampling key: TOML `"header:x-user-id"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleKey {
    /// Lowercase header name.
    Header(String),
}

/// Defaults from SPEC.md "Config (TOML)", named so the engine, docs and
/// tests share them.
pub mod defaults {
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";
    pub const MAX_HEADER_BYTES: u64 = 65536;
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
    pub const MAX_CONNECTIONS: u64 = 10_000;
    pub const QUEUE_CAPACITY: u64 = 4096;
    pub const MAX_INFLIGHT: u64 = 256;
    pub const PIPELINE_DEPTH: u64 = 1;
    pub const MIRROR_MAX_BODY_BYTES: u64 = 1_048_576;
    pub const MIRROR_TIMEOUT_MS: u64 = 1000;
    pub const MARKER_HEADER: &str = "x-shadowtee-mirror";
    pub const CONNECT_TIMEOUT_MS: u64 = 1000;
    pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
    pub const MAX_IDLE_PER_CORE: u64 = 64;
    /// Weight given to the only destination of a route when `weight` is absent.
    pub const SINGLE_DESTINATION_WEIGHT: u32 = 100;
    pub const MIRROR_PERCENT: f64 = 100.0;
    /// Smallest accepted `server.max_header_bytes`: a request line plus a
    /// handful of ordinary fields must fit.
    pub const MIN_MAX_HEADER_BYTES: u64 = 1024;
}

//! TOML table → [`Config`], collecting every error with its key path.
//!
//! The document is parsed once into a `toml::Table` and walked against the
//! known key set of each table: serde's `deny_unknown_fields` stops at the
//! first problem, and `shadowtee check` must report all of them. Each
//! `build_*` function records its problems in [`Ctx`] and returns `None` (or a
//! placeholder) on failure; [`parse`] returns `Ok` only when no error was
//! recorded, so placeholders never escape.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::defaults as d;
use crate::{
    AccessLog, Admin, Config, ConfigError, ConfigErrors, Destination, Log, Match, Mirror,
    MirrorSettings, PathMatch, Route, SampleKey, Server, Upstream, WeightTable,
};

/// Largest accepted millisecond value: about 49 days, far beyond any sane
/// timeout, and keeps `Duration` arithmetic in the engine overflow-free.
const MAX_MS: u64 = u32::MAX as u64;

/// Headers a mirror may neither set nor remove: framing and routing of the
/// copy belong to the engine (RFC 9112 §6, RFC 9110 §7.6.1).
const ENGINE_OWNED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Hop-by-hop headers (RFC 9110 §7.6.1): removed from every copy, so setting
/// them is meaningless.
const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let table: Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            // One error per line: fold the parser's multi-line message.
            let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("TOML syntax error at line {line}, column {col}: {message}"),
            }]));
        }
    };
    let mut cx = Ctx::default();
    let config = build(&mut cx, &table);
    match config {
        Some(c) if cx.errors.is_empty() => Ok(c),
        _ => {
            if cx.errors.is_empty() {
                cx.err(
                    "",
                    "internal error: config incomplete without a reported error",
                );
            }
            Err(ConfigErrors(cx.errors))
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Default)]
struct Ctx {
    errors: Vec<ConfigError>,
}

impl Ctx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// `parent.key`, quoting keys that are not TOML bare keys.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn article(ty: &str) -> &'static str {
    match ty {
        "integer" | "array" => "an",
        _ => "a",
    }
}

fn type_error(cx: &mut Ctx, path: &str, want: &str, got: &Value) {
    let got = got.type_str();
    cx.err(
        path,
        format!(
            "expected {} {want}, found {} {got}",
            article(want),
            article(got)
        ),
    );
}

/// A table being walked: its path and contents. Construction reports
/// unknown keys.
struct Obj<'a> {
    path: String,
    t: &'a Table,
}

impl<'a> Obj<'a> {
    fn new(cx: &mut Ctx, path: String, v: &'a Value, known: &[&str]) -> Option<Obj<'a>> {
        match v {
            Value::Table(t) => Some(Obj::from_table(cx, path, t, known)),
            other => {
                type_error(cx, &path, "table", other);
                None
            }
        }
    }

    fn from_table(cx: &mut Ctx, path: String, t: &'a Table, known: &[&str]) -> Obj<'a> {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                cx.err(&join(&path, k), "unknown key");
            }
        }
        Obj { path, t }
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn has(&self, key: &str) -> bool {
        self.t.contains_key(key)
    }

    fn str(&self, cx: &mut Ctx, key: &str) -> Option<&'a str> {
        match self.t.get(key)? {
            Value::String(s) => Some(s),
            other => {
                type_error(cx, &self.path(key), "string", other);
                None
            }
        }
    }

    fn bool(&self, cx: &mut Ctx, key: &str) -> Option<bool> {
        match self.t.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                type_error(cx, &self.path(key), "boolean", other);
                None
            }
        }
    }

    /// A number; integers are accepted where a float is expected.
    fn float(&self, cx: &mut Ctx, key: &str) -> Option<f64> {
        match self.t.get(key)? {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            other => {
                type_error(cx, &self.path(key), "number", other);
                None
            }
        }
    }

    /// An integer in `min..=max`. `Err(())` means present but invalid
    /// (already reported); `Ok(None)` means absent.
    fn uint(&self, cx: &mut Ctx, key: &str, min: u64, max: u64) -> Result<Option<u64>, ()> {
        let Some(v) = self.t.get(key) else {
            return Ok(None);
        };
        let Value::Integer(i) = v else {
            type_error(cx, &self.path(key), "integer", v);
            return Err(());
        };
        match u64::try_from(*i) {
            Ok(u) if u < min => {
                cx.err(&self.path(key), format!("must be at least {min}, got {u}"));
                Err(())
            }
            Ok(u) if u > max => {
                cx.err(&self.path(key), format!("must be at most {max}, got {u}"));
                Err(())
            }
            Ok(u) => Ok(Some(u)),
            Err(_) => {
                cx.err(&self.path(key), format!("must be at least {min}, got {i}"));
                Err(())
            }
        }
    }

    /// [`Obj::uint`] with a default; a reported error yields the default.
    fn uint_or(&self, cx: &mut Ctx, key: &str, min: u64, max: u64, default: u64) -> u64 {
        self.uint(cx, key, min, max)
            .ok()
            .flatten()
            .unwrap_or(default)
    }

    fn usize_or(&self, cx: &mut Ctx, key: &str, min: u64, default: u64) -> usize {
        let max = usize::MAX as u64;
        self.uint_or(cx, key, min, max, default) as usize
    }

    fn millis_or(&self, cx: &mut Ctx, key: &str, default_ms: u64) -> Duration {
        Duration::from_millis(self.uint_or(cx, key, 1, MAX_MS, default_ms))
    }

    fn array(&self, cx: &mut Ctx, key: &str) -> Option<&'a [Value]> {
        match self.t.get(key)? {
            Value::Array(a) => Some(a),
            other => {
                type_error(cx, &self.path(key), "array", other);
                None
            }
        }
    }

    /// An array of strings, each reported by its own index on type errors.
    fn str_array(&self, cx: &mut Ctx, key: &str) -> Option<Vec<(String, &'a str)>> {
        let arr = self.array(cx, key)?;
        let base = self.path(key);
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let p = format!("{base}[{i}]");
            match v {
                Value::String(s) => out.push((p, s.as_str())),
                other => type_error(cx, &p, "string", other),
            }
        }
        Some(out)
    }

    /// A table of strings: `{ "x-env" = "shadow" }`, as (path, key, value).
    fn str_map(&self, cx: &mut Ctx, key: &str) -> Option<Vec<(String, &'a str, &'a str)>> {
        let base = self.path(key);
        let t = match self.t.get(key)? {
            Value::Table(t) => t,
            other => {
                type_error(cx, &base, "table", other);
                return None;
            }
        };
        let mut out = Vec::with_capacity(t.len());
        for (k, v) in t {
            let p = join(&base, k);
            match v {
                Value::String(s) => out.push((p, k.as_str(), s.as_str())),
                other => type_error(cx, &p, "string", other),
            }
        }
        Some(out)
    }
}

fn build(cx: &mut Ctx, root: &Table) -> Option<Config> {
    let top = Obj::from_table(
        cx,
        String::new(),
        root,
        &["server", "log", "admin", "mirror", "upstreams", "routes"],
    );
    let server = build_server(cx, &top);
    let log = build_log(cx, &top);
    let admin = build_admin(cx, &top);
    let mirror = build_mirror_settings(cx, &top);
    let (upstreams, names) = build_upstreams(cx, &top);
    let routes = build_routes(cx, &top, &names, mirror.marker_header.as_deref());
    Some(Config {
        server: server?,
        log,
        admin,
        mirror,
        upstreams: upstreams?,
        routes: routes?,
    })
}

fn empty_table() -> &'static Table {
    static EMPTY: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Table::new)
}

/// The sub-table `key` of `top`, or an empty one when absent.
fn section<'a>(cx: &mut Ctx, top: &Obj<'a>, key: &str, known: &[&str]) -> Obj<'a> {
    match top.t.get(key) {
        Some(v) => Obj::new(cx, top.path(key), v, known)
            .unwrap_or_else(|| Obj::from_table(cx, top.path(key), empty_table(), known)),
        None => Obj::from_table(cx, top.path(key), empty_table(), known),
    }
}

fn socket_addr(cx: &mut Ctx, path: &str, s: &str) -> Option<SocketAddr> {
    match resolve(s) {
        Ok(a) => Some(a),
        Err(e) => {
            cx.err(path, e);
            None
        }
    }
}

/// Resolves "host:port"; prefers an IPv4 address when a name has both, since
/// `localhost` test servers usually bind 127.0.0.1 only.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let well_formed = match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if !well_formed {
        return Err(format!("{s:?} is not \"host:port\""));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolved to no address"))
}

fn build_server(cx: &mut Ctx, top: &Obj) -> Option<Server> {
    let s = section(
        cx,
        top,
        "server",
        &[
            "listen",
            "cores",
            "max_header_bytes",
            "max_body_bytes",
            "header_timeout_ms",
            "idle_timeout_ms",
            "drain_timeout_ms",
            "max_connections",
        ],
    );
    let listen = match s.str(cx, "listen") {
        Some(l) => socket_addr(cx, &s.path("listen"), l),
        None => {
            if !s.has("listen") {
                cx.err(&s.path("listen"), "required key is missing");
            }
            None
        }
    };
    let cores = s
        .uint(cx, "cores", 1, usize::MAX as u64)
        .ok()
        .flatten()
        .and_then(|c| NonZeroUsize::new(c as usize));
    let max_header_bytes = s.usize_or(
        cx,
        "max_header_bytes",
        d::MIN_MAX_HEADER_BYTES,
        d::MAX_HEADER_BYTES,
    );
    let max_body_bytes = match s.uint_or(cx, "max_body_bytes", 0, u64::MAX, 0) {
        0 => None,
        n => Some(n),
    };
    Some(Server {
        listen: listen?,
        cores,
        max_header_bytes,
        max_body_bytes,
        header_timeout: s.millis_or(cx, "header_timeout_ms", d::HEADER_TIMEOUT_MS),
        idle_timeout: s.millis_or(cx, "idle_timeout_ms", d::IDLE_TIMEOUT_MS),
        drain_timeout: s.millis_or(cx, "drain_timeout_ms", d::DRAIN_TIMEOUT_MS),
        max_connections: s.usize_or(cx, "max_connections", 1, d::MAX_CONNECTIONS),
    })
}

fn build_log(cx: &mut Ctx, top: &Obj) -> Log {
    let s = section(cx, top, "log", &["access"]);
    let access = match s.str(cx, "access") {
        None | Some("") => AccessLog::Off,
        Some("stdout") => AccessLog::Stdout,
        Some(p) if p.contains('\0') => {
            cx.err(&s.path("access"), "must not contain NUL");
            AccessLog::Off
        }
        Some(p) => AccessLog::File(PathBuf::from(p)),
    };
    Log { access }
}

fn build_admin(cx: &mut Ctx, top: &Obj) -> Admin {
    let explicit = top.has("admin");
    let s = section(cx, top, "admin", &["listen"]);
    let default: SocketAddr = d::ADMIN_LISTEN
        .parse()
        .expect("valid default admin address");
    let listen = s
        .str(cx, "listen")
        .and_then(|l| socket_addr(cx, &s.path("listen"), l))
        .unwrap_or(default);
    Admin { listen, explicit }
}

fn build_mirror_settings(cx: &mut Ctx, top: &Obj) -> MirrorSettings {
    let s = section(
        cx,
        top,
        "mirror",
        &[
            "queue_capacity",
            "max_inflight",
            "pipeline_depth",
            "max_body_bytes",
            "timeout_ms",
            "host_suffix",
            "marker_header",
        ],
    );
    let host_suffix = match s.str(cx, "host_suffix") {
        Some(h)
            if h.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == ':') =>
        {
            cx.err(
                &s.path("host_suffix"),
                "must not contain whitespace, control characters, '/' or ':'",
            );
            String::new()
        }
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let marker_header = match s.str(cx, "marker_header") {
        Some("") => None,
        Some(m) if !is_token(m) => {
            cx.err(
                &s.path("marker_header"),
                "must be a header name (token) or \"\"",
            );
            None
        }
        Some(m) => Some(m.to_ascii_lowercase()),
        None => Some(d::MARKER_HEADER.to_string()),
    };
    MirrorSettings {
        queue_capacity: s.usize_or(cx, "queue_capacity", 1, d::QUEUE_CAPACITY),
        max_inflight: s.usize_or(cx, "max_inflight", 1, d::MAX_INFLIGHT),
        pipeline_depth: s.uint_or(cx, "pipeline_depth", 1, 64, d::PIPELINE_DEPTH) as usize,
        max_body_bytes: s.uint_or(cx, "max_body_bytes", 0, u64::MAX, d::MIRROR_MAX_BODY_BYTES),
        timeout: s.millis_or(cx, "timeout_ms", d::MIRROR_TIMEOUT_MS),
        host_suffix,
        marker_header,
    }
}

/// Iterates an array of tables (`[[upstreams]]`), yielding each element's
/// path and table; a non-table element is reported.
fn tables<'a>(cx: &mut Ctx, parent: &Obj<'a>, key: &str) -> Vec<(String, Option<&'a Table>)> {
    let Some(arr) = parent.array(cx, key) else {
        return Vec::new();
    };
    let base = parent.path(key);
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("{base}[{i}]");
            match v {
                Value::Table(t) => (p, Some(t)),
                other => {
                    type_error(cx, &p, "table", other);
                    (p, None)
                }
            }
        })
        .collect()
}

/// Characters allowed in upstream and route names: they appear in admin
/// URL paths (`/mirrors/{route}/{upstream}`) and metric label values, so
/// the RFC 3986 unreserved set.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

const NAME_RULE: &str = "must be non-empty and use only letters, digits, '-', '_', '.', '~'";

fn build_upstreams(cx: &mut Ctx, top: &Obj) -> (Option<Vec<Upstream>>, HashMap<String, usize>) {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut first_path: HashMap<String, String> = HashMap::new();
    let mut out = Some(Vec::new());
    for (i, (path, t)) in tables(cx, top, "upstreams").into_iter().enumerate() {
        let Some(t) = t else {
            out = None;
            continue;
        };
        let u = Obj::from_table(
            cx,
            path,
            t,
            &[
                "name",
                "endpoints",
                "connect_timeout_ms",
                "request_timeout_ms",
                "max_idle_per_core",
            ],
        );
        let name = match u.str(cx, "name") {
            Some(n) if !is_name(n) => {
                cx.err(&u.path("name"), NAME_RULE);
                None
            }
            Some(n) => {
                if let Some(prev) = first_path.get(n) {
                    cx.err(
                        &u.path("name"),
                        format!("duplicate upstream name {n:?} (first defined at {prev})"),
                    );
                } else {
                    first_path.insert(n.to_string(), u.path("name"));
                    names.insert(n.to_string(), i);
                }
                Some(n.to_string())
            }
            None => {
                if !u.has("name") {
                    cx.err(&u.path("name"), "required key is missing");
                }
                None
            }
        };
        let endpoints = build_endpoints(cx, &u);
        let up = Upstream {
            name: name.unwrap_or_default(),
            endpoints: endpoints.unwrap_or_default(),
            connect_timeout: u.millis_or(cx, "connect_timeout_ms", d::CONNECT_TIMEOUT_MS),
            request_timeout: u.millis_or(cx, "request_timeout_ms", d::REQUEST_TIMEOUT_MS),
            max_idle_per_core: u.usize_or(cx, "max_idle_per_core", 0, d::MAX_IDLE_PER_CORE),
        };
        if let Some(v) = out.as_mut() {
            v.push(up);
        }
    }
    (out, names)
}

fn build_endpoints(cx: &mut Ctx, u: &Obj) -> Option<Vec<SocketAddr>> {
    let Some(list) = u.str_array(cx, "endpoints") else {
        if !u.has("endpoints") {
            cx.err(&u.path("endpoints"), "required key is missing");
        }
        return None;
    };
    if list.is_empty() && u.array(cx, "endpoints").is_some_and(|a| a.is_empty()) {
        cx.err(&u.path("endpoints"), "at least one endpoint is required");
        return None;
    }
    let mut seen: Vec<&str> = Vec::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for (p, s) in list {
        if seen.contains(&s) {
            cx.err(&p, format!("duplicate endpoint {s:?}"));
            continue;
        }
        seen.push(s);
        match resolve(s) {
            Ok(a) if a.port() == 0 => cx.err(&p, format!("{s:?}: port 0 is not connectable")),
            Ok(a) => out.push(a),
            Err(e) => cx.err(&p, e),
        }
    }
    Some(out)
}

fn build_routes(
    cx: &mut Ctx,
    top: &Obj,
    upstreams: &HashMap<String, usize>,
    marker: Option<&str>,
) -> Option<Vec<Route>> {
    let mut first_path: HashMap<String, String> = HashMap::new();
    let mut out = Some(Vec::new());
    for (i, (path, t)) in tables(cx, top, "routes").into_iter().enumerate() {
        let Some(t) = t else {
            out = None;
            continue;
        };
        let r = Obj::from_table(cx, path, t, &["name", "match", "destinations", "mirrors"]);
        let name = match r.str(cx, "name") {
            Some(n) if !is_name(n) => {
                cx.err(&r.path("name"), NAME_RULE);
                n.to_string()
            }
            Some(n) => n.to_string(),
            None => format!("route{i}"),
        };
        if let Some(prev) = first_path.get(&name) {
            cx.err(
                &r.path("name"),
                format!("duplicate route name {name:?} (first used at {prev})"),
            );
        } else {
            first_path.insert(name.clone(), r.path("name"));
        }
        let matcher = build_match(cx, &r);
        let dests = build_destinations(cx, &r, upstreams);
        let mirrors = build_mirrors(cx, &r, upstreams, marker);
        let route = (|| {
            let destinations = dests?;
            let weights: Vec<u32> = destinations.iter().map(|d| d.weight).collect();
            Some(Route {
                name,
                matcher: matcher?,
                weights: WeightTable::new(&weights)?,
                destinations,
                mirrors: mirrors?,
            })
        })();
        match (route, out.as_mut()) {
            (Some(route), Some(v)) => v.push(route),
            _ => out = None,
        }
    }
    out
}

fn build_match(cx: &mut Ctx, r: &Obj) -> Option<Match> {
    let Some(v) = r.t.get("match") else {
        return Some(Match::default());
    };
    let m = Obj::new(
        cx,
        r.path("match"),
        v,
        &["path_exact", "path_prefix", "methods", "headers"],
    )?;
    let before = cx.errors.len();
    let exact = m
        .str(cx, "path_exact")
        .and_then(|p| check_path(cx, &m.path("path_exact"), p));
    let prefix = m
        .str(cx, "path_prefix")
        .and_then(|p| check_path(cx, &m.path("path_prefix"), p));
    if m.has("path_exact") && m.has("path_prefix") {
        cx.err(
            &m.path("path_exact"),
            "path_exact and path_prefix are mutually exclusive",
        );
    }
    let path = match (exact, prefix) {
        (Some(e), _) => Some(PathMatch::Exact(e)),
        (None, Some(p)) => Some(PathMatch::Prefix(p)),
        _ => None,
    };
    let methods = build_methods(cx, &m);
    let mut headers: Vec<(String, String)> = Vec::new();
    for (p, name, value) in m.str_map(cx, "headers").unwrap_or_default() {
        let Some(name) = check_header_name(cx, &p, name) else {
            continue;
        };
        if headers.iter().any(|(n, _)| *n == name) {
            cx.err(
                &p,
                format!("header {name:?} listed twice (names are case-insensitive)"),
            );
            continue;
        }
        if check_header_value(cx, &p, value) {
            headers.push((name, value.to_string()));
        }
    }
    (cx.errors.len() == before).then_some(Match {
        path,
        methods,
        headers,
    })
}

fn check_path(cx: &mut Ctx, path: &str, p: &str) -> Option<String> {
    if !p.starts_with('/') {
        cx.err(path, format!("{p:?} must start with '/'"));
        return None;
    }
    if p.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        cx.err(
            path,
            format!("{p:?}: paths are compared without the query, so '?', '#', whitespace and control characters can never match"),
        );
        return None;
    }
    Some(p.to_string())
}

/// `methods = [..]` in `obj`: non-empty, tokens, normalised to uppercase,
/// duplicates dropped.
fn build_methods(cx: &mut Ctx, obj: &Obj) -> Option<Vec<String>> {
    let list = obj.str_array(cx, "methods")?;
    if obj.array(cx, "methods").is_some_and(|a| a.is_empty()) {
        cx.err(
            &obj.path("methods"),
            "must not be empty (omit it to allow every method)",
        );
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (p, m) in list {
        if !is_token(m) {
            cx.err(&p, format!("{m:?} is not a valid HTTP method token"));
            continue;
        }
        let m = m.to_ascii_uppercase();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Some(out)
}

/// RFC 9110 §5.6.2 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_header_name(cx: &mut Ctx, path: &str, name: &str) -> Option<String> {
    if is_token(name) {
        Some(name.to_ascii_lowercase())
    } else {
        cx.err(path, format!("{name:?} is not a valid header name (token)"));
        None
    }
}

/// RFC 9110 §5.5 field value as the engine accepts it: no CTL except HTAB,
/// no surrounding whitespace (it is stripped on parse, so it could never
/// match or would be sent differently).
fn check_header_value(cx: &mut Ctx, path: &str, value: &str) -> bool {
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        cx.err(
            path,
            "header value must not contain CR, LF, NUL or other control characters",
        );
        return false;
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        cx.err(path, "header value must not start or end with whitespace");
        return false;
    }
    true
}

fn upstream_ref(cx: &mut Ctx, obj: &Obj, upstreams: &HashMap<String, usize>) -> Option<usize> {
    let Some(name) = obj.str(cx, "upstream") else {
        if !obj.has("upstream") {
            cx.err(&obj.path("upstream"), "required key is missing");
        }
        return None;
    };
    match upstreams.get(name) {
        Some(&i) => Some(i),
        None => {
            cx.err(&obj.path("upstream"), format!("no upstream named {name:?}"));
            None
        }
    }
}

fn build_destinations(
    cx: &mut Ctx,
    r: &Obj,
    upstreams: &HashMap<String, usize>,
) -> Option<Vec<Destination>> {
    let list = tables(cx, r, "destinations");
    if list.is_empty() {
        cx.err(
            &r.path("destinations"),
            "at least one destination is required",
        );
        return None;
    }
    let single = list.len() == 1;
    let mut ok = true;
    let mut out = Vec::with_capacity(list.len());
    for (path, t) in list {
        let Some(t) = t else {
            ok = false;
            continue;
        };
        let o = Obj::from_table(cx, path, t, &["upstream", "weight"]);
        let upstream = upstream_ref(cx, &o, upstreams);
        let weight = match o.uint(cx, "weight", 0, u32::MAX as u64) {
            Ok(Some(w)) => Some(w as u32),
            Ok(None) if single => Some(d::SINGLE_DESTINATION_WEIGHT),
            Ok(None) => {
                cx.err(
                    &o.path("weight"),
                    "weight required when a route has several destinations",
                );
                None
            }
            Err(()) => None,
        };
        match (upstream, weight) {
            (Some(upstream), Some(weight)) => out.push(Destination { upstream, weight }),
            _ => ok = false,
        }
    }
    if !ok {
        return None;
    }
    let sum: u64 = out.iter().map(|d| u64::from(d.weight)).sum();
    if sum == 0 {
        cx.err(&r.path("destinations"), "weights must have a positive sum");
        return None;
    }
    if sum > u64::from(u32::MAX) {
        cx.err(
            &r.path("destinations"),
            format!("weights sum to {sum}, more than {}", u32::MAX),
        );
        return None;
    }
    Some(out)
}

fn build_mirrors(
    cx: &mut Ctx,
    r: &Obj,
    upstreams: &HashMap<String, usize>,
    marker: Option<&str>,
) -> Option<Vec<Mirror>> {
    let mut out = Some(Vec::new());
    let mut seen: Vec<(usize, String)> = Vec::new();
    for (path, t) in tables(cx, r, "mirrors") {
        let Some(t) = t else {
            out = None;
            continue;
        };
        let before = cx.errors.len();
        let o = Obj::from_table(
            cx,
            path,
            t,
            &[
                "upstream",
                "percent",
                "methods",
                "sample_key",
                "max_rps",
                "set_headers",
                "remove_headers",
                "compare_body",
            ],
        );
        let upstream = upstream_ref(cx, &o, upstreams);
        if let Some(u) = upstream {
            if let Some((_, prev)) = seen.iter().find(|(s, _)| *s == u) {
                cx.err(
                    &o.path("upstream"),
                    format!("upstream already mirrored by this route at {prev}"),
                );
            } else {
                seen.push((u, o.path("upstream")));
            }
        }
        let percent = match o.float(cx, "percent") {
            Some(p) if !p.is_finite() || !(0.0..=100.0).contains(&p) => {
                cx.err(&o.path("percent"), format!("must be in 0..=100, got {p}"));
                None
            }
            Some(p) => Some(p),
            None => Some(d::MIRROR_PERCENT),
        };
        let methods = build_methods(cx, &o);
        let sample_key = o.str(cx, "sample_key").and_then(|s| {
            let p = o.path("sample_key");
            match s.strip_prefix("header:") {
                Some(h) => check_header_name(cx, &p, h).map(SampleKey::Header),
                None => {
                    cx.err(&p, format!("{s:?} must have the form \"header:NAME\""));
                    None
                }
            }
        });
        let max_rps = o
            .uint(cx, "max_rps", 1, u32::MAX as u64)
            .ok()
            .flatten()
            .map(|n| n as u32);
        let mut set_headers: Vec<(String, String)> = Vec::new();
        for (p, name, value) in o.str_map(cx, "set_headers").unwrap_or_default() {
            let Some(name) = check_header_name(cx, &p, name) else {
                continue;
            };
            if !check_edit_name(cx, &p, &name, marker, true) {
                continue;
            }
            if set_headers.iter().any(|(n, _)| *n == name) {
                cx.err(
                    &p,
                    format!("header {name:?} listed twice (names are case-insensitive)"),
                );
                continue;
            }
            if check_header_value(cx, &p, value) {
                set_headers.push((name, value.to_string()));
            }
        }
        let mut remove_headers: Vec<String> = Vec::new();
        for (p, name) in o.str_array(cx, "remove_headers").unwrap_or_default() {
            let Some(name) = check_header_name(cx, &p, name) else {
                continue;
            };
            if !check_edit_name(cx, &p, &name, marker, false) {
                continue;
            }
            if set_headers.iter().any(|(n, _)| *n == name) {
                cx.err(&p, format!("header {name:?} is both set and removed"));
                continue;
            }
            if !remove_headers.contains(&name) {
                remove_headers.push(name);
            }
        }
        let compare_body = o.bool(cx, "compare_body").unwrap_or(false);
        let mirror = match (upstream, percent) {
            (Some(upstream), Some(percent)) if cx.errors.len() == before => Some(Mirror {
                upstream,
                percent,
                methods,
                sample_key,
                max_rps,
                set_headers,
                remove_headers,
                compare_body,
            }),
            _ => None,
        };
        match (mirror, out.as_mut()) {
            (Some(m), Some(v)) => v.push(m),
            _ => out = None,
        }
    }
    out
}

/// Header edits on a copy must not touch what the engine owns.
fn check_edit_name(cx: &mut Ctx, path: &str, name: &str, marker: Option<&str>, set: bool) -> bool {
    if ENGINE_OWNED_HEADERS.contains(&name) {
        let why = if name == "host" {
            "Host is derived by the engine (see mirror.host_suffix)"
        } else {
            "message framing is managed by the engine"
        };
        cx.err(path, format!("{name:?} cannot be edited: {why}"));
        return false;
    }
    if set && HOP_BY_HOP_HEADERS.contains(&name) {
        cx.err(
            path,
            format!("{name:?} is hop-by-hop and removed from every copy (RFC 9110 7.6.1)"),
        );
        return false;
    }
    if marker == Some(name) {
        cx.err(
            path,
            format!("{name:?} is the loop-guard marker (mirror.marker_header), set by the engine"),
        );
        return false;
    }
    true
}

//! Istio `VirtualService` (networking.istio.io v1alpha3/v1beta1/v1) →
//! shadowtee TOML, for `shadowtee import-istio`.
//!
//! Owns the mapping of `spec.http[]` onto `[[routes]]`: `match` (uri
//! exact/prefix, method exact, header exact), weighted `route` destinations,
//! `mirror` + `mirrorPercentage` (and the legacy `mirror_percent` /
//! `mirrorPercent`), `mirrors[]`, and a simple `timeout` (→ the upstream's
//! `request_timeout_ms`). Upstreams are named by destination subset, or by
//! host when there is no subset.
//!
//! Must never drop a field silently: everything not carried over is listed
//! in [`ImportOutput::unsupported`] with its YAML path
//! (`spec.http[0].retries: ...`). The TOML it emits is meant to pass
//! [`config_schema::parse`] once every upstream has a resolvable endpoint.
//!
//! Lives in its own crate so that the YAML parser is linked only where the
//! importer is used, not into every user of `config-schema`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Deserialize;
use yaml_serde::Value;

/// Why an import produced no TOML at all. Everything short of these is
/// carried over or listed in [`ImportOutput::unsupported`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Document `document` (1-based) of the stream is not valid YAML.
    #[error("YAML document {document}: {source}")]
    Yaml {
        document: usize,
        #[source]
        source: yaml_serde::Error,
    },
    /// No document is a `kind: VirtualService` (directly or in a `kind: List`).
    #[error("no VirtualService (kind: VirtualService) found in the input")]
    NoVirtualService,
    /// A VirtualService whose `spec` is missing or not a mapping.
    /// `virtual_service` is its name when the input held several (`None`
    /// for a single one, so the message carries no prefix).
    #[error("{}VirtualService has no spec mapping", vs_prefix(.virtual_service.as_deref()))]
    NoSpec { virtual_service: Option<String> },
}

/// `VirtualService NAME: ` for messages about one of several, else empty.
fn vs_prefix(name: Option<&str>) -> String {
    name.map(|n| format!("VirtualService {n}: "))
        .unwrap_or_default()
}

/// Result of an import: the TOML text and what could not be carried over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOutput {
    pub toml: String,
    /// One line per dropped or approximated item, each starting with its
    /// YAML path.
    pub unsupported: Vec<String>,
}

/// Port used for an upstream with no `--subset` mapping and no
/// `destination.port.number`: the Kubernetes service default.
const DEFAULT_SERVICE_PORT: u64 = 80;

/// Translates every VirtualService in `yaml` (multi-document YAML and
/// `kind: List` accepted; other kinds are ignored). `subsets` maps a subset
/// (or host) name to the `host:port` shadowtee should use as its endpoint.
/// `listen` becomes `server.listen`.
///
/// Errors only when the input is not YAML, holds no VirtualService, or a
/// VirtualService has no `spec` mapping.
pub fn import_virtual_service(
    yaml: &str,
    subsets: &[(String, String)],
    listen: &str,
) -> Result<ImportOutput, ImportError> {
    let mut services = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(doc).map_err(|source| ImportError::Yaml {
            document: i + 1,
            source,
        })?;
        collect_virtual_services(v, &mut services);
    }
    if services.is_empty() {
        return Err(ImportError::NoVirtualService);
    }
    let mut im = Importer::default();
    let many = services.len() > 1;
    for vs in &services {
        let vs_name = vs
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("virtualservice");
        im.vs_name = many.then(|| vs_name.to_string());
        im.prefix = vs_prefix(im.vs_name.as_deref());
        im.route_prefix = if many {
            format!("{}-", sanitize(vs_name))
        } else {
            String::new()
        };
        im.virtual_service(vs)?;
    }
    for u in &im.upstreams {
        if !subsets.iter().any(|(n, _)| *n == u.name) {
            let ep = format!("{}:{}", u.host, u.port.unwrap_or(DEFAULT_SERVICE_PORT));
            im.unsupported.push(format!(
                "upstream {}: no --subset mapping, used {ep} from the VirtualService",
                u.name
            ));
        }
    }
    for (name, _) in subsets {
        if !im.upstreams.iter().any(|u| &u.name == name) {
            im.unsupported.push(format!(
                "--subset {name}: no destination or mirror uses this name; ignored"
            ));
        }
    }
    let names: Vec<&str> = services
        .iter()
        .filter_map(|vs| vs.get("metadata")?.get("name")?.as_str())
        .collect();
    Ok(ImportOutput {
        toml: im.render(&names, subsets, listen),
        unsupported: im.unsupported,
    })
}

fn collect_virtual_services(v: Value, out: &mut Vec<Value>) {
    match v.get("kind").and_then(Value::as_str) {
        Some("VirtualService") => out.push(v),
        Some("List") => {
            if let Some(Value::Sequence(items)) = v.get("items") {
                for item in items.clone() {
                    collect_virtual_services(item, out);
                }
            }
        }
        _ => {}
    }
}

/// Maps a Kubernetes/Istio name onto shadowtee's name alphabet
/// (letters, digits, `-_.~`).
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "unnamed".to_string()
    } else {
        out
    }
}

#[derive(Default)]
struct Importer {
    /// NAME of the VirtualService being imported when importing several.
    vs_name: Option<String>,
    /// `VirtualService NAME: ` when importing several, else empty.
    prefix: String,
    /// `NAME-` when importing several, else empty.
    route_prefix: String,
    upstreams: Vec<OutUpstream>,
    routes: Vec<OutRoute>,
    route_names: BTreeSet<String>,
    unsupported: Vec<String>,
}

struct OutUpstream {
    name: String,
    host: String,
    port: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Clone, Default)]
struct OutMatch {
    path_exact: Option<String>,
    path_prefix: Option<String>,
    method: Option<String>,
    headers: Vec<(String, String)>,
}

struct OutRoute {
    name: String,
    comment: Option<String>,
    matcher: OutMatch,
    destinations: Vec<(String, u64)>,
    mirrors: Vec<(String, f64)>,
}

fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => yaml_serde::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // Protobuf wrappers (`{ value: 50 }`) appear in older manifests.
        Value::Mapping(m) => m.get("value").and_then(as_f64),
        _ => None,
    }
}

impl Importer {
    fn note(&mut self, path: &str, what: impl AsRef<str>) {
        self.unsupported
            .push(format!("{}{path}: {}", self.prefix, what.as_ref()));
    }

    fn virtual_service(&mut self, vs: &Value) -> Result<(), ImportError> {
        let spec = match vs.get("spec") {
            Some(Value::Mapping(m)) => m,
            _ => {
                return Err(ImportError::NoSpec {
                    virtual_service: self.vs_name.clone(),
                })
            }
        };
        for (k, v) in spec {
            let key = key_str(k);
            let path = format!("spec.{key}");
            match key.as_str() {
                "http" => {}
                "hosts" => {
                    let hosts: Vec<String> = v
                        .as_sequence()
                        .map(|s| {
                            s.iter()
                                .filter_map(|h| h.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.note(
                        &path,
                        format!(
                            "hosts [{}] not enforced: shadowtee routes every Host arriving on its listener",
                            hosts.join(", ")
                        ),
                    );
                }
                "gateways" => self.note(
                    &path,
                    "gateways are not supported (shadowtee is its own listener)",
                ),
                "tcp" | "tls" => self.note(
                    &path,
                    format!("{key} routes are not supported (HTTP/1.1 only)"),
                ),
                "exportTo" => self.note(&path, "exportTo has no meaning outside a mesh"),
                _ => self.note(&path, format!("{key} is not supported")),
            }
        }
        match spec.get("http") {
            Some(Value::Sequence(http)) => {
                for (i, h) in http.iter().enumerate() {
                    self.http_route(i, h);
                }
            }
            Some(_) => self.note("spec.http", "expected a list; ignored"),
            None => self.note("spec", "no http routes; nothing to import"),
        }
        Ok(())
    }

    fn http_route(&mut self, i: usize, h: &Value) {
        let path = format!("spec.http[{i}]");
        let Some(map) = h.as_mapping() else {
            self.note(&path, "expected a mapping; skipped");
            return;
        };
        for (k, _) in map {
            let key = key_str(k);
            let msg = match key.as_str() {
                "name" | "match" | "route" | "mirror" | "mirrorPercentage" | "mirror_percent"
                | "mirrorPercent" | "mirrors" | "timeout" => continue,
                "retries" => "retries are not supported".to_string(),
                "rewrite" => {
                    "rewrite is not supported (requests are forwarded unchanged)".to_string()
                }
                "redirect" => "redirect is not supported".to_string(),
                "directResponse" => "directResponse is not supported".to_string(),
                "delegate" => "delegate is not supported".to_string(),
                "fault" => "fault injection is not supported".to_string(),
                "corsPolicy" => "corsPolicy is not supported".to_string(),
                "headers" => "header manipulation is not supported".to_string(),
                other => format!("{other} is not supported"),
            };
            self.note(&format!("{path}.{key}"), msg);
        }

        let base_name = match map.get("name").and_then(Value::as_str) {
            Some(n) => format!("{}{}", self.route_prefix, sanitize(n)),
            None => format!("{}http{i}", self.route_prefix),
        };

        // Destinations.
        let mut dests: Vec<(String, Option<u64>)> = Vec::new();
        match map.get("route") {
            Some(Value::Sequence(rs)) if !rs.is_empty() => {
                for (j, r) in rs.iter().enumerate() {
                    let rpath = format!("{path}.route[{j}]");
                    if let Some(m) = r.as_mapping() {
                        for (k, _) in m {
                            let key = key_str(k);
                            if key != "destination" && key != "weight" {
                                let msg = if key == "headers" {
                                    "header manipulation is not supported".to_string()
                                } else {
                                    format!("{key} is not supported")
                                };
                                self.note(&format!("{rpath}.{key}"), msg);
                            }
                        }
                    }
                    let Some(up) =
                        self.destination(&format!("{rpath}.destination"), r.get("destination"))
                    else {
                        continue;
                    };
                    let weight = match r.get("weight") {
                        None => None,
                        Some(w) => match w.as_u64() {
                            Some(w) => Some(w),
                            None => {
                                self.note(
                                    &format!("{rpath}.weight"),
                                    "not a non-negative integer; treated as 0",
                                );
                                Some(0)
                            }
                        },
                    };
                    dests.push((up, weight));
                }
            }
            _ => {}
        }
        if dests.is_empty() {
            self.note(&path, "no usable route destination; http route skipped");
            return;
        }
        let single = dests.len() == 1;
        let mut destinations: Vec<(String, u64)> = dests
            .into_iter()
            .map(|(u, w)| {
                // Istio: a lone destination gets 100; others default to 0.
                let w = w.unwrap_or(if single { 100 } else { 0 });
                (u, w)
            })
            .collect();
        let sum: u64 = destinations.iter().map(|d| d.1).sum();
        if sum == 0 {
            self.note(
                &format!("{path}.route"),
                "weights sum to 0; every destination given weight 1",
            );
            for d in &mut destinations {
                d.1 = 1;
            }
        } else if sum > u64::from(u32::MAX) {
            self.note(
                &format!("{path}.route"),
                "weights overflow; scaled to sum 100",
            );
            for d in &mut destinations {
                d.1 = d.1 * 100 / sum;
            }
        }

        // Timeout → request_timeout_ms of the destination upstreams.
        if let Some(t) = map.get("timeout") {
            let tpath = format!("{path}.timeout");
            match t.as_str().and_then(parse_go_duration_ms) {
                Some(0) => self.note(
                    &tpath,
                    "0s (no timeout) cannot be expressed; upstream default kept",
                ),
                Some(ms) => {
                    for (name, _) in &destinations {
                        self.set_timeout(&tpath, name, ms);
                    }
                }
                None => self.note(
                    &tpath,
                    format!("{t:?} is not a simple duration; not carried over"),
                ),
            }
        }

        // Mirrors.
        let mut mirrors: Vec<(String, f64)> = Vec::new();
        if let Some(m) = map.get("mirror") {
            let mpath = format!("{path}.mirror");
            if let Some(up) = self.destination(&mpath, Some(m)) {
                let pct = if let Some(p) = map.get("mirrorPercentage") {
                    self.percent(&format!("{path}.mirrorPercentage"), p.get("value"))
                } else if let Some((k, p)) = ["mirror_percent", "mirrorPercent"]
                    .iter()
                    .find_map(|k| map.get(*k).map(|p| (*k, p)))
                {
                    self.percent(&format!("{path}.{k}"), Some(p))
                } else {
                    100.0
                };
                mirrors.push((up, pct));
            }
        } else {
            for k in ["mirrorPercentage", "mirror_percent", "mirrorPercent"] {
                if map.contains_key(k) {
                    self.note(&format!("{path}.{k}"), "set without mirror; ignored");
                }
            }
        }
        if let Some(ms) = map.get("mirrors") {
            let list = ms.as_sequence().cloned().unwrap_or_default();
            for (j, m) in list.iter().enumerate() {
                let mpath = format!("{path}.mirrors[{j}]");
                if let Some(mm) = m.as_mapping() {
                    for (k, _) in mm {
                        let key = key_str(k);
                        if key != "destination" && key != "percentage" {
                            self.note(&format!("{mpath}.{key}"), format!("{key} is not supported"));
                        }
                    }
                }
                let Some(up) =
                    self.destination(&format!("{mpath}.destination"), m.get("destination"))
                else {
                    continue;
                };
                let pct = match m.get("percentage") {
                    Some(p) => self.percent(&format!("{mpath}.percentage"), p.get("value")),
                    None => 100.0,
                };
                if mirrors.iter().any(|(u, _)| *u == up) {
                    self.note(
                        &mpath,
                        format!(
                            "upstream {up} is already mirrored by this route; duplicate dropped"
                        ),
                    );
                    continue;
                }
                mirrors.push((up, pct));
            }
        }

        // Matches: each alternative (OR) becomes its own route (shadowtee ANDs).
        let alternatives: Vec<OutMatch> = match map.get("match") {
            Some(Value::Sequence(ms)) if !ms.is_empty() => ms
                .iter()
                .enumerate()
                .map(|(j, m)| self.match_entry(&format!("{path}.match[{j}]"), m))
                .collect(),
            _ => vec![OutMatch::default()],
        };
        let n = alternatives.len();
        let mut made = Vec::new();
        for (j, matcher) in alternatives.into_iter().enumerate() {
            let wanted = if n == 1 {
                base_name.clone()
            } else {
                format!("{base_name}-m{j}")
            };
            let name = self.unique_route_name(wanted);
            made.push(name.clone());
            let comment =
                (n > 1).then(|| format!("{path}.match[{j}] (alternative {} of {n})", j + 1));
            self.routes.push(OutRoute {
                name,
                comment,
                matcher,
                destinations: destinations.clone(),
                mirrors: mirrors.clone(),
            });
        }
        if n > 1 {
            let quoted: Vec<String> = made.iter().map(|m| format!("{m:?}")).collect();
            self.note(
                &format!("{path}.match"),
                format!(
                    "note: {n} match alternatives (OR) became routes {} because shadowtee match conditions are ANDed; mirror percents and admin changes now apply per route",
                    quoted.join(", ")
                ),
            );
        }
    }

    fn unique_route_name(&mut self, wanted: String) -> String {
        let mut name = wanted.clone();
        let mut k = 2;
        while self.route_names.contains(&name) {
            name = format!("{wanted}-{k}");
            k += 1;
        }
        self.route_names.insert(name.clone());
        name
    }

    /// A percentage in 0..=100; anything else is noted and clamped.
    fn percent(&mut self, path: &str, v: Option<&Value>) -> f64 {
        match v.and_then(as_f64) {
            Some(p) if p.is_finite() && (0.0..=100.0).contains(&p) => p,
            Some(p) if p.is_finite() => {
                self.note(path, format!("{p} outside 0..=100; clamped"));
                p.clamp(0.0, 100.0)
            }
            _ => {
                self.note(path, "missing or not a number; 100 used");
                100.0
            }
        }
    }

    /// `destination: { host, subset, port: { number } }` → upstream name,
    /// registering the upstream.
    fn destination(&mut self, path: &str, d: Option<&Value>) -> Option<String> {
        let Some(host) = d.and_then(|d| d.get("host")).and_then(Value::as_str) else {
            self.note(path, "destination without host; skipped");
            return None;
        };
        let d = d?;
        if let Some(m) = d.as_mapping() {
            for (k, _) in m {
                let key = key_str(k);
                if !matches!(key.as_str(), "host" | "subset" | "port") {
                    self.note(&format!("{path}.{key}"), format!("{key} is not supported"));
                }
            }
        }
        let subset = d.get("subset").and_then(Value::as_str);
        let port = d
            .get("port")
            .and_then(|p| p.get("number"))
            .and_then(Value::as_u64);
        let name = sanitize(subset.unwrap_or(host));
        match self.upstreams.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                if u.host != host {
                    let msg = format!(
                        "subset {name} is used with hosts {} and {host}; both map to upstream {name:?}",
                        u.host
                    );
                    self.note(path, msg);
                } else if u.port.is_none() {
                    u.port = port;
                }
            }
            None => self.upstreams.push(OutUpstream {
                name: name.clone(),
                host: host.to_string(),
                port,
                request_timeout_ms: None,
            }),
        }
        Some(name)
    }

    fn set_timeout(&mut self, path: &str, upstream: &str, ms: u64) {
        let Some(u) = self.upstreams.iter_mut().find(|u| u.name == upstream) else {
            return;
        };
        match u.request_timeout_ms {
            Some(prev) if prev != ms => {
                let keep = prev.max(ms);
                u.request_timeout_ms = Some(keep);
                let msg = format!(
                    "upstream {upstream} has timeouts {prev} ms and {ms} ms from different routes; shadowtee has one per upstream, {keep} ms kept"
                );
                self.note(path, msg);
            }
            _ => u.request_timeout_ms = Some(ms),
        }
    }

    fn match_entry(&mut self, path: &str, m: &Value) -> OutMatch {
        let mut out = OutMatch::default();
        let Some(map) = m.as_mapping() else {
            self.note(path, "expected a mapping; treated as match-all");
            return out;
        };
        const BROADER: &str =
            "condition dropped, so this route matches more requests than in Istio";
        for (k, v) in map {
            let key = key_str(k);
            let kpath = format!("{path}.{key}");
            match key.as_str() {
                "name" => {}
                "uri" => match string_match(v) {
                    Some(("exact", p)) if valid_path(p) => out.path_exact = Some(p.to_string()),
                    Some(("prefix", p)) if valid_path(p) => out.path_prefix = Some(p.to_string()),
                    Some((kind @ ("exact" | "prefix"), p)) => self.note(
                        &format!("{kpath}.{kind}"),
                        format!("{p:?} is not an origin-form path without query; {BROADER}"),
                    ),
                    Some((kind, _)) => self.note(
                        &format!("{kpath}.{kind}"),
                        format!("uri {kind} matching is not supported; {BROADER}"),
                    ),
                    None => self.note(&kpath, format!("unrecognised uri match; {BROADER}")),
                },
                "method" => match string_match(v) {
                    Some(("exact", meth)) if config_schema::is_token(meth) => {
                        out.method = Some(meth.to_ascii_uppercase())
                    }
                    Some((kind, _)) => self.note(
                        &format!("{kpath}.{kind}"),
                        format!("method {kind} matching is not supported; {BROADER}"),
                    ),
                    None => self.note(&kpath, format!("unrecognised method match; {BROADER}")),
                },
                "headers" => {
                    let Some(hs) = v.as_mapping() else {
                        self.note(&kpath, format!("expected a mapping; {BROADER}"));
                        continue;
                    };
                    for (hk, hv) in hs {
                        let hname = key_str(hk);
                        let hpath = format!("{kpath}.{hname}");
                        match string_match(hv) {
                            Some(("exact", val))
                                if config_schema::is_token(&hname)
                                    && !val.bytes().any(|b| b < b' ' && b != b'\t')
                                    && val.trim() == val =>
                            {
                                out.headers.push((hname.to_ascii_lowercase(), val.to_string()))
                            }
                            Some(("exact", _)) => self.note(
                                &hpath,
                                format!("header name or value not expressible (pseudo-header or control characters); {BROADER}"),
                            ),
                            Some((kind, _)) => self.note(
                                &format!("{hpath}.{kind}"),
                                format!("header {kind} matching is not supported; {BROADER}"),
                            ),
                            None => self.note(&hpath, format!("unrecognised header match; {BROADER}")),
                        }
                    }
                }
                "ignoreUriCase" => {
                    if v.as_bool() == Some(true) {
                        self.note(&kpath, "case-insensitive paths are not supported; paths compare case-sensitively");
                    }
                }
                other => self.note(
                    &kpath,
                    format!("{other} matching is not supported; {BROADER}"),
                ),
            }
        }
        out
    }

    fn render(&self, vs_names: &[&str], subsets: &[(String, String)], listen: &str) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(&mut s, vs_names, subsets, listen);
        s
    }

    fn write_toml(
        &self,
        s: &mut String,
        vs_names: &[&str],
        subsets: &[(String, String)],
        listen: &str,
    ) -> std::fmt::Result {
        writeln!(
            s,
            "# Generated by `shadowtee import-istio` from VirtualService {}.",
            vs_names.join(", ")
        )?;
        writeln!(
            s,
            "# Check what it reported as not carried over before use."
        )?;
        writeln!(s)?;
        writeln!(s, "[server]")?;
        writeln!(s, "listen = {}", q(listen))?;
        for u in &self.upstreams {
            writeln!(s)?;
            writeln!(s, "[[upstreams]]")?;
            writeln!(s, "name = {}", q(&u.name))?;
            let endpoint = match subsets.iter().find(|(n, _)| *n == u.name) {
                Some((_, ep)) => ep.clone(),
                None => format!("{}:{}", u.host, u.port.unwrap_or(DEFAULT_SERVICE_PORT)),
            };
            writeln!(s, "endpoints = [{}]", q(&endpoint))?;
            if let Some(ms) = u.request_timeout_ms {
                writeln!(s, "request_timeout_ms = {ms}")?;
            }
        }
        for r in &self.routes {
            writeln!(s)?;
            writeln!(s, "[[routes]]")?;
            if let Some(c) = &r.comment {
                writeln!(s, "# from {c}")?;
            }
            writeln!(s, "name = {}", q(&r.name))?;
            let m = &r.matcher;
            if m.path_exact.is_some()
                || m.path_prefix.is_some()
                || m.method.is_some()
                || !m.headers.is_empty()
            {
                writeln!(s, "[routes.match]")?;
                if let Some(p) = &m.path_exact {
                    writeln!(s, "path_exact = {}", q(p))?;
                }
                if let Some(p) = &m.path_prefix {
                    writeln!(s, "path_prefix = {}", q(p))?;
                }
                if let Some(meth) = &m.method {
                    writeln!(s, "methods = [{}]", q(meth))?;
                }
                if !m.headers.is_empty() {
                    let hs: Vec<String> = m
                        .headers
                        .iter()
                        .map(|(n, v)| format!("{} = {}", q(n), q(v)))
                        .collect();
                    writeln!(s, "headers = {{ {} }}", hs.join(", "))?;
                }
            }
            for (u, w) in &r.destinations {
                writeln!(s, "[[routes.destinations]]")?;
                writeln!(s, "upstream = {}", q(u))?;
                writeln!(s, "weight = {w}")?;
            }
            for (u, p) in &r.mirrors {
                writeln!(s, "[[routes.mirrors]]")?;
                writeln!(s, "upstream = {}", q(u))?;
                writeln!(s, "percent = {p:?}")?;
            }
        }
        Ok(())
    }
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
}

/// Istio `StringMatch`: exactly one of `exact`, `prefix`, `regex`.
fn string_match(v: &Value) -> Option<(&str, &str)> {
    let m = v.as_mapping()?;
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    Some((k.as_str()?, v.as_str()?))
}

/// TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go `time.ParseDuration` subset used by Istio (`"5s"`, `"1m30s"`,
/// `"250ms"`, `"1.5s"`), rounded up to whole milliseconds.
fn parse_go_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += n * scale;
    }
    let ms = (total_ns / 1e6).ceil();
    // Beyond u32::MAX ms (~49 days) the config would reject it anyway.
    (ms.is_finite() && ms <= f64::from(u32::MAX)).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use config_schema::{parse, Config};

    fn subsets(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn import(yaml: &str, map: &[(&str, &str)]) -> (Config, ImportOutput) {
        let out = import_virtual_service(yaml, &subsets(map), "127.0.0.1:8080").unwrap();
        let cfg = parse(&out.toml).unwrap_or_else(|e| panic!("{e}\n---\n{}", out.toml));
        (cfg, out)
    }

    fn up(c: &Config, i: usize) -> &str {
        &c.upstreams[i].name
    }

    /// Istio docs, "Mirroring" task.
    const MIRROR_EXAMPLE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
    - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: 100.0
"#;

    #[test]
    fn istio_mirroring_example_round_trips() {
        let (c, out) = import(
            MIRROR_EXAMPLE,
            &[("v1", "127.0.0.1:3001"), ("v2", "127.0.0.1:3002")],
        );
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.routes.len(), 1);
        let r = &c.routes[0];
        assert_eq!(r.name, "http0");
        assert_eq!(r.matcher, config_schema::Match::default());
        assert_eq!(r.destinations.len(), 1);
        assert_eq!(up(&c, r.destinations[0].upstream), "v1");
        assert_eq!(r.destinations[0].weight, 100);
        assert_eq!(r.mirrors.len(), 1);
        assert_eq!(up(&c, r.mirrors[0].upstream), "v2");
        assert_eq!(r.mirrors[0].percent, 100.0);
        assert_eq!(c.upstreams[0].endpoints[0].to_string(), "127.0.0.1:3001");
        assert_eq!(c.upstreams[1].endpoints[0].to_string(), "127.0.0.1:3002");
        assert_eq!(out.unsupported.len(), 1, "{:?}", out.unsupported);
        assert!(out.unsupported[0].starts_with("spec.hosts: hosts [httpbin] not enforced"));
    }

    #[test]
    fn weighted_80_20_example_round_trips() {
        let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - name: reviews-canary
    route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 20
    mirrors:
    - destination:
        host: reviews
        subset: v3
      percentage:
        value: 12.5
"#;
        let (c, _) = import(
            yaml,
            &[
                ("v1", "127.0.0.1:3001"),
                ("v2", "127.0.0.1:3002"),
                ("v3", "localhost:3003"),
            ],
        );
        let r = &c.routes[0];
        assert_eq!(r.name, "reviews-canary");
        let got: Vec<(&str, u32)> = r
            .destinations
            .iter()
            .map(|d| (up(&c, d.upstream), d.weight))
            .collect();
        assert_eq!(got, vec![("v1", 80), ("v2", 20)]);
        assert_eq!(r.weights.total(), 100);
        assert_eq!(r.weights.pick(79), 0);
        assert_eq!(r.weights.pick(80), 1);
        assert_eq!(up(&c, r.mirrors[0].upstream), "v3");
        assert_eq!(r.mirrors[0].percent, 12.5);
    }

    #[test]
    fn matches_split_into_routes_and_unsupported_is_reported() {
        let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: other }
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
        x-re:
          regex: "a.*"
      uri:
        prefix: /api
      method:
        exact: get
    - uri:
        exact: /login
      ignoreUriCase: true
      queryParams:
        a: { exact: "1" }
    route:
    - destination:
        host: reviews
        subset: v2
    retries:
      attempts: 3
    timeout: 1.5s
    mirror:
      host: reviews
      subset: shadow
      port: { number: 9080 }
    mirror_percent: 40
  - route:
    - destination: { host: reviews, subset: v1 }
    fault:
      delay: { fixedDelay: 5s }
  tcp:
  - route: []
"#;
        let out = import_virtual_service(
            yaml,
            &subsets(&[("v2", "127.0.0.1:3002"), ("v1", "127.0.0.1:3001")]),
            "127.0.0.1:8080",
        )
        .unwrap();
        // "shadow" has no mapping: the service host is used, which only
        // resolves inside the cluster.
        assert!(
            out.toml.contains("endpoints = [\"reviews:9080\"]"),
            "{}",
            out.toml
        );
        let c = parse(&out.toml.replace("reviews:9080", "127.0.0.1:9080")).unwrap();
        let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["http0-m0", "http0-m1", "http1"]);
        let m0 = &c.routes[0].matcher;
        assert_eq!(
            m0.path,
            Some(config_schema::PathMatch::Prefix("/api".into()))
        );
        assert_eq!(m0.methods, Some(vec!["GET".to_string()]));
        assert_eq!(
            m0.headers,
            vec![("end-user".to_string(), "jason".to_string())]
        );
        assert_eq!(
            c.routes[1].matcher.path,
            Some(config_schema::PathMatch::Exact("/login".into()))
        );
        assert_eq!(c.routes[0].mirrors[0].percent, 40.0);
        assert_eq!(c.routes[1].mirrors[0].percent, 40.0);
        assert!(c.routes[2].mirrors.is_empty());
        let v2 = c.upstream_index("v2").unwrap();
        assert_eq!(c.upstreams[v2].request_timeout.as_millis(), 1500);
        let shadow = c.upstream_index("shadow").unwrap();
        assert_eq!(c.upstreams[shadow].endpoints[0].port(), 9080);

        let all = out.unsupported.join("\n");
        for needle in [
            "spec.hosts:",
            "spec.gateways:",
            "spec.tcp:",
            "spec.http[0].retries: retries are not supported",
            "spec.http[0].match[0].headers.x-re.regex:",
            "spec.http[0].match[1].ignoreUriCase:",
            "spec.http[0].match[1].queryParams:",
            "spec.http[0].match: note: 2 match alternatives",
            "spec.http[1].fault:",
            "upstream shadow: no --subset mapping, used reviews:9080 from the VirtualService",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unmapped_upstream_uses_service_host() {
        let out = import_virtual_service(
            MIRROR_EXAMPLE,
            &subsets(&[("v1", "127.0.0.1:1")]),
            "0.0.0.0:80",
        )
        .unwrap();
        assert!(
            out.toml.contains("endpoints = [\"httpbin:80\"]"),
            "{}",
            out.toml
        );
        assert!(out
            .unsupported
            .iter()
            .any(|u| u
                == "upstream v2: no --subset mapping, used httpbin:80 from the VirtualService"));
    }

    #[test]
    fn no_virtual_service_is_an_error() {
        assert!(import_virtual_service("kind: Service\n", &[], "127.0.0.1:1").is_err());
        assert!(import_virtual_service("a: [", &[], "127.0.0.1:1").is_err());
    }

    #[test]
    fn errors_are_typed_and_keep_their_cause() {
        use std::error::Error as _;
        let e = import_virtual_service("kind: Service\n---\na: [", &[], "127.0.0.1:1").unwrap_err();
        assert!(matches!(e, ImportError::Yaml { document: 2, .. }), "{e:?}");
        assert!(e.source().is_some());
        assert!(e.to_string().starts_with("YAML document 2: "), "{e}");

        let vs = "kind: VirtualService\nmetadata: {name: a}\n";
        let e = import_virtual_service(vs, &[], "127.0.0.1:1").unwrap_err();
        assert!(
            matches!(
                e,
                ImportError::NoSpec {
                    virtual_service: None
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "VirtualService has no spec mapping");
        let two = format!("{vs}spec: {{}}\n---\n{}", vs.replace("a}", "b}"));
        let e = import_virtual_service(&two, &[], "127.0.0.1:1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "VirtualService b: VirtualService has no spec mapping"
        );
        assert!(matches!(
            import_virtual_service("", &[], "127.0.0.1:1"),
            Err(ImportError::NoVirtualService)
        ));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration_ms("5s"), Some(5000));
        assert_eq!(parse_go_duration_ms("250ms"), Some(250));
        assert_eq!(parse_go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_go_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_go_duration_ms("10us"), Some(1));
        assert_eq!(parse_go_duration_ms("0s"), Some(0));
        assert_eq!(parse_go_duration_ms("5"), None);
        assert_eq!(parse_go_duration_ms("s"), None);
        assert_eq!(parse_go_duration_ms("5d"), None);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(q("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}

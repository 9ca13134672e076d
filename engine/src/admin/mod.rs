//! The admin listener (`[admin] listen`): `/metrics`, `/healthz`,
//! `/compare`, `/config`, and runtime mirror switches. It runs on its own
//! plain thread, off the executors: it only reads the per-core tables
//! (relaxed loads, summed here) and flips the shared mirror controls.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::h1::write::reason_phrase;
use crate::h1::{parse_request, RequestLimits};
use crate::shared::{FailReason, Generation, Shared, ShedReason};
use crate::stats::{HistSnapshot, PROM_BOUNDS_US};

/// Admin connections served at once (one thread each); more get 503.
const MAX_ADMIN_CONNS: usize = 32;

/// Start the admin thread; returns the bound address.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("shadowtee-admin".into())
        .spawn(move || {
            let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if active.load(std::sync::atomic::Ordering::Relaxed) >= MAX_ADMIN_CONNS {
                    let _ = respond(
                        &mut conn,
                        503,
                        "text/plain",
                        b"too many admin connections\n",
                        false,
                    );
                    continue;
                }
                active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let shared = shared.clone();
                let done = active.clone();
                let spawned = std::thread::Builder::new()
                    .name("shadowtee-admin-conn".into())
                    .spawn(move || {
                        serve(conn, &shared);
                        done.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })?;
    Ok(local)
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    // Grown when bytes arrive, dropped between requests (an admin connection
    // idles at most 5 s, and at most MAX_ADMIN_CONNS exist: its thread's
    // stack is the rest of its cost).
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let limits = RequestLimits {
        max_header_bytes: 16 * 1024,
    };
    loop {
        let head = loop {
            match parse_request(&mut buf, &limits) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(kind) => {
                    let _ = respond(
                        &mut conn,
                        kind.status(),
                        "text/plain",
                        kind.reason().as_bytes(),
                        false,
                    );
                    return;
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        // Admin requests carry no meaningful body; skip a declared one.
        if let Some(n) = head.content_length() {
            let mut left = n as usize;
            let have = left.min(buf.len());
            let _ = buf.split_to(have);
            left -= have;
            while left > 0 {
                match conn.read(&mut chunk[..left.min(4096)]) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => left -= k,
                }
            }
        }
        let method = String::from_utf8_lossy(head.method()).into_owned();
        let target = String::from_utf8_lossy(head.target()).into_owned();
        let (status, ctype, body) = route(shared, &method, &target);
        if respond(&mut conn, status, ctype, body.as_bytes(), head.keep_alive).is_err()
            || !head.keep_alive
        {
            return;
        }
        drop(head);
        if buf.is_empty() {
            buf = BytesMut::new();
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    keep: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    conn.write_all(&out)
}

fn route(shared: &Shared, method: &str, target: &str) -> (u16, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(shared),
        ),
        ("GET" | "HEAD", "/healthz") => {
            if shared.is_draining() {
                (503, TEXT, "draining\n".into())
            } else {
                (200, TEXT, "ok\n".into())
            }
        }
        ("GET" | "HEAD", "/compare") => (200, JSON, pretty(&compare_json(&shared.current()))),
        ("GET" | "HEAD", "/config") => (200, JSON, pretty(&config_json(&shared.current()))),
        ("POST" | "PUT", p) if p.starts_with("/mirrors/") => {
            set_mirror(shared, &p["/mirrors/".len()..], query)
        }
        (_, "/metrics" | "/healthz" | "/compare" | "/config") => {
            (405, TEXT, "method not allowed\n".into())
        }
        (_, p) if p.starts_with("/mirrors/") => (405, TEXT, "use POST\n".into()),
        _ => (404, TEXT, "not found\n".into()),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn set_mirror(shared: &Shared, rest: &str, query: &str) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let gen = shared.current();
    let mut parts = rest.split('/');
    let (Some(route), Some(upstream), None) = (parts.next(), parts.next(), parts.next()) else {
        return (404, TEXT, "use /mirrors/{route}/{upstream}\n".into());
    };
    let Some(ri) = gen.route_index(route) else {
        return (404, TEXT, format!("no route named {route:?}\n"));
    };
    let Some(mi) = gen.config.routes[ri]
        .mirrors
        .iter()
        .position(|m| gen.config.upstreams[m.upstream].name == upstream)
    else {
        return (
            404,
            TEXT,
            format!("route {route:?} has no mirror to {upstream:?}\n"),
        );
    };
    let ctl = &gen.controls[ri][mi];
    let mut percent = None;
    let mut enabled = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "percent" => match v.parse::<f64>() {
                Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => percent = Some(p),
                _ => {
                    return (
                        400,
                        TEXT,
                        format!("percent must be a number in 0..=100, got {v:?}\n"),
                    )
                }
            },
            "enabled" => match v {
                "true" | "1" | "on" => enabled = Some(true),
                "false" | "0" | "off" => enabled = Some(false),
                _ => {
                    return (
                        400,
                        TEXT,
                        format!("enabled must be true or false, got {v:?}\n"),
                    )
                }
            },
            _ => return (400, TEXT, format!("unknown parameter {k:?}\n")),
        }
    }
    if percent.is_none() && enabled.is_none() {
        return (400, TEXT, "give percent=P or enabled=true|false\n".into());
    }
    if let Some(p) = percent {
        ctl.set_percent(p);
    }
    if let Some(e) = enabled {
        ctl.set_enabled(e);
    }
    (
        200,
        "application/json",
        pretty(
            &json!({"route": route, "upstream": upstream, "percent": ctl.percent(), "enabled": ctl.enabled()}),
        ),
    )
}

/// The effective config with runtime mirror changes applied.
fn config_json(gen: &Generation) -> Value {
    let mut v = gen.config.to_json();
    if let Some(routes) = v.get_mut("routes").and_then(|r| r.as_array_mut()) {
        for (ri, r) in routes.iter_mut().enumerate() {
            if let Some(ms) = r.get_mut("mirrors").and_then(|m| m.as_array_mut()) {
                for (mi, m) in ms.iter_mut().enumerate() {
                    if let (Some(ctl), Some(obj)) = (
                        gen.controls.get(ri).and_then(|c| c.get(mi)),
                        m.as_object_mut(),
                    ) {
                        obj.insert("percent".into(), json!(ctl.percent()));
                        obj.insert("enabled".into(), json!(ctl.enabled()));
                    }
                }
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert("generation".into(), json!(gen.id));
    }
    v
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_hist(out: &mut String, name: &str, labels: &str, h: &HistSnapshot) {
    let mut cum = 0;
    for (i, b) in PROM_BOUNDS_US.iter().enumerate() {
        cum += h.prom[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {cum}",
            *b as f64 / 1e6
        );
    }
    cum += h.prom[PROM_BOUNDS_US.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Prometheus text exposition, summed over cores.
pub fn metrics(shared: &Shared) -> String {
    let gen = shared.current();
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("# HELP shadowtee_requests_total Primary responses sent to clients.\n# TYPE shadowtee_requests_total counter\n");
    let mut codes = [0u64; 600];
    for s in &gen.stats {
        s.unrouted.codes.merge_into(&mut codes);
    }
    write_codes(&mut out, "", "", &codes);
    for (ri, r) in gen.config.routes.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::new();
        let names = gen.stats[0].routes[ri]
            .dests
            .iter()
            .map(|d| d.upstream.as_str())
            .chain(std::iter::once(""));
        for up in names {
            if seen.contains(&up) {
                continue;
            }
            seen.push(up);
            let mut codes = [0u64; 600];
            for s in &gen.stats {
                let rs = &s.routes[ri];
                let p = if up.is_empty() {
                    Some(&rs.engine)
                } else {
                    rs.dests.iter().find(|d| d.upstream == up)
                };
                if let Some(p) = p {
                    p.codes.merge_into(&mut codes);
                }
            }
            write_codes(&mut out, &r.name, up, &codes);
        }
    }
    out.push_str("# HELP shadowtee_request_duration_seconds Primary time to full response.\n# TYPE shadowtee_request_duration_seconds histogram\n");
    for (ri, r) in gen.config.routes.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::new();
        for d in &gen.stats[0].routes[ri].dests {
            if seen.contains(&d.upstream.as_str()) {
                continue;
            }
            seen.push(&d.upstream);
            let mut h = HistSnapshot::default();
            for s in &gen.stats {
                if let Some(p) = s.routes[ri].dests.iter().find(|x| x.upstream == d.upstream) {
                    p.duration.merge_into(&mut h);
                }
            }
            let labels = format!(
                "route=\"{}\",upstream=\"{}\"",
                esc(&r.name),
                esc(&d.upstream)
            );
            write_hist(&mut out, "shadowtee_request_duration_seconds", &labels, &h);
        }
    }
    out.push_str("# HELP shadowtee_mirror_requests_total Copies by outcome (shed: reason says why).\n# TYPE shadowtee_mirror_requests_total counter\n");
    let mut mirror_hists = Vec::new();
    let (mut pairs_lines, mut sm_lines, mut bm_lines) =
        (String::new(), String::new(), String::new());
    for (ri, r) in gen.config.routes.iter().enumerate() {
        for (mi, m) in r.mirrors.iter().enumerate() {
            let up = &gen.config.upstreams[m.upstream].name;
            let labels = format!("route=\"{}\",upstream=\"{}\"", esc(&r.name), esc(up));
            let (mut completed, mut failed, mut shed) = (0, [0u64; 4], [0u64; 4]);
            let mut h = HistSnapshot::default();
            let (mut sm, mut bm, mut pairs) = (0, 0, 0);
            for s in &gen.stats {
                let ms = &s.routes[ri].mirrors[mi];
                completed += ms.completed.get();
                for (i, c) in ms.failed.iter().enumerate() {
                    failed[i] += c.get();
                }
                for (i, c) in ms.shed.iter().enumerate() {
                    shed[i] += c.get();
                }
                ms.duration.merge_into(&mut h);
                sm += ms.compare.status_mismatches.get();
                bm += ms.compare.body_mismatches.get();
                pairs += ms.compare.pairs.get();
            }
            let _ = writeln!(
                out,
                "shadowtee_mirror_requests_total{{{labels},outcome=\"completed\"}} {completed}"
            );
            for (i, why) in FailReason::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "shadowtee_mirror_requests_total{{{labels},outcome=\"failed\",reason=\"{}\"}} {}",
                    why.label(),
                    failed[i]
                );
            }
            for (i, why) in ShedReason::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "shadowtee_mirror_requests_total{{{labels},outcome=\"shed\",reason=\"{}\"}} {}",
                    why.label(),
                    shed[i]
                );
            }
            let _ = writeln!(
                pairs_lines,
                "shadowtee_compare_pairs_total{{{labels}}} {pairs}"
            );
            let _ = writeln!(
                sm_lines,
                "shadowtee_compare_status_mismatches_total{{{labels}}} {sm}"
            );
            let _ = writeln!(
                bm_lines,
                "shadowtee_compare_body_mismatches_total{{{labels}}} {bm}"
            );
            mirror_hists.push((labels, h));
        }
    }
    out.push_str("# HELP shadowtee_mirror_duration_seconds Shadow time to full response.\n# TYPE shadowtee_mirror_duration_seconds histogram\n");
    for (labels, h) in &mirror_hists {
        write_hist(&mut out, "shadowtee_mirror_duration_seconds", labels, h);
    }
    out.push_str("# HELP shadowtee_compare_pairs_total Mirrored requests with both outcomes known.\n# TYPE shadowtee_compare_pairs_total counter\n");
    out.push_str(&pairs_lines);
    out.push_str("# HELP shadowtee_compare_status_mismatches_total Pairs whose status codes differed.\n# TYPE shadowtee_compare_status_mismatches_total counter\n");
    out.push_str(&sm_lines);
    out.push_str("# HELP shadowtee_compare_body_mismatches_total Pairs whose body digests differed (compare_body).\n# TYPE shadowtee_compare_body_mismatches_total counter\n");
    out.push_str(&bm_lines);
    let open: u64 = gen
        .stats
        .iter()
        .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let dropped: u64 = gen.stats.iter().map(|s| s.access_log_dropped.get()).sum();
    let batches: u64 = gen.stats.iter().map(|s| s.mirror_batches.get()).sum();
    let _ = writeln!(out, "# HELP shadowtee_mirror_batches_total Pipelined batches of copies written to shadows.\n# TYPE shadowtee_mirror_batches_total counter\nshadowtee_mirror_batches_total {batches}");
    let _ = writeln!(out, "# HELP shadowtee_open_connections Client connections open now.\n# TYPE shadowtee_open_connections gauge\nshadowtee_open_connections {open}");
    let _ = writeln!(out, "# HELP shadowtee_access_log_dropped_total Access log lines dropped because the writer fell behind.\n# TYPE shadowtee_access_log_dropped_total counter\nshadowtee_access_log_dropped_total {dropped}");
    let _ = writeln!(out, "# HELP shadowtee_config_generation Config generation in force (reloads add one).\n# TYPE shadowtee_config_generation gauge\nshadowtee_config_generation {}", gen.id);
    let _ = writeln!(
        out,
        "# HELP shadowtee_io_uring_coop_taskrun_rings Rings created with COOP_TASKRUN.\n# TYPE shadowtee_io_uring_coop_taskrun_rings gauge\nshadowtee_io_uring_coop_taskrun_rings {}",
        glommio::ring_setup_stats().0
    );
    out
}

fn write_codes(out: &mut String, route: &str, upstream: &str, codes: &[u64; 600]) {
    for (code, &n) in codes.iter().enumerate() {
        if n > 0 {
            let _ = writeln!(
                out,
                "shadowtee_requests_total{{route=\"{}\",upstream=\"{}\",code=\"{}\"}} {n}",
                esc(route),
                esc(upstream),
                if code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                }
            );
        }
    }
}

fn code_map(codes: &[u64; 600]) -> Value {
    let mut m = serde_json::Map::new();
    for (code, &n) in codes.iter().enumerate() {
        if n > 0 {
            m.insert(code.to_string(), json!(n));
        }
    }
    Value::Object(m)
}

fn latency(h: &HistSnapshot) -> Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    if h.count == 0 {
        // Nothing answered: no latency (not the time it took to fail).
        return json!({ "p50": null, "p90": null, "p99": null, "max": null });
    }
    json!({
        "p50": ms(h.quantile_us(0.50)),
        "p90": ms(h.quantile_us(0.90)),
        "p99": ms(h.quantile_us(0.99)),
        "max": ms(h.max_us),
    })
}

/// The primary-vs-shadow comparison, per route and shadow, summed over cores.
pub fn compare_json(gen: &Generation) -> Value {
    let mut out = Vec::new();
    for (ri, r) in gen.config.routes.iter().enumerate() {
        for (mi, m) in r.mirrors.iter().enumerate() {
            let shadow = &gen.config.upstreams[m.upstream].name;
            let (mut pc, mut sc) = ([0u64; 600], [0u64; 600]);
            let (mut ph, mut sh) = (HistSnapshot::default(), HistSnapshot::default());
            let (mut pairs, mut sm, mut bc, mut bm) = (0, 0, 0, 0);
            let (mut answered, mut shadow_failed) = (0u64, 0u64);
            let (mut completed, mut failed, mut shed) = (0, [0u64; 4], [0u64; 4]);
            let mut mismatch_pairs: Vec<(u16, u16, u64)> = Vec::new();
            let mut recent = Vec::new();
            for s in &gen.stats {
                let ms = &s.routes[ri].mirrors[mi];
                let c = &ms.compare;
                // First (acquire): every pair counted here is complete below.
                pairs += c.pairs.get_acquire();
                answered += c.both_answered.get();
                shadow_failed += c.shadow_failed.get();
                c.primary_codes.merge_into(&mut pc);
                c.shadow_codes.merge_into(&mut sc);
                c.primary_latency.merge_into(&mut ph);
                c.shadow_latency.merge_into(&mut sh);
                sm += c.status_mismatches.get();
                bc += c.body_compared.get();
                bm += c.body_mismatches.get();
                completed += ms.completed.get();
                for (i, x) in ms.failed.iter().enumerate() {
                    failed[i] += x.get();
                }
                for (i, x) in ms.shed.iter().enumerate() {
                    shed[i] += x.get();
                }
                for (p, q, n) in c.pairs_seen() {
                    match mismatch_pairs
                        .iter_mut()
                        .find(|(a, b, _)| *a == p && *b == q)
                    {
                        Some(e) => e.2 += n,
                        None => mismatch_pairs.push((p, q, n)),
                    }
                }
                recent.extend(c.recent());
            }
            mismatch_pairs.sort_by_key(|p| std::cmp::Reverse(p.2));
            recent.truncate(crate::compare::RECENT_MISMATCHES);
            let ctl = &gen.controls[ri][mi];
            // Over the pairs the shadow answered only: a failed or shed copy
            // is never a match; with none answered there is no percentage.
            let matching = (answered > 0).then(|| {
                ((answered - sm.min(answered)) as f64 * 10000.0 / answered as f64).round() / 100.0
            });
            let shed_total: u64 = shed.iter().sum();
            let primaries: Vec<&str> = r
                .destinations
                .iter()
                .map(|d| gen.config.upstreams[d.upstream].name.as_str())
                .collect();
            out.push(json!({
                "route": r.name,
                "shadow": shadow,
                "primary_upstreams": primaries,
                "percent": ctl.percent(),
                "enabled": ctl.enabled(),
                "requests": pairs,
                "pairs": { "both_answered": answered, "shadow_failed": shadow_failed, "shed": shed_total },
                "primary": { "count": answered, "status": code_map(&pc), "latency_ms": latency(&ph) },
                "shadow_side": { "count": answered, "status": code_map(&sc), "latency_ms": latency(&sh) },
                "status_mismatches": sm,
                "status_matching_percent": matching,
                "mismatch_pairs": mismatch_pairs.iter().map(|(p, s, n)| json!({
                    "primary": p, "shadow": s, "count": n
                })).collect::<Vec<_>>(),
                "body_compared": bc,
                "body_mismatches": bm,
                "mirror": {
                    "completed": completed,
                    "failed": failed.iter().sum::<u64>(),
                    "failed_reasons": FailReason::ALL.iter().enumerate().map(|(i, w)| (w.label().to_string(), json!(failed[i]))).collect::<serde_json::Map<_, _>>(),
                    "shed": shed_total,
                    "shed_reasons": ShedReason::ALL.iter().enumerate().map(|(i, w)| (w.label().to_string(), json!(shed[i]))).collect::<serde_json::Map<_, _>>(),
                },
                "recent_mismatches": recent.iter().map(|m| json!({
                    "method": m.method, "target": m.target,
                    "primary_status": m.primary_status, "shadow_status": m.shadow_status,
                    "primary_ms": m.primary_us as f64 / 1000.0, "shadow_ms": m.shadow_us as f64 / 1000.0,
                    "body_differs": m.body_differs,
                })).collect::<Vec<_>>(),
            }));
        }
    }
    json!({ "generation": gen.id, "comparisons": out })
}

//! [`Config`] → JSON with the TOML key names (admin `GET /config`).
//!
//! Must stay the inverse of the TOML reading: same keys, durations as `*_ms`
//! integers, `0` for an unlimited `server.max_body_bytes`, `""` for a
//! disabled marker header, absent optional keys omitted.

use serde_json::{json, Map, Value};

use crate::{AccessLog, Config, Match, Mirror, PathMatch, SampleKey};

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn headers_obj(h: &[(String, String)]) -> Value {
    Value::Object(
        h.iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub(crate) fn render(c: &Config) -> Value {
    let mut server = Map::new();
    server.insert("listen".into(), json!(c.server.listen.to_string()));
    if let Some(n) = c.server.cores {
        server.insert("cores".into(), json!(n.get()));
    }
    server.insert("max_header_bytes".into(), json!(c.server.max_header_bytes));
    server.insert(
        "max_body_bytes".into(),
        json!(c.server.max_body_bytes.unwrap_or(0)),
    );
    server.insert(
        "header_timeout_ms".into(),
        json!(ms(c.server.header_timeout)),
    );
    server.insert("idle_timeout_ms".into(), json!(ms(c.server.idle_timeout)));
    server.insert("drain_timeout_ms".into(), json!(ms(c.server.drain_timeout)));
    server.insert("max_connections".into(), json!(c.server.max_connections));

    let access = match &c.log.access {
        AccessLog::Off => String::new(),
        AccessLog::Stdout => "stdout".to_string(),
        AccessLog::File(p) => p.display().to_string(),
    };

    let upstreams: Vec<Value> = c
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "endpoints": u.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "connect_timeout_ms": ms(u.connect_timeout),
                "request_timeout_ms": ms(u.request_timeout),
                "max_idle_per_core": u.max_idle_per_core,
            })
        })
        .collect();

    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "match": match_json(&r.matcher),
                "destinations": r.destinations.iter().map(|d| json!({
                    "upstream": c.upstreams[d.upstream].name,
                    "weight": d.weight,
                })).collect::<Vec<_>>(),
                "mirrors": r.mirrors.iter().map(|m| mirror_json(c, m)).collect::<Vec<_>>(),
            })
        })
        .collect();

    json!({
        "server": server,
        "log": { "access": access },
        "admin": { "listen": c.admin.listen.to_string() },
        "mirror": {
            "queue_capacity": c.mirror.queue_capacity,
            "max_inflight": c.mirror.max_inflight,
            "pipeline_depth": c.mirror.pipeline_depth,
            "max_body_bytes": c.mirror.max_body_bytes,
            "timeout_ms": ms(c.mirror.timeout),
            "host_suffix": c.mirror.host_suffix,
            "marker_header": c.mirror.marker_header.clone().unwrap_or_default(),
        },
        "upstreams": upstreams,
        "routes": routes,
    })
}

fn match_json(m: &Match) -> Value {
    let mut o = Map::new();
    match &m.path {
        Some(PathMatch::Exact(p)) => {
            o.insert("path_exact".into(), json!(p));
        }
        Some(PathMatch::Prefix(p)) => {
            o.insert("path_prefix".into(), json!(p));
        }
        None => {}
    }
    if let Some(ms) = &m.methods {
        o.insert("methods".into(), json!(ms));
    }
    if !m.headers.is_empty() {
        o.insert("headers".into(), headers_obj(&m.headers));
    }
    Value::Object(o)
}

fn mirror_json(c: &Config, m: &Mirror) -> Value {
    let mut o = Map::new();
    o.insert("upstream".into(), json!(c.upstreams[m.upstream].name));
    o.insert("percent".into(), json!(m.percent));
    if let Some(ms) = &m.methods {
        o.insert("methods".into(), json!(ms));
    }
    if let Some(SampleKey::Header(h)) = &m.sample_key {
        o.insert("sample_key".into(), json!(format!("header:{h}")));
    }
    if let Some(n) = m.max_rps {
        o.insert("max_rps".into(), json!(n));
    }
    o.insert("set_headers".into(), headers_obj(&m.set_headers));
    o.insert("remove_headers".into(), json!(m.remove_headers));
    o.insert("compare_body".into(), json!(m.compare_body));
    Value::Object(o)
}

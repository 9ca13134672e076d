//! Rendering of the `/compare` JSON as the side-by-side table printed by
//! `shadowtee compare` and `shadowtee demo`.

use std::fmt::Write as _;

use serde_json::Value;

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

/// The table: one row per (route, shadow), then the top mismatches.
pub fn render_table(v: &Value) -> String {
    let mut out = String::new();
    let rows = v["comparisons"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        out.push_str("no mirrors configured\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<14} {:<12} {:>8} {:>8} {:>21} {:>21} {:>8} {:>8} {:>7}",
        "route",
        "shadow",
        "requests",
        "match",
        "p50 primary/shadow",
        "p99 primary/shadow",
        "failed",
        "shed",
        "body≠"
    );
    for r in &rows {
        // A value the engine could not measure (nothing answered) is `null`
        // in the JSON and `-` here.
        let lat = |side: &str, q: &str| match r[side]["latency_ms"][q].as_f64() {
            Some(ms) => format!("{ms:.2}"),
            None => "-".to_string(),
        };
        let matching = match r["status_matching_percent"].as_f64() {
            Some(p) => format!("{p:.1}%"),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:>8} {:>8} {:>21} {:>21} {:>8} {:>8} {:>7}",
            r["route"].as_str().unwrap_or("?"),
            r["shadow"].as_str().unwrap_or("?"),
            num(r, &["requests"]) as u64,
            matching,
            format!(
                "{} / {} ms",
                lat("primary", "p50"),
                lat("shadow_side", "p50")
            ),
            format!(
                "{} / {} ms",
                lat("primary", "p99"),
                lat("shadow_side", "p99")
            ),
            num(r, &["mirror", "failed"]) as u64,
            num(r, &["mirror", "shed"]) as u64,
            num(r, &["body_mismatches"]) as u64,
        );
    }
    for r in &rows {
        let pairs = r["mismatch_pairs"].as_array().cloned().unwrap_or_default();
        if pairs.is_empty() && num(r, &["body_mismatches"]) == 0.0 {
            continue;
        }
        let top: Vec<String> = pairs
            .iter()
            .take(5)
            .map(|p| {
                let s = match &p["shadow"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{}→{} ×{}", p["primary"], s, p["count"])
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} vs {}: status mismatches {} ({})",
            r["route"].as_str().unwrap_or("?"),
            r["shadow"].as_str().unwrap_or("?"),
            num(r, &["status_mismatches"]) as u64,
            top.join(", ")
        );
        if let Some(recent) = r["recent_mismatches"].as_array() {
            for m in recent.iter().take(3) {
                let shadow = match m["shadow_status"].as_u64() {
                    Some(0) => "failed".to_string(),
                    Some(s) => s.to_string(),
                    None => "?".to_string(),
                };
                let _ = writeln!(
                    out,
                    "    e.g. {} {}  primary {} in {:.2} ms, shadow {} in {:.2} ms{}",
                    m["method"].as_str().unwrap_or(""),
                    m["target"].as_str().unwrap_or(""),
                    m["primary_status"],
                    num(m, &["primary_ms"]),
                    shadow,
                    num(m, &["shadow_ms"]),
                    if m["body_differs"].as_bool() == Some(true) {
                        " (body differs)"
                    } else {
                        ""
                    },
                );
            }
        }
    }
    out
}

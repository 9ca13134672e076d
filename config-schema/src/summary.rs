//! Human summary of a [`Config`], printed by `shadowtee check`.
//!
//! Shows what an operator needs to confirm the file says what they meant:
//! listeners, cores, upstream endpoints, and per route its match, weighted
//! destinations (with their share of traffic) and mirrors.

use std::fmt::Write;

use crate::{AccessLog, Config, PathMatch, SampleKey};

pub(crate) fn render(c: &Config) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut s, c);
    s
}

fn write_summary(s: &mut String, c: &Config) -> std::fmt::Result {
    let cores = match c.server.cores {
        Some(n) => n.to_string(),
        None => "all CPUs".to_string(),
    };
    writeln!(s, "listen {} (cores: {cores})", c.server.listen)?;
    writeln!(s, "admin  {}", c.admin.listen)?;
    let access = match &c.log.access {
        AccessLog::Off => "off".to_string(),
        AccessLog::Stdout => "stdout".to_string(),
        AccessLog::File(p) => p.display().to_string(),
    };
    writeln!(s, "access log: {access}")?;
    writeln!(s, "upstreams ({}):", c.upstreams.len())?;
    for u in &c.upstreams {
        let eps: Vec<String> = u.endpoints.iter().map(|e| e.to_string()).collect();
        writeln!(
            s,
            "  {}: {} (connect {} ms, request {} ms)",
            u.name,
            eps.join(", "),
            u.connect_timeout.as_millis(),
            u.request_timeout.as_millis()
        )?;
    }
    writeln!(s, "routes ({}, first match wins):", c.routes.len())?;
    if c.routes.is_empty() {
        writeln!(s, "  (none: every request gets 404)")?;
    }
    for r in &c.routes {
        let mut conds = Vec::new();
        match &r.matcher.path {
            Some(PathMatch::Exact(p)) => conds.push(format!("path = {p}")),
            Some(PathMatch::Prefix(p)) => conds.push(format!("path prefix {p}")),
            None => {}
        }
        if let Some(ms) = &r.matcher.methods {
            conds.push(format!("method in {}", ms.join("|")));
        }
        for (n, v) in &r.matcher.headers {
            conds.push(format!("{n}: {v}"));
        }
        let cond = if conds.is_empty() {
            "every request".to_string()
        } else {
            conds.join(" and ")
        };
        writeln!(s, "  {}: {cond}", r.name)?;
        let total = f64::from(r.weights.total());
        for d in &r.destinations {
            writeln!(
                s,
                "    -> {} weight {} ({:.1}%)",
                c.upstreams[d.upstream].name,
                d.weight,
                f64::from(d.weight) * 100.0 / total
            )?;
        }
        for m in &r.mirrors {
            write!(
                s,
                "    mirror {} {}%",
                c.upstreams[m.upstream].name, m.percent
            )?;
            if let Some(ms) = &m.methods {
                write!(s, " methods {}", ms.join("|"))?;
            }
            if let Some(SampleKey::Header(h)) = &m.sample_key {
                write!(s, " sampled by header {h}")?;
            }
            if let Some(n) = m.max_rps {
                write!(s, " max {n} rps/core")?;
            }
            if m.compare_body {
                write!(s, " compare_body")?;
            }
            writeln!(s)?;
        }
    }
    Ok(())
}

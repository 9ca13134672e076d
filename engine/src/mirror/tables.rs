//! The mirror's per-core tables for one config generation: shadow pools
//! (separate from the primary's), copies in flight per shadow, the writer
//! lanes and the `max_rps` buckets. Built with the core's state on a
//! reload; the tap reads them to decide, the writer to send.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::writer::Lane;
use crate::accesslog::AccessLogger;
use crate::net::{Deadlines, Pool};
use crate::shared::{CoreStats, Generation, Shared};

/// One core's mirror tables for one generation.
pub struct MirrorTables {
    pub gen: Arc<Generation>,
    pub shared: Arc<Shared>,
    pub stats: Arc<CoreStats>,
    /// Shadow pools (separate from the primary's), by upstream index.
    pub pools: Vec<Pool>,
    /// Copies accepted by the writer and not finished, by upstream index.
    pub inflight: Vec<Cell<usize>>,
    /// Writer lanes, by upstream index.
    pub lanes: Vec<Lane>,
    /// `[route][mirror]`: `max_rps` buckets.
    pub limiters: Vec<Vec<Option<RateLimiter>>>,
    pub access_log: Option<Rc<AccessLogger>>,
    /// The core's request-path deadlines (shadow answers are timed by them).
    pub deadlines: Rc<Deadlines>,
}

impl MirrorTables {
    pub fn build(
        gen: Arc<Generation>,
        shared: Arc<Shared>,
        core: usize,
        access_log: Option<Rc<AccessLogger>>,
        deadlines: Rc<Deadlines>,
    ) -> Self {
        let cfg = &gen.config;
        let pools = cfg
            .upstreams
            .iter()
            .map(|u| {
                Pool::new(
                    u.endpoints.clone(),
                    u.max_idle_per_core.max(cfg.mirror.max_inflight.min(256)),
                    u.connect_timeout.min(cfg.mirror.timeout),
                    cfg.mirror.timeout,
                )
            })
            .collect();
        let limiters = cfg
            .routes
            .iter()
            .map(|r| {
                r.mirrors
                    .iter()
                    .map(|m| m.max_rps.map(RateLimiter::new))
                    .collect()
            })
            .collect();
        MirrorTables {
            stats: gen.stats[core].clone(),
            shared,
            inflight: cfg.upstreams.iter().map(|_| Cell::new(0)).collect(),
            lanes: cfg
                .upstreams
                .iter()
                .map(|_| Lane::new(cfg.mirror.pipeline_depth))
                .collect(),
            pools,
            limiters,
            access_log,
            deadlines,
            gen,
        }
    }
}

/// Per-core per-shadow token bucket for `max_rps` (one-second burst).
pub struct RateLimiter {
    rate: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        RateLimiter {
            rate: rps as f64,
            tokens: Cell::new(rps as f64),
            last: Cell::new(Instant::now()),
        }
    }
    #[inline]
    pub fn allow(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        let t = (self.tokens.get() + elapsed * self.rate).min(self.rate);
        if t >= 1.0 {
            self.tokens.set(t - 1.0);
            true
        } else {
            self.tokens.set(t);
            false
        }
    }
}

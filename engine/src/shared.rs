//! State shared by all cores: the current config generation (swapped
//! atomically on SIGHUP), runtime mirror controls and the per-core stats
//! tables. Cores read the generation number once per request (one relaxed
//! load) and pick up a new generation only when it changed.
//!
//! Never holds anything a core writes on the request path except its own
//! stats table (see `stats`).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use config_schema::Config;

use crate::compare::CompareStats;
use crate::stats::{Counter, Histogram, StatusCounts};

/// Percent scale used by [`MirrorControl`]: parts per million.
pub const PPM: u32 = 1_000_000;

/// Runtime switches of one mirror, settable through the admin API.
#[derive(Debug)]
pub struct MirrorControl {
    percent_ppm: AtomicU32,
    enabled: AtomicBool,
}

impl MirrorControl {
    pub fn new(percent: f64) -> Self {
        MirrorControl {
            percent_ppm: AtomicU32::new(percent_to_ppm(percent)),
            enabled: AtomicBool::new(true),
        }
    }
    #[inline]
    pub fn percent_ppm(&self) -> u32 {
        self.percent_ppm.load(Relaxed)
    }
    pub fn percent(&self) -> f64 {
        self.percent_ppm() as f64 / 10_000.0
    }
    pub fn set_percent(&self, p: f64) {
        self.percent_ppm.store(percent_to_ppm(p), Relaxed)
    }
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Relaxed)
    }
}

fn percent_to_ppm(p: f64) -> u32 {
    (p.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

/// Primary-side numbers of one (route, upstream) on one core.
pub struct PrimaryStats {
    pub upstream: String,
    pub codes: StatusCounts,
    pub duration: Histogram,
}

impl PrimaryStats {
    pub fn new(upstream: &str) -> Self {
        PrimaryStats {
            upstream: upstream.to_string(),
            codes: StatusCounts::default(),
            duration: Histogram::default(),
        }
    }
}

/// Why a copy was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    QueueFull,
    Inflight,
    BodyTooLarge,
    RateLimited,
}

impl ShedReason {
    pub const ALL: [ShedReason; 4] = [
        ShedReason::QueueFull,
        ShedReason::Inflight,
        ShedReason::BodyTooLarge,
        ShedReason::RateLimited,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Inflight => "inflight",
            ShedReason::BodyTooLarge => "body_too_large",
            ShedReason::RateLimited => "rate_limited",
        }
    }
}

/// Why a copy failed (the shadow's side; it never reaches the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Connecting failed: refused, unreachable or timed out.
    Connect,
    /// The answer did not come within `mirror.timeout_ms`.
    Timeout,
    /// The answer was not valid HTTP/1.1 framing (or an unexpected 101).
    BadResponse,
    /// The shadow closed or reset the connection before its answer was whole.
    Closed,
}

impl FailReason {
    pub const ALL: [FailReason; 4] = [
        FailReason::Connect,
        FailReason::Timeout,
        FailReason::BadResponse,
        FailReason::Closed,
    ];
    pub fn label(self) -> &'static str {
        match self {
            FailReason::Connect => "connect",
            FailReason::Timeout => "timeout",
            FailReason::BadResponse => "bad_response",
            FailReason::Closed => "closed",
        }
    }
}

/// Mirror-side numbers of one (route, shadow) on one core.
pub struct MirrorStats {
    pub upstream: String,
    pub completed: Counter,
    /// Failed copies, by [`FailReason`] (in `FailReason::ALL` order).
    pub failed: [Counter; 4],
    pub shed: [Counter; 4],
    pub duration: Histogram,
    /// Shared with every `Pair` of this mirror, which records into it.
    pub compare: Arc<CompareStats>,
}

impl MirrorStats {
    pub fn new(upstream: &str) -> Self {
        MirrorStats {
            upstream: upstream.to_string(),
            completed: Counter::default(),
            failed: Default::default(),
            shed: Default::default(),
            duration: Histogram::default(),
            compare: Arc::default(),
        }
    }
    pub fn fail(&self, why: FailReason) {
        self.failed[why as usize].inc();
    }
    /// Failed copies, all reasons.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().map(Counter::get).sum()
    }
    #[inline]
    pub fn shed(&self, why: ShedReason) {
        let i = ShedReason::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.shed[i].inc();
    }
}

/// Numbers of one route on one core.
pub struct RouteStats {
    pub name: String,
    /// Per destination (destinations naming the same upstream share one).
    pub dests: Vec<Arc<PrimaryStats>>,
    /// Engine-made answers on this route before an upstream was chosen.
    pub engine: Arc<PrimaryStats>,
    pub mirrors: Vec<Arc<MirrorStats>>,
}

/// Everything one core counts.
pub struct CoreStats {
    /// Engine-made answers before any route matched (route="", upstream="").
    pub unrouted: Arc<PrimaryStats>,
    pub routes: Vec<RouteStats>,
    pub access_log_dropped: Arc<Counter>,
    pub connections: Arc<AtomicU64>,
    /// Pipelined batches written to shadows (copies per batch = copies / this).
    pub mirror_batches: Arc<Counter>,
}

/// One config generation: the validated config plus its runtime tables.
pub struct Generation {
    pub id: u64,
    pub config: Config,
    /// `[route][mirror]`
    pub controls: Vec<Vec<Arc<MirrorControl>>>,
    /// `[core]`
    pub stats: Vec<Arc<CoreStats>>,
}

impl Generation {
    /// Build a generation for `cores` cores, carrying over the stats of
    /// `prev` by (route name, upstream name) so counters survive a reload.
    pub fn build(id: u64, config: Config, cores: usize, prev: Option<&Generation>) -> Generation {
        let controls = config
            .routes
            .iter()
            .map(|r| {
                r.mirrors
                    .iter()
                    .map(|m| Arc::new(MirrorControl::new(m.percent)))
                    .collect()
            })
            .collect();
        let stats = (0..cores)
            .map(|core| {
                let old = prev.and_then(|p| p.stats.get(core));
                let mut primaries: HashMap<(String, String), Arc<PrimaryStats>> = HashMap::new();
                let mut mirrors: HashMap<(String, String), Arc<MirrorStats>> = HashMap::new();
                if let Some(old) = old {
                    for r in &old.routes {
                        for d in r.dests.iter().chain(std::iter::once(&r.engine)) {
                            primaries.insert((r.name.clone(), d.upstream.clone()), d.clone());
                        }
                        for m in &r.mirrors {
                            mirrors.insert((r.name.clone(), m.upstream.clone()), m.clone());
                        }
                    }
                }
                let mut primary = |route: &str, up: &str| {
                    primaries
                        .entry((route.to_string(), up.to_string()))
                        .or_insert_with(|| Arc::new(PrimaryStats::new(up)))
                        .clone()
                };
                let routes = config
                    .routes
                    .iter()
                    .map(|r| RouteStats {
                        name: r.name.clone(),
                        dests: r
                            .destinations
                            .iter()
                            .map(|d| primary(&r.name, &config.upstreams[d.upstream].name))
                            .collect(),
                        engine: primary(&r.name, ""),
                        mirrors: r
                            .mirrors
                            .iter()
                            .map(|m| {
                                let up = &config.upstreams[m.upstream].name;
                                mirrors
                                    .entry((r.name.clone(), up.clone()))
                                    .or_insert_with(|| Arc::new(MirrorStats::new(up)))
                                    .clone()
                            })
                            .collect(),
                    })
                    .collect();
                Arc::new(CoreStats {
                    unrouted: old
                        .map(|o| o.unrouted.clone())
                        .unwrap_or_else(|| Arc::new(PrimaryStats::new(""))),
                    routes,
                    access_log_dropped: old
                        .map(|o| o.access_log_dropped.clone())
                        .unwrap_or_default(),
                    connections: old.map(|o| o.connections.clone()).unwrap_or_default(),
                    mirror_batches: old.map(|o| o.mirror_batches.clone()).unwrap_or_default(),
                })
            })
            .collect();
        Generation {
            id,
            config,
            controls,
            stats,
        }
    }

    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.config.routes.iter().position(|r| r.name == name)
    }
}

/// What every core and the admin thread share.
pub struct Shared {
    current: ArcSwap<Generation>,
    generation: AtomicU64,
    draining: AtomicBool,
    /// Shut down by [`Shared::begin_drain`]: every core waits on a dup of
    /// `drain_rx`, whose read then returns EOF, so an idle core sleeps
    /// until a drain instead of polling the flag on a timer.
    drain_tx: UnixStream,
    drain_rx: UnixStream,
    pub cores: usize,
    pub config_path: Option<PathBuf>,
}

impl Shared {
    /// Fails only if the drain notification socket pair cannot be made.
    pub fn new(
        config: Config,
        cores: usize,
        config_path: Option<PathBuf>,
    ) -> io::Result<Arc<Shared>> {
        let (drain_tx, drain_rx) = UnixStream::pair()?;
        Ok(Arc::new(Shared {
            current: ArcSwap::from_pointee(Generation::build(1, config, cores, None)),
            generation: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            drain_tx,
            drain_rx,
            cores,
            config_path,
        }))
    }
    /// Generation number; changes on every reload.
    #[inline]
    pub fn generation_id(&self) -> u64 {
        self.generation.load(Relaxed)
    }
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }
    /// Install a new config; returns the new generation id.
    pub fn reload(&self, config: Config) -> u64 {
        let prev = self.current();
        let id = prev.id + 1;
        let next = Generation::build(id, config, self.cores, Some(&prev));
        self.current.store(Arc::new(next));
        self.generation.store(id, Relaxed);
        id
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
    /// Begin a graceful drain: set the flag every core reads, then wake
    /// every core (EOF on its [`Shared::drain_watch`] socket). Idempotent.
    pub fn begin_drain(&self) {
        self.draining.store(true, Relaxed);
        // EOF for every reader; a second shutdown only fails (ENOTCONN).
        let _ = self.drain_tx.shutdown(std::net::Shutdown::Write);
    }
    /// A socket that becomes readable (EOF) once a drain begins; one per core.
    pub fn drain_watch(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(self.drain_rx.try_clone()?))
    }
}

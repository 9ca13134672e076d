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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use config_schema::Config;

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

/// One recorded primary-vs-shadow disagreement.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub method: String,
    pub target: String,
    pub primary_status: u16,
    pub shadow_status: u16,
    pub primary_us: u64,
    pub shadow_us: u64,
    pub body_differs: bool,
}

/// Recent mismatches kept per core per mirror.
pub const RECENT_MISMATCHES: usize = 32;
/// At most one mismatch record per this interval per core per mirror.
pub const RECENT_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);
const PAIR_SLOTS: usize = 64;

/// The comparison of one mirror with its route's primary, on one core.
pub struct CompareStats {
    pub pairs: Counter,
    pub primary_codes: StatusCounts,
    pub shadow_codes: StatusCounts,
    pub primary_latency: Histogram,
    pub shadow_latency: Histogram,
    pub status_mismatches: Counter,
    pub body_compared: Counter,
    pub body_mismatches: Counter,
    /// (primary << 16 | shadow) -> count; key 0 = empty slot.
    pair_keys: Box<[AtomicU32]>,
    pair_counts: Box<[Counter]>,
    pub pair_overflow: Counter,
    recent: Box<[ArcSwapOption<Mismatch>]>,
    recent_next: AtomicUsize,
    /// When the last mismatch was kept (µs since `EPOCH`): keeping one
    /// allocates, so at most one per `RECENT_EVERY` is kept and a shadow
    /// that mismatches on every request costs the hot path nothing extra.
    recent_at_us: AtomicU64,
}

impl Default for CompareStats {
    fn default() -> Self {
        CompareStats {
            pairs: Counter::default(),
            primary_codes: StatusCounts::default(),
            shadow_codes: StatusCounts::default(),
            primary_latency: Histogram::default(),
            shadow_latency: Histogram::default(),
            status_mismatches: Counter::default(),
            body_compared: Counter::default(),
            body_mismatches: Counter::default(),
            pair_keys: (0..PAIR_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            pair_counts: (0..PAIR_SLOTS).map(|_| Counter::default()).collect(),
            pair_overflow: Counter::default(),
            recent: (0..RECENT_MISMATCHES)
                .map(|_| ArcSwapOption::empty())
                .collect(),
            recent_next: AtomicUsize::new(0),
            recent_at_us: AtomicU64::new(0),
        }
    }
}

impl CompareStats {
    /// Count a status mismatch pair (owning core only).
    pub fn count_pair(&self, primary: u16, shadow: u16) {
        let key = (primary as u32) << 16 | shadow as u32;
        let start = (key.wrapping_mul(2654435761) as usize) % PAIR_SLOTS;
        for i in 0..PAIR_SLOTS {
            let slot = (start + i) % PAIR_SLOTS;
            let k = self.pair_keys[slot].load(Relaxed);
            if k == key {
                self.pair_counts[slot].inc();
                return;
            }
            if k == 0 {
                self.pair_counts[slot].inc();
                self.pair_keys[slot].store(key, Relaxed);
                return;
            }
        }
        self.pair_overflow.inc();
    }
    /// (primary, shadow, count) for every mismatch pair seen.
    pub fn pairs_seen(&self) -> Vec<(u16, u16, u64)> {
        let mut v = Vec::new();
        for (k, c) in self.pair_keys.iter().zip(self.pair_counts.iter()) {
            let k = k.load(Relaxed);
            if k != 0 {
                v.push(((k >> 16) as u16, (k & 0xffff) as u16, c.get()));
            }
        }
        v
    }
    /// Whether a mismatch may be kept now (owning core only; at most one
    /// per `RECENT_EVERY`).
    pub fn recent_due(&self) -> bool {
        let now = EPOCH.elapsed().as_micros() as u64 + 1;
        let last = self.recent_at_us.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < RECENT_EVERY.as_micros() as u64 {
            return false;
        }
        self.recent_at_us.store(now, Relaxed);
        true
    }

    pub fn push_recent(&self, m: Mismatch) {
        let i = self.recent_next.load(Relaxed);
        self.recent[i % RECENT_MISMATCHES].store(Some(Arc::new(m)));
        self.recent_next.store(i.wrapping_add(1), Relaxed);
    }
    /// Recent mismatches, newest first.
    pub fn recent(&self) -> Vec<Arc<Mismatch>> {
        let n = self.recent_next.load(Relaxed);
        (0..RECENT_MISMATCHES.min(n))
            .filter_map(|k| self.recent[(n - 1 - k) % RECENT_MISMATCHES].load_full())
            .collect()
    }
}

/// Mirror-side numbers of one (route, shadow) on one core.
pub struct MirrorStats {
    pub upstream: String,
    pub completed: Counter,
    pub failed: Counter,
    pub shed: [Counter; 4],
    pub duration: Histogram,
    pub compare: CompareStats,
}

impl MirrorStats {
    pub fn new(upstream: &str) -> Self {
        MirrorStats {
            upstream: upstream.to_string(),
            completed: Counter::default(),
            failed: Counter::default(),
            shed: Default::default(),
            duration: Histogram::default(),
            compare: CompareStats::default(),
        }
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

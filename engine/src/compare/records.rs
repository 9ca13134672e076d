//! What one core records of each (route, shadow) comparison: status and
//! latency of both sides, mismatch counts by status pair, and a few recent
//! mismatches. Written only by the owning core (relaxed stores), merged by
//! the admin thread when read.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::stats::{Counter, Histogram, StatusCounts};

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
    /// Pairs whose two sides are known: `both_answered + shadow_failed`
    /// (incremented last, with release ordering).
    pub pairs: Counter,
    /// Pairs the shadow answered: the only ones compared.
    pub both_answered: Counter,
    /// Pairs whose copy failed (no answer to compare).
    pub shadow_failed: Counter,
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
            both_answered: Counter::default(),
            shadow_failed: Counter::default(),
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

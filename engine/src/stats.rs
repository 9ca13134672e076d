//! Per-core counters and histograms, merged only when read.
//!
//! Owns: the numbers behind `/metrics` and `/compare`. Each value is written
//! by exactly one executor (the core that owns the table) with a relaxed
//! load + store, so the hot path takes no lock and no locked instruction; the
//! admin thread reads with relaxed loads and sums the cores. Never shared for
//! writing across cores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one core only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer (the owning core): a plain load + store is exact.
        // Release (a plain store on x86) keeps the order in which a core
        // writes its counters visible to the scraping thread.
        self.0.store(
            self.0.load(Relaxed).wrapping_add(n),
            std::sync::atomic::Ordering::Release,
        );
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    /// Increment after the values this count stands for were written: a
    /// reader that loads it with [`Counter::get_acquire`] first sees them all.
    #[inline]
    pub fn inc_release(&self) {
        self.0.store(
            self.0.load(Relaxed).wrapping_add(1),
            std::sync::atomic::Ordering::Release,
        );
    }
    #[inline]
    pub fn get_acquire(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Status codes 100..=599 counted per code; others land in slot 0.
pub struct StatusCounts {
    slots: Box<[Counter]>,
}

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts {
            slots: (0..600).map(|_| Counter::default()).collect(),
        }
    }
}

impl StatusCounts {
    #[inline]
    pub fn inc(&self, code: u16) {
        let i = if (100..600).contains(&code) {
            code as usize
        } else {
            0
        };
        self.slots[i].inc();
    }
    /// Add this table's non-zero counts into `into` (index = code).
    pub fn merge_into(&self, into: &mut [u64; 600]) {
        for (i, c) in self.slots.iter().enumerate() {
            into[i] += c.get();
        }
    }
}

/// Prometheus bucket upper bounds, in seconds: 100 µs to 10 s.
pub const PROM_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Log-linear buckets: 16 per power of two up to 2^40 µs (~12 days).
const FINE_BUCKETS: usize = (41 - SUB_BITS as usize + 1) * SUB;

/// A latency histogram in microseconds: fine log-linear buckets (≤ 6.25%
/// error) for percentiles, plus exact Prometheus buckets.
pub struct Histogram {
    fine: Box<[Counter]>,
    prom: [Counter; PROM_BOUNDS_US.len() + 1],
    sum_us: Counter,
    count: Counter,
    max_us: Counter,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            fine: (0..FINE_BUCKETS).map(|_| Counter::default()).collect(),
            prom: Default::default(),
            sum_us: Counter::default(),
            count: Counter::default(),
            max_us: Counter::default(),
        }
    }
}

#[inline]
fn fine_index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    let i = (exp - SUB_BITS + 1) as usize * SUB + sub;
    i.min(FINE_BUCKETS - 1)
}

/// Lowest value that lands in fine bucket `i`.
fn fine_lower(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    (1u64 << exp) + (sub << (exp - SUB_BITS))
}

impl Histogram {
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.fine[fine_index(us)].inc();
        let p = PROM_BOUNDS_US.partition_point(|&b| b < us);
        self.prom[p].inc();
        self.sum_us.add(us);
        self.count.inc();
        if us > self.max_us.get() {
            self.max_us.0.store(us, Relaxed);
        }
    }
    pub fn snapshot(&self) -> HistSnapshot {
        let mut s = HistSnapshot::default();
        self.merge_into(&mut s);
        s
    }
    pub fn merge_into(&self, s: &mut HistSnapshot) {
        if s.fine.is_empty() {
            s.fine = vec![0; FINE_BUCKETS];
        }
        for (i, c) in self.fine.iter().enumerate() {
            s.fine[i] += c.get();
        }
        for (i, c) in self.prom.iter().enumerate() {
            s.prom[i] += c.get();
        }
        s.sum_us += self.sum_us.get();
        s.count += self.count.get();
        s.max_us = s.max_us.max(self.max_us.get());
    }
}

/// A merged, plain copy of one or more histograms.
#[derive(Clone, Debug, Default)]
pub struct HistSnapshot {
    pub fine: Vec<u64>,
    /// Non-cumulative Prometheus bucket counts; last is +Inf.
    pub prom: [u64; PROM_BOUNDS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
    pub max_us: u64,
}

impl HistSnapshot {
    /// Value at quantile `q` (0..=1) in microseconds: the midpoint of the
    /// fine bucket holding it, clamped to the observed max.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.fine.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = fine_lower(i);
                let hi = if i + 1 < FINE_BUCKETS {
                    fine_lower(i + 1)
                } else {
                    lo + 1
                };
                return ((lo + hi) / 2).min(self.max_us).max(lo.min(self.max_us));
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1000,
            20_000,
            1 << 30,
            u64::MAX >> 20,
        ] {
            let i = fine_index(v);
            assert!(i >= last, "{v}");
            last = i;
            let lo = fine_lower(i);
            assert!(lo <= v, "{v} lo {lo}");
            if i + 1 < FINE_BUCKETS {
                assert!(fine_lower(i + 1) > v, "{v}");
            }
        }
    }

    #[test]
    fn quantiles_within_resolution() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record_us(v);
        }
        let s = h.snapshot();
        for (q, want) in [(0.5, 5000.0), (0.9, 9000.0), (0.99, 9900.0)] {
            let got = s.quantile_us(q) as f64;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got}");
        }
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max_us, 10_000);
        assert_eq!(s.prom.iter().sum::<u64>(), 10_000);
        assert_eq!(s.prom[0], 100); // <= 100 µs
    }
}

//! Pairing: a mirrored request's primary outcome and its shadow's outcome
//! meet in a [`Pair`]; whichever side finishes second records the
//! comparison into the mirror's [`CompareStats`].

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::records::{CompareStats, Mismatch};

/// What one side of a pair answered.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Status code; 0 when the shadow failed (no usable answer).
    pub status: u16,
    pub us: u64,
    pub digest: Option<u64>,
}

/// Joins a mirrored request's primary outcome with its shadow outcome;
/// whichever side finishes second records the comparison.
pub struct Pair {
    primary: Cell<Option<Outcome>>,
    shadow: Cell<Option<Outcome>>,
    stats: Arc<CompareStats>,
    /// The copy's head: written to the shadow, and the method and target of
    /// a mismatch record.
    pub(crate) head: Bytes,
}

impl Pair {
    pub fn new(stats: Arc<CompareStats>, head: Bytes) -> Rc<Pair> {
        Rc::new(Pair {
            primary: Cell::new(None),
            shadow: Cell::new(None),
            stats,
            head,
        })
    }
    pub fn set_primary(&self, o: Outcome) {
        self.primary.set(Some(o));
        self.try_record();
    }
    pub fn set_shadow(&self, o: Outcome) {
        self.shadow.set(Some(o));
        self.try_record();
    }
    fn try_record(&self) {
        let (Some(p), Some(s)) = (self.primary.get(), self.shadow.get()) else {
            return;
        };
        let c = &*self.stats;
        if s.status == 0 {
            // The shadow failed: the pair is counted, never compared (it is
            // not a match, nor a mismatch, and its time is not the shadow's
            // latency). Counted last, as below.
            c.shadow_failed.inc();
            c.pairs.inc_release();
            return;
        }
        c.both_answered.inc();
        c.primary_codes.inc(p.status);
        c.shadow_codes.inc(s.status);
        c.primary_latency.record_us(p.us);
        c.shadow_latency.record_us(s.us);
        let status_differs = p.status != s.status;
        let mut body_differs = false;
        if let (Some(a), Some(b)) = (p.digest, s.digest) {
            c.body_compared.inc();
            if a != b {
                body_differs = true;
                c.body_mismatches.inc();
            }
        }
        if status_differs {
            c.status_mismatches.inc();
            c.count_pair(p.status, s.status);
        }
        if (status_differs || body_differs) && c.recent_due() {
            let line_end = self
                .head
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(self.head.len());
            let line = String::from_utf8_lossy(&self.head[..line_end]);
            let mut parts = line.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            c.push_recent(Mismatch {
                method,
                target,
                primary_status: p.status,
                shadow_status: s.status,
                primary_us: p.us,
                shadow_us: s.us,
                body_differs,
            });
        }
        // Last, so a scrape that sees this pair counted sees all of it.
        c.pairs.inc_release();
    }
}

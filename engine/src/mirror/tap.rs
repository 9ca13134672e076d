//! The tap: which of a route's mirrors copy a request (runtime switch,
//! methods, loop guard, percent or sticky hash, in-flight cap, `max_rps`,
//! declared body size), and building the chosen copies' heads and handing
//! them to the queue. Called by the exchange; never awaits.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::queue::{MirrorJob, MirrorQueue};
use super::tables::MirrorTables;
use crate::compare::Pair;
use crate::h1::write::{write_request_head, OutFraming, RequestEdits};
use crate::h1::RequestHead;
use crate::shared::{ShedReason, PPM};

/// Most mirrors one route can have that are tracked per request.
pub const MAX_MIRRORS: usize = 32;
/// Size of the allocations the copies' heads are cut from.
const MIRROR_ARENA: usize = 16 * 1024;
/// Room left for the copy's edits beyond the client's head (more only costs a
/// reallocation).
const MIRROR_HEAD_SLACK: usize = 256;

/// The mirror's per-core state that outlives config generations: the queue
/// to the writer and the buffer copies' heads are cut from.
pub struct Tap {
    pub queue: Rc<MirrorQueue>,
    heads: RefCell<BytesMut>,
}

impl Tap {
    pub fn new(queue_capacity: usize) -> Self {
        Tap {
            queue: Rc::new(MirrorQueue::new(queue_capacity)),
            heads: RefCell::new(BytesMut::new()),
        }
    }
}

/// The request body as the copies get it.
#[derive(Default)]
pub struct CopyBody {
    /// Decoded body length.
    pub len: u64,
    /// The body outgrew `mirror.max_body_bytes`: the copies are shed.
    pub dropped: bool,
    /// Refcounted slices of the client's read buffer.
    pub parts: Vec<Bytes>,
}

/// The mirrors chosen for one request: a bit per mirror index of its route
/// (a route tracks at most [`MAX_MIRRORS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chosen(u32);

impl Chosen {
    /// Whether no mirror was chosen.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The chosen mirror indexes, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_MIRRORS).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// Decide which of the route's mirrors copy this request. Every refusal
/// after sampling is counted as shed with its reason.
#[inline]
pub fn choose(
    st: &MirrorTables,
    route_idx: usize,
    head: &RequestHead,
    upgrade: bool,
    mut rand: impl FnMut() -> u64,
) -> Chosen {
    let cfg = &st.gen.config;
    let route = &cfg.routes[route_idx];
    if route.mirrors.is_empty() || upgrade {
        return Chosen(0);
    }
    if let Some(marker) = &cfg.mirror.marker_header {
        if head.header(marker.as_bytes()).is_some() {
            return Chosen(0); // loop guard: a copy is never copied again
        }
    }
    let mut chosen = 0u32;
    let mut now = None;
    for (i, m) in route.mirrors.iter().enumerate().take(MAX_MIRRORS) {
        let ctl = &st.gen.controls[route_idx][i];
        if !ctl.enabled() || !m.copies_method(head.method()) {
            continue;
        }
        let ppm = ctl.percent_ppm();
        if ppm == 0 {
            continue;
        }
        if ppm < PPM {
            let roll = match &m.sample_key {
                Some(config_schema::SampleKey::Header(name)) => {
                    match head.header(name.as_bytes()) {
                        Some(v) => sticky_hash(v, i as u64),
                        None => rand(),
                    }
                }
                None => rand(),
            };
            if (roll % PPM as u64) as u32 >= ppm {
                continue;
            }
        }
        let stats = &st.stats.routes[route_idx].mirrors[i];
        if let Some(len) = head.content_length() {
            if len > cfg.mirror.max_body_bytes {
                stats.shed(ShedReason::BodyTooLarge);
                continue;
            }
        }
        // Shed before any work is spent on the copy when the shadow is
        // already at its in-flight cap (a hung shadow costs a compare and a
        // counter per request, nothing more).
        if st.inflight[m.upstream].get() >= cfg.mirror.max_inflight {
            stats.shed(ShedReason::Inflight);
            continue;
        }
        if let Some(Some(lim)) = st.limiters[route_idx].get(i) {
            let t = *now.get_or_insert_with(Instant::now);
            if !lim.allow(t) {
                stats.shed(ShedReason::RateLimited);
                continue;
            }
        }
        chosen |= 1 << i;
    }
    Chosen(chosen)
}

/// FNV-1a then a finaliser: the same header value always samples alike.
fn sticky_hash(v: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in v {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Build each chosen copy's head and hand it to the mirror queue.
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    tap: &Tap,
    st: &Rc<MirrorTables>,
    ri: usize,
    head: &RequestHead,
    client_ip: Option<&str>,
    chosen: Chosen,
    body: CopyBody,
    pairs: &mut Vec<Rc<Pair>>,
) {
    let copy_body = body.parts;
    let cfg = &st.gen.config;
    let route = &cfg.routes[ri];
    let rstats = &st.stats.routes[ri];
    for c in chosen.iter() {
        if body.dropped {
            rstats.mirrors[c].shed(ShedReason::BodyTooLarge);
            continue;
        }
        let m = &route.mirrors[c];
        let mstats = rstats.mirrors[c].clone();
        let mut arena = tap.heads.borrow_mut();
        let need = head.raw.len() + MIRROR_HEAD_SLACK;
        if arena.capacity() < need {
            // Copies' heads are cut from one allocation shared by refcount:
            // one malloc per ~50 copies instead of one each.
            *arena = BytesMut::with_capacity(MIRROR_ARENA.max(need));
        }
        let copy_edits = RequestEdits {
            client_ip,
            upgrade: false,
            host_suffix: &cfg.mirror.host_suffix,
            marker: cfg.mirror.marker_header.as_deref(),
            set_headers: &m.set_headers,
            remove_headers: &m.remove_headers,
        };
        let framing = if body.len == 0 && !head.has_body() {
            OutFraming::None
        } else {
            OutFraming::Length(body.len)
        };
        write_request_head(&mut arena, head, &copy_edits, framing);
        let mh = arena.split().freeze();
        drop(arena);
        let pair = Pair::new(mstats.compare.clone(), mh);
        pairs.push(pair.clone());
        tap.queue.offer(MirrorJob {
            state: st.clone(),
            route: ri,
            upstream: m.upstream,
            stats: mstats,
            body: copy_body.clone(),
            head_request: head.is_head,
            compare_body: m.compare_body,
            pair,
        });
    }
}

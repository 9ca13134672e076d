//! What handing a request to the mirror costs the client's task.
//!
//! - `mirror_queue/clone_push_pop`: build a job shaped like the engine's
//!   `mirror::MirrorJob` (an `Rc` core-state handle, an `Arc` stats handle,
//!   the frozen head `Bytes`, a 2-element `Vec<Bytes>` body), which is
//!   refcount bumps plus one small `Vec` allocation, then `ArrayQueue::push`
//!   and `pop` it (the writer side), and drop it.
//! - `mirror_queue/push_pop_only`: the queue operations alone, on a job built
//!   outside the timed region (push the popped job back each time).
//! - `mirror_queue/memcpy_body_{head,64k}`: `Bytes::copy_from_slice` of the
//!   same head and body, i.e. what a copying design would pay instead of the
//!   refcount bumps. Compare against `clone_push_pop`.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use shadowtee_benches::{body_pieces, parsed_browser_get};

/// Body size for the copy comparison: two 32 KiB pieces, as a decoder hands
/// out a 64 KiB upload read in two reads.
const BODY: usize = 64 * 1024;
/// `[mirror] queue_capacity` default.
const CAPACITY: usize = 4096;

/// Field-for-field stand-in for `shadowtee::mirror::MirrorJob`, whose
/// handles need a running core to build.
struct Job {
    state: Rc<Cell<u64>>,
    route: usize,
    upstream: usize,
    stats: Arc<AtomicU64>,
    head: Bytes,
    body: Vec<Bytes>,
    head_request: bool,
}

impl Job {
    /// What the writer looks at first: touches every field, so none is
    /// optimised away and the pop is not dead.
    fn touch(&self) -> usize {
        self.state.get() as usize
            + self.route
            + self.upstream
            + Arc::strong_count(&self.stats)
            + self.head.len()
            + self.body.len()
            + usize::from(self.head_request)
    }
}

fn mirror_queue(c: &mut Criterion) {
    let state = Rc::new(Cell::new(0));
    let stats = Arc::new(AtomicU64::new(0));
    let head = parsed_browser_get().raw;
    let body = body_pieces(BODY, 2);
    let queue: ArrayQueue<Job> = ArrayQueue::new(CAPACITY);

    let mut g = c.benchmark_group("mirror_queue");
    g.bench_function("clone_push_pop", |b| {
        b.iter(|| {
            let job = Job {
                state: state.clone(),
                route: 7,
                upstream: 1,
                stats: stats.clone(),
                head: head.clone(),
                body: black_box(&body).clone(),
                head_request: false,
            };
            if queue.push(job).is_err() {
                unreachable!("the bench pops every job it pushes");
            }
            black_box(queue.pop().map(|j| j.touch()))
        })
    });

    g.bench_function("push_pop_only", |b| {
        let mut job = Some(Job {
            state: state.clone(),
            route: 7,
            upstream: 1,
            stats: stats.clone(),
            head: head.clone(),
            body: body.clone(),
            head_request: false,
        });
        b.iter(|| {
            if let Some(j) = job.take() {
                if queue.push(j).is_err() {
                    unreachable!("the bench pops every job it pushes");
                }
            }
            job = black_box(queue.pop());
        });
        black_box(job.map(|j| j.touch()));
    });

    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("memcpy_head", |b| {
        b.iter(|| Bytes::copy_from_slice(black_box(&head[..])))
    });
    g.throughput(Throughput::Bytes(BODY as u64));
    g.bench_function("memcpy_body_64k", |b| {
        b.iter(|| {
            black_box(&body)
                .iter()
                .map(|p| Bytes::copy_from_slice(p))
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(benches, mirror_queue);
criterion_main!(benches);

//! The mirror path: which requests are copied, the per-core bounded queue,
//! and the writer that sends copies to shadows and reads their answers to
//! the end.
//!
//! - `tap`: the decision (sampling, caps, loop guard) and building copies;
//!   called by the exchange, never awaits.
//! - `queue`: the bounded per-core queue and the job it carries.
//! - `tables`: the per-core, per-generation tables the tap and the writer
//!   decide on (shadow pools, in-flight counts, lanes, rate buckets).
//! - `writer`: the dispatcher and lane writers, in the low-priority task queue.
//!
//! Invariants:
//! - The client's task never awaits anything here: it `try_push`es a job
//!   (full queue: shed, counted) and wakes the dispatcher.
//! - A copy shares the request's head and body bytes by refcount; only the
//!   copy's own head (marker, edits, host suffix) is newly written.
//! - Writers run in a low-priority glommio task queue, bounded per shadow by
//!   `mirror.max_inflight` (over it: shed) and by `mirror.timeout_ms`.
//!   Queued copies are pipelined in batches on a few keep-alive connections
//!   per shadow (responses read in order), so a copy costs ~no extra
//!   syscalls under load.
//! - A shadow error is counted as `failed` with its [`FailReason`]; it never
//!   reaches the client.
//!
//! [`FailReason`]: crate::shared::FailReason

mod queue;
mod tables;
mod tap;
mod writer;

pub use queue::{MirrorJob, MirrorQueue, Notify};
pub use tables::{MirrorTables, RateLimiter};
pub use tap::{choose, dispatch, Chosen, CopyBody, Tap, MAX_MIRRORS};
pub use writer::{run_dispatcher, Lane, ShadowError};

//! shadowtee: an HTTP/1.1 tee proxy on glommio, thread-per-core.
//! See `engine/LIFECYCLE.md` for a request's path through these modules.
//!
//! Layers, each importing only those below it (checked in `.ci/run`):
//! - `runtime`: start-up, one thread and executor per core, signals, admin.
//! - `serve`: a core's accept loop, connection tasks and drain.
//! - `exchange`: one request/response exchange and its settle step.
//! - `percore`: the per-core toolbox (state, connections, buffers, RNG).
//! - `mirror`: the tap, the per-core queue and tables, the writer.
//! - `admin`: `/metrics`, `/compare`, `/config`, the mirror knobs.
//! - `shared`: the config generation, runtime controls, stats tables.
//! - `compare`: pairing the two outcomes and the comparison records.
//! - `net`, `accesslog`, `stats`, `error`: sockets and pools, the access
//!   log, counters and histograms, the engine's own answers.
//! - `h1`: the sans-I/O codec (the `shadowtee-h1` crate).

pub use shadowtee_h1 as h1;

pub mod accesslog;
pub mod admin;
pub mod compare;
pub mod error;
pub mod exchange;
pub mod mirror;
pub mod net;
pub mod percore;
#[cfg(test)]
mod reactor_tests;
pub mod runtime;
pub mod serve;
pub mod shared;
pub mod stats;

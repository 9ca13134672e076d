//! Sockets and time on the request path: the cancel-safe read buffer and
//! accept loop (from `shadowtee-net`), per-core upstream pools, and the
//! per-core deadline sweeper that keeps request timeouts without a timer
//! per request.

mod deadline;
mod pool;

pub use deadline::{Deadlines, TICK};
pub use pool::{ConnectError, Pool, UpConn, UPSTREAM_BUF};
pub use shadowtee_net::{accept_or_stop, read_into, RxBuf};

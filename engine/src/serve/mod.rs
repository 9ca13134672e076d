//! Serving on one core: start the core's background tasks (the mirror
//! dispatcher and access-log flusher in the low-priority queue, the deadline
//! sweeper, the drain watch), accept on the core's `SO_REUSEPORT` listener,
//! spawn one task per connection (over `server.max_connections`: 503), and
//! drain.
//!
//! - `conn`: the connection driver (heads, keep-alive, idle).

mod conn;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, Shares};

use crate::exchange::reject_overloaded;
use crate::mirror::{run_dispatcher, Notify};
use crate::net::accept_or_stop;
use crate::percore::Core;
use crate::shared::Shared;

/// Shares of the mirror task queue (the client queue has 1000): copies get
/// CPU only when the primary path leaves it.
const MIRROR_SHARES: usize = 50;

/// Serve until drained, on this core's SO_REUSEPORT listener.
pub async fn run(core: Rc<Core>, listener: TcpListener) {
    let mirror_tq = glommio::executor().create_task_queue(
        Shares::Static(MIRROR_SHARES),
        Latency::NotImportant,
        "mirror",
    );
    glommio::spawn_local_into(run_dispatcher(core.tap.queue.clone(), mirror_tq), mirror_tq)
        .map(|t| t.detach())
        .ok();
    if let Some(log) = core.access_log.clone() {
        glommio::spawn_local_into(log.run_flusher(), mirror_tq)
            .map(|t| t.detach())
            .ok();
    }
    glommio::spawn_local(core.deadlines.clone().run()).detach();
    let stop = Rc::new(Notify::default());
    let watcher = (core.shared.clone(), stop.clone());
    let watch = core.shared.drain_watch();
    glommio::spawn_local(async move {
        watch_drain(&watcher.0, watch).await;
        watcher.1.notify();
    })
    .detach();

    let id = core.core;
    while let Some(stream) = accept_or_stop(
        &listener,
        || stop.wait(),
        |e| eprintln!("shadowtee: core {id}: accept failed: {e}"),
    )
    .await
    {
        spawn_conn(&core, stream);
    }
    drop(listener);
    // Drain: close idle keep-alive connections, let in-flight ones finish.
    let deadline = Instant::now() + core.state().gen.config.server.drain_timeout;
    while core.close_idle() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if let Some(log) = &core.access_log {
        log.flush().await;
    }
}

fn spawn_conn(core: &Rc<Core>, stream: TcpStream) {
    let st = core.state();
    if core.active() >= st.gen.config.server.max_connections {
        st.stats.unrouted.codes.inc(503);
        glommio::spawn_local(reject_overloaded(stream)).detach();
        return;
    }
    // The guard moves into the task: its slot and count are released
    // however the task ends, a caught panic included.
    let guard = core.register(std::os::fd::AsRawFd::as_raw_fd(&stream));
    // A panic is a bug; it must cost its own connection, not the core's
    // executor and every connection on it. The panic hook has already
    // written the message to stderr; the connection's state (its socket
    // and guard) is dropped during the unwind.
    let task = std::panic::AssertUnwindSafe(conn::serve_conn(core.clone(), stream, guard));
    glommio::spawn_local(Caught(futures_lite::FutureExt::catch_unwind(task))).detach();
}

/// A connection task with its panic caught and reported. A hand-written
/// future rather than an `async` block, which would keep the connection's
/// future twice in the task (once as a capture, once as the awaited value).
struct Caught<F>(F);

impl<F: Future<Output = std::thread::Result<()>>> Future for Caught<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of the only field: `Caught` never moves
        // it out, has no `Drop`, and is `Unpin` only if `F` is.
        let inner = unsafe { self.map_unchecked_mut(|c| &mut c.0) };
        match inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(_)) => {
                eprintln!(
                    "shadowtee: a connection task panicked (a bug); that connection was closed"
                );
                Poll::Ready(())
            }
        }
    }
}

/// Resolve once a drain has begun. Waits for EOF on the core's drain socket
/// (dropped by [`Shared::begin_drain`]), so an idle core sleeps; without
/// one (it could not be dup'ed), polls the flag every 25 ms.
async fn watch_drain(shared: &Shared, watch: std::io::Result<std::os::fd::OwnedFd>) {
    if let Ok(fd) = watch {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: `fd` is a freshly dup'ed, connected Unix stream socket
        // whose ownership moves into the glommio stream (it closes it).
        let mut sock = unsafe { glommio::net::UnixStream::from_raw_fd(fd.into_raw_fd()) };
        let mut byte = [0u8; 1];
        // Nothing is ever written: the read returns only at EOF (or on an
        // error, after which the flag is polled below).
        let _ = futures_lite::AsyncReadExt::read(&mut sock, &mut byte).await;
    }
    while !shared.is_draining() {
        glommio::timer::sleep(Duration::from_millis(25)).await;
    }
}

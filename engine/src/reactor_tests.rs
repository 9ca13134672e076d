//! Tests of glommio's reactor behaviour the engine relies on: a busy task
//! queue is still preempted for another, and a sleeping executor wakes for
//! its earliest timer, including one due within microseconds. Written for
//! reactor patches: one that kept preemption timers armed across loops
//! (notes/glommio-reactor-timers.md, not shipped) and the shipped one that
//! preempts by a deadline instead (notes/glommio-reactor-deadline.md); they
//! run against whichever glommio is linked.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

fn run<G, F>(make: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .preempt_timer(Duration::from_millis(20))
        .spawn(make)
        .expect("executor")
        .join()
        .expect("join");
}

/// Bound for "eventually" in these tests: far above the 20 ms preemption
/// period and glommio's timer slack, far below a hang.
const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn a_busy_task_queue_is_still_preempted_for_another() {
    run(|| async {
        let busy_q = glommio::executor().create_task_queue(
            Shares::Static(1000),
            Latency::Matters(Duration::from_millis(20)),
            "busy",
        );
        let other_q = glommio::executor().create_task_queue(
            Shares::Static(1000),
            Latency::Matters(Duration::from_millis(20)),
            "other",
        );
        let done = Rc::new(Cell::new(false));
        let spins = Rc::new(Cell::new(0u64));
        let (d, s) = (done.clone(), spins.clone());
        // Never awaits I/O: only a preemption lets the other queue run.
        let busy = glommio::spawn_local_into(
            async move {
                let t0 = Instant::now();
                while !d.get() && t0.elapsed() < PATIENCE {
                    s.set(s.get() + 1);
                    glommio::yield_if_needed().await;
                }
            },
            busy_q,
        )
        .expect("spawn busy");
        let d = done.clone();
        let other =
            glommio::spawn_local_into(async move { d.set(true) }, other_q).expect("spawn other");
        other.await;
        busy.await;
        assert!(done.get(), "the other task queue never ran");
        assert!(spins.get() > 0, "the busy task never ran");
    });
}

#[test]
fn need_preempt_turns_on_after_the_period_and_off_after_a_yield() {
    run(|| async {
        // A lone busy task: no I/O and no other queue, so only the
        // executor's preemption period (20 ms here) can set need_preempt.
        for round in 0..3 {
            let t0 = Instant::now();
            let mut checks = 0u64;
            while !glommio::executor().need_preempt() && t0.elapsed() < PATIENCE {
                checks += 1;
            }
            let took = t0.elapsed();
            assert!(took < PATIENCE, "round {round}: never asked to yield");
            // Not a flag stuck on (which would make every loop run one task).
            assert!(
                took >= Duration::from_millis(15) && checks > 1000,
                "round {round}: asked to yield after {took:?} and {checks} checks"
            );
            glommio::yield_if_needed().await;
            // The yield went through the reactor, which starts a new period.
            assert!(
                !glommio::executor().need_preempt(),
                "round {round}: still asked to yield right after yielding"
            );
        }
    });
}

#[test]
fn a_short_timer_armed_after_a_long_one_wakes_on_time() {
    run(|| async {
        // A long timer is pending in the reactor ...
        let long = glommio::spawn_local(glommio::timer::sleep(Duration::from_secs(3600)));
        glommio::timer::sleep(Duration::from_millis(5)).await;
        // ... then a short one: the executor must not sleep until the long one.
        let t0 = Instant::now();
        glommio::timer::sleep(Duration::from_millis(30)).await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(30), "early: {took:?}");
        assert!(took < PATIENCE, "late: {took:?}");
        drop(long);
    });
}

#[test]
fn timers_fire_after_busy_periods_and_while_idle() {
    run(|| async {
        for round in 0..5u32 {
            // Busy for a few preemption periods (the timer gets kept and
            // re-armed across loops), then idle on a timer.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(50) {
                glommio::yield_if_needed().await;
            }
            let wait = Duration::from_millis(10 + 15 * u64::from(round));
            let t1 = Instant::now();
            glommio::timer::sleep(wait).await;
            let took = t1.elapsed();
            assert!(took >= wait, "round {round}: early: {took:?}");
            assert!(took < PATIENCE, "round {round}: late: {took:?}");
        }
    });
}

#[test]
fn concurrent_sleepers_are_never_overslept() {
    // The benchmark shadow's shape: several tasks, each sleeping in turn
    // (a delayed answer per pipelined request).
    run(|| async {
        let worst = Rc::new(Cell::new(Duration::ZERO));
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let worst = worst.clone();
            tasks.push(glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(7 * i)).await;
                for _ in 0..30 {
                    let t = Instant::now();
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    let late = t.elapsed().saturating_sub(Duration::from_millis(50));
                    worst.set(worst.get().max(late));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        eprintln!("worst lateness {:?}", worst.get());
        assert!(
            worst.get() < Duration::from_millis(500),
            "overslept by {:?}",
            worst.get()
        );
    });
}

#[test]
fn timers_due_within_microseconds_never_leave_the_executor_asleep() {
    // A timer due in a few microseconds can fire while the reactor is still
    // arming it for a sleep; the reactor must notice and not sleep (nothing
    // else would wake this executor: it has no I/O).
    let (tx, rx) = std::sync::mpsc::channel();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .preempt_timer(Duration::from_millis(20))
        .spawn(move || async move {
            for i in 0..3000u64 {
                glommio::timer::sleep(Duration::from_micros(1 + i % 20)).await;
            }
            let _ = tx.send(());
        })
        .expect("executor");
    let done = rx.recv_timeout(Duration::from_secs(30));
    assert!(done.is_ok(), "the executor overslept a due timer (hung)");
    ex.join().expect("join");
}

/// Reads on a glommio `TcpStream` (a multishot readiness poll in the
/// patched reactor, notes/glommio-reactor-deadline.md): bytes that arrive
/// in small pieces with pauses, while the reader is asleep, after a read
/// that filled the buffer, and after one that emptied the socket, all
/// arrive; EOF is seen, and seen again at once on the next reads.
#[test]
fn socket_reads_see_every_byte_and_eof_through_readiness_events() {
    use futures_lite::AsyncReadExt;
    use std::io::Write;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // The writer: 200 pieces of 1..=97 bytes, a pause after every 10th
    // (long enough that the reader has gone to sleep), then close.
    let writer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let piece: Vec<u8> = (0..=(i % 97)).map(|j| (i * 31 + j) as u8).collect();
            s.write_all(&piece).expect("write");
            sent.extend_from_slice(&piece);
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Close only once the reader has everything: its last bytes must
        // come from its own reads, not from the wake-up a FIN would cause.
        let mut ack = [0u8; 1];
        let _ = std::io::Read::read_exact(&mut s, &mut ack);
        sent
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let mut s = glommio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let total: usize = (0..200u32).map(|i| (i % 97) as usize + 1).sum();
            let mut got = Vec::new();
            // A 64-byte buffer: many reads fill it and leave bytes behind.
            let mut buf = [0u8; 64];
            while got.len() < total {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "EOF after {} of {total} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            futures_lite::AsyncWriteExt::write_all(&mut s, b"k")
                .await
                .expect("ack");
            assert_eq!(s.read(&mut buf).await.expect("read to EOF"), 0);
            // EOF repeats without waiting for an event.
            for _ in 0..3 {
                assert_eq!(s.read(&mut buf).await.expect("read after EOF"), 0);
            }
            let _ = tx.send(got);
        })
        .expect("executor");
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader missed a readiness event (hung)");
    let sent = writer.join().expect("writer");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes differ");
    ex.join().expect("join");
}

/// Wake-ups from other threads reach a sleeping executor. The patched
/// reactor fences where upstream made a `membarrier` system call before
/// sleeping (notes/glommio-reactor-deadline.md): a lost wake-up here would
/// leave the receiver asleep for good. Two shapes, many times each, with the
/// sender pausing so the receiver falls asleep between messages: a glommio
/// shared channel between two executors (a tiny bound, so both sides also
/// wait for each other), and a plain thread waking a task's waker.
#[test]
fn wakeups_from_other_threads_reach_a_sleeping_executor() {
    use std::sync::mpsc;
    use std::task::{Poll, Waker};

    const N: u64 = 3000;
    let (tx, rx) = mpsc::channel();
    let (send, recv) = glommio::channels::shared_channel::new_bounded::<u64>(2);
    let builder = || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 << 10)
            .preempt_timer(Duration::from_millis(20))
    };
    let receiver = builder()
        .spawn(move || async move {
            let recv = recv.connect().await;
            let mut sum = 0;
            while let Some(v) = recv.recv().await {
                sum += v;
            }
            let _ = tx.send(sum);
        })
        .expect("receiver executor");
    let sender = builder()
        .spawn(move || async move {
            let send = send.connect().await;
            let mut rng = crate::h1::xorshift(0x9e37_79b9_7f4a_7c15);
            for i in 1..=N {
                send.send(i).await.expect("send");
                if rng().is_multiple_of(8) {
                    glommio::timer::sleep(Duration::from_micros(rng() % 300)).await;
                }
            }
        })
        .expect("sender executor");
    let sum = rx.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        sum.ok(),
        Some(N * (N + 1) / 2),
        "a cross-executor wake-up was lost (hung)"
    );
    sender.join().expect("join sender");
    receiver.join().expect("join receiver");

    // A plain thread wakes a task that has nothing else to wake it.
    let (wakers_tx, wakers_rx) =
        mpsc::channel::<(Waker, std::sync::Arc<std::sync::atomic::AtomicBool>)>();
    let (tx, rx) = mpsc::channel();
    let waker_thread = std::thread::spawn(move || {
        let mut rng = crate::h1::xorshift(0x2545_f491_4f6c_dd1d);
        while let Ok((waker, flag)) = wakers_rx.recv() {
            if rng().is_multiple_of(4) {
                std::thread::sleep(Duration::from_micros(rng() % 300));
            }
            flag.store(true, std::sync::atomic::Ordering::Release);
            waker.wake();
        }
    });
    let ex = builder()
        .spawn(move || async move {
            for _ in 0..N {
                let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut sent = false;
                std::future::poll_fn(|cx| {
                    if flag.load(std::sync::atomic::Ordering::Acquire) {
                        return Poll::Ready(());
                    }
                    if !sent {
                        sent = true;
                        wakers_tx
                            .send((cx.waker().clone(), flag.clone()))
                            .expect("waker thread");
                    }
                    Poll::Pending
                })
                .await;
            }
            let _ = tx.send(());
        })
        .expect("executor");
    let done = rx.recv_timeout(Duration::from_secs(30));
    assert!(
        done.is_ok(),
        "a wake-up from another thread was lost (hung)"
    );
    ex.join().expect("join");
    waker_thread.join().expect("join waker thread");
}

/// Every ring of an executor is set up with `IORING_SETUP_COOP_TASKRUN`
/// and `IORING_SETUP_TASKRUN_FLAG` (~1.5x the CPU per request without
/// them: notes/io_uring-ring-flags.md). The flags come from the glommio
/// patch (notes/glommio-coop-taskrun.patch), not from the link line, so no
/// `RUSTFLAGS` can drop them. Needs a kernel >= 5.19 (this machine's and
/// CI's); fails with `SHADOWTEE_COOP_TASKRUN=0`, as it should.
#[test]
fn rings_have_coop_taskrun() {
    let want = glommio::IORING_SETUP_COOP_TASKRUN | glommio::IORING_SETUP_TASKRUN_FLAG;
    run(move || async move {
        let flags = glommio::executor().ring_setup_flags();
        assert!(
            flags.main & want == want && flags.latency & want == want,
            "rings set up without COOP_TASKRUN | TASKRUN_FLAG: {flags:?}"
        );
    });
    let (with, _without) = glommio::ring_setup_stats();
    assert!(with >= 2, "no ring of this process has COOP_TASKRUN");
}

//! One keep-alive GET round trip over real loopback sockets.
//!
//! A blocking `std::net::TcpStream` client writes `LATENCY_GET` and reads
//! until the Content-Length body is complete, against:
//! - `latency/direct`: the test upstream (`shadowtee_origin`, `Mode::Fast`) itself;
//! - `latency/shadowtee`: shadowtee (one core, started in-process) in front of it;
//! - `latency/shadowtee_mirror_100`: shadowtee also mirroring 100% of
//!   requests to a second test upstream.
//!
//! `shadowtee - direct` is the proxy hop (two more socket writes and reads,
//! parse, route, rewrite). `shadowtee_mirror_100 - shadowtee` is what the
//! mirror costs the client: by design only an enqueue on the client's path,
//! but on a 2-core machine the shadow's writer, executor and upstream compete
//! for the same CPUs, so part of their work shows up here too. The shadow's
//! request count is printed so a run that shed mirrors is visible.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shadowtee::runtime::{self, Running};
use shadowtee_benches::{engine_toml, Client, LATENCY_GET};
use shadowtee_origin::{Mode, ServerConfig, TestServer};

fn start_engine(toml: &str) -> Running {
    let cfg = config_schema::parse(toml).unwrap_or_else(|e| panic!("bench config: {e}"));
    runtime::start(cfg, None, Some(1)).unwrap_or_else(|e| panic!("cannot start shadowtee: {e}"))
}

fn stop_engine(running: Running) {
    running.drain();
    running.join();
}

fn bench_round_trips(c: &mut Criterion, name: &str, client: &mut Client) {
    // Warm the connection (and the engine's upstream pool) before timing.
    for _ in 0..100 {
        assert_eq!(
            client.round_trip(LATENCY_GET).expect("warm-up round trip"),
            200
        );
    }
    c.benchmark_group("latency").bench_function(name, |b| {
        b.iter(|| {
            let status = client
                .round_trip(black_box(LATENCY_GET))
                .expect("round trip");
            debug_assert_eq!(status, 200);
            status
        })
    });
}

fn latency(c: &mut Criterion) {
    let upstream = |name: &str| {
        TestServer::spawn(ServerConfig::new(name, Mode::Fast).record(false))
            .unwrap_or_else(|e| panic!("cannot start test upstream {name}: {e}"))
    };
    let primary = upstream("v1");
    let shadow = upstream("test-v1");

    let mut direct = Client::connect(primary.addr).expect("connect upstream");
    bench_round_trips(c, "direct", &mut direct);
    drop(direct);

    // One engine at a time, so an idle one never shares the CPUs.
    let running = start_engine(&engine_toml(primary.addr, None));
    let mut client = Client::connect(running.listen).expect("connect shadowtee");
    bench_round_trips(c, "shadowtee", &mut client);
    drop(client);
    stop_engine(running);

    let running = start_engine(&engine_toml(primary.addr, Some(shadow.addr)));
    let mut client = Client::connect(running.listen).expect("connect shadowtee");
    let before = primary.count();
    bench_round_trips(c, "shadowtee_mirror_100", &mut client);
    drop(client);
    stop_engine(running);
    eprintln!(
        "latency/shadowtee_mirror_100: the shadow received {} of the {} mirrored requests (the rest were shed or failed)",
        shadow.count(),
        primary.count() - before
    );
}

criterion_group!(benches, latency);
criterion_main!(benches);

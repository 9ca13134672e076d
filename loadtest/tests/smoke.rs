//! Smoke tests of the load generator against the in-process test upstream
//! (real sockets on 127.0.0.1:0).

use std::time::Duration;

use loadtest::run::{run, RunConfig, Target};
use shadowtee_origin::{Mode, ServerConfig, TestServer};

fn upstream(mode: Mode) -> TestServer {
    TestServer::spawn(ServerConfig::new("v1", mode).record(false)).expect("test upstream starts")
}

fn config(srv: &TestServer, connections: usize, duration_ms: u64) -> RunConfig {
    let mut cfg = RunConfig::new(Target::from_addr(srv.addr, "/"));
    cfg.connections = connections;
    cfg.duration = Duration::from_millis(duration_ms);
    cfg
}

#[test]
fn closed_loop_and_open_loop_against_a_fast_upstream() {
    let srv = upstream(Mode::Fast);

    let r = run(&config(&srv, 2, 300)).unwrap();
    assert!(r.stats.requests > 0, "{}", r.render());
    assert_eq!(r.stats.errors.total(), 0, "{}", r.render());
    assert_eq!(r.stats.non_2xx, 0);
    assert!(r.stats.bytes > 0);

    let mut open = config(&srv, 2, 500);
    open.rate = Some(200.0);
    let r = run(&open).unwrap();
    assert!(
        (50..=150).contains(&r.stats.requests),
        "200 req/s for 500 ms: {}",
        r.render()
    );
    assert_eq!(r.stats.errors.total(), 0, "{}", r.render());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = upstream(Mode::Fast);
    let mut cfg = config(&srv, 2, 300);
    cfg.pipeline = 8;
    cfg.method = "POST".into();
    cfg.body = b"hello".to_vec();
    let r = run(&cfg).unwrap();
    assert!(r.stats.requests >= 8, "{}", r.render());
    assert_eq!(r.stats.errors.total(), 0, "{}", r.render());
}

#[test]
fn errors_are_counted_by_kind() {
    let srv = upstream(Mode::Status(503));
    let r = run(&config(&srv, 1, 200)).unwrap();
    assert!(r.stats.non_2xx > 0 && r.stats.non_2xx == r.stats.requests);
    assert_eq!(r.stats.errors.total(), 0);

    let srv = upstream(Mode::Garbage);
    let r = run(&config(&srv, 1, 200)).unwrap();
    assert!(r.stats.errors.parse > 0, "{:?}", r.stats.errors);
    assert_eq!(r.stats.requests, 0);

    let srv = upstream(Mode::Refuse);
    let r = run(&config(&srv, 1, 200)).unwrap();
    assert!(r.stats.errors.connect > 0, "{:?}", r.stats.errors);

    let srv = upstream(Mode::Hung);
    let mut cfg = config(&srv, 1, 400);
    cfg.timeout = Duration::from_millis(100);
    let r = run(&cfg).unwrap();
    assert!(r.stats.errors.timeout > 0, "{:?}", r.stats.errors);
    assert_eq!(r.stats.requests, 0);
}

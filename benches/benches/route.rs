//! Route selection, per request.
//!
//! - `route/first_match_8th_of_10`: walk a 10-route table built by
//!   `config_schema::parse` (path prefixes, an exact path, method lists,
//!   header matches) with `Match::matches`, as the exchange does, for a parsed
//!   browser GET that only the 8th route accepts. Seven misses on path,
//!   method or header plus one hit: the realistic worst case short of 404.
//! - `route/weight_pick_80_20`: `WeightTable::pick` on an 80/20 table, fed a
//!   cheap deterministic sequence in place of the per-core RNG.
//!
//! Both should be small next to `parse/shadowtee`; if route picking rivals
//! head parsing, the matcher has regressed.

use std::hint::black_box;

use config_schema::WeightTable;
use criterion::{criterion_group, criterion_main, Criterion};
use shadowtee_benches::{parsed_browser_get, EXPECTED_ROUTE, ROUTES_TOML};

fn route(c: &mut Criterion) {
    let cfg = config_schema::parse(ROUTES_TOML).expect("bench routes must validate");
    let head = parsed_browser_get();
    let mut g = c.benchmark_group("route");

    g.bench_function("first_match_8th_of_10", |b| {
        b.iter(|| {
            let head = black_box(&head);
            // The path is found once per request, as the engine does.
            let path = head.path();
            let hit = cfg
                .routes
                .iter()
                .position(|r| r.matcher.matches(head.method(), path, |n| head.header(n)));
            debug_assert_eq!(hit, Some(EXPECTED_ROUTE));
            hit
        })
    });

    let table = WeightTable::new(&[80, 20]).expect("80/20 is a valid table");
    let total = table.total();
    g.bench_function("weight_pick_80_20", |b| {
        // Stepping by a prime co-prime to the total visits every value, so
        // both destinations are picked in their 80/20 proportion.
        let mut r = 0u32;
        b.iter(|| {
            r += 37;
            if r >= total {
                r -= total;
            }
            table.pick(black_box(r))
        })
    });
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);

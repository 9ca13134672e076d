//! Head parse vs bare httparse, interleaved: alternating rounds of each on
//! the same bytes, so the machine's speed drift hits both alike (criterion
//! runs the two benches minutes apart). Prints per-op times and the median
//! ratio of paired rounds.
//!
//! `cargo run --release -p shadowtee-benches --example parse_ratio [ROUNDS]`

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use shadowtee::h1::parse_request_reusing;
use shadowtee::h1::RequestLimits;
use shadowtee_benches::BROWSER_GET;

const PER_ROUND: u32 = 200_000;

fn shadowtee_round(buf: &mut BytesMut, spare: &mut Vec<shadowtee::h1::Field>) -> f64 {
    let limits = RequestLimits::default();
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        buf.extend_from_slice(BROWSER_GET);
        let head = parse_request_reusing(black_box(&mut *buf), &limits, spare);
        if let Ok(Some(h)) = black_box(head) {
            h.recycle(spare);
        }
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

fn httparse_round(buf: &mut BytesMut) -> f64 {
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        buf.extend_from_slice(BROWSER_GET);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let status = req.parse(black_box(&buf[..]));
        black_box((status.ok(), req.path, req.headers.len()));
        buf.clear();
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

/// The floor of any design that tokenises with httparse (headers left
/// uninitialised, as the engine does) and keeps the head as one frozen
/// `Bytes`: no validation, no field list.
fn floor_round(buf: &mut BytesMut) -> f64 {
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        buf.extend_from_slice(BROWSER_GET);
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
        let mut req = httparse::Request::new(&mut []);
        let n = match req.parse_with_uninit_headers(black_box(&buf[..]), &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => 0,
        };
        black_box((req.path, req.headers.len()));
        black_box(buf.split_to(n).freeze());
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21);
    let mut a = BytesMut::with_capacity(4096);
    let mut b = BytesMut::with_capacity(4096);
    let mut spare = Vec::new();
    // Warm up both.
    shadowtee_round(&mut a, &mut spare);
    httparse_round(&mut b);
    let mut c = BytesMut::with_capacity(4096);
    floor_round(&mut c);
    let (mut st, mut hp, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = Vec::new();
    for i in 0..rounds {
        // Alternate which goes first, so neither always runs warmer.
        let (s, h) = if i % 2 == 0 {
            let s = shadowtee_round(&mut a, &mut spare);
            (s, httparse_round(&mut b))
        } else {
            let h = httparse_round(&mut b);
            (shadowtee_round(&mut a, &mut spare), h)
        };
        floor.push(floor_round(&mut c) / h);
        st.push(s);
        hp.push(h);
        ratio.push(s / h);
    }
    println!(
        "head parse ({} bytes), {rounds} interleaved rounds of {PER_ROUND}: shadowtee {:.1} ns/op, httparse {:.1} ns/op, ratio (median of pairs) {:.3}",
        BROWSER_GET.len(),
        median(&mut st),
        median(&mut hp),
        median(&mut ratio)
    );
    println!(
        "floor (httparse with uninitialised headers + the head frozen into one Bytes, nothing else) / httparse: {:.3}",
        median(&mut floor)
    );
}

//! Fixed number of head parses, for instruction counts under callgrind:
//! `valgrind --tool=callgrind --toggle-collect='*parse_request_reusing*' \
//!   target/release/examples/parse_count 1000`

use std::hint::black_box;

use bytes::BytesMut;
use shadowtee::h1::{parse_request_reusing, RequestLimits};
use shadowtee_benches::BROWSER_GET;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let limits = RequestLimits::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut spare = Vec::new();
    for _ in 0..n {
        buf.extend_from_slice(BROWSER_GET);
        let head = parse_request_reusing(black_box(&mut buf), &limits, &mut spare);
        if let Ok(Some(h)) = black_box(head) {
            h.recycle(&mut spare);
        }
    }
}

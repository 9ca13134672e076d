//! Request head parsing and writing, per op and in bytes/s.
//!
//! - `parse/shadowtee`: `h1::parse_request` on a ~400-byte browser GET: the
//!   httparse pass plus the strict framing checks (RFC 9112 §6.3), field spans,
//!   and freezing the head into one `Bytes`.
//! - `parse/httparse`: bare `httparse::Request::parse` with a 64-header array
//!   on the same bytes. The gap between the two is what shadowtee's own
//!   validation and bookkeeping cost on top of the tokenizer.
//! - `write_request_head/{primary,mirror}`: serialising that parse for the
//!   primary (X-Forwarded-For appended) and for a shadow (host suffix, marker,
//!   cookie removed) into a reused `BytesMut`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shadowtee::h1::write::{write_request_head, OutFraming, RequestEdits};
use shadowtee::h1::RequestLimits;
use shadowtee::h1::{parse_request, parse_request_reusing};
use shadowtee_benches::{parsed_browser_get, BROWSER_GET};

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    let limits = RequestLimits::default();

    // Both benches pay the same setup inside the timed loop: one
    // `extend_from_slice` of the head into a reused `BytesMut` (a ~400-byte
    // memcpy, the read the engine would have done). shadowtee then splits the
    // head off the buffer (emptying it, so the next extend reuses the same
    // allocation once the previous head is dropped); httparse only borrows,
    // so its buffer is cleared instead.
    // As the engine parses on a keep-alive connection: the field list's
    // storage is recycled from the previous head.
    g.bench_function("shadowtee", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        let mut spare = Vec::new();
        b.iter(|| {
            buf.extend_from_slice(BROWSER_GET);
            let head = parse_request_reusing(black_box(&mut buf), &limits, &mut spare);
            if let Ok(Some(h)) = black_box(head) {
                h.recycle(&mut spare);
            }
        })
    });

    // The first request of a connection: the field list is allocated.
    g.bench_function("shadowtee_first", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.extend_from_slice(BROWSER_GET);
            let head = parse_request(black_box(&mut buf), &limits);
            debug_assert!(matches!(head, Ok(Some(_))));
            black_box(head)
        })
    });

    g.bench_function("httparse", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.extend_from_slice(BROWSER_GET);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(&buf[..]));
            debug_assert!(matches!(status, Ok(httparse::Status::Complete(_))));
            black_box((status.ok(), req.path, req.headers.len()));
            buf.clear();
        })
    });
    g.finish();
}

fn write(c: &mut Criterion) {
    let head = parsed_browser_get();
    let mut g = c.benchmark_group("write_request_head");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));

    let primary = RequestEdits {
        client_ip: Some("192.0.2.7"),
        ..RequestEdits::default()
    };
    let remove = vec!["cookie".to_string()];
    let set = vec![("x-env".to_string(), "shadow".to_string())];
    let mirror = RequestEdits {
        host_suffix: "-shadow",
        client_ip: Some("192.0.2.7"),
        marker: Some("x-shadowtee-mirror"),
        set_headers: &set,
        remove_headers: &remove,
        upgrade: false,
    };

    for (name, edits) in [("primary", &primary), ("mirror", &mirror)] {
        g.bench_function(name, |b| {
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                out.clear();
                write_request_head(&mut out, black_box(&head), edits, OutFraming::None);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, write);
criterion_main!(benches);

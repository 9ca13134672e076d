//! Body decoding throughput for a 64 KiB body already in the read buffer.
//!
//! - `decode/chunked_4k`: `Decoder::chunked()` on 16 chunks of 4 KiB: mostly
//!   zero-copy `split_to().freeze()` of chunk data, so it should run far
//!   above memcpy speed.
//! - `decode/chunked_16b`: the same 64 KiB as 4096 chunks of 16 bytes: the
//!   per-chunk cost (size line, CRLF checks, one `Bytes` per chunk) dominates.
//!   Compare with `chunked_4k` to read off the per-chunk overhead.
//! - `decode/length`: `Decoder::length(65536)`, the floor: one split.
//!
//! Each iteration decodes a fresh `BytesMut` copy of the encoded body, made
//! in `iter_batched` setup and therefore not timed.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shadowtee::h1::{Decoded, Decoder};
use shadowtee_benches::chunked_body;

const BODY: usize = 64 * 1024;

fn drain(mut dec: Decoder, buf: &mut BytesMut) -> usize {
    let mut got = 0;
    loop {
        match dec.decode(buf) {
            Ok(Decoded::Data(d)) => got += black_box(d).len(),
            Ok(Decoded::Done) => return got,
            Ok(Decoded::NeedMore) => panic!("bench input is incomplete"),
            Err(e) => panic!("bench input is invalid: {e}"),
        }
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(BODY as u64));

    for (name, chunk) in [("chunked_4k", 4096), ("chunked_16b", 16)] {
        let encoded = BytesMut::from(&chunked_body(BODY, chunk)[..]);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || encoded.clone(),
                |buf| {
                    let got = drain(Decoder::chunked(), buf);
                    debug_assert_eq!(got, BODY);
                    got
                },
                BatchSize::LargeInput,
            )
        });
    }

    let plain = BytesMut::from(&vec![b'x'; BODY][..]);
    g.bench_function("length", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |buf| drain(Decoder::length(BODY as u64), buf),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);

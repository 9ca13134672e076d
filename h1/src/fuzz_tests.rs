//! Deterministic randomized ("poor man's fuzz") tests of the codec: byte
//! soups built from the tokens that matter to framing, fed at random split
//! points. Invariants: never panic; a rejected request consumes nothing; an
//! accepted request re-serialises to a head that parses to the same framing;
//! the body decoders never hand out more bytes than they were given.

use bytes::BytesMut;

use super::request::{parse_request, BodyFraming, RequestLimits};
use super::response::parse_response;
use super::write::{write_request_head, OutFraming, RequestEdits};
use super::{Decoded, Decoder};

/// xorshift64*: deterministic, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"CONNECT ",
    b"/",
    b"/a?b=c",
    b"http://h/x",
    b"*",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: a",
    b"Host: b",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"chunked",
    b"gzip",
    b", ",
    b"0",
    b"5",
    b"18446744073709551616",
    b"-1",
    b"Connection: ",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"X-Forwarded-For: 10.0.0.1",
    b": ",
    b" ",
    b"\t",
    b"\0",
    b"\x7f",
    b"\xff",
    b"x-a: b",
    b";ext=1",
    b"abcde",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5, 5\r\n",
];

fn soup(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    if rng.below(3) > 0 {
        // Mostly request-shaped: a line, some fields, an end.
        v.extend_from_slice(PIECES[rng.below(4)]);
        v.extend_from_slice(PIECES[4 + rng.below(4)]);
        v.extend_from_slice(PIECES[8 + rng.below(3)]);
        v.extend_from_slice(b"\r\n");
        if rng.below(4) > 0 {
            v.extend_from_slice(b"Host: a\r\n");
        }
    }
    for _ in 0..rng.below(12) {
        v.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        if rng.below(2) == 0 {
            v.extend_from_slice(b"\r\n");
        }
    }
    v.extend_from_slice(b"\r\n\r\n");
    v
}

#[test]
fn request_parser_holds_its_invariants_on_random_input() {
    let limits = RequestLimits {
        max_header_bytes: 4096,
    };
    let (mut accepted, mut framed) = (0, 0);
    for seed in 1..20_000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let input = soup(&mut rng);
        let split = rng.below(input.len() + 1);
        let mut buf = BytesMut::from(&input[..split]);
        let first = parse_request(&mut buf, &limits);
        if let Ok(None) = first {
            assert_eq!(
                buf.len(),
                split,
                "seed {seed}: partial parse consumed bytes"
            );
            buf.extend_from_slice(&input[split..]);
        } else {
            buf = BytesMut::from(&input[..]);
        }
        let before = buf.len();
        match parse_request(&mut buf, &limits) {
            Err(_) => assert_eq!(
                buf.len(),
                before,
                "seed {seed}: a rejected head consumed bytes"
            ),
            Ok(None) => assert_eq!(buf.len(), before, "seed {seed}"),
            Ok(Some(head)) => {
                let framing: OutFraming = head.framing.into();
                let mut out = BytesMut::new();
                write_request_head(&mut out, &head, &RequestEdits::default(), framing);
                let again = parse_request(&mut out, &RequestLimits::default())
                    .unwrap_or_else(|k| {
                        panic!(
                            "seed {seed}: written head rejected: {k:?} {:?}",
                            String::from_utf8_lossy(&input)
                        )
                    })
                    .unwrap_or_else(|| panic!("seed {seed}: written head incomplete"));
                assert_eq!(again.method(), head.method(), "seed {seed}");
                assert_eq!(again.framing, head.framing, "seed {seed}");
                if head.framing != BodyFraming::None {
                    framed += 1;
                }
                accepted += 1;
                assert!(out.is_empty(), "seed {seed}: written head left bytes");
            }
        }
    }
    // The soup must exercise the accepting path too, not only rejections.
    assert!(
        accepted > 500 && framed > 50,
        "accepted {accepted}, with a body {framed}"
    );
}

#[test]
fn response_parser_and_decoders_never_panic_on_random_input() {
    for seed in 1..20_000u64 {
        let mut rng = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        if rng.below(4) == 0 {
            input.clear();
        }
        input.extend_from_slice(&soup(&mut rng));
        for _ in 0..rng.below(6) {
            input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
        let mut buf = BytesMut::from(&input[..]);
        let total = buf.len();
        if let Ok(Some(resp)) = parse_response(&mut buf, 4096, rng.below(2) == 0) {
            let mut dec = resp.decoder();
            let mut out = 0usize;
            for _ in 0..64 {
                match dec.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => out += d.len(),
                    Ok(Decoded::Done) | Err(_) => break,
                    Ok(Decoded::NeedMore) => {
                        let _ = dec.on_eof();
                        break;
                    }
                }
            }
            assert!(
                out <= total,
                "seed {seed}: decoder produced more than its input"
            );
        }
        // The chunked decoder on the raw soup, byte by byte.
        let mut dec = Decoder::chunked();
        let mut b = BytesMut::new();
        for &byte in &input {
            b.extend_from_slice(&[byte]);
            match dec.decode(&mut b) {
                Err(_) | Ok(Decoded::Done) => break,
                _ => {}
            }
        }
    }
}

//! Request-head framing / smuggling suite (docs/SPEC.md "Framing policy").
//!
//! Every accepted head is fed split at every byte offset and must parse the
//! same way with pipelined bytes left in the buffer; every rejected head must
//! map to its exact `Error` and leave the buffer untouched at every prefix; every
//! accepted head is written upstream and re-parsed to the same method, target,
//! host and framing.

use super::*;

use crate::write::{write_request_head, OutFraming, RequestEdits};

const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n";
const CLIENT: &str = "192.0.2.7";

fn lim() -> RequestLimits {
    RequestLimits::default()
}

fn small(max_header_bytes: usize) -> RequestLimits {
    RequestLimits { max_header_bytes }
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)])
        .escape_debug()
        .to_string();
    if b.len() > 200 {
        format!("{s}...({} bytes)", b.len())
    } else {
        s
    }
}

/// Everything a parse produced, owned, so two parses can be compared.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    raw: Vec<u8>,
    method: Vec<u8>,
    target: Vec<u8>,
    path: Vec<u8>,
    version: Version,
    host: Option<Vec<u8>>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: Option<Vec<u8>>,
    forwarded_for: Option<Vec<u8>>,
    is_head: bool,
    fields: Vec<(Vec<u8>, Vec<u8>, bool)>,
}

fn summary(h: &RequestHead) -> Summary {
    Summary {
        raw: h.raw.to_vec(),
        method: h.method().to_vec(),
        target: h.target().to_vec(),
        path: h.path().to_vec(),
        version: h.version,
        host: h.host().map(<[u8]>::to_vec),
        framing: h.framing,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
        upgrade: h.upgrade.map(|s| s.get(&h.raw).to_vec()),
        forwarded_for: h.forwarded_for.map(|s| s.get(&h.raw).to_vec()),
        is_head: h.is_head,
        fields: h
            .fields
            .iter()
            .map(|f| (h.name(f).to_vec(), h.value(f).to_vec(), f.hop))
            .collect(),
    }
}

fn try_parse(input: &[u8], limits: &RequestLimits) -> (Result<Option<Summary>, Error>, BytesMut) {
    let mut buf = BytesMut::from(input);
    let r = parse_request(&mut buf, limits).map(|o| o.map(|h| summary(&h)));
    (r, buf)
}

/// Offsets to split an input at: all of them for small inputs, a stride for big ones.
fn offsets(len: usize) -> impl Iterator<Item = usize> {
    let step = 1 + len / 1024;
    (0..len).step_by(step).chain(len.saturating_sub(16)..len)
}

/// `head` must be accepted whole and at every split point, identically, with
/// pipelined bytes left behind; its upstream form must re-parse consistently.
#[track_caller]
fn accept_with(head: &[u8], limits: &RequestLimits) -> RequestHead {
    let mut whole = BytesMut::from(head);
    whole.extend_from_slice(NEXT);
    let h = match parse_request(&mut whole, limits) {
        Ok(Some(h)) => h,
        other => panic!(
            "{:?}: want a head, got {:?}",
            show(head),
            other.map(|o| o.is_some())
        ),
    };
    assert_eq!(&h.raw[..], head, "raw of {:?}", show(head));
    assert_eq!(&whole[..], NEXT, "pipelined bytes of {:?}", show(head));
    let want = summary(&h);
    for k in offsets(head.len()) {
        let mut buf = BytesMut::from(&head[..k]);
        match parse_request(&mut buf, limits) {
            Ok(None) => {}
            other => panic!(
                "{:?} split at {k}: prefix gave {:?}",
                show(head),
                other.map(|o| o.is_some())
            ),
        }
        assert_eq!(&buf[..], &head[..k], "prefix consumed at {k}");
        buf.extend_from_slice(&head[k..]);
        buf.extend_from_slice(NEXT);
        let got = parse_request(&mut buf, limits).map(|o| o.map(|h| summary(&h)));
        match got {
            Ok(Some(s)) => assert_eq!(s, want, "{:?} split at {k}", show(head)),
            other => panic!(
                "{:?} split at {k}: {:?}",
                show(head),
                other.map(|o| o.is_some())
            ),
        }
        assert_eq!(
            &buf[..],
            NEXT,
            "{:?} split at {k}: pipelined bytes",
            show(head)
        );
        // And the pipelined request behind it is intact.
        let next = parse_request(&mut buf, limits).unwrap().unwrap();
        assert_eq!(next.target(), b"/next");
        assert!(buf.is_empty());
    }
    check_reparse(&h);
    h
}

#[track_caller]
fn accept(head: &[u8]) -> RequestHead {
    accept_with(head, &lim())
}

/// `input` must be rejected with exactly `want`, with nothing split off the
/// buffer; every prefix is either incomplete or the same status, never a head.
#[track_caller]
fn reject_with(input: &[u8], limits: &RequestLimits, want: Error) {
    let (r, buf) = try_parse(input, limits);
    assert_eq!(r, Err(want), "input {:?}", show(input));
    assert_eq!(
        &buf[..],
        input,
        "rejected input was consumed: {:?}",
        show(input)
    );
    // With a smuggled request behind it: same verdict, nothing consumed.
    let mut both = input.to_vec();
    both.extend_from_slice(NEXT);
    let (r, buf) = try_parse(&both, limits);
    assert_eq!(
        r.map(|_| ()),
        Err(want),
        "input + pipelined {:?}",
        show(input)
    );
    assert_eq!(&buf[..], &both[..]);
    for k in offsets(input.len()) {
        let (r, buf) = try_parse(&input[..k], limits);
        match r {
            Ok(None) => {}
            Err(e) => assert_eq!(
                e.status(),
                want.status(),
                "{:?} prefix {k} gave {e:?}",
                show(input)
            ),
            Ok(Some(_)) => panic!("{:?}: prefix {k} was accepted", show(input)),
        }
        assert_eq!(&buf[..], &input[..k], "prefix {k} consumed");
    }
}

#[track_caller]
fn reject(input: &[u8], want: Error) {
    reject_with(input, &lim(), want)
}

fn bad(why: &'static str) -> Error {
    Error::Malformed(why)
}

fn write_up(h: &RequestHead, edits: &RequestEdits<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_request_head(&mut out, h, edits, OutFraming::from(h.framing));
    out.to_vec()
}

/// Header lines of a written head as (lowercase name, value).
fn written_fields(out: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(out);
    assert!(text.ends_with("\r\n\r\n"), "unterminated head {text:?}");
    text[..text.len() - 4]
        .split("\r\n")
        .skip(1)
        .map(|l| {
            let (n, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (n.to_ascii_lowercase(), v.to_string())
        })
        .collect()
}

fn count(fields: &[(String, String)], name: &str) -> usize {
    fields.iter().filter(|(n, _)| n == name).count()
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The written upstream head re-parses to the same request, carries no
/// client hop-by-hop field and exactly one canonical framing field.
#[track_caller]
fn check_reparse(h: &RequestHead) {
    let plain = RequestEdits::default();
    let full = RequestEdits {
        client_ip: Some(CLIENT),
        upgrade: true,
        ..RequestEdits::default()
    };
    for edits in [plain, full] {
        let out = write_up(h, &edits);
        let mut buf = BytesMut::from(&out[..]);
        let re = match parse_request(&mut buf, &lim()) {
            Ok(Some(re)) => re,
            other => panic!(
                "written head {:?} of {:?} does not re-parse: {:?}",
                show(&out),
                show(&h.raw),
                other.map(|o| o.is_some())
            ),
        };
        assert!(buf.is_empty(), "written head not consumed whole");
        assert_eq!(re.method(), h.method());
        let t = h.target();
        let want_target: Vec<u8> = if t.is_empty() || t[0] == b'?' {
            [b"/", t].concat()
        } else {
            t.to_vec()
        };
        assert_eq!(re.target(), &want_target[..], "target of {:?}", show(&out));
        assert_eq!(re.host().unwrap_or(b""), h.host().unwrap_or(b""));
        assert_eq!(re.framing, h.framing, "framing of {:?}", show(&out));
        assert_eq!(re.version, Version::Http11);
        assert!(
            re.keep_alive,
            "upstream head asks to close: {:?}",
            show(&out)
        );
        assert!(!re.expect_continue, "Expect forwarded: {:?}", show(&out));
        let want_up = if edits.upgrade {
            h.upgrade.map(|s| s.get(&h.raw))
        } else {
            None
        };
        assert_eq!(re.upgrade.map(|s| s.get(&re.raw)), want_up);
        // End-to-end fields survive in order, byte for byte.
        let e2e = |x: &RequestHead| -> Vec<(Vec<u8>, Vec<u8>)> {
            x.fields
                .iter()
                .filter(|f| !f.hop)
                .map(|f| (x.name(f).to_vec(), x.value(f).to_vec()))
                .collect()
        };
        assert_eq!(e2e(&re), e2e(h), "end-to-end fields of {:?}", show(&out));

        let fields = written_fields(&out);
        for hop in ["keep-alive", "proxy-connection", "te", "expect"] {
            assert_eq!(count(&fields, hop), 0, "{hop} written: {:?}", show(&out));
        }
        let upgrading = edits.upgrade && h.upgrade.is_some();
        for hop in ["connection", "upgrade"] {
            assert_eq!(
                count(&fields, hop),
                usize::from(upgrading),
                "{hop}: {:?}",
                show(&out)
            );
        }
        if upgrading {
            assert_eq!(get(&fields, "connection"), Some("upgrade"));
        }
        assert_eq!(count(&fields, "host"), 1, "host lines of {:?}", show(&out));
        assert!(count(&fields, "x-forwarded-for") <= 1);
        match h.framing {
            BodyFraming::Length(n) => {
                assert_eq!(count(&fields, "content-length"), 1);
                assert_eq!(get(&fields, "content-length"), Some(n.to_string().as_str()));
                assert_eq!(count(&fields, "transfer-encoding"), 0);
            }
            BodyFraming::Chunked => {
                assert_eq!(count(&fields, "content-length"), 0);
                assert_eq!(count(&fields, "transfer-encoding"), 1);
                assert_eq!(get(&fields, "transfer-encoding"), Some("chunked"));
            }
            BodyFraming::None => {
                assert_eq!(count(&fields, "transfer-encoding"), 0);
                assert!(matches!(get(&fields, "content-length"), None | Some("0")));
            }
        }
    }
}

fn upstream(head: &[u8], edits: &RequestEdits<'_>) -> Vec<(String, String)> {
    let h = accept(head);
    written_fields(&write_up(&h, edits))
}

fn request_line(head: &[u8]) -> String {
    let h = accept(head);
    let out = write_up(&h, &RequestEdits::default());
    let text = String::from_utf8(out).unwrap();
    text.split("\r\n").next().unwrap().to_string()
}

// ---------------------------------------------------------------- shotgun

#[test]
fn valid_heads_parse_identically_at_every_split() {
    let heads: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /a/b?c=d&e=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
        b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT /p HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        b"GET http://a.b:81/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
        b"GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Obs: \x80\xfe\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\n\r\n",
        b"get /lower HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for head in heads {
        accept(head);
    }
}

#[test]
fn leading_empty_line_is_ignored() {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line first.
    let h = accept(b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method(), b"GET");
    assert_eq!(h.target(), b"/x");
}

#[test]
fn pipelined_heads_and_body_bytes_stay_in_the_buffer() {
    let mut buf = BytesMut::from(
        &b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\nGET /4"[..],
    );
    let h1 = parse_request(&mut buf, &lim()).unwrap().unwrap();
    assert_eq!(h1.target(), b"/1");
    assert_eq!(h1.framing, BodyFraming::Length(5));
    assert!(buf.starts_with(b"hello"));
    let _ = buf.split_to(5);
    let h2 = parse_request(&mut buf, &lim()).unwrap().unwrap();
    assert_eq!(h2.target(), b"/2");
    let h3 = parse_request(&mut buf, &lim()).unwrap().unwrap();
    assert_eq!(h3.target(), b"/3");
    assert_eq!(parse_request(&mut buf, &lim()).unwrap().map(|_| ()), None);
    assert_eq!(&buf[..], b"GET /4");
    let mut empty = BytesMut::new();
    assert!(parse_request(&mut empty, &lim()).unwrap().is_none());
}

#[test]
fn long_method_with_longest_target_is_split_independent() {
    // The 414 early-out for an unterminated request line must count the target,
    // not the method: this head is valid whole, so it is valid at any split.
    let method = "X".repeat(64);
    let target = format!("/{}", "t".repeat(MAX_TARGET_LEN - 1));
    let head = format!("{method} {target} HTTP/1.1\r\nHost: a\r\n\r\n");
    let h = accept(head.as_bytes());
    assert_eq!(h.target().len(), MAX_TARGET_LEN);
}

// ---------------------------------------------------------------- Content-Length

#[test]
fn content_length_and_transfer_encoding_together_400() {
    let both = bad("both Content-Length and Transfer-Encoding");
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        both,
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        both,
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        both,
    );
    // TE.CL / CL.TE smuggling payloads: nothing behind them is ever parsed.
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        both,
    );
}

#[test]
fn content_length_duplicates() {
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        bad("conflicting Content-Length"),
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\ncontent-length: 5\r\n\r\n",
        bad("conflicting Content-Length"),
    );
    let h = accept(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::Length(5));
    assert_eq!(h.content_length(), Some(5));
    assert!(h
        .fields
        .iter()
        .all(|f| !h.name(f).eq_ignore_ascii_case(b"content-length") || f.hop));
    let up = upstream(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 05\r\n\r\n",
        &RequestEdits::default(),
    );
    assert_eq!(count(&up, "content-length"), 1);
    assert_eq!(get(&up, "content-length"), Some("5"));
}

#[test]
fn content_length_lists_400() {
    for v in ["5, 5", "5,5", "5, 6", "5,", ",5", "5 ,5"] {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n");
        reject(head.as_bytes(), bad("invalid Content-Length"));
    }
}

#[test]
fn content_length_malformed_400() {
    let cases: &[&[u8]] = &[
        b"+5",
        b"-5",
        b"-0",
        b"5 5",
        b"5\t5",
        b"0x5",
        b"0X5",
        b"5a",
        b"a",
        b"1e3",
        b"5.0",
        b"",
        b"\xd9\xa5",             // ARABIC-INDIC DIGIT FIVE
        b"00000000000000000005", // 20 digits
        b"18446744073709551615", // u64::MAX, 20 digits
        b"18446744073709551616", // u64::MAX + 1
        b"99999999999999999999999",
        b"340282366920938463463374607431768211456",
    ];
    for v in cases {
        let mut head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n\r\n");
        reject(&head, bad("invalid Content-Length"));
    }
}

#[test]
fn content_length_rewritten_canonically() {
    let h = accept(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   007  \r\n\r\n");
    assert_eq!(h.framing, BodyFraming::Length(7));
    let up = written_fields(&write_up(&h, &RequestEdits::default()));
    assert_eq!(up.iter().filter(|(n, _)| n == "content-length").count(), 1);
    assert_eq!(get(&up, "content-length"), Some("7"));
    // 19 digits is the longest accepted and fits u64.
    let h = accept(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::Length(9_999_999_999_999_999_999));
    // Zero: no body; POST still says so explicitly upstream, GET does not.
    let h = accept(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::None);
    assert!(!h.has_body());
    let up = written_fields(&write_up(&h, &RequestEdits::default()));
    assert_eq!(get(&up, "content-length"), Some("0"));
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        &RequestEdits::default(),
    );
    assert_eq!(count(&up, "content-length"), 0);
}

// ---------------------------------------------------------------- Transfer-Encoding

#[test]
fn transfer_encoding_other_codings_501() {
    for v in [
        "gzip",
        "gzip, chunked",
        "identity",
        "chunked, gzip",
        "deflate",
        "x-custom",
        "chunked;q=1",
    ] {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        reject(head.as_bytes(), Error::UnsupportedCoding);
    }
}

#[test]
fn transfer_encoding_in_http10_400() {
    for v in ["chunked", "gzip", "gzip, chunked"] {
        let head = format!("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        reject(head.as_bytes(), bad("Transfer-Encoding in HTTP/1.0"));
    }
}

#[test]
fn transfer_encoding_chunked_twice_400() {
    for v in ["chunked, chunked", "chunked,chunked", "Chunked , CHUNKED"] {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        reject(head.as_bytes(), bad("chunked applied more than once"));
    }
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        bad("duplicate Transfer-Encoding"),
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
        Error::UnsupportedCoding,
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
        bad("empty Transfer-Encoding"),
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n",
        bad("empty Transfer-Encoding"),
    );
}

#[test]
fn transfer_encoding_chunked_is_case_insensitive() {
    for v in ["chunked", "CHUNKED", "Chunked", "  chunked\t"] {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        let h = accept(head.as_bytes());
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert_eq!(h.content_length(), None);
    }
}

// ---------------------------------------------------------------- field syntax

#[test]
fn whitespace_before_colon_400() {
    for line in [
        &b"Host : a"[..],
        b"Host\t: a",
        b"Content-Length : 5",
        b"Transfer-Encoding : chunked",
        b"Transfer-Encoding\t: chunked",
        b"X-A  : b",
    ] {
        let mut head = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
        if line.starts_with(b"Host") {
            head = b"POST / HTTP/1.1\r\n".to_vec();
        }
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n\r\n");
        reject(&head, bad("invalid header name"));
    }
}

#[test]
fn obs_fold_400() {
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        bad("invalid header name"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
        bad("invalid header name"),
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        bad("invalid header name"),
    );
    // A fold right after the request line.
    reject(
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        bad("invalid header name"),
    );
}

#[test]
fn control_bytes_in_values_400() {
    for ctl in (0u8..0x20).filter(|&b| b != b'\t').chain([0x7f]) {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b".to_vec();
        head.push(ctl);
        head.extend_from_slice(b"c\r\n\r\n");
        let want = match ctl {
            b'\r' => bad("invalid header value"),
            b'\n' => bad("bare LF in request head"), // "X-A: b\nc" is two lines
            _ => bad("invalid header value"),
        };
        if ctl == b'\n' {
            // "c" on its own is a line without a colon: rejected either way.
            let (r, buf) = try_parse(&head, &lim());
            assert_eq!(r.map_err(Error::status), Err(400), "LF in value");
            assert_eq!(&buf[..], &head[..]);
            continue;
        }
        reject(&head, want);
    }
    // In the Host value too, and at the start or end of a value.
    reject(
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        bad("invalid header value"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n",
        bad("invalid header value"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\r\n\r\n",
        bad("invalid header value"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \rb\r\n\r\n",
        bad("invalid header value"),
    );
}

#[test]
fn invalid_name_bytes_400() {
    let names: &[&[u8]] = &[
        b"X(A)",
        b"X A",
        b"\"x\"",
        b"x@y",
        b"x/y",
        b"x=y",
        b"[x]",
        b"{x}",
        b"x;y",
        b"x,y",
        b"x\\y",
        b"x?y",
        b"\xc3\xa4",
        b"x\x00y",
        b"x\x7fy",
        b"x\x01",
        b"",
    ];
    for name in names {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        head.extend_from_slice(name);
        head.extend_from_slice(b": v\r\n\r\n");
        reject(&head, bad("invalid header name"));
    }
}

#[test]
fn line_without_colon_400() {
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n",
        bad("invalid header name"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        bad("invalid header name"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n",
        bad("invalid header name"),
    );
}

#[test]
fn bare_lf_line_endings_400() {
    reject(
        b"GET / HTTP/1.1\nHost: a\n\n",
        bad("bare LF in request head"),
    );
    reject(
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        bad("bare LF in request head"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        bad("bare LF in request head"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        bad("bare LF in request head"),
    );
    reject(
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("bare LF in request head"),
    );
    reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nX: y\nContent-Length: 5\r\n\r\n",
        bad("bare LF in request head"),
    );
}

// ---------------------------------------------------------------- Host

#[test]
fn host_rules() {
    reject(b"GET / HTTP/1.1\r\n\r\n", bad("missing Host"));
    reject(b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", bad("missing Host"));
    let h = accept(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.host(), None);
    assert_eq!(h.version, Version::Http10);
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        bad("duplicate Host"),
    );
    reject(
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        bad("duplicate Host"),
    );
    reject(
        b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n",
        bad("duplicate Host"),
    );
    reject(
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        bad("duplicate Host"),
    );
    for v in ["a b", "a/b", "a@b", "a\\b", "a?b", "a#b", "a\"b", "a<b"] {
        let head = format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
        reject(head.as_bytes(), bad("invalid Host"));
    }
    let h = accept(b"GET / HTTP/1.1\r\nHost:  Example.COM:8080 \r\n\r\n");
    assert_eq!(h.host(), Some(&b"Example.COM:8080"[..]));
    let up = written_fields(&write_up(
        &h,
        &RequestEdits {
            host_suffix: "-shadow",
            ..Default::default()
        },
    ));
    assert_eq!(get(&up, "host"), Some("Example.COM-shadow:8080"));
    // Empty Host (RFC 9112 §3.2 allows it) is kept empty.
    let h = accept(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(h.host(), Some(&b""[..]));
}

// ---------------------------------------------------------------- target forms

#[test]
fn absolute_form_authority_becomes_host() {
    let h = accept(b"GET http://a.b:8080/x/y?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(h.host(), Some(&b"a.b:8080"[..]));
    assert_eq!(h.target(), b"/x/y?q=1");
    assert_eq!(h.path(), b"/x/y");
    let up = written_fields(&write_up(&h, &RequestEdits::default()));
    assert_eq!(count(&up, "host"), 1);
    assert_eq!(get(&up, "host"), Some("a.b:8080"));

    let h = accept(b"GET HTTPS://A.B/ HTTP/1.1\r\nHost: A.B\r\n\r\n");
    assert_eq!(h.host(), Some(&b"A.B"[..]));
    assert_eq!(h.target(), b"/");

    // HTTP/1.0 with absolute-form and no Host field.
    let h = accept(b"GET http://a.b/z HTTP/1.0\r\n\r\n");
    assert_eq!(h.host(), Some(&b"a.b"[..]));
    assert_eq!(h.target(), b"/z");

    assert_eq!(
        request_line(b"GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n"),
        "GET / HTTP/1.1"
    );
    let h = accept(b"GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n");
    assert_eq!(h.target(), b"");
    assert_eq!(h.path(), b"");
    assert_eq!(
        request_line(b"GET http://a.b?q=1 HTTP/1.1\r\nHost: a.b\r\n\r\n"),
        "GET /?q=1 HTTP/1.1"
    );
    assert_eq!(
        request_line(b"GET http://[::1]:9/p HTTP/1.1\r\nHost: x\r\n\r\n"),
        "GET /p HTTP/1.1"
    );
}

#[test]
fn absolute_form_invalid_400() {
    for t in [
        "http://",
        "https://",
        "http:///x",
        "http://?q",
        "http://a b/",
    ] {
        let head = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (r, buf) = try_parse(head.as_bytes(), &lim());
        assert_eq!(r.map_err(Error::status), Err(400), "{t}");
        assert_eq!(&buf[..], head.as_bytes());
    }
    reject(
        b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("invalid authority in absolute-form target"),
    );
    reject(
        b"GET http://a\"b/ HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("invalid authority in absolute-form target"),
    );
    for t in [
        "http://u@a/",
        "http://u:p@a/x",
        "ftp://a/",
        "http:/a",
        "a.b/x",
        "x",
        "http:a",
    ] {
        let head = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
        reject(head.as_bytes(), bad("invalid request target"));
    }
}

#[test]
fn asterisk_form_only_for_options() {
    let h = accept(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target(), b"*");
    assert_eq!(h.path(), b"");
    assert_eq!(
        request_line(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        "OPTIONS * HTTP/1.1"
    );
    for m in ["GET", "HEAD", "POST", "options", "DELETE", "M-SEARCH"] {
        let head = format!("{m} * HTTP/1.1\r\nHost: a\r\n\r\n");
        reject(
            head.as_bytes(),
            bad("asterisk-form target on a method other than OPTIONS"),
        );
    }
    reject(
        b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("invalid request target"),
    );
    reject(
        b"OPTIONS ** HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("invalid request target"),
    );
    accept(b"OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn connect_405() {
    reject(
        b"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n",
        Error::MethodNotAllowed,
    );
    reject(b"CONNECT a.b:443 HTTP/1.0\r\n\r\n", Error::MethodNotAllowed);
    reject(
        b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
        Error::MethodNotAllowed,
    );
    // Methods are case-sensitive: "connect" is not CONNECT, and its
    // authority-form target is no valid target for any other method.
    reject(
        b"connect a.b:443 HTTP/1.1\r\nHost: a.b\r\n\r\n",
        bad("invalid request target"),
    );
}

#[test]
fn methods() {
    // Case is preserved (RFC 9110 §9.1: methods are case-sensitive tokens).
    let h = accept(b"get / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method(), b"get");
    let h = accept(b"head / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!h.is_head, "`head` is not HEAD");
    assert!(accept(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").is_head);
    accept(b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n");
    accept(b"X-!#$%&'*+.^_`|~1 / HTTP/1.1\r\nHost: a\r\n\r\n");
    let bad_methods: &[&[u8]] = &[
        b"G(ET",
        b"GE\"T",
        b"GE,T",
        b"GE:T",
        b"GE\x00T",
        b"GE\x7fT",
        b"G\xc3\x89T",
        b"GE@T",
        b"GE[T",
        b"GE/T",
    ];
    for m in bad_methods {
        let mut head = m.to_vec();
        head.extend_from_slice(b" / HTTP/1.1\r\nHost: a\r\n\r\n");
        reject(&head, bad("invalid method"));
    }
    for head in [
        &b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\tHTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r\nHost: a\r\n\r\n",
    ] {
        let (r, buf) = try_parse(head, &lim());
        assert_eq!(r.map_err(Error::status), Err(400), "{:?}", show(head));
        assert_eq!(&buf[..], head);
    }
}

// ---------------------------------------------------------------- versions and sizes

#[test]
fn unsupported_versions_505() {
    for v in [
        "HTTP/2.0",
        "HTTP/1.2",
        "HTTP/0.9",
        "HTTP/3.0",
        "HTTP/9.9",
        "HTTP/2",
        "HTTP/10.0",
    ] {
        let head = format!("GET / {v}\r\nHost: a\r\n\r\n");
        reject(head.as_bytes(), Error::UnsupportedVersion);
    }
}

#[test]
fn garbage_versions_400() {
    for v in [
        "http/1.1",
        "HTTP/1.x",
        "FOO/1.1",
        "HTTPS/1.1",
        "HTTP/a.b",
        "HTTP/ 1.1",
        "HTTP/1.1x",
        "HTTP/1.10",
        "HTTP/",
        "HTTP/-1.0",
    ] {
        let head = format!("GET / {v}\r\nHost: a\r\n\r\n");
        let (r, buf) = try_parse(head.as_bytes(), &lim());
        assert_eq!(r.map_err(Error::status), Err(400), "{v}");
        assert_eq!(&buf[..], head.as_bytes());
    }
    reject(
        b"GET / FOO/1.1\r\nHost: a\r\n\r\n",
        bad("malformed request line"),
    );
    // Extra request-line elements are malformed, not an unsupported version,
    // even when the last one looks like a version.
    reject(
        b"GET / x HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("malformed request line"),
    );
    reject(
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("malformed request line"),
    );
    reject(
        b"GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n",
        bad("malformed request line"),
    );
    // Bare CR ending the request line.
    reject(
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        bad("invalid line ending"),
    );
    reject(
        b"GET / http/1.1\r\nHost: a\r\n\r\n",
        bad("malformed request line"),
    );
}

#[test]
fn too_many_fields_431() {
    // X-Forwarded-For among them, so the upstream copy (which always carries
    // one) stays within MAX_HEADERS too.
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n".to_vec();
    for i in 0..MAX_HEADERS - 2 {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut ok = head.clone();
    ok.extend_from_slice(b"\r\n");
    let h = accept(&ok);
    assert_eq!(h.fields.len(), MAX_HEADERS);
    head.extend_from_slice(b"X-Last: v\r\n\r\n");
    reject(&head, Error::HeadTooLarge);
}

#[test]
fn head_over_max_header_bytes_431() {
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    let fixed = head.len() + 4;
    head.extend(std::iter::repeat_n(b'p', 256 - fixed));
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.len(), 256);
    accept_with(&head, &small(256));
    reject_with(&head, &small(255), Error::HeadTooLarge);
    // Default limit: 64 KiB of one field.
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'b', 70 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    reject(&big, Error::HeadTooLarge);
    // Incomplete but already over the limit: no need to wait for the end.
    let (r, _) = try_parse(&big[..65 * 1024], &lim());
    assert_eq!(r, Err(Error::HeadTooLarge));
}

#[test]
fn over_long_target_414() {
    let ok_target = format!("/{}", "a".repeat(MAX_TARGET_LEN - 1));
    accept(format!("GET {ok_target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
    let head = format!("GET {long} HTTP/1.1\r\nHost: a\r\n\r\n");
    reject(head.as_bytes(), Error::UriTooLong);
    // Still arriving, no line end yet: 414 without waiting for the rest.
    let head = format!("GET /{}", "a".repeat(MAX_TARGET_LEN + 64));
    let (r, buf) = try_parse(head.as_bytes(), &lim());
    assert_eq!(r, Err(Error::UriTooLong));
    assert_eq!(buf.len(), head.len());
    // A request line longer than a small max_header_bytes: 414, not 431.
    let head = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(600));
    reject_with(head.as_bytes(), &small(512), Error::UriTooLong);
}

// ---------------------------------------------------------------- connection semantics

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
            true,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false),
        (
            b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
            false,
        ),
    ];
    for (head, want) in cases {
        assert_eq!(accept(head).keep_alive, *want, "{:?}", show(head));
    }
}

#[test]
fn expect_continue() {
    let cases: &[(&[u8], bool)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
        // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored
        // (a 1.0 client would take the interim 100 for the final response).
        (
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
    ];
    for (head, want) in cases {
        assert_eq!(accept(head).expect_continue, *want, "{:?}", show(head));
    }
}

#[test]
fn upgrade_only_with_connection_upgrade() {
    let ws = |h: &RequestHead| h.upgrade.map(|s| s.get(&h.raw).to_vec());
    let h =
        accept(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(ws(&h), Some(b"websocket".to_vec()));
    let h = accept(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n");
    assert_eq!(ws(&h), Some(b"websocket".to_vec()));
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgraded\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        assert_eq!(ws(&accept(head)), None, "{:?}", show(head));
    }
    // Upgrade is written only when the engine tunnels it, canonically.
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-A\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n";
    let up = upstream(head, &RequestEdits::default());
    assert_eq!(
        count(&up, "upgrade") + count(&up, "connection") + count(&up, "x-a"),
        0
    );
    let up = upstream(
        head,
        &RequestEdits {
            upgrade: true,
            ..Default::default()
        },
    );
    assert_eq!(get(&up, "connection"), Some("upgrade"));
    assert_eq!(get(&up, "upgrade"), Some("websocket"));
    assert_eq!(count(&up, "x-a"), 0);
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        &RequestEdits {
            upgrade: true,
            ..Default::default()
        },
    );
    assert_eq!(count(&up, "upgrade") + count(&up, "connection"), 0);
}

#[test]
fn connection_named_fields_are_hop_by_hop() {
    let h = accept(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A, x-b\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nx-a: 4\r\n\r\n",
    );
    let hop: Vec<(&[u8], bool)> = h.fields.iter().map(|f| (h.name(f), f.hop)).collect();
    assert_eq!(
        hop,
        [
            (&b"Host"[..], true),
            (b"Connection", true),
            (b"X-A", true),
            (b"X-B", true),
            (b"X-C", false),
            (b"x-a", true)
        ]
    );
    let up = written_fields(&write_up(&h, &RequestEdits::default()));
    assert_eq!(
        up,
        [("host".into(), "a".into()), ("x-c".into(), "3".into())]
    );
}

#[test]
fn connection_with_many_options_strips_every_named_field() {
    let names: Vec<String> = (0..12).map(|i| format!("x-opt-{i}")).collect();
    let mut head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, {}\r\n",
        names.join(", ")
    );
    for n in &names {
        head.push_str(&format!("{n}: secret\r\n"));
    }
    head.push_str("x-end: kept\r\n\r\n");
    let h = accept(head.as_bytes());
    assert!(!h.keep_alive);
    let up = written_fields(&write_up(&h, &RequestEdits::default()));
    assert_eq!(
        up,
        [("host".into(), "a".into()), ("x-end".into(), "kept".into())]
    );
}

#[test]
fn x_forwarded_for_appended() {
    let ip = RequestEdits {
        client_ip: Some(CLIENT),
        ..Default::default()
    };
    let up = upstream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ip);
    assert_eq!(get(&up, "x-forwarded-for"), Some("192.0.2.7"));
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:  10.0.0.1, 10.0.0.2 \r\n\r\n",
        &ip,
    );
    assert_eq!(count(&up, "x-forwarded-for"), 1);
    assert_eq!(
        get(&up, "x-forwarded-for"),
        Some("10.0.0.1, 10.0.0.2, 192.0.2.7")
    );
    let v6 = RequestEdits {
        client_ip: Some("::1"),
        ..Default::default()
    };
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 10.0.0.1\r\n\r\n",
        &v6,
    );
    assert_eq!(get(&up, "x-forwarded-for"), Some("10.0.0.1, ::1"));
    // Without a client address the existing value passes through once.
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        &RequestEdits::default(),
    );
    assert_eq!(get(&up, "x-forwarded-for"), Some("10.0.0.1"));
    // Several field lines are one list (RFC 9110 §5.3): none is dropped.
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n",
        &ip,
    );
    assert_eq!(count(&up, "x-forwarded-for"), 1);
    assert_eq!(
        get(&up, "x-forwarded-for"),
        Some("10.0.0.1, 10.0.0.2, 192.0.2.7")
    );
    // An empty field adds no empty list element.
    let up = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\n\r\n",
        &ip,
    );
    assert_eq!(get(&up, "x-forwarded-for"), Some("192.0.2.7"));
}

#[test]
fn hop_by_hop_fields_never_written_upstream() {
    let head = b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, TE\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nX-E2E: yes\r\n\r\n";
    let h = accept(head);
    assert_eq!(h.framing, BodyFraming::Chunked);
    for edits in [
        RequestEdits::default(),
        RequestEdits {
            client_ip: Some(CLIENT),
            ..Default::default()
        },
    ] {
        let up = written_fields(&write_up(&h, &edits));
        for hop in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "expect",
        ] {
            assert_eq!(count(&up, hop), 0, "{hop} forwarded");
        }
        assert_eq!(count(&up, "transfer-encoding"), 1);
        assert_eq!(get(&up, "transfer-encoding"), Some("chunked"));
        assert_eq!(get(&up, "x-e2e"), Some("yes"));
    }
}

#[test]
fn http10_without_host_is_written_with_a_host_field() {
    // Written upstream as HTTP/1.1, which requires Host (RFC 9112 §3.2): an
    // empty one when the client gave no authority.
    let h = accept(b"GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n");
    let out = write_up(&h, &RequestEdits::default());
    assert!(out.starts_with(b"GET /old HTTP/1.1\r\n"));
    assert_eq!(get(&written_fields(&out), "host"), Some(""));
}

// ---------------------------------------------------------------- smuggling

#[test]
fn mutated_heads_never_panic_and_round_trip() {
    // Every single-byte substitution of these heads by a framing-relevant
    // byte: rejected without consuming anything, or accepted and written
    // upstream so that it re-parses to the same request.
    let seeds: &[&[u8]] = &[
        b"POST /a?b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 12\r\nConnection: x-y\r\nX-Y: z\r\n\r\n",
        b"PUT http://h/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive, upgrade\r\nUpgrade: ws\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    ];
    let subst = [
        0u8, b'\r', b'\n', b' ', b'\t', b':', b',', b'0', b'9', b'x', b'/', b'?', b'*', 0x7f, 0x80,
    ];
    let mut accepted = 0;
    for seed in seeds {
        for i in 0..seed.len() {
            for &b in &subst {
                let mut m = seed.to_vec();
                m[i] = b;
                let mut buf = BytesMut::from(&m[..]);
                match parse_request(&mut buf, &lim()) {
                    Ok(Some(h)) => {
                        accepted += 1;
                        assert_eq!(h.raw.len() + buf.len(), m.len());
                        assert_eq!(&m[h.raw.len()..], &buf[..]);
                        check_reparse(&h);
                    }
                    Ok(None) | Err(_) => assert_eq!(&buf[..], &m[..], "{:?}", show(&m)),
                }
            }
        }
    }
    assert!(accepted > 100, "only {accepted} mutants accepted");
}

#[test]
fn empty_field_values_and_trailing_whitespace_keep_crlf_checks_exact() {
    let ok: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: v \t\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for raw in ok {
        let mut buf = BytesMut::from(*raw);
        let head = parse_request(&mut buf, &RequestLimits::default())
            .unwrap_or_else(|k| panic!("{:?}: {k:?}", String::from_utf8_lossy(raw)))
            .expect("complete");
        let mut out = BytesMut::new();
        write_request_head(&mut out, &head, &RequestEdits::default(), OutFraming::None);
        assert!(out.ends_with(b"\r\n\r\n"));
    }
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: v \t\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    ];
    for raw in bad {
        let mut buf = BytesMut::from(*raw);
        assert!(
            parse_request(&mut buf, &RequestLimits::default()).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(&buf[..], *raw, "a rejected head consumed bytes");
    }
}

#[test]
fn is_ascii_words_is_is_ascii() {
    for len in 0..40 {
        let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        assert!(is_ascii_words(&base), "{len}");
        for at in 0..len {
            for b in [0x80u8, 0xc3, 0xff] {
                let mut v = base.clone();
                v[at] = b;
                assert_eq!(is_ascii_words(&v), v.is_ascii(), "{len} {at}");
            }
        }
    }
}

// ------------------------------------------------------ fast path vs httparse

/// The same input through both paths: the full verdict (head, partial or
/// error) and what is left in the buffer must match.
#[track_caller]
fn same_both_ways(input: &[u8], limits: &RequestLimits) {
    let run = |fast: bool| {
        let mut buf = BytesMut::from(input);
        let r = parse_head(&mut buf, limits, &mut Vec::new(), fast).map(|o| o.map(|h| summary(&h)));
        (r, buf)
    };
    let (fast, fast_rest) = run(true);
    let (slow, slow_rest) = run(false);
    assert_eq!(fast, slow, "{}", show(input));
    assert_eq!(fast_rest, slow_rest, "{}", show(input));
}

#[test]
fn fast_path_takes_the_common_shapes() {
    let heads: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a:8/p?q HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Empty:\r\nX-Ws: \t v \t \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9 \xff\r\nX-Tab:\tv\tw\r\n\r\n",
        b"GET /p HTTP/1.1\r\nhost:a\r\nA:b\r\n\r\nNEXT",
    ];
    for &h in heads {
        let mut fields = Vec::new();
        let t = super::super::fast_head::tokenise(h, &mut fields, &mut [0; 128]);
        assert!(t.is_ok(), "{}", show(h));
        // Every proper prefix: partial, decided by the fast path too.
        for cut in 1..h
            .len()
            .min(h.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4)
        {
            let t = super::super::fast_head::tokenise(&h[..cut], &mut Vec::new(), &mut [0; 128]);
            assert_eq!(
                t.err(),
                Some(super::super::fast_head::Stop::Partial),
                "{}",
                show(&h[..cut])
            );
            same_both_ways(&h[..cut], &lim());
        }
        same_both_ways(h, &lim());
    }
    // The benches' head too, so that they measure this path.
    let browser = b"GET /api/v2/catalog/items?page=3&sort=price HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nCookie: session=6f1c2a9e4b7d40c1; theme=dark; cart=3\r\nConnection: keep-alive\r\n\r\n";
    assert!(super::super::fast_head::tokenise(browser, &mut Vec::new(), &mut [0; 128]).is_ok());
}

#[test]
fn fast_path_agrees_with_httparse_path_on_mutants() {
    // Valid heads of many shapes, then random byte edits (substitution,
    // insertion, deletion, truncation) with the bytes that matter to
    // tokenising: every verdict must be the same through both paths. In
    // debug builds each head the fast path accepts is also checked against
    // httparse's own tokens (`assert_httparse_agrees`).
    let (many, too_many) = crate::heads_with_most_fields(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let mut long = b"GET /".to_vec();
    long.resize(MAX_TARGET_LEN + 5, b'a');
    long.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut longest = b"GET /".to_vec();
    longest.resize(MAX_TARGET_LEN + 4, b'a');
    longest.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    let seeds: Vec<Vec<u8>> = vec![
        b"GET /api/v2/items?page=3 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: */*\r\nCookie: a=b; c=d\r\nConnection: keep-alive\r\n\r\n".to_vec(),
        b"POST /a?b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 12\r\nConnection: x-y\r\nX-Y: z\r\n\r\nbody".to_vec(),
        b"PUT http://h/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".to_vec(),
        b"GET / HTTP/1.0\r\nConnection: keep-alive, upgrade\r\nUpgrade: ws\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-E:\r\nX-T:\t a\tb \t\r\nX-O: \x80\xff\r\n\r\n".to_vec(),
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n".to_vec(),
        many,
        too_many,
        long,
        longest,
    ];
    let alphabet: &[u8] = &[
        0, b'\t', b'\n', b'\r', b' ', b':', b',', b'"', b'(', b'/', b'@', b'a', b'Z', b'0', b'H',
        b'.', 0x7f, 0x80, 0xc3, 0xff,
    ];
    let mut rng = crate::xorshift(0x2545_f491_4f6c_dd1d);
    let mut next = |n: usize| (rng() % n as u64) as usize;
    let (mut fast_taken, mut fast_partial, mut cases) = (0, 0, 0);
    for seed in &seeds {
        let rounds = if seed.len() > 1000 { 150 } else { 1500 };
        for _ in 0..rounds {
            let m = crate::mutate(seed, alphabet, &mut next);
            let limits = if next(8) == 0 {
                small(1 + next(m.len() + 1))
            } else {
                lim()
            };
            let window = &m[..m.len().min(limits.max_header_bytes)];
            let mut fields = Vec::new();
            match super::super::fast_head::tokenise(window, &mut fields, &mut [0; 128]) {
                Ok(_) => fast_taken += 1,
                Err(super::super::fast_head::Stop::Partial) => fast_partial += 1,
                Err(super::super::fast_head::Stop::Other) => {}
            }
            cases += 1;
            same_both_ways(&m, &limits);
        }
    }
    assert!(
        fast_taken > cases / 5,
        "fast path took only {fast_taken} of {cases}"
    );
    assert!(
        fast_partial > cases / 20,
        "fast path found only {fast_partial} of {cases} partial"
    );
}

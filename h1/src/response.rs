//! Response head parsing and response body framing (RFC 9112 §6.3), as read
//! from upstreams (primary and shadow) and by `loadtest`. Strict: CL+TE, bad
//! Content-Length or a malformed status line are errors (502 to the client,
//! and the upstream connection is discarded).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

#[cfg(debug_assertions)]
use super::fast_head::StatusTokens;
use super::Error;
use super::{
    body::Decoder,
    classify,
    fast_head::{tokenise_response, Stop},
    has_bare_lf, list_items, parse_content_length, trim_ows, Field, Known, Span, Version,
    MAX_HEADERS,
};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A parsed response head; spans index into `raw`.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub raw: Bytes,
    pub status: u16,
    pub reason: Span,
    pub version: Version,
    pub fields: Vec<Field>,
    pub framing: ResponseFraming,
    /// The Content-Length value sent, if any (forwarded on HEAD/304).
    pub content_length: Option<u64>,
    /// Whether the upstream allows reusing the connection after this response.
    pub keep_alive: bool,
    /// `Upgrade` value on a 101.
    pub upgrade: Option<Span>,
}

impl ResponseHead {
    #[inline]
    pub fn name(&self, f: &Field) -> &[u8] {
        f.name.get(&self.raw)
    }
    #[inline]
    pub fn value(&self, f: &Field) -> &[u8] {
        f.value.get(&self.raw)
    }
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.raw)
    }
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.name(f).eq_ignore_ascii_case(name))
            .map(|f| self.value(f))
    }
    /// Give back the field list's storage for the next parse.
    pub fn recycle(self, spare: &mut Vec<Field>) {
        let mut fields = self.fields;
        fields.clear();
        *spare = fields;
    }
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }
    /// The body decoder for this response.
    pub fn decoder(&self) -> Decoder {
        match self.framing {
            ResponseFraming::None => Decoder::Done,
            ResponseFraming::Length(n) => Decoder::length(n),
            ResponseFraming::Chunked => Decoder::chunked(),
            ResponseFraming::Close => Decoder::eof(),
        }
    }
}

/// Parse one response head from the front of `buf`.
///
/// `head_request`: the request was HEAD (no body whatever the headers say).
pub fn parse_response(
    buf: &mut BytesMut,
    max_bytes: usize,
    head_request: bool,
) -> Result<Option<ResponseHead>, Error> {
    parse_response_reusing(buf, max_bytes, head_request, &mut Vec::new())
}

/// [`parse_response`] taking the field list's storage from `spare` (give it
/// back with [`ResponseHead::recycle`]).
pub fn parse_response_reusing(
    buf: &mut BytesMut,
    max_bytes: usize,
    head_request: bool,
    spare: &mut Vec<Field>,
) -> Result<Option<ResponseHead>, Error> {
    parse_head(buf, max_bytes, head_request, spare, true)
}

/// [`parse_response_reusing`]; `fast: false` skips the fast path (tests
/// compare the two paths).
#[inline(always)]
fn parse_head(
    buf: &mut BytesMut,
    max_bytes: usize,
    head_request: bool,
    spare: &mut Vec<Field>,
    fast: bool,
) -> Result<Option<ResponseHead>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let limit = max_bytes.min(buf.len());
    let window = &buf[..limit];
    let mut fields = std::mem::take(spare);
    fields.clear();
    let mut known = [0u8; 128];
    // The common shape in one pass (`fast_head`); anything else through
    // httparse.
    let fast = if fast {
        tokenise_response(window, &mut fields, &mut known)
    } else {
        Err(Stop::Other)
    };
    let parsed = match fast {
        Ok(t) => {
            #[cfg(debug_assertions)]
            assert_httparse_agrees(window, &t, &fields);
            Some((t.n, t.code, t.version, t.reason))
        }
        Err(Stop::Partial) => {
            #[cfg(debug_assertions)]
            super::assert_httparse_partial(window, |w| {
                httparse::Response::new(&mut [httparse::EMPTY_HEADER; MAX_HEADERS]).parse(w)
            });
            None
        }
        Err(Stop::Other) => {
            fields.clear();
            match parse_with_httparse(window, &mut fields) {
                Ok(t) => t,
                Err(e) => {
                    *spare = fields;
                    return Err(e);
                }
            }
        }
    };
    let Some((n, code, version, reason)) = parsed else {
        fields.clear();
        *spare = fields;
        if buf.len() >= max_bytes {
            return Err(Error::Malformed("upstream response head too large"));
        }
        return Ok(None);
    };
    if !(100..=999).contains(&code) {
        return Err(Error::Malformed("invalid upstream status code"));
    }
    let base = &window[..n];
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked_final = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut upgrade: Option<Span> = None;
    let mut conn_named: [Option<&[u8]>; 8] = [None; 8];
    let mut conn_named_n = 0usize;
    for f in fields.iter_mut() {
        let name = f.name.get(base);
        let value = f.value.get(base);
        let kind = classify(name);
        if kind == Known::ContentLength {
            let Some(v) = parse_content_length(value) else {
                return Err(Error::Malformed("invalid Content-Length from upstream"));
            };
            if content_length.is_some_and(|m| m != v) {
                return Err(Error::Malformed("conflicting Content-Length from upstream"));
            }
            content_length = Some(v);
        } else if kind == Known::TransferEncoding {
            te_seen = true;
            // the final coding decides; a later header line extends the list
            te_chunked_final = list_items(value)
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if kind == Known::Connection {
            for tok in list_items(value) {
                if tok.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                } else if tok.eq_ignore_ascii_case(b"upgrade") {
                } else if conn_named_n < conn_named.len() {
                    conn_named[conn_named_n] = Some(tok);
                    conn_named_n += 1;
                }
            }
        } else if kind == Known::Upgrade {
            upgrade = Some(Span::of(base, trim_ows(value)));
        }
        f.hop = kind.is_hop();
    }
    if conn_named_n > 0 {
        for f in fields.iter_mut() {
            let name = f.name.get(base);
            if conn_named[..conn_named_n]
                .iter()
                .flatten()
                .any(|t| t.eq_ignore_ascii_case(name))
            {
                f.hop = true;
            }
        }
    }
    if te_seen && content_length.is_some() {
        return Err(Error::Malformed(
            "upstream sent both Content-Length and Transfer-Encoding",
        ));
    }
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let framing = if no_body {
        ResponseFraming::None
    } else if te_seen {
        if te_chunked_final && version == Version::Http11 {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::Close
        }
    } else if let Some(n) = content_length {
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::Close
    };
    let keep_alive = framing != ResponseFraming::Close
        && match version {
            Version::Http11 => !conn_close,
            Version::Http10 => conn_keep_alive && !conn_close,
        };
    let raw = buf.split_to(n).freeze();
    Ok(Some(ResponseHead {
        raw,
        status: code,
        reason,
        version,
        fields,
        framing,
        content_length,
        keep_alive,
        upgrade: if code == 101 { upgrade } else { None },
    }))
}

/// The httparse path of [`parse_response_reusing`], for heads
/// `tokenise_response` does not decide: `(length, code, version, reason)`
/// with the field list in `fields`, `None` when partial.
fn parse_with_httparse(
    window: &[u8],
    fields: &mut Vec<Field>,
) -> Result<Option<(usize, u16, Version, Span)>, Error> {
    let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        window,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Error::Malformed("malformed upstream response head")),
    };
    if has_bare_lf(&window[..n]) {
        return Err(Error::Malformed("bare LF in upstream response head"));
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(Error::Malformed("malformed upstream status line"));
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    // httparse gives a `'static` "" (not a slice of the head) for a status
    // line without a reason, and for a reason holding obs-text: an empty
    // span then, not `Span::of` a pointer outside the head.
    let reason = match resp.reason {
        Some(r) if !r.is_empty() => Span::of(window, r.as_bytes()),
        _ => Span::at(0, 0),
    };
    fields.reserve(resp.headers.len());
    for h in resp.headers.iter() {
        fields.push(Field {
            name: Span::of(window, h.name.as_bytes()),
            value: Span::of(window, h.value),
            hop: false,
        });
    }
    Ok(Some((n, code, version, reason)))
}

/// Debug builds: `tokenise_response` accepted the head at the front of
/// `window`; httparse must parse it as `Complete` to the same end, status
/// line, and field names and values (as byte ranges).
#[cfg(debug_assertions)]
fn assert_httparse_agrees(window: &[u8], t: &StatusTokens, fields: &[Field]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let got = resp.parse(window);
    let show = || String::from_utf8_lossy(window).into_owned();
    assert_eq!(got, Ok(httparse::Status::Complete(t.n)), "{}", show());
    assert_eq!(resp.code, Some(t.code), "{}", show());
    let minor = u8::from(t.version == Version::Http11);
    assert_eq!(resp.version, Some(minor), "{}", show());
    assert_eq!(
        resp.reason.map(str::as_bytes),
        Some(t.reason.get(window)),
        "{}",
        show()
    );
    super::assert_same_fields(window, t.n, resp.headers, fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8], head: bool) -> Result<Option<ResponseHead>, Error> {
        parse_response(&mut BytesMut::from(s), 65536, head)
    }

    #[test]
    fn framing_kinds() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, ResponseFraming::Length(5));
        assert!(r.keep_alive);
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, ResponseFraming::Chunked);
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(r.framing, ResponseFraming::Close);
        assert!(!r.keep_alive);
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, ResponseFraming::Close);
        for code in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let s = format!("HTTP/1.1 {code}\r\nContent-Length: 5\r\n\r\n");
            let r = parse(s.as_bytes(), false).unwrap().unwrap();
            assert_eq!(r.framing, ResponseFraming::None, "{code}");
        }
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, ResponseFraming::None);
        assert_eq!(r.content_length, Some(5));
    }

    #[test]
    fn rejects_ambiguous() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\nContent-Length: 1\n\n", false).is_err());
        assert!(parse(b"garbage garbage\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
    }

    #[test]
    fn partial_at_every_split() {
        let full = b"HTTP/1.1 404 Not Found\r\nServer: x\r\nContent-Length: 0\r\n\r\n";
        for split in 0..full.len() {
            assert!(
                parse(&full[..split], false).unwrap().is_none(),
                "split {split}"
            );
        }
        let r = parse(full, false).unwrap().unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.reason(), b"Not Found");
    }

    #[test]
    fn connection_named_headers_are_hop_by_hop() {
        let r = parse(b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Keep: 2\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        let kept: Vec<_> = r
            .fields
            .iter()
            .filter(|f| !f.hop)
            .map(|f| r.name(f).to_vec())
            .collect();
        assert_eq!(kept, vec![b"X-Keep".to_vec()]);
    }

    #[test]
    fn reason_without_sp_or_with_obs_text_is_empty_and_in_range() {
        for (raw, want) in [
            (&b"HTTP/1.1 204\r\n\r\n"[..], &b""[..]),
            (b"HTTP/1.1 200 \xc3\x96k\r\nContent-Length: 0\r\n\r\n", b""),
            (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", b""),
            (
                b"HTTP/1.1 200 Fine\tand dandy\r\nContent-Length: 0\r\n\r\n",
                b"Fine\tand dandy",
            ),
        ] {
            let r = parse_response(&mut BytesMut::from(raw), 65536, false)
                .unwrap()
                .unwrap();
            assert_eq!(r.reason(), want, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// What a parse decided, comparable across the two paths.
    type Verdict = Result<
        Option<(
            Vec<u8>,
            u16,
            Vec<u8>,
            Version,
            Vec<(Vec<u8>, Vec<u8>, bool)>,
            ResponseFraming,
            Option<u64>,
            bool,
            Option<Vec<u8>>,
        )>,
        Error,
    >;

    fn verdict(raw: &[u8], max: usize, head: bool, fast: bool) -> (Verdict, Vec<u8>) {
        let mut buf = BytesMut::from(raw);
        let got = parse_head(&mut buf, max, head, &mut Vec::new(), fast).map(|o| {
            o.map(|r| {
                let fields = r
                    .fields
                    .iter()
                    .map(|f| (r.name(f).to_vec(), r.value(f).to_vec(), f.hop))
                    .collect();
                let upgrade = r.upgrade.map(|u| u.get(&r.raw).to_vec());
                (
                    r.raw.to_vec(),
                    r.status,
                    r.reason().to_vec(),
                    r.version,
                    fields,
                    r.framing,
                    r.content_length,
                    r.keep_alive,
                    upgrade,
                )
            })
        });
        (got, buf.to_vec())
    }

    #[test]
    fn fast_path_agrees_with_httparse_path_on_mutants() {
        // As for requests (`request_tests`): valid heads of many shapes,
        // then random edits with the bytes that matter to tokenising; both
        // paths must decide alike and leave the same bytes behind. Debug
        // builds also check each head the fast path takes against
        // httparse's own tokens.
        let (many, too_many) = crate::heads_with_most_fields(b"HTTP/1.1 200 OK\r\n");
        let seeds: Vec<Vec<u8>> = vec![
            b"HTTP/1.1 200 OK\r\nServer: loadtest\r\nContent-Length: 12\r\nx-upstream: v1\r\n\r\nhello world\n".to_vec(),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: x-y\r\nX-Y: z\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            b"HTTP/1.1 204\r\nX-E:\r\nX-T:\t a\tb \t\r\nX-O: \x80\xff\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 \xc3\x96k\tfine\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            b"\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_vec(),
            many,
            too_many,
        ];
        let alphabet: &[u8] = &[
            0, b'\t', b'\n', b'\r', b' ', b':', b',', b'/', b'a', b'Z', b'0', b'9', b'H', b'.',
            0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut rng = crate::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = |n: usize| (rng() % n as u64) as usize;
        let (mut fast_taken, mut cases) = (0, 0);
        for seed in &seeds {
            let rounds = if seed.len() > 1000 { 150 } else { 1500 };
            for _ in 0..rounds {
                let m = crate::mutate(seed, alphabet, &mut next);
                let max = if next(8) == 0 {
                    1 + next(m.len() + 1)
                } else {
                    65536
                };
                let head = next(8) == 0;
                let window = &m[..m.len().min(max)];
                if tokenise_response(window, &mut Vec::new(), &mut [0; 128]).is_ok() {
                    fast_taken += 1;
                }
                cases += 1;
                let show = String::from_utf8_lossy(&m).into_owned();
                assert_eq!(
                    verdict(&m, max, head, true),
                    verdict(&m, max, head, false),
                    "{show}"
                );
            }
        }
        assert!(
            fast_taken > cases / 5,
            "fast path took only {fast_taken} of {cases}"
        );
    }
}

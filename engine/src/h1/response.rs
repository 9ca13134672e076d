//! Response head parsing and response body framing (RFC 9112 §6.3), as read
//! from upstreams (primary and shadow) and by `loadtest`. Strict: CL+TE, bad
//! Content-Length or a malformed status line are errors (502 to the client,
//! and the upstream connection is discarded).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::{
    body::Decoder, classify, has_bare_lf, list_items, parse_content_length, trim_ows, Field, Known,
    Span, Version, MAX_HEADERS,
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
) -> Result<Option<ResponseHead>, &'static str> {
    parse_response_reusing(buf, max_bytes, head_request, &mut Vec::new())
}

/// [`parse_response`] taking the field list's storage from `spare` (give it
/// back with [`ResponseHead::recycle`]).
pub fn parse_response_reusing(
    buf: &mut BytesMut,
    max_bytes: usize,
    head_request: bool,
    spare: &mut Vec<Field>,
) -> Result<Option<ResponseHead>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let limit = max_bytes.min(buf.len());
    let window = &buf[..limit];
    let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        window,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_bytes {
                return Err("upstream response head too large");
            }
            return Ok(None);
        }
        Err(_) => return Err("malformed upstream response head"),
    };
    if has_bare_lf(&window[..n]) {
        return Err("bare LF in upstream response head");
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err("malformed upstream status line");
    };
    if !(100..=999).contains(&code) {
        return Err("invalid upstream status code");
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let base = window;
    let reason = Span::of(base, resp.reason.unwrap_or("").as_bytes());
    let mut fields = std::mem::take(spare);
    fields.clear();
    fields.reserve(resp.headers.len());
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked_final = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut upgrade: Option<Span> = None;
    let mut conn_named: [Option<&[u8]>; 8] = [None; 8];
    let mut conn_named_n = 0usize;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = classify(name);
        if kind == Known::ContentLength {
            let Some(v) = parse_content_length(value) else {
                return Err("invalid Content-Length from upstream");
            };
            if content_length.is_some_and(|m| m != v) {
                return Err("conflicting Content-Length from upstream");
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
        fields.push(Field {
            name: Span::of(base, name),
            value: Span::of(base, value),
            hop: kind.is_hop(),
        });
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
        return Err("upstream sent both Content-Length and Transfer-Encoding");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8], head: bool) -> Result<Option<ResponseHead>, &'static str> {
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
}

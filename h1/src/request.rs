//! Request head parsing (RFC 9112 §2-3, §6.3) with httparse in its strict,
//! default configuration, plus the checks httparse leaves to its caller:
//! bare LF, Host rules, Content-Length / Transfer-Encoding policy, target form.
//!
//! Heads of the common shape are tokenised by `fast_head` in one pass
//! instead, which decides only heads (and partial heads) that httparse
//! would parse the same way and leaves every other to httparse here; the
//! checks after tokenising are shared.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::fast_head::{tokenise, Stop, Tokens};
use super::{
    ascii_alnum_and, bare_lf_before_line, bare_lf_outside_field_lines, classify_slow,
    eq_ignore_case_lower, has_bare_lf, list_items, maybe_known_loose, parse_content_length,
    trim_ows, Field, Known, Span, Version, MAX_HEADERS, MAX_TARGET_LEN,
};
use crate::Error;

/// Limits applied while parsing a request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Head larger than this: 431 (or 414 when the request line alone is).
    pub max_header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_header_bytes: 64 * 1024,
        }
    }
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Field and target spans index into `raw`.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The head's bytes as received, frozen (shared by refcount with mirrors).
    pub raw: Bytes,
    pub method: Span,
    /// Target to forward in origin-form (may be empty or start with `?` for an
    /// absolute-form target without a path: write a `/` before it).
    pub target: Span,
    pub version: Version,
    pub fields: Vec<Field>,
    /// Host field value, or the authority of an absolute-form target.
    pub host: Option<Span>,
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Upgrade` value when `Connection: upgrade` was also sent.
    pub upgrade: Option<Span>,
    /// Existing `X-Forwarded-For` values (joined when writing).
    pub forwarded_for: Option<Span>,
    pub is_head: bool,
}

impl RequestHead {
    #[inline]
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.raw)
    }
    #[inline]
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.raw)
    }
    /// Path without query string (empty for `*`). Found by a scan of the
    /// target on each call (not at parse time, as most heads are never
    /// routed on their path): call it once per request.
    #[inline]
    pub fn path(&self) -> &[u8] {
        let target = self.target();
        if target == b"*" {
            return &target[..0];
        }
        let end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        &target[..end]
    }
    #[inline]
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| s.get(&self.raw))
    }
    #[inline]
    pub fn name(&self, f: &Field) -> &[u8] {
        f.name.get(&self.raw)
    }
    #[inline]
    pub fn value(&self, f: &Field) -> &[u8] {
        f.value.get(&self.raw)
    }
    /// First value of the field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.name(f).eq_ignore_ascii_case(name))
            .map(|f| self.value(f))
    }
    /// Declared body length, when known up front.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        }
    }
    pub fn has_body(&self) -> bool {
        self.framing != BodyFraming::None
    }
    /// Give back the field list's storage for the next parse.
    pub fn recycle(self, spare: &mut Vec<Field>) {
        let mut fields = self.fields;
        fields.clear();
        *spare = fields;
    }

    /// Idempotent per RFC 9110 §9.2.2 (safe to retry on a fresh connection).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
        )
    }
}

/// Parse one request head from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some(head))`: the head's bytes were
/// split off `buf`. `Err(kind)`: answer with `kind.status()` and close.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &RequestLimits,
) -> Result<Option<RequestHead>, Error> {
    parse_request_reusing(buf, limits, &mut Vec::new())
}

/// [`parse_request`] that takes the field list's storage from `spare`
/// (recycled by the caller from a finished head with
/// [`RequestHead::recycle`]), so a keep-alive connection parses without
/// allocating.
pub fn parse_request_reusing(
    buf: &mut BytesMut,
    limits: &RequestLimits,
    spare: &mut Vec<Field>,
) -> Result<Option<RequestHead>, Error> {
    parse_head(buf, limits, spare, true)
}

/// [`parse_request_reusing`], with `fast` false: every head through the
/// httparse path (tests compare the two).
#[inline(always)]
fn parse_head(
    buf: &mut BytesMut,
    limits: &RequestLimits,
    spare: &mut Vec<Field>,
    fast: bool,
) -> Result<Option<RequestHead>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let limit = limits.max_header_bytes.min(buf.len());
    let window = &buf[..limit];
    let mut fields = std::mem::take(spare);
    fields.clear();
    // The fast path pushes field by field: room for a typical head up
    // front, so that a connection's first parse allocates once, not once
    // per doubling (a no-op once the list is recycled).
    fields.reserve(FIELDS_UP_FRONT);
    let mut known = [0u8; 128];
    // The common shape in one pass; anything else through httparse.
    let fast = if fast {
        tokenise(window, &mut fields, &mut known)
    } else {
        Err(Stop::Other)
    };
    let tokens = match fast {
        Ok(t) => {
            #[cfg(debug_assertions)]
            assert_httparse_agrees(window, &t, &fields, &known);
            t
        }
        Err(Stop::Partial) => {
            #[cfg(debug_assertions)]
            super::assert_httparse_partial(window, |w| {
                httparse::Request::new(&mut [httparse::EMPTY_HEADER; MAX_HEADERS]).parse(w)
            });
            fields.clear();
            *spare = fields;
            return partial(window, limits).map_or(Ok(None), Err);
        }
        Err(Stop::Other) => {
            fields.clear();
            match tokenise_with_httparse(window, limits, &mut fields, &mut known) {
                Ok(t) => t,
                Err(early) => {
                    *spare = fields;
                    return early.map_or(Ok(None), Err);
                }
            }
        }
    };
    let n = tokens.n;
    let head = &window[..n];
    let base = head;
    let (method, target, version) = (
        tokens.method.get(head),
        tokens.target.get(head),
        tokens.version,
    );
    // The checks left once the head is tokenised. Each failure breaks out
    // with its error, to be replaced by the bare-LF error when the head has
    // a bare LF (neither path above lets one through, but the rule keeps
    // the verdict independent of which check runs first).
    let err = 'checks: {
        if method == b"CONNECT" {
            break 'checks Error::MethodNotAllowed;
        }
        let mut target_span = tokens.target;
        let mut host: Option<Span> = None;
        if target[0] == b'/' {
            // origin-form
        } else if target == b"*" {
            if method != b"OPTIONS" {
                break 'checks Error::Malformed(
                    "asterisk-form target on a method other than OPTIONS",
                );
            }
        } else if let Some((authority, rest)) = split_absolute(target) {
            if authority.is_empty() || !valid_authority(authority) {
                break 'checks Error::Malformed("invalid authority in absolute-form target");
            }
            host = Some(Span::of(base, authority));
            target_span = Span::of(base, rest);
        } else {
            break 'checks Error::Malformed("invalid request target");
        }

        // Then the known fields, in order.
        let mut seen = Seen::default();
        for &i in &known[..tokens.n_known] {
            let f = &mut fields[usize::from(i)];
            match seen.field(base, f.name.get(head), f.value.get(head), version) {
                Ok(hop) => f.hop = hop,
                Err(kind) => break 'checks kind,
            }
        }
        // Ambiguity first: CL with any TE is a 400 whatever the coding.
        if seen.te_count > 0 && seen.content_length.is_some() {
            break 'checks Error::Malformed("both Content-Length and Transfer-Encoding");
        }
        if let Some(kind) = seen.te_error {
            break 'checks kind;
        }
        if seen.te_count > 1 {
            break 'checks Error::Malformed("duplicate Transfer-Encoding");
        }
        if seen.te_chunked && version == Version::Http10 {
            break 'checks Error::Malformed("Transfer-Encoding in HTTP/1.0");
        }
        if version == Version::Http11 && seen.host_count == 0 {
            break 'checks Error::Malformed("missing Host");
        }
        if !seen.conn_named.is_empty() {
            for f in fields.iter_mut() {
                let name = f.name.get(base);
                if seen.conn_named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                    f.hop = true;
                }
            }
        }
        let framing = if seen.te_chunked {
            BodyFraming::Chunked
        } else {
            match seen.content_length {
                Some(0) | None => BodyFraming::None,
                Some(n) => BodyFraming::Length(n),
            }
        };
        let keep_alive = match version {
            Version::Http11 => !seen.conn_close,
            Version::Http10 => seen.conn_keep_alive && !seen.conn_close,
        };
        let upgrade = if seen.conn_upgrade && version == Version::Http11 {
            seen.upgrade_value.filter(|s| !s.is_empty())
        } else {
            None
        };
        let is_head = method == b"HEAD";
        let host = host.or(seen.host_field);
        let (expect_continue, forwarded_for) = (seen.expect_continue, seen.forwarded_for);
        // `seen` borrows from `buf`, which now gives up the head's bytes.
        drop(seen);
        let raw = buf.split_to(n).freeze();
        return Ok(Some(RequestHead {
            raw,
            method: tokens.method,
            target: target_span,
            version,
            fields,
            host,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
            forwarded_for,
            is_head,
        }));
    };
    *spare = fields;
    Err(bare_lf_first(head, err))
}

/// The head at the front of `window` through httparse, for every head
/// [`tokenise`] does not decide: the request line, the field list (into
/// `fields`, with the maybe-known indices in `known`) and the checks that
/// come before the rest of [`parse_request_reusing`]'s. `Err`: return at
/// once, `Ok(None)` for `None` (a partial head), else the error.
fn tokenise_with_httparse(
    window: &[u8],
    limits: &RequestLimits,
    fields: &mut Vec<Field>,
    known: &mut [u8; 128],
) -> Result<Tokens, Option<Error>> {
    let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(window, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(partial(window, limits)),
        Err(httparse::Error::TooManyHeaders) => return Err(Some(Error::HeadTooLarge)),
        Err(httparse::Error::Version) => return Err(Some(version_error(window))),
        Err(httparse::Error::Token) => return Err(Some(Error::Malformed("invalid method"))),
        Err(httparse::Error::HeaderName) => {
            return Err(Some(Error::Malformed("invalid header name")))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(Some(Error::Malformed("invalid header value")))
        }
        Err(httparse::Error::NewLine) => return Err(Some(Error::Malformed("invalid line ending"))),
        Err(_) => return Err(Some(Error::Malformed("malformed request line"))),
    };
    let head = &window[..n];
    let err = 'checks: {
        // httparse guarantees these are present on Complete.
        let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
            break 'checks Error::Malformed("malformed request line");
        };
        let version = if minor == 1 {
            Version::Http11
        } else {
            Version::Http10
        };
        if target.len() > MAX_TARGET_LEN {
            break 'checks Error::UriTooLong;
        }
        if !is_ascii_words(target.as_bytes()) {
            // httparse admits obs-text in the target; a target is ASCII (RFC 3986).
            break 'checks Error::Malformed("non-ASCII byte in request target");
        }
        // One tight pass over the fields, then the few that may be known.
        let (bare_line, n_known) = list_fields(head, req.headers, fields, known);
        let bare = bare_line || bare_lf_outside_field_lines(head);
        debug_assert_eq!(bare, has_bare_lf(head), "line ends of {head:?}");
        if bare {
            break 'checks BARE_LF;
        }
        return Ok(Tokens {
            n,
            method: Span::of(head, method.as_bytes()),
            target: Span::of(head, target.as_bytes()),
            version,
            n_known,
        });
    };
    Err(Some(bare_lf_first(head, err)))
}

/// What to answer when the head at the front of `window` is incomplete:
/// `None` to read more, or the error when it can no longer fit.
fn partial(window: &[u8], limits: &RequestLimits) -> Option<Error> {
    let line_done = window.contains(&b'\n');
    // Unterminated request line: count the target (and " HTTP/1.1\r"), not the method.
    let after_method = window
        .iter()
        .position(|&b| b == b' ')
        .map_or(0, |sp| window.len() - sp - 1);
    if !line_done && after_method > MAX_TARGET_LEN + b" HTTP/1.1\r".len() {
        return Some(Error::UriTooLong);
    }
    if window.len() >= limits.max_header_bytes {
        return Some(if line_done {
            Error::HeadTooLarge
        } else {
            Error::UriTooLong
        });
    }
    None
}

/// Debug builds: [`tokenise`] accepted the head at the front of `window`;
/// httparse must parse it as `Complete` to the same end, request line and
/// field names and values (as byte ranges), so that the fast path keeps
/// every verdict of the httparse path.
#[cfg(debug_assertions)]
fn assert_httparse_agrees(window: &[u8], t: &Tokens, fields: &[Field], known: &[u8; 128]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let got = req.parse(window);
    let show = || String::from_utf8_lossy(window).into_owned();
    assert_eq!(got, Ok(httparse::Status::Complete(t.n)), "{}", show());
    let span = |s: &[u8]| Span::of(window, s);
    assert_eq!(
        req.method.map(|m| span(m.as_bytes())),
        Some(t.method),
        "{}",
        show()
    );
    assert_eq!(
        req.path.map(|p| span(p.as_bytes())),
        Some(t.target),
        "{}",
        show()
    );
    let minor = u8::from(t.version == Version::Http11);
    assert_eq!(req.version, Some(minor), "{}", show());
    super::assert_same_fields(window, t.n, req.headers, fields);
    let want: Vec<u8> = (0..fields.len() as u8)
        .filter(|&i| maybe_known_loose(fields[usize::from(i)].name.get(window)))
        .collect();
    assert_eq!(&known[..t.n_known], &want[..], "{}", show());
}

const BARE_LF: Error = Error::Malformed("bare LF in request head");

/// The verdict for a rejected head: a bare LF anywhere in it wins over
/// `err`, whichever check found `err` first.
fn bare_lf_first(head: &[u8], err: Error) -> Error {
    if has_bare_lf(head) {
        BARE_LF
    } else {
        err
    }
}

/// Fields room is made for before a parse: enough for most heads (the
/// benches' browser head has 9); more grow the list by doubling.
const FIELDS_UP_FRONT: usize = 16;

// list_fields notes the indices of the fields that may be known in a
// `[u8; 128]`.
const _: () = assert!(MAX_HEADERS <= 128);

/// Append the fields of `headers` (parsed from `head`) to `fields`, and note
/// without acting on them whether a field line follows a bare LF, and which
/// fields may be known ones: their indices, in order, fill the front of
/// `known`, and their count is returned. One pass, without a branch per
/// field. Out of line, so that its loop keeps its variables in registers.
#[inline(never)]
fn list_fields(
    head: &[u8],
    headers: &[httparse::Header<'_>],
    fields: &mut Vec<Field>,
    known: &mut [u8; 128],
) -> (bool, usize) {
    let mut bare = false;
    let mut k = 0usize;
    let n = headers.len();
    fields.reserve(n);
    let old_len = fields.len();
    for (i, (slot, h)) in fields.spare_capacity_mut()[..n]
        .iter_mut()
        .zip(headers)
        .enumerate()
    {
        let name = h.name.as_bytes();
        let name_span = Span::of(head, name);
        bare |= bare_lf_before_line(head, name_span.start as usize);
        // Written always, kept when counted: `k <= i < MAX_HEADERS <= 128`,
        // so the mask changes nothing (it only spares a bounds check).
        known[k & 127] = i as u8;
        k += usize::from(maybe_known_loose(name));
        slot.write(Field {
            name: name_span,
            value: Span::of(head, h.value),
            hop: false,
        });
    }
    // SAFETY: the loop above initialised the `n` slots after `old_len`
    // (`spare_capacity_mut()[..n]` panics unless there are `n` of them).
    unsafe { fields.set_len(old_len + n) };
    (bare, k)
}

/// What the fields [`classify`] knows said, gathered over a head.
#[derive(Default)]
struct Seen<'a> {
    host_field: Option<Span>,
    host_count: u32,
    content_length: Option<u64>,
    te_count: u32,
    te_error: Option<Error>,
    te_chunked: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    upgrade_value: Option<Span>,
    expect_continue: bool,
    forwarded_for: Option<Span>,
    /// Other names listed in Connection (their fields are hop-by-hop).
    conn_named: Vec<&'a [u8]>,
}

impl<'a> Seen<'a> {
    /// Take in one field that [`maybe_known_loose`] picked; whether it is hop-by-hop
    /// (or rewritten), so not forwarded as-is.
    #[inline]
    fn field(
        &mut self,
        base: &[u8],
        name: &[u8],
        value: &'a [u8],
        version: Version,
    ) -> Result<bool, Error> {
        // httparse skips the OWS after the colon and trims it off the end,
        // so a value here is already trimmed.
        debug_assert_eq!(trim_ows(value), value, "value of {name:?}");
        // The caller's prefilter passed: straight to the name compare.
        let kind = classify_slow(name);
        let mut hop = kind.is_hop();
        match kind {
            Known::Host => {
                self.host_count += 1;
                if self.host_count > 1 {
                    return Err(Error::Malformed("duplicate Host"));
                }
                let v = value;
                if !valid_authority(v) && !v.is_empty() {
                    return Err(Error::Malformed("invalid Host"));
                }
                self.host_field = Some(Span::of(base, v));
                hop = true; // re-written from the parse
            }
            Known::ContentLength => {
                let Some(n) = parse_content_length(value) else {
                    return Err(Error::Malformed("invalid Content-Length"));
                };
                if self.content_length.is_some_and(|m| m != n) {
                    return Err(Error::Malformed("conflicting Content-Length"));
                }
                self.content_length = Some(n);
            }
            Known::TransferEncoding => {
                self.te_count += 1;
                let v = value;
                if v.eq_ignore_ascii_case(b"chunked") {
                    self.te_chunked = true;
                } else if list_items(v).next().is_none() {
                    self.te_error
                        .get_or_insert(Error::Malformed("empty Transfer-Encoding"));
                } else {
                    // any other coding, or a list: only a single `chunked` is supported
                    let only_chunked = list_items(v).all(|c| c.eq_ignore_ascii_case(b"chunked"));
                    self.te_error.get_or_insert(if only_chunked {
                        Error::Malformed("chunked applied more than once")
                    } else if version == Version::Http10 {
                        Error::Malformed("Transfer-Encoding in HTTP/1.0")
                    } else {
                        Error::UnsupportedCoding
                    });
                }
            }
            Known::Connection => {
                // One token, most often: the same as the list below, sooner.
                let v = value;
                if eq_ignore_case_lower(v, b"keep-alive") {
                    self.conn_keep_alive = true;
                    return Ok(hop);
                }
                if eq_ignore_case_lower(v, b"close") {
                    self.conn_close = true;
                    return Ok(hop);
                }
                for tok in list_items(value) {
                    if tok.eq_ignore_ascii_case(b"close") {
                        self.conn_close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        self.conn_keep_alive = true;
                    } else if tok.eq_ignore_ascii_case(b"upgrade") {
                        self.conn_upgrade = true;
                    } else {
                        self.conn_named.push(tok);
                    }
                }
            }
            Known::Upgrade => {
                self.upgrade_value = Some(Span::of(base, value));
            }
            Known::Expect => {
                // RFC 9110 §10.1.1: ignored in HTTP/1.0.
                if version == Version::Http11 && value.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                }
                hop = true; // the engine answers 100-continue itself
            }
            Known::XForwardedFor => {
                if self.forwarded_for.is_none() {
                    // keep the first; write.rs folds every line into one list
                    self.forwarded_for = Some(Span::of(base, value));
                }
                hop = true;
            }
            Known::OtherHop | Known::Other => {}
        }
        Ok(hop)
    }
}

/// 505 when the request line names an HTTP version we do not speak, else 400.
fn version_error(buf: &[u8]) -> Error {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    // The third element of the line (after method SP target SP), not the last.
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    // Also matches a version cut short by a partial read ("HTTP/2."), so the
    // answer does not depend on where the bytes were split.
    let named = version.len() >= 6
        && version.starts_with(b"HTTP/")
        && version[5..]
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b'.');
    if named {
        Error::UnsupportedVersion
    } else {
        Error::Malformed("malformed request line")
    }
}

/// `v.is_ascii()` for a request target: its bytes OR-ed together eight at
/// a time (the last word may overlap the one before), one test at the end,
/// no branch per word.
#[inline]
fn is_ascii_words(v: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = v.len();
    if n < 8 {
        return v.iter().fold(0u8, |acc, &b| acc | b) < 0x80;
    }
    let word = |w: &[u8]| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    let mut chunks = v.chunks_exact(8);
    let acc = (&mut chunks).fold(word(&v[n - 8..]), |acc, w| acc | word(w));
    acc & HIGH == 0
}

/// Split an absolute-form `http(s)://authority/path?q` into (authority, rest).
fn split_absolute(t: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        &t[7..]
    } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        &t[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains(&b'@') {
        return None; // userinfo is deprecated and a smuggling vector
    }
    Some((authority, &rest[end..]))
}

/// Bytes allowed in a Host / authority: reg-name, IP-literal, port.
static AUTHORITY: [bool; 256] = ascii_alnum_and(b"-._~%!$&'()*+,;=:[]");

/// Characters allowed in a Host / authority (table lookup per byte, with no
/// branch per byte: a Host is short and nearly always valid).
fn valid_authority(v: &[u8]) -> bool {
    // Eight bytes per step: two instructions a byte, the loop's own cost
    // spread over eight.
    let mut chunks = v.chunks_exact(8);
    let mut ok = !v.is_empty();
    for c in &mut chunks {
        ok &= c.iter().fold(true, |ok, &b| ok & AUTHORITY[b as usize]);
    }
    chunks
        .remainder()
        .iter()
        .fold(ok, |ok, &b| ok & AUTHORITY[b as usize])
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

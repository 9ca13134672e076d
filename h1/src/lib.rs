//! Sans-I/O HTTP/1.1 codec: request and response heads, body framing
//! (RFC 9112 §6.3), the chunked decoder, and head serialisation.
//!
//! Owns: turning bytes in a `BytesMut` into typed heads and body `Bytes`.
//! Never touches a socket, a timer or a glommio type, so the same code serves
//! the primary path, the mirror writer, the test upstream, `loadtest`, unit
//! tests and benches.
//!
//! Policy (docs/SPEC.md "Framing policy"): strict. A tee forwards the same
//! bytes to two backends, so anything ambiguous is rejected rather than
//! repaired: bare LF, obs-fold, whitespace before a colon, CTLs in values,
//! CL+TE, conflicting or listed Content-Length, any transfer coding other
//! than a single `chunked`.
//! Parsed heads keep the read buffer's bytes (one frozen `Bytes`) and refer to
//! them by [`Span`]; every head sent upstream is written from the parse with
//! canonical separators, never relayed raw.

pub mod body;
pub mod chunked;
mod error;
mod fast_head;
pub mod request;
pub mod response;
pub mod write;

pub use body::{Decoded, Decoder};
pub use chunked::ChunkedDecoder;
pub use error::Error;
pub use request::{parse_request, parse_request_reusing, RequestHead, RequestLimits};
pub use response::{parse_response, parse_response_reusing, ResponseFraming, ResponseHead};

/// Most header fields accepted in one head (more: 431 for requests, 502 for responses).
pub const MAX_HEADERS: usize = 100;
/// Longest request target accepted (nginx's default request-line buffer); longer: 414.
pub const MAX_TARGET_LEN: usize = 8192;
/// Longest chunk-size line extension accepted, per chunk.
pub const MAX_CHUNK_EXT: usize = 4096;
/// Total bytes of trailer fields accepted after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Most hex digits in a chunk size (16 digits = u64 range).
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// A byte range into a head's frozen buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// The span `start..end`.
    #[inline]
    pub(crate) fn at(start: usize, end: usize) -> Span {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    /// The span of `sub`, which must be a subslice of `base`.
    #[inline]
    pub(crate) fn of(base: &[u8], sub: &[u8]) -> Span {
        let start = sub.as_ptr() as usize - base.as_ptr() as usize;
        debug_assert!(start + sub.len() <= base.len());
        Span {
            start: start as u32,
            end: (start + sub.len()) as u32,
        }
    }
}

/// One header field of a parsed head.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: Span,
    pub value: Span,
    /// Hop-by-hop or framing field: not forwarded as-is (RFC 9110 §7.6.1).
    pub hop: bool,
}

/// HTTP version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Trim optional whitespace (SP / HTAB) on both ends.
#[inline]
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parse a Content-Length value: `1*DIGIT`, no sign, no list, overflow-checked.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// A byte-class table: ASCII letters and digits plus `extra` (built at
/// compile time; one load per byte where a `matches!` would branch).
pub(crate) const fn ascii_alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut k = 0;
    while k < extra.len() {
        t[extra[k] as usize] = true;
        k += 1;
    }
    t
}

/// RFC 9110 token character.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Iterate comma-separated list elements, trimmed, empty ones skipped.
pub fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty())
}

/// Whether `buf` holds a bare LF (a `\n` not preceded by `\r`). Written as
/// one pass over byte pairs with no early exit, which the compiler
/// vectorises: a typical head costs tens of nanoseconds.
#[inline]
pub(crate) fn has_bare_lf(buf: &[u8]) -> bool {
    match buf.first() {
        None => false,
        Some(b'\n') => true,
        Some(_) => {
            let bare = buf[1..]
                .iter()
                .zip(buf.iter())
                .fold(0u8, |acc, (&b, &prev)| {
                    acc | ((b == b'\n') & (prev != b'\r')) as u8
                });
            bare != 0
        }
    }
}

// A bare-LF check for a head httparse has just parsed as `Complete` need
// only look where a `\n` can be: httparse takes a `\n` in a head as a line
// end and nowhere else (a method, target, version, status code or field name
// stops at it; a reason phrase or field value ends at it; a `\r` must be
// followed by one; obs-fold is rejected). So its `\n`s are those of the empty
// lines it skips before the start line, the one before each field line, and
// those of the last two lines. The two functions below cover these at one
// load per line instead of a pass over the head; in debug builds the parsers
// assert that they agree with [`has_bare_lf`].

/// Bare LF in `head` (a whole head httparse accepted) other than at the end
/// of a line followed by a field line: in the empty lines before the start
/// line, or ending the last two lines.
#[inline]
pub(crate) fn bare_lf_outside_field_lines(head: &[u8]) -> bool {
    let n = head.len();
    if n < 4 || head[n - 2] != b'\r' || head[n - 4] != b'\r' {
        return true;
    }
    if !matches!(head[0], b'\r' | b'\n') {
        return false; // the common case: no empty line before the start line
    }
    // httparse skips `\r\n` and `\n` before the start line, which begins
    // with a token or version byte.
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(n);
    has_bare_lf(&head[..start])
}

/// Whether the line ending just before the field line that starts at
/// `line_start` (where its name starts) is a bare LF.
#[inline]
pub(crate) fn bare_lf_before_line(head: &[u8], line_start: usize) -> bool {
    head.get(line_start.wrapping_sub(2)) != Some(&b'\r')
}

/// `a.eq_ignore_ascii_case(lower)` for a `lower` with no uppercase letter,
/// 8 bytes at a time: `x | m == k` holds exactly for `x` in {`k`, `k` in
/// uppercase} where `m` is 0x20 (`k` a lowercase letter), and for `x == k`
/// only where `m` is 0. With `lower` a constant, `m` and `k` fold away.
#[inline(always)]
pub(crate) fn eq_ignore_case_lower(a: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase));
    let n = lower.len();
    if a.len() != n {
        return false;
    }
    if n < 4 {
        return a.iter().zip(lower).all(|(&x, &k)| x | case_bit(k) == k);
    }
    if n < 8 {
        // Two words of 4, overlapping unless `n` is 8.
        return word_eq::<4>(a, lower, 0) && word_eq::<4>(a, lower, n - 4);
    }
    // Words at 0, 8, ... and a last one ending at `n` (it may overlap).
    let mut at = 0;
    loop {
        if !word_eq::<8>(a, lower, at.min(n - 8)) {
            return false;
        }
        at += 8;
        if at >= n {
            return true;
        }
    }
}

/// The `W` bytes of `a` and `lower` at `at` compared as one word, the case
/// bit of each letter of `lower` masked in (see [`eq_ignore_case_lower`]).
#[inline(always)]
fn word_eq<const W: usize>(a: &[u8], lower: &[u8], at: usize) -> bool {
    let word = |s: &[u8]| {
        let mut w = [0u8; 8];
        w[..W].copy_from_slice(&s[at..at + W]);
        u64::from_le_bytes(w)
    };
    let mut mask = [0u8; 8];
    for (m, &k) in mask[..W].iter_mut().zip(&lower[at..at + W]) {
        *m = case_bit(k);
    }
    word(a) | u64::from_le_bytes(mask) == word(lower)
}

#[inline(always)]
fn case_bit(k: u8) -> u8 {
    if k.is_ascii_lowercase() {
        0x20
    } else {
        0
    }
}

/// Header names the codec acts on, recognised by length first so that an
/// ordinary field costs one length compare instead of a string compare per
/// known name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    XForwardedFor,
    /// TE, Keep-Alive, Proxy-Connection, Trailer: not forwarded, otherwise ignored.
    OtherHop,
    Other,
}

impl Known {
    /// Hop-by-hop or framing (RFC 9110 §7.6.1): never forwarded as-is.
    #[inline]
    pub(crate) fn is_hop(self) -> bool {
        matches!(
            self,
            Known::ContentLength
                | Known::TransferEncoding
                | Known::Connection
                | Known::Upgrade
                | Known::OtherHop
        )
    }
}

/// Every name [`classify`] knows, for [`MAYBE_KNOWN`].
const KNOWN_NAMES: [&[u8]; 11] = [
    b"te",
    b"host",
    b"expect",
    b"upgrade",
    b"trailer",
    b"connection",
    b"keep-alive",
    b"content-length",
    b"x-forwarded-for",
    b"proxy-connection",
    b"transfer-encoding",
];

/// Indexed by a name's first byte: bit `len` is set when some known name of
/// length `len` starts with that byte (either case). One load and a bit test
/// tell most ordinary fields (`Accept`, `Cookie`, `User-Agent`, ...) from
/// the known ones before any string compare.
static MAYBE_KNOWN: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < KNOWN_NAMES.len() {
        let name = KNOWN_NAMES[i];
        assert!(name.len() < 32);
        let first = name[0];
        t[first as usize] |= 1 << name.len();
        t[first.to_ascii_uppercase() as usize] |= 1 << name.len();
        i += 1;
    }
    t
};

/// False for most names [`classify`] does not know, true for all it does:
/// one table load.
#[inline]
pub(crate) fn maybe_known(name: &[u8]) -> bool {
    match name.first() {
        Some(&first) => name.len() < 32 && MAYBE_KNOWN[first as usize] & (1 << name.len()) != 0,
        None => false,
    }
}

/// [`maybe_known`] without its length bound, so without a branch: also true
/// for some names of 32 bytes or more (those [`classify`] sorts out). For a
/// loop over every field, where the branch would cost more than the few
/// names it lets through.
#[inline]
pub(crate) fn maybe_known_loose(name: &[u8]) -> bool {
    let first = name.first().copied().unwrap_or(0);
    (MAYBE_KNOWN[first as usize] >> (name.len() & 31)) & 1 != 0
}

#[inline]
pub(crate) fn classify(name: &[u8]) -> Known {
    if !maybe_known(name) {
        return Known::Other;
    }
    classify_slow(name)
}

/// [`classify`] once the first byte and length match a known name (or
/// without that prefilter: it gives the same answer for any name).
#[inline]
pub(crate) fn classify_slow(name: &[u8]) -> Known {
    let is = |k: &[u8]| eq_ignore_case_lower(name, k);
    match name.len() {
        2 if is(b"te") => Known::OtherHop,
        4 if is(b"host") => Known::Host,
        6 if is(b"expect") => Known::Expect,
        7 if is(b"upgrade") => Known::Upgrade,
        // Trailers are validated but not forwarded, so neither is their announcement.
        7 if is(b"trailer") => Known::OtherHop,
        10 if is(b"connection") => Known::Connection,
        10 if is(b"keep-alive") => Known::OtherHop,
        14 if is(b"content-length") => Known::ContentLength,
        15 if is(b"x-forwarded-for") => Known::XForwardedFor,
        16 if is(b"proxy-connection") => Known::OtherHop,
        17 if is(b"transfer-encoding") => Known::TransferEncoding,
        _ => Known::Other,
    }
}

#[cfg(test)]
mod fuzz_tests;

/// Tests: `seed` with up to three random edits (substitution, insertion,
/// deletion) from `alphabet`, then, one time in four, truncated. `next(n)`
/// draws from `0..n`.
#[cfg(test)]
pub(crate) fn mutate(
    seed: &[u8],
    alphabet: &[u8],
    next: &mut impl FnMut(usize) -> usize,
) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..next(4) {
        let at = next(m.len());
        match next(4) {
            0 | 1 => m[at] = alphabet[next(alphabet.len())],
            2 => m.insert(at, alphabet[next(alphabet.len())]),
            _ => {
                m.remove(at);
            }
        }
    }
    if next(4) == 0 {
        m.truncate(next(m.len() + 1));
    }
    m
}

/// Debug builds: a fast path found `window` to end inside a head of its
/// shape; httparse (`parse`, a request or response parse) must find it
/// partial too.
#[cfg(debug_assertions)]
pub(crate) fn assert_httparse_partial(
    window: &[u8],
    parse: impl FnOnce(&[u8]) -> httparse::Result<usize>,
) {
    let show = String::from_utf8_lossy(window);
    assert_eq!(parse(window), Ok(httparse::Status::Partial), "{show}");
}

/// Debug builds: a fast path's field list names the same byte ranges as
/// httparse's `theirs`, and its head of `n` bytes has no bare LF.
#[cfg(debug_assertions)]
pub(crate) fn assert_same_fields(
    window: &[u8],
    n: usize,
    theirs: &[httparse::Header<'_>],
    fields: &[Field],
) {
    let show = || String::from_utf8_lossy(window).into_owned();
    let theirs: Vec<(Span, Span)> = theirs
        .iter()
        .map(|h| {
            (
                Span::of(window, h.name.as_bytes()),
                Span::of(window, h.value),
            )
        })
        .collect();
    let ours: Vec<(Span, Span)> = fields.iter().map(|f| (f.name, f.value)).collect();
    assert_eq!(ours, theirs, "{}", show());
    assert!(!has_bare_lf(&window[..n]), "{}", show());
}

/// Tests: `start` (a start line, perhaps a field line too) and
/// `MAX_HEADERS - 1` short field lines, as a whole head, and the same with
/// one more field line.
#[cfg(test)]
pub(crate) fn heads_with_most_fields(start_line: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut many = start_line.to_vec();
    for i in 0..(MAX_HEADERS - 1) {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut too_many = many.clone();
    too_many.extend_from_slice(b"X-Last: v\r\n");
    many.extend_from_slice(b"\r\n");
    too_many.extend_from_slice(b"\r\n");
    (many, too_many)
}

/// Deterministic random numbers for tests (this crate's and the engine's):
/// xorshift64 from `seed` (non-zero). Not for anything that needs chance.
#[doc(hidden)]
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_ignore_case_lower_is_eq_ignore_ascii_case() {
        let keys: &[&[u8]] = &[
            b"",
            b"te",
            b"host",
            b"close",
            b"chunked",
            b"upgrade",
            b"keep-alive",
            b"100-continue",
            b"content-length",
            b"x-forwarded-for",
            b"transfer-encoding",
        ];
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15);
        for &k in keys {
            // Every byte value at every position, on the key in both cases.
            for base in [k.to_vec(), k.to_ascii_uppercase()] {
                for i in 0..base.len() {
                    for b in 0..=255u8 {
                        let mut a = base.clone();
                        a[i] = b;
                        assert_eq!(eq_ignore_case_lower(&a, k), a.eq_ignore_ascii_case(k));
                    }
                }
            }
            // Random case flips and lengths.
            for _ in 0..2000 {
                let mut a: Vec<u8> = k
                    .iter()
                    .map(|&b| {
                        if next() & 1 == 0 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    })
                    .collect();
                match next() % 4 {
                    0 => a.push(b'a'),
                    1 => {
                        a.pop();
                    }
                    _ => {}
                }
                assert_eq!(eq_ignore_case_lower(&a, k), a.eq_ignore_ascii_case(k));
            }
        }
    }

    #[test]
    fn classify_knows_each_known_name_in_any_case() {
        for name in KNOWN_NAMES {
            let upper = name.to_ascii_uppercase();
            let mut mixed = name.to_vec();
            mixed[0] = mixed[0].to_ascii_uppercase();
            for n in [name, &upper[..], &mixed[..]] {
                assert_ne!(
                    classify(n),
                    Known::Other,
                    "{:?}",
                    String::from_utf8_lossy(n)
                );
            }
        }
    }

    #[test]
    fn classify_prefilter_agrees_with_the_full_compare() {
        let names: &[&[u8]] = &[
            b"",
            b"t",
            b"te",
            b"TE",
            b"tx",
            b"host",
            b"hosT",
            b"hose",
            b"Accept",
            b"Cookie",
            b"Expect",
            b"expecT",
            b"upgrade",
            b"Trailer",
            b"trailers",
            b"User-Agent",
            b"connection",
            b"Keep-Alive",
            b"keep_alive",
            b"content-length",
            b"Content-Type",
            b"X-Forwarded-For",
            b"X-Forwarded-Fox",
            b"proxy-connection",
            b"Transfer-Encoding",
            b"transfer-encodings",
            b"a-name-that-is-longer-than-thirty-two-bytes",
        ];
        for &n in names {
            let slow = if n.is_empty() {
                Known::Other
            } else {
                classify_slow(n)
            };
            assert_eq!(classify(n), slow, "{:?}", String::from_utf8_lossy(n));
        }
    }
}

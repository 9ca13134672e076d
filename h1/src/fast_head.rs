//! The fast path of head parsing, requests and responses: one pass over a
//! head of the common shape that tokenises it and writes its field list as
//! it goes. The module docs below speak of requests; [`tokenise_response`]
//! says how responses differ.
//!
//! It decides only what it is sure of. It accepts a subset of the heads
//! httparse (strict, default configuration) parses as `Complete`, and for
//! those it finds the same request line, the same field names and values
//! (the same byte ranges) and the same head length. When the bytes end
//! inside a head of that shape it says so ([`Stop::Partial`]): httparse
//! finds such a prefix partial too. Everything else (any byte or line
//! httparse would reject, bare LF, obs-text in the target, an over-long
//! target, more than [`MAX_HEADERS`] fields, empty lines before the start
//! line) it hands back to the httparse path in `request.rs`, which keeps
//! every verdict of the full parse. Debug builds check each head accepted
//! and each prefix found partial here against httparse (see
//! `request::assert_httparse_agrees`).
//!
//! Accepted: `token SP target SP HTTP/1.(0|1) CRLF`, the target made of
//! `0x21..=0x7e` bytes, then field lines `token ":" OWS value CRLF` where
//! the value holds HTAB, SP, VCHAR or obs-text (httparse's value bytes),
//! then CRLF.

use super::{
    ascii_alnum_and, maybe_known_loose, Field, Span, Version, MAX_HEADERS, MAX_TARGET_LEN,
};

/// A request head tokenised by [`tokenise`]; offsets into the window.
pub(crate) struct Tokens {
    /// Length of the head, final CRLF included.
    pub n: usize,
    pub method: Span,
    pub target: Span,
    pub version: Version,
    /// How many indices [`tokenise`] wrote to the front of `known`.
    pub n_known: usize,
}

/// RFC 9110 tchar: httparse's token (method and field name) bytes.
static TCHAR: [bool; 256] = ascii_alnum_and(b"!#$%&'*+-.^_`|~");

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes of `w` at `at`, little-endian (the first byte lowest).
#[inline(always)]
fn word(w: &[u8], at: usize) -> u64 {
    let b = &w[at..at + 8];
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// High bit set in each byte of `x` equal to zero, and possibly in bytes
/// above one that is: the lowest flagged byte is always a zero byte.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// High bit set in each byte of `x` below `n` (`n <= 0x80`), and possibly
/// above one that is: the lowest flagged byte is always below `n`.
#[inline(always)]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
}

/// Index of the first byte of `w` from `at` on that `stop` flags: words
/// through `flag` (which must flag every such byte, and no other below the
/// first: see above), the last few bytes one at a time. `None` when there
/// is none before the end. Debug builds check `flag` against `stop`.
#[inline(always)]
fn find(
    w: &[u8],
    mut at: usize,
    flag: impl Fn(u64) -> u64,
    stop: impl Fn(u8) -> bool,
) -> Option<usize> {
    // Two words to a test, then one.
    while at + 16 <= w.len() {
        let (m0, m1) = (flag(word(w, at)), flag(word(w, at + 8)));
        if m0 | m1 != 0 {
            let i = if m0 != 0 {
                at + (m0.trailing_zeros() / 8) as usize
            } else {
                at + 8 + (m1.trailing_zeros() / 8) as usize
            };
            debug_assert!(stop(w[i]) && !w[at..i].iter().any(|&b| stop(b)));
            return Some(i);
        }
        debug_assert!(!w[at..at + 16].iter().any(|&b| stop(b)));
        at += 16;
    }
    if at + 8 <= w.len() {
        let m = flag(word(w, at));
        if m != 0 {
            let i = at + (m.trailing_zeros() / 8) as usize;
            debug_assert!(stop(w[i]) && !w[at..i].iter().any(|&b| stop(b)));
            return Some(i);
        }
        debug_assert!(!w[at..at + 8].iter().any(|&b| stop(b)));
        at += 8;
    }
    while at < w.len() {
        if stop(w[at]) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// [`find`]'s flags for the target: bytes outside `0x21..=0x7e` (below
/// 0x21, or 0x7f and above, where `b + 1` reaches the high bit).
#[inline(always)]
fn not_visible(x: u64) -> u64 {
    bytes_below(x, 0x21) | ((x.wrapping_add(ONES) | x) & HIGH)
}

#[inline(always)]
fn is_not_visible(b: u8) -> bool {
    !(0x21..=0x7e).contains(&b)
}

/// [`find`]'s flags for a field value: the CTLs (HTAB included) and DEL.
#[inline(always)]
fn ctl(x: u64) -> u64 {
    bytes_below(x, 0x20) | zero_bytes(x ^ (ONES * 0x7f))
}

#[inline(always)]
fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Index of the first CTL (DEL included) other than HTAB in `w` from `at`
/// on: the end of a field value or a reason phrase, for httparse takes
/// HTAB, SP, VCHAR and obs-text in both. `None` when there is none.
#[inline(always)]
fn ctl_but_htab(w: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at = find(w, at, ctl, is_ctl)?;
        if w[at] != b'\t' {
            return Some(at);
        }
        at += 1;
    }
}

/// `HTTP/1.1` or `HTTP/1.0` at `at` in `w` (which must hold 8 bytes there).
#[inline(always)]
fn version_at(w: &[u8], at: usize) -> Option<Version> {
    match word(w, at) {
        v if v == u64::from_le_bytes(*b"HTTP/1.1") => Some(Version::Http11),
        v if v == u64::from_le_bytes(*b"HTTP/1.0") => Some(Version::Http10),
        _ => None,
    }
}

/// Index of the first byte of `w` from `at` on that is not a tchar (a
/// table load and a branch per byte, eight to a bounds check). `None` when
/// there is none before the end.
#[inline(always)]
fn tchar_run(w: &[u8], mut at: usize) -> Option<usize> {
    while at + 8 <= w.len() {
        let c = &w[at..at + 8];
        for (j, &b) in c.iter().enumerate() {
            if !TCHAR[b as usize] {
                return Some(at + j);
            }
        }
        at += 8;
    }
    (at..w.len()).find(|&i| !TCHAR[w[i] as usize])
}

/// Why [`tokenise`] stopped short of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The bytes end in the middle of a head of the accepted shape: every
    /// byte so far is one httparse takes where it stands, so it too returns
    /// `Partial` (it decides left to right, and errs only at a byte it does
    /// not take).
    Partial,
    /// Not decided here: the httparse path parses it.
    Other,
}

use Stop::{Other, Partial};

/// Tokenise the request head at the front of `w` when it has the common
/// shape (module docs): its fields are appended to `fields` (which must be
/// empty), and the indices of those [`maybe_known_loose`] picks fill the
/// front of `known`, in order. On `Err`, `fields` and `known` hold garbage
/// for the caller to clear.
pub(crate) fn tokenise(
    w: &[u8],
    fields: &mut Vec<Field>,
    known: &mut [u8; 128],
) -> Result<Tokens, Stop> {
    debug_assert!(fields.is_empty());
    // Method: a token, then SP.
    let method_end = tchar_run(w, 0).ok_or(Partial)?;
    if method_end == 0 || w[method_end] != b' ' {
        return Err(Other);
    }
    // Target: `0x21..=0x7e` bytes, then SP.
    let t0 = method_end + 1;
    let t1 = find(w, t0, not_visible, is_not_visible).ok_or(Partial)?;
    if t1 == t0 || t1 - t0 > MAX_TARGET_LEN || w[t1] != b' ' {
        return Err(Other);
    }
    // Version and CRLF.
    let Some(line_end) = w.get(t1..t1 + 11) else {
        let rest = &w[t1..];
        let cut = b" HTTP/1.1\r\n".starts_with(rest) || b" HTTP/1.0\r\n".starts_with(rest);
        return Err(if cut { Partial } else { Other });
    };
    if line_end[9..] != *b"\r\n" {
        return Err(Other);
    }
    let version = version_at(line_end, 1).ok_or(Other)?;
    let (n, n_known) = field_lines(w, t1 + 11, fields, known)?;
    Ok(Tokens {
        n,
        method: Span::at(0, method_end),
        target: Span::at(t0, t1),
        version,
        n_known,
    })
}

/// A response status line tokenised by [`tokenise_response`].
pub(crate) struct StatusTokens {
    /// Length of the head, final CRLF included.
    pub n: usize,
    pub code: u16,
    pub version: Version,
    pub reason: Span,
}

/// Tokenise the response head at the front of `w` when it has the common
/// shape: `HTTP/1.(0|1) SP 3DIGIT SP reason CRLF` (or no `SP reason`), the
/// reason made of HTAB, SP and VCHAR, then field lines as in requests
/// ([`field_lines`]; httparse parses response fields with the request
/// rules in its default configuration). A status line it does not see
/// whole, or with obs-text in the reason (httparse then reports an empty
/// reason), goes to httparse: `Partial` comes only from the field lines.
/// Fields, `known` and `Err` as for [`tokenise`].
pub(crate) fn tokenise_response(
    w: &[u8],
    fields: &mut Vec<Field>,
    known: &mut [u8; 128],
) -> Result<StatusTokens, Stop> {
    debug_assert!(fields.is_empty());
    let Some(line) = w.get(..13) else {
        return Err(Other);
    };
    let version = version_at(line, 0).ok_or(Other)?;
    let [b' ', d0 @ b'0'..=b'9', d1 @ b'0'..=b'9', d2 @ b'0'..=b'9', after] = line[8..13] else {
        return Err(Other);
    };
    let code = u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
    let (reason, at) = match after {
        b' ' => {
            // The reason: up to the first CTL other than HTAB, which must
            // be CR LF.
            let stop = ctl_but_htab(w, 13).ok_or(Partial)?;
            if w[stop] != b'\r' {
                return Err(Other);
            }
            match w.get(stop + 1) {
                Some(b'\n') => {}
                Some(_) => return Err(Other),
                None => return Err(Partial),
            }
            if !w[13..stop].is_ascii() {
                return Err(Other);
            }
            (Span::at(13, stop), stop + 2)
        }
        b'\r' => match w.get(13) {
            Some(b'\n') => (Span::at(12, 12), 14),
            Some(_) => return Err(Other),
            None => return Err(Partial),
        },
        _ => return Err(Other),
    };
    let (n, _) = field_lines(w, at, fields, known)?;
    Ok(StatusTokens {
        n,
        code,
        version,
        reason,
    })
}

/// The field lines from `at` on and the empty line that ends the head, for
/// [`tokenise`] and [`tokenise_response`]: `(head length, how many indices
/// went to the front of known)`.
#[inline(always)]
fn field_lines(
    w: &[u8],
    mut at: usize,
    fields: &mut Vec<Field>,
    known: &mut [u8; 128],
) -> Result<(usize, usize), Stop> {
    let mut k = 0usize;
    loop {
        // A line: the empty one ends the head.
        match *w.get(at).ok_or(Partial)? {
            b'\r' => {
                return match w.get(at + 1) {
                    Some(b'\n') => Ok((at + 2, k)),
                    Some(_) => Err(Other),
                    None => Err(Partial),
                };
            }
            // httparse parses the line, then fails for want of a slot.
            _ if fields.len() == MAX_HEADERS => return Err(Other),
            _ => {}
        }
        // Name: tchars up to the colon.
        let colon = tchar_run(w, at).ok_or(Partial)?;
        if colon == at || w[colon] != b':' {
            return Err(Other);
        }
        let name = &w[at..colon];
        // OWS, then the value up to the first byte httparse does not take
        // in one (HTAB aside, which it does take): that must be CR LF.
        let mut v0 = colon + 1;
        while let Some(b' ' | b'\t') = w.get(v0) {
            v0 += 1;
        }
        let stop = ctl_but_htab(w, v0).ok_or(Partial)?;
        match (w[stop], w.get(stop + 1)) {
            (b'\r', Some(b'\n')) => {}
            (b'\r', None) => return Err(Partial),
            _ => return Err(Other),
        }
        // Trailing OWS is not part of the value (`stop - 1` is at least
        // the colon, so a value without trailing OWS costs one test).
        let mut v1 = stop;
        if matches!(w[stop - 1], b' ' | b'\t') {
            while v1 > v0 && matches!(w[v1 - 1], b' ' | b'\t') {
                v1 -= 1;
            }
        }
        // Written always, kept when counted: `k <= fields.len() < MAX_HEADERS
        // <= 128`, so the mask changes nothing (it spares a bounds check).
        known[k & 127] = fields.len() as u8;
        k += usize::from(maybe_known_loose(name));
        fields.push(Field {
            name: Span::at(at, colon),
            value: Span::at(v0, v1),
            hop: false,
        });
        at = stop + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_scans_find_the_first_stop_byte() {
        // Every byte value at every offset of buffers long enough for each
        // of `find`'s loops, over a background of random bytes that do not
        // stop (so the byte placed is the first that does, when it does),
        // then random stopping bytes after it.
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15);
        type Scan = (fn(u64) -> u64, fn(u8) -> bool);
        let scans: [Scan; 2] = [(not_visible, is_not_visible), (ctl, is_ctl)];
        for (flag, stop) in scans {
            let go: Vec<u8> = (0..=255u8).filter(|&b| !stop(b)).collect();
            let halt: Vec<u8> = (0..=255u8).filter(|&b| stop(b)).collect();
            for len in [1, 7, 8, 9, 15, 16, 17, 24, 31, 40] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut w: Vec<u8> =
                            (0..len).map(|_| go[next() as usize % go.len()]).collect();
                        w[at] = b;
                        for x in w.iter_mut().skip(at + 1) {
                            if next().is_multiple_of(4) {
                                *x = halt[next() as usize % halt.len()];
                            }
                        }
                        let want = w.iter().position(|&c| stop(c));
                        assert_eq!(find(&w, 0, flag, stop), want, "{w:?}");
                        // And from an offset.
                        let from = at.min(3);
                        let want = (from..len).find(|&i| stop(w[i]));
                        assert_eq!(find(&w, from, flag, stop), want, "{w:?} from {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn tchar_table_is_httparse_token_set() {
        for b in 0..=255u8 {
            assert_eq!(TCHAR[b as usize], super::super::is_tchar(b), "{b:#x}");
        }
        let w = b"Content-Type: x";
        assert_eq!(tchar_run(w, 0), Some(12));
        assert_eq!(tchar_run(b"Content-Type", 0), None);
        assert_eq!(tchar_run(b"Content-Type", 3), None);
        assert_eq!(tchar_run(b"a b", 0), Some(1));
    }
}

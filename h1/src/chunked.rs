//! Chunked transfer coding decoder (RFC 9112 §7.1), strict: CRLF only,
//! `1*HEXDIG` sizes with overflow checks, bounded CTL-free extensions,
//! bounded trailers. Data is handed out as zero-copy `Bytes` slices of the
//! read buffer.

use bytes::{Bytes, BytesMut};

use super::{is_tchar, Error, MAX_CHUNK_EXT, MAX_CHUNK_SIZE_DIGITS, MAX_TRAILERS};

/// Where the decoder is within the chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the digits: optional whitespace before `;` or CR.
    SizeWs,
    /// Inside a chunk extension, up to CR.
    Ext,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    Trailer,
    /// Expecting the LF ending a trailer line.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The body is complete.
    Done,
}

/// Decoder for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read, then the bytes of it still to come.
    remaining: u64,
    size_digits: u8,
    ext_len: usize,
    trailer_len: usize,
    trailer_line_len: usize,
    trailer_line_colon: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// Some body data (a slice of the input buffer).
    Data(Bytes),
    /// Input exhausted; read more.
    NeedMore,
    /// The last chunk and trailers were read.
    Done,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            size_digits: 0,
            ext_len: 0,
            trailer_len: 0,
            trailer_line_len: 0,
            trailer_line_colon: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume framing bytes from `buf` until data, need-more or done.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<ChunkStep, Error> {
        loop {
            if self.state == State::Done {
                return Ok(ChunkStep::Done);
            }
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(ChunkStep::NeedMore);
                }
                let take = (self.remaining.min(buf.len() as u64)) as usize;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok(ChunkStep::Data(buf.split_to(take).freeze()));
            }
            // Framing bytes: scan without copying, then drop what was consumed.
            let mut used = 0;
            let mut out = None;
            for &b in buf.iter() {
                used += 1;
                if let Some(step) = self.step(b)? {
                    out = Some(step);
                    break;
                }
            }
            let _ = buf.split_to(used);
            match out {
                Some(()) => continue,
                None => return Ok(ChunkStep::NeedMore),
            }
        }
    }

    /// Advance over one framing byte. `Some(())` when the state changed to
    /// Data or Done (the caller must leave the byte loop).
    #[inline]
    fn step(&mut self, b: u8) -> Result<Option<()>, Error> {
        match self.state {
            State::Size => {
                if let Some(d) = hex(b) {
                    if self.size_digits >= MAX_CHUNK_SIZE_DIGITS {
                        return Err(Error::Malformed("chunk size too large"));
                    }
                    self.remaining = self
                        .remaining
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d as u64))
                        .ok_or(Error::Malformed("chunk size overflow"))?;
                    self.size_digits += 1;
                } else if self.size_digits == 0 {
                    return Err(Error::Malformed("invalid chunk size"));
                } else {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' => {
                            self.state = State::Ext;
                            self.ext_len = 0;
                        }
                        b' ' | b'\t' => self.state = State::SizeWs,
                        _ => return Err(Error::Malformed("invalid chunk size")),
                    }
                }
            }
            State::SizeWs => match b {
                b' ' | b'\t' => {
                    self.ext_len += 1;
                    if self.ext_len > MAX_CHUNK_EXT {
                        return Err(Error::Malformed("chunk extension too long"));
                    }
                }
                b';' => self.state = State::Ext,
                b'\r' => self.state = State::SizeLf,
                _ => return Err(Error::Malformed("invalid chunk size line")),
            },
            State::Ext => {
                self.ext_len += 1;
                if self.ext_len > MAX_CHUNK_EXT {
                    return Err(Error::Malformed("chunk extension too long"));
                }
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' => {}
                    b'"' | b'=' | b';' | b' ' | b'\\' => {}
                    _ if is_tchar(b) || b >= 0x80 => {}
                    _ => return Err(Error::Malformed("invalid byte in chunk extension")),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(Error::Malformed("chunk size line not ended by CRLF"));
                }
                self.size_digits = 0;
                self.ext_len = 0;
                if self.remaining == 0 {
                    self.state = State::TrailerStart;
                } else {
                    self.state = State::Data;
                    return Ok(Some(()));
                }
            }
            State::Data => {
                // Invariant: decode() consumes data in bulk and never feeds a
                // data byte to step(); fail closed rather than panic.
                debug_assert!(false, "chunk data fed to the framing step");
                return Err(Error::Malformed("internal chunked decoder state"));
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(Error::Malformed("chunk data not followed by CRLF"));
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(Error::Malformed("chunk data not followed by CRLF"));
                }
                self.state = State::Size;
            }
            State::TrailerStart => {
                if b == b'\r' {
                    self.state = State::EndLf;
                } else {
                    if !is_tchar(b) {
                        return Err(Error::Malformed("invalid trailer field"));
                    }
                    self.trailer_line_len = 1;
                    self.trailer_line_colon = false;
                    self.count_trailer()?;
                    self.state = State::Trailer;
                }
            }
            State::Trailer => {
                self.count_trailer()?;
                self.trailer_line_len += 1;
                match b {
                    b'\r' => {
                        if !self.trailer_line_colon {
                            return Err(Error::Malformed("trailer line without colon"));
                        }
                        self.state = State::TrailerLf;
                    }
                    b':' => self.trailer_line_colon = true,
                    b'\t' => {}
                    _ if b < 0x20 || b == 0x7f => {
                        return Err(Error::Malformed("control byte in trailer"))
                    }
                    _ if !self.trailer_line_colon && !is_tchar(b) => {
                        return Err(Error::Malformed("invalid trailer field name"))
                    }
                    _ => {}
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(Error::Malformed("trailer line not ended by CRLF"));
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(Error::Malformed("chunked body not ended by CRLF"));
                }
                self.state = State::Done;
                return Ok(Some(()));
            }
            State::Done => return Ok(Some(())),
        }
        Ok(None)
    }

    fn count_trailer(&mut self) -> Result<(), Error> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(Error::Malformed("trailers too large"));
        }
        Ok(())
    }
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Append one chunk (size line, data, CRLF) to `out`.
pub fn encode_chunk(out: &mut BytesMut, data: &[u8]) {
    use std::fmt::Write;
    if data.is_empty() {
        return;
    }
    // Writing into BytesMut cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last-chunk and empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn run_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for part in [&input[..split], &input[split..]] {
            buf.extend_from_slice(part);
            fed += part.len();
            loop {
                match dec.decode(&mut buf)? {
                    ChunkStep::Data(d) => out.extend_from_slice(&d),
                    ChunkStep::NeedMore => break,
                    ChunkStep::Done => return Ok((out, buf.len() + input.len() - fed)),
                }
            }
        }
        Err(Error::Malformed("incomplete"))
    }

    fn shotgun_ok(input: &[u8], want: &[u8], leftover: usize) {
        for split in 0..=input.len() {
            let (got, left) =
                run_split(input, split).unwrap_or_else(|e| panic!("split {split}: {e}"));
            assert_eq!(got, want, "split {split}");
            assert_eq!(left, leftover, "split {split}");
        }
    }

    fn shotgun_err(input: &[u8]) {
        for split in 0..=input.len() {
            assert!(
                run_split(input, split).is_err(),
                "split {split} accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn simple_body_at_every_split() {
        shotgun_ok(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", 0);
    }

    #[test]
    fn leaves_next_message_in_buffer() {
        shotgun_ok(b"3\r\nabc\r\n0\r\n\r\nGET /", b"abc", 5);
    }

    #[test]
    fn extensions_and_trailers() {
        shotgun_ok(
            b"A;name=\"v\";x\r\n0123456789\r\n0 ;last\r\nX-Trailer: yes\r\nY: z\r\n\r\n",
            b"0123456789",
            0,
        );
    }

    #[test]
    fn uppercase_and_leading_zero_sizes() {
        shotgun_ok(b"00000A\r\n0123456789\r\n000\r\n\r\n", b"0123456789", 0);
    }

    #[test]
    fn rejects_bad_framing() {
        shotgun_err(b"5\nhello\r\n0\r\n\r\n"); // bare LF after size
        shotgun_err(b"5\r\nhello\n0\r\n\r\n"); // bare LF after data
        shotgun_err(b"5\r\nhelloXX0\r\n\r\n"); // data longer than size
        shotgun_err(b"-5\r\nhello\r\n0\r\n\r\n");
        shotgun_err(b"0x5\r\nhello\r\n0\r\n\r\n");
        shotgun_err(b"\r\nhello\r\n0\r\n\r\n"); // empty size
        shotgun_err(b"+5\r\nhello\r\n0\r\n\r\n");
        shotgun_err(b"11111111111111111\r\n"); // 17 digits
        shotgun_err(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"); // NUL in extension
        shotgun_err(b"5;a\rb\r\nhello\r\n0\r\n\r\n"); // bare CR in extension
        shotgun_err(b"0\r\nbad trailer\r\n\r\n"); // trailer without colon
        shotgun_err(b"0\r\nX: a\x01b\r\n\r\n"); // CTL in trailer
        shotgun_err(b"0\r\n\n"); // bare LF at end
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXT + 1));
        long_ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(run_split(&long_ext, 0).is_err());
        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILERS));
        long_trailer.extend_from_slice(b"\r\n\r\n");
        assert!(run_split(&long_trailer, 3).is_err());
    }

    #[test]
    fn max_u64_size_is_accepted_but_overflow_is_not() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"FFFFFFFFFFFFFFFF\r\nab"[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            ChunkStep::Data(Bytes::from_static(b"ab"))
        );
    }

    #[test]
    fn encode_roundtrip() {
        let mut out = BytesMut::new();
        encode_chunk(&mut out, b"hello");
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, &[b'x'; 300]);
        out.extend_from_slice(LAST_CHUNK);
        let (got, _) = run_split(&out, 7).unwrap();
        assert_eq!(got.len(), 305);
    }
}

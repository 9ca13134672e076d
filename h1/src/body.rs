//! Body decoding for both directions: Content-Length, chunked, read-to-EOF.
//! Every piece of data is a zero-copy `Bytes` slice of the read buffer.

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkStep, ChunkedDecoder};
use super::Error;

/// A body decoder: a named-field state machine per framing kind.
#[derive(Clone, Debug)]
pub enum Decoder {
    /// Exactly `remaining` more bytes.
    Length { remaining: u64 },
    /// Chunked transfer coding.
    Chunked { inner: ChunkedDecoder },
    /// Until the peer closes (responses only).
    Eof { finished: bool },
    /// No body, or body fully read.
    Done,
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    pub fn length(n: u64) -> Self {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length { remaining: n }
        }
    }
    pub fn chunked() -> Self {
        Decoder::Chunked {
            inner: ChunkedDecoder::new(),
        }
    }
    pub fn eof() -> Self {
        Decoder::Eof { finished: false }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Decoder::Done => true,
            Decoder::Eof { finished } => *finished,
            Decoder::Chunked { inner } => inner.is_done(),
            Decoder::Length { .. } => false,
        }
    }

    /// Whether the body ends only when the peer closes.
    pub fn is_eof_delimited(&self) -> bool {
        matches!(self, Decoder::Eof { .. })
    }

    /// Take the next piece of body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        match self {
            Decoder::Done => Ok(Decoded::Done),
            Decoder::Length { remaining } => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                let data = buf.split_to(take).freeze();
                if *remaining == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            Decoder::Chunked { inner } => match inner.decode(buf)? {
                ChunkStep::Data(d) => Ok(Decoded::Data(d)),
                ChunkStep::NeedMore => Ok(Decoded::NeedMore),
                ChunkStep::Done => {
                    *self = Decoder::Done;
                    Ok(Decoded::Done)
                }
            },
            Decoder::Eof { finished } => {
                if *finished {
                    return Ok(Decoded::Done);
                }
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
        }
    }

    /// The peer closed its side. Completes an EOF-delimited body; anything
    /// else still owed bytes, so the body was truncated.
    pub fn on_eof(&mut self) -> Result<(), Error> {
        match self {
            Decoder::Eof { finished } => {
                *finished = true;
                Ok(())
            }
            Decoder::Done => Ok(()),
            _ => Err(Error::Truncated(
                "connection closed before the body was complete",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(dec: &mut Decoder, input: &[u8], split: usize) -> (Vec<u8>, bool, usize) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for part in [&input[..split], &input[split..]] {
            buf.extend_from_slice(part);
            fed += part.len();
            loop {
                match dec.decode(&mut buf).unwrap() {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::Done => return (out, true, buf.len() + input.len() - fed),
                }
            }
            if dec.is_done() {
                return (out, true, buf.len() + input.len() - fed);
            }
        }
        (out, dec.is_done(), buf.len())
    }

    #[test]
    fn length_at_every_split() {
        let input = b"hello worldGET";
        for split in 0..=input.len() {
            let mut d = Decoder::length(11);
            let (out, done, left) = drain(&mut d, input, split);
            assert_eq!(out, b"hello world");
            assert!(done, "split {split}");
            assert_eq!(left, 3);
        }
    }

    #[test]
    fn eof_body_completes_on_close() {
        for split in 0..=5 {
            let mut d = Decoder::eof();
            let (out, done, _) = drain(&mut d, b"abcde", split);
            assert_eq!(out, b"abcde");
            assert!(!done);
            d.on_eof().unwrap();
            assert!(d.is_done());
        }
    }

    #[test]
    fn truncated_length_body_is_an_error_on_eof() {
        let mut d = Decoder::length(10);
        let (_, done, _) = drain(&mut d, b"abc", 1);
        assert!(!done);
        assert!(d.on_eof().is_err());
    }

    #[test]
    fn zero_length_is_done() {
        let mut d = Decoder::length(0);
        assert!(d.is_done());
        assert_eq!(d.decode(&mut BytesMut::new()).unwrap(), Decoded::Done);
    }
}

//! The codec's one error type: every decoder (request heads, response heads,
//! bodies, chunked framing) refuses bytes with an [`Error`]. The codec does
//! not know which side a message came from; the engine maps an error on a
//! request to its status ([`Error::status`]) and one on a response to 502.

use std::fmt;

/// Why the codec refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Malformed or ambiguous syntax or framing; the text says what.
    Malformed(&'static str),
    /// The connection ended before the message's framing was complete.
    Truncated(&'static str),
    /// CONNECT is not proxied.
    MethodNotAllowed,
    /// Request target over [`crate::MAX_TARGET_LEN`].
    UriTooLong,
    /// Head over its size limit, or too many fields.
    HeadTooLarge,
    /// A transfer coding other than a single `chunked`.
    UnsupportedCoding,
    /// An HTTP version other than 1.0 and 1.1.
    UnsupportedVersion,
}

impl Error {
    /// The status a request refused with this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            Error::Malformed(_) | Error::Truncated(_) => 400,
            Error::MethodNotAllowed => 405,
            Error::UriTooLong => 414,
            Error::HeadTooLarge => 431,
            Error::UnsupportedCoding => 501,
            Error::UnsupportedVersion => 505,
        }
    }

    /// A short, fixed description (used as the body of engine answers).
    pub fn reason(self) -> &'static str {
        match self {
            Error::Malformed(why) | Error::Truncated(why) => why,
            Error::MethodNotAllowed => "CONNECT is not supported",
            Error::UriTooLong => "request target too long",
            Error::HeadTooLarge => "request header fields too large",
            Error::UnsupportedCoding => "unsupported transfer-encoding",
            Error::UnsupportedVersion => "HTTP version not supported",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Error {}

//! What the engine answers when it answers itself: every engine-made
//! response is a [`Kind`], and [`Kind::status`] is the one mapping from an
//! error to a status.
//!
//! Which side failed is kept by type rather than by a tag: the codec refuses
//! bytes with one `h1::Error` (mapped here by `From`), client-side failures
//! of an exchange are `exchange::upload::UploadError` (a `Kind` to answer,
//! or the client gone), primary-side ones are
//! `exchange::download::DownloadError` (a `Kind` while no response byte was
//! sent, else only a close; connect failures are `net::ConnectError`, which
//! names the endpoint), and shadow failures are `mirror::ShadowError`s with
//! a `FailReason`, which only ever become a `failed` counter: no type path
//! leads from a shadow error to the client's response.

/// What went wrong. Each kind has one status (see [`Kind::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Malformed or ambiguous framing or syntax.
    BadRequest(&'static str),
    /// No route matched.
    NoRoute,
    /// CONNECT is not proxied.
    MethodNotAllowed,
    /// The request head did not arrive within `header_timeout_ms`.
    HeaderTimeout,
    /// Body over `server.max_body_bytes`.
    BodyTooLarge,
    /// Request target over [`crate::h1::MAX_TARGET_LEN`].
    UriTooLong,
    /// Request head over `max_header_bytes` or too many fields.
    HeadTooLarge,
    /// A transfer coding other than `chunked`.
    UnsupportedCoding,
    /// An HTTP version other than 1.0/1.1.
    UnsupportedVersion,
    /// Upstream refused, closed early, or answered with bad framing.
    BadGateway(&'static str),
    /// Connection cap reached.
    Overloaded,
    /// Upstream did not answer within its timeout.
    GatewayTimeout,
    /// A socket error or early close; no response can be sent.
    Io,
}

impl Kind {
    /// The status code the engine answers with for this kind.
    pub fn status(self) -> u16 {
        match self {
            Kind::BadRequest(_) => 400,
            Kind::NoRoute => 404,
            Kind::MethodNotAllowed => 405,
            Kind::HeaderTimeout => 408,
            Kind::BodyTooLarge => 413,
            Kind::UriTooLong => 414,
            Kind::HeadTooLarge => 431,
            Kind::UnsupportedCoding => 501,
            Kind::UnsupportedVersion => 505,
            Kind::BadGateway(_) => 502,
            Kind::Overloaded => 503,
            Kind::GatewayTimeout => 504,
            Kind::Io => 502,
        }
    }

    /// Short reason used as the plain-text body of engine-made responses.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::BadRequest(why) => why,
            Kind::NoRoute => "no route matched",
            Kind::MethodNotAllowed => "CONNECT is not supported",
            Kind::HeaderTimeout => "request header timeout",
            Kind::BodyTooLarge => "request body too large",
            Kind::UriTooLong => "request target too long",
            Kind::HeadTooLarge => "request header fields too large",
            Kind::UnsupportedCoding => "unsupported transfer-encoding",
            Kind::UnsupportedVersion => "HTTP version not supported",
            Kind::BadGateway(why) => why,
            Kind::Overloaded => "too many connections",
            Kind::GatewayTimeout => "upstream timeout",
            Kind::Io => "i/o error",
        }
    }

    /// Whether the client connection must be closed after answering.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Kind::BadRequest(_)
                | Kind::MethodNotAllowed
                | Kind::HeaderTimeout
                | Kind::BodyTooLarge
                | Kind::UriTooLong
                | Kind::HeadTooLarge
                | Kind::UnsupportedCoding
                | Kind::UnsupportedVersion
                | Kind::Overloaded
                | Kind::Io
        )
    }
}

impl From<crate::h1::Error> for Kind {
    /// The answer to a request the codec refused.
    fn from(e: crate::h1::Error) -> Kind {
        use crate::h1::Error as E;
        match e {
            E::Malformed(why) | E::Truncated(why) => Kind::BadRequest(why),
            E::MethodNotAllowed => Kind::MethodNotAllowed,
            E::UriTooLong => Kind::UriTooLong,
            E::HeadTooLarge => Kind::HeadTooLarge,
            E::UnsupportedCoding => Kind::UnsupportedCoding,
            E::UnsupportedVersion => Kind::UnsupportedVersion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;
    use crate::h1::Error;

    /// The codec's request-side status and the engine's agree for every
    /// error, and so do the texts answered.
    #[test]
    fn codec_errors_map_to_their_status() {
        for e in [
            Error::Malformed("x"),
            Error::Truncated("y"),
            Error::MethodNotAllowed,
            Error::UriTooLong,
            Error::HeadTooLarge,
            Error::UnsupportedCoding,
            Error::UnsupportedVersion,
        ] {
            let k = Kind::from(e);
            assert_eq!(k.status(), e.status(), "{e:?}");
            assert_eq!(k.reason(), e.reason(), "{e:?}");
            assert!(k.closes_connection(), "{e:?}: a refused request closes");
        }
    }
}

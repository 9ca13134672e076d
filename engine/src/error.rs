//! One error type for the engine: it knows which side failed and maps to
//! exactly one HTTP status (`Error::status`). A `Side::Mirror` error never
//! reaches the client's response path: the mirror writer only counts it.

use std::fmt;

/// Which party an error belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The downstream client (bad input, timeouts, early close).
    Client,
    /// The primary upstream.
    Primary,
    /// A shadow upstream.
    Mirror,
    /// The engine itself.
    Internal,
}

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

/// An engine error: kind, side, and an optional context string.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub side: Side,
    pub context: Option<String>,
    pub source: Option<std::io::Error>,
}

/// Engine result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, side: Side) -> Self {
        Error {
            kind,
            side,
            context: None,
            source: None,
        }
    }
    pub fn client(kind: Kind) -> Self {
        Self::new(kind, Side::Client)
    }
    pub fn primary(kind: Kind) -> Self {
        Self::new(kind, Side::Primary)
    }
    pub fn io(side: Side, e: std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
            match side {
                Side::Client => Kind::HeaderTimeout,
                _ => Kind::GatewayTimeout,
            }
        } else {
            match side {
                Side::Client => Kind::Io,
                _ => Kind::BadGateway("upstream connection failed"),
            }
        };
        Error {
            kind,
            side,
            context: None,
            source: Some(e),
        }
    }
    pub fn context(mut self, ctx: impl Into<String>) -> Self {
        self.context = Some(ctx.into());
        self
    }
    /// The one mapping from an error to the status sent to a client.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} side: {}", self.side, self.kind.reason())?;
        if let Some(c) = &self.context {
            write!(f, " ({c})")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

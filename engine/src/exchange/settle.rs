//! The exchange as data: what the two halves of one request/response came
//! to ([`Exchange`]), and the one pure function, [`settle`], that decides
//! what happens next: keep the client connection, close it, close it after
//! draining its unread input (linger), retry a stale pooled primary
//! connection once, tunnel an upgrade, and whether the primary connection
//! goes back to its pool. The driver (`exchange::run`) only carries out the
//! [`Step`]; no decision is made between awaits.

use crate::error::Kind;

/// How the request body's upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// Still running when the response side ended first.
    Unfinished,
    /// The whole body was read and well framed (`primary_write_failed`:
    /// writing it to the primary failed, which may still have answered).
    Done { primary_write_failed: bool },
    /// The body was refused (bad chunk, over `max_body_bytes`): answer this.
    Rejected(Kind),
    /// The client went away or timed out mid-body.
    ClientGone,
}

/// How the primary's response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Download {
    /// Not read: the upload failed first.
    NotRead,
    /// Read and streamed whole. `reusable`: its framing lets the primary
    /// connection be reused; `keep_alive`: the answer lets the client
    /// connection be kept (both sides asked for it and we are not draining).
    Done { reusable: bool, keep_alive: bool },
    /// EOF or reset before any response byte (a stale pooled connection?).
    Stale,
    /// Failed before any response byte reached the client: answer this.
    BeforeHead(Kind),
    /// A 101. `acceptable`: the client offered an upgrade and the primary
    /// chose only protocols it offered.
    Upgrade { acceptable: bool },
    /// Response bytes reached the client, then the exchange broke (bad
    /// framing mid-body, the primary or the client went away).
    Broken,
}

/// One exchange's state once neither half can make progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub upload: Upload,
    pub download: Download,
    /// Response bytes may have reached the client.
    pub response_started: bool,
    /// The request may be resent on a fresh connection if its pooled one was
    /// stale: idempotent, body-less, and the connection came from the pool.
    pub retryable: bool,
    /// It was resent once already.
    pub retried: bool,
    pub request: Request,
    /// The engine is draining: no connection is kept.
    pub draining: bool,
}

/// What the request head says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client asked for keep-alive (HTTP/1.1 default, or HTTP/1.0 with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The request has a body (unread bytes may follow an early answer).
    pub has_body: bool,
}

/// What the client connection does once the exchange's bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Read the next request.
    KeepAlive,
    /// Close now.
    Close,
    /// Close the write side, then read and discard the client's input for a
    /// bounded time so that unread bytes do not turn into a reset that
    /// destroys the answer (nginx's lingering close). Only after an answer
    /// that was written; if writing it failed, close.
    Linger,
}

/// The next step of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Resend the request on a fresh primary connection, then settle again
    /// with `retried` set.
    Retry,
    /// Write the engine's answer for `kind`, then do `client`. The primary
    /// connection is dropped.
    Reply { kind: Kind, client: Client },
    /// Write the primary's 101 to the client and relay bytes both ways until
    /// both sides are done; then close.
    Tunnel,
    /// Nothing more to write: do `client`, and return the primary connection
    /// to its pool if `pool`.
    Done { client: Client, pool: bool },
}

/// The kind answered when the primary closed without a byte.
pub const CLOSED_EARLY: Kind = Kind::BadGateway("primary closed the connection early");
/// The kind answered for a 101 the client did not ask for.
pub const UNEXPECTED_101: Kind = Kind::BadGateway("unexpected 101 from primary");

/// Decide the next step of an exchange.
pub fn settle(x: &Exchange) -> Step {
    // Upload failures decide first: the request was rejected or abandoned
    // (and never mirrored: its copies were not dispatched).
    match x.upload {
        Upload::Rejected(_) if x.response_started => {
            return Step::Done {
                client: Client::Close,
                pool: false,
            }
        }
        Upload::Rejected(kind) => return reply(kind, false, x),
        Upload::ClientGone => {
            return Step::Done {
                client: Client::Close,
                pool: false,
            }
        }
        Upload::Unfinished | Upload::Done { .. } => {}
    }
    let uploaded = matches!(x.upload, Upload::Done { .. });
    match x.download {
        Download::Stale if x.retryable && !x.retried => Step::Retry,
        // An upload still running means unread body bytes: the answer closes.
        Download::Stale | Download::NotRead => reply(CLOSED_EARLY, uploaded, x),
        Download::BeforeHead(kind) => reply(kind, uploaded, x),
        Download::Upgrade { acceptable: true } => Step::Tunnel,
        Download::Upgrade { acceptable: false } => reply(UNEXPECTED_101, uploaded, x),
        Download::Broken => Step::Done {
            client: Client::Close,
            pool: false,
        },
        Download::Done {
            reusable,
            keep_alive,
        } => {
            let request_sent = matches!(
                x.upload,
                Upload::Done {
                    primary_write_failed: false
                }
            );
            let client = if keep_alive && uploaded {
                Client::KeepAlive
            } else if !uploaded {
                // The primary answered before the body was all read.
                Client::Linger
            } else {
                Client::Close
            };
            Step::Done {
                client,
                pool: reusable && request_sent,
            }
        }
    }
}

/// An engine answer. `soft`: the request was read whole, so the connection
/// may be kept when nothing of it is left unread and the kind allows it.
fn reply(kind: Kind, soft: bool, x: &Exchange) -> Step {
    Step::Reply {
        kind,
        client: after_reply(kind, soft, x.request, x.draining),
    }
}

/// What the client connection does after an engine answer for `kind`.
/// `soft`: the request was read whole (nothing of the head or body is left
/// unread, unless it has a body the answer came before); otherwise the
/// answer always closes, lingering so the client reads it.
pub fn after_reply(kind: Kind, soft: bool, req: Request, draining: bool) -> Client {
    if !soft {
        return Client::Linger;
    }
    let keep = req.keep_alive && !req.has_body && !kind.closes_connection() && !draining;
    if keep {
        Client::KeepAlive
    } else if req.has_body {
        Client::Linger
    } else {
        Client::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Request = Request {
        keep_alive: true,
        has_body: false,
    };
    const GET_CLOSE: Request = Request {
        keep_alive: false,
        has_body: false,
    };
    const POST: Request = Request {
        keep_alive: true,
        has_body: true,
    };
    const SENT: Upload = Upload::Done {
        primary_write_failed: false,
    };
    const DONE_KEEP: Download = Download::Done {
        reusable: true,
        keep_alive: true,
    };

    fn x(request: Request, upload: Upload, download: Download) -> Exchange {
        Exchange {
            upload,
            download,
            response_started: false,
            retryable: false,
            retried: false,
            request,
            draining: false,
        }
    }

    fn done(client: Client, pool: bool) -> Step {
        Step::Done { client, pool }
    }

    fn replied(kind: Kind, client: Client) -> Step {
        Step::Reply { kind, client }
    }

    #[test]
    fn every_row() {
        let timeout = Kind::GatewayTimeout;
        let bad = Kind::BadGateway("invalid upstream status code");
        let too_large = Kind::BodyTooLarge;
        let bad_chunk = Kind::BadRequest("malformed chunked body");
        let rows: Vec<(&str, Exchange, Step)> = vec![
            // keep-alive
            (
                "answered, both keep",
                x(GET, SENT, DONE_KEEP),
                done(Client::KeepAlive, true),
            ),
            (
                "answered, POST with body sent",
                x(POST, SENT, DONE_KEEP),
                done(Client::KeepAlive, true),
            ),
            (
                "answered, close-delimited response: keep client, drop primary",
                x(
                    GET,
                    SENT,
                    Download::Done {
                        reusable: false,
                        keep_alive: true,
                    },
                ),
                done(Client::KeepAlive, false),
            ),
            (
                "answered, but writing the body to the primary failed: not pooled",
                x(
                    POST,
                    Upload::Done {
                        primary_write_failed: true,
                    },
                    DONE_KEEP,
                ),
                done(Client::KeepAlive, false),
            ),
            // close
            (
                "answered, client or response asked to close",
                x(
                    GET_CLOSE,
                    SENT,
                    Download::Done {
                        reusable: true,
                        keep_alive: false,
                    },
                ),
                done(Client::Close, true),
            ),
            (
                "response broke after its head",
                x(GET, SENT, Download::Broken),
                done(Client::Close, false),
            ),
            (
                "client went away mid-body",
                x(POST, Upload::ClientGone, Download::NotRead),
                done(Client::Close, false),
            ),
            (
                "body rejected after the response started: only a close is left",
                Exchange {
                    response_started: true,
                    ..x(POST, Upload::Rejected(too_large), Download::NotRead)
                },
                done(Client::Close, false),
            ),
            (
                "primary timed out while draining: answer and close",
                Exchange {
                    draining: true,
                    ..x(GET, SENT, Download::BeforeHead(timeout))
                },
                replied(timeout, Client::Close),
            ),
            (
                "client asked to close: engine answer closes",
                x(GET_CLOSE, SENT, Download::BeforeHead(bad)),
                replied(bad, Client::Close),
            ),
            // engine answers that keep the connection
            (
                "primary timed out, GET: 504 and keep",
                x(GET, SENT, Download::BeforeHead(timeout)),
                replied(timeout, Client::KeepAlive),
            ),
            (
                "bad primary head, GET: 502 and keep",
                x(GET, SENT, Download::BeforeHead(bad)),
                replied(bad, Client::KeepAlive),
            ),
            // retry once
            (
                "stale pooled connection, retryable: retry",
                Exchange {
                    retryable: true,
                    ..x(GET, SENT, Download::Stale)
                },
                Step::Retry,
            ),
            (
                "stale again after the retry: 502",
                Exchange {
                    retryable: true,
                    retried: true,
                    ..x(GET, SENT, Download::Stale)
                },
                replied(CLOSED_EARLY, Client::KeepAlive),
            ),
            (
                "stale, not retryable (fresh connection or a body): 502",
                x(GET, SENT, Download::Stale),
                replied(CLOSED_EARLY, Client::KeepAlive),
            ),
            // upgrade
            (
                "101 for an offered protocol: tunnel",
                x(GET, SENT, Download::Upgrade { acceptable: true }),
                Step::Tunnel,
            ),
            (
                "101 nobody asked for: 502",
                x(GET, SENT, Download::Upgrade { acceptable: false }),
                replied(UNEXPECTED_101, Client::KeepAlive),
            ),
            // linger
            (
                "primary answered before the body was read: linger",
                x(POST, Upload::Unfinished, DONE_KEEP),
                done(Client::Linger, false),
            ),
            (
                "primary failed before the body was read: answer, linger",
                x(POST, Upload::Unfinished, Download::BeforeHead(timeout)),
                replied(timeout, Client::Linger),
            ),
            (
                "body rejected before any response: answer, linger",
                x(POST, Upload::Rejected(bad_chunk), Download::NotRead),
                replied(bad_chunk, Client::Linger),
            ),
            (
                "body over the limit: 413, linger",
                x(POST, Upload::Rejected(too_large), Download::NotRead),
                replied(too_large, Client::Linger),
            ),
            (
                "engine answer after a whole body: linger (the connection is not kept)",
                x(POST, SENT, Download::BeforeHead(bad)),
                replied(bad, Client::Linger),
            ),
        ];
        for (what, ex, want) in rows {
            assert_eq!(settle(&ex), want, "{what}");
        }
    }

    #[test]
    fn after_reply_rows() {
        let rows = [
            // kind, soft, request, draining -> client
            (Kind::NoRoute, true, GET, false, Client::KeepAlive),
            (Kind::NoRoute, true, GET, true, Client::Close),
            (Kind::NoRoute, true, GET_CLOSE, false, Client::Close),
            (Kind::NoRoute, true, POST, false, Client::Linger),
            (Kind::BodyTooLarge, true, GET, false, Client::Close),
            (Kind::BadRequest("x"), true, GET, false, Client::Close),
            (Kind::BodyTooLarge, false, POST, false, Client::Linger),
            (Kind::GatewayTimeout, false, GET, false, Client::Linger),
        ];
        for (kind, soft, req, draining, want) in rows {
            assert_eq!(
                after_reply(kind, soft, req, draining),
                want,
                "{kind:?} soft={soft} {req:?} draining={draining}"
            );
        }
    }
}

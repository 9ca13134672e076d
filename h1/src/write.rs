//! Head serialisation. Every head the engine sends (upstream requests, mirror
//! copies, client responses, its own error responses) is written here from a
//! parse, field by field with canonical `name: value\r\n` separators.

use std::fmt::Write as _;

use bytes::BytesMut;

use super::request::{BodyFraming, RequestHead};
use super::response::{ResponseFraming, ResponseHead};
use super::{trim_ows, Version};

/// How the body of an outgoing request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    None,
    Length(u64),
    Chunked,
}

impl From<BodyFraming> for OutFraming {
    fn from(f: BodyFraming) -> Self {
        match f {
            BodyFraming::None => OutFraming::None,
            BodyFraming::Length(n) => OutFraming::Length(n),
            BodyFraming::Chunked => OutFraming::Chunked,
        }
    }
}

/// Edits applied while writing an upstream request head.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestEdits<'a> {
    /// Inserted into Host before any port (mirror `host_suffix`).
    pub host_suffix: &'a str,
    /// Appended to X-Forwarded-For (the client address, formatted once per
    /// connection by the caller).
    pub client_ip: Option<&'a str>,
    /// A header set to "1" (the mirror marker).
    pub marker: Option<&'a str>,
    /// Headers set (replacing any with the same name), names lowercase.
    pub set_headers: &'a [(String, String)],
    /// Header names removed, lowercase.
    pub remove_headers: &'a [String],
    /// Forward `Connection: upgrade` + `Upgrade`.
    pub upgrade: bool,
}

/// Write the request head to send upstream.
pub fn write_request_head(
    out: &mut BytesMut,
    head: &RequestHead,
    edits: &RequestEdits<'_>,
    framing: OutFraming,
) {
    out.extend_from_slice(head.method());
    out.extend_from_slice(b" ");
    let target = head.target();
    if target.is_empty() || target[0] == b'?' {
        out.extend_from_slice(b"/");
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let replaced = |name: &[u8]| {
        edits
            .set_headers
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            || edits
                .remove_headers
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            || edits
                .marker
                .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(name))
    };
    if !replaced(b"host") {
        // HTTP/1.1 requires Host: empty when an HTTP/1.0 client sent none (RFC 9112 §3.2).
        out.extend_from_slice(b"host: ");
        if let Some(host) = head.host() {
            write_host_with_suffix(out, host, edits.host_suffix);
        }
        out.extend_from_slice(b"\r\n");
    }
    let check_edits =
        !edits.set_headers.is_empty() || !edits.remove_headers.is_empty() || edits.marker.is_some();
    for f in &head.fields {
        if f.hop {
            continue;
        }
        let name = head.name(f);
        if check_edits && replaced(name) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(head.value(f));
        out.extend_from_slice(b"\r\n");
    }
    if !replaced(b"x-forwarded-for") {
        // Every X-Forwarded-For line, in order, as one list (RFC 9110 §5.3).
        let mut sep: &[u8] = b"x-forwarded-for: ";
        if head.forwarded_for.is_some() {
            for f in &head.fields {
                let v = trim_ows(head.value(f));
                if !v.is_empty() && head.name(f).eq_ignore_ascii_case(b"x-forwarded-for") {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(v);
                    sep = b", ";
                }
            }
        }
        if let Some(ip) = edits.client_ip {
            out.extend_from_slice(sep);
            out.extend_from_slice(ip.as_bytes());
            sep = b", ";
        }
        if sep == b", " {
            out.extend_from_slice(b"\r\n");
        }
    }
    for (n, v) in edits.set_headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(m) = edits.marker {
        out.extend_from_slice(m.as_bytes());
        out.extend_from_slice(b": 1\r\n");
    }
    match framing {
        OutFraming::None => {
            if matches!(head.method(), b"POST" | b"PUT" | b"PATCH") {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        OutFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        OutFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if edits.upgrade {
        if let Some(up) = head.upgrade {
            // h2c is never offered upstream (docs/SPEC.md: stripped).
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            let mut sep: &[u8] = b"";
            for t in
                super::list_items(up.get(&head.raw)).filter(|t| !t.eq_ignore_ascii_case(b"h2c"))
            {
                out.extend_from_slice(sep);
                out.extend_from_slice(t);
                sep = b", ";
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Append the decimal form of `n` (no allocation, no formatter).
#[inline]
pub fn write_u64(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Host with `suffix` inserted before any port: "a.b:8080" -> "a.b-shadow:8080".
pub fn write_host_with_suffix(out: &mut BytesMut, host: &[u8], suffix: &str) {
    if suffix.is_empty() {
        out.extend_from_slice(host);
        return;
    }
    let after_bracket = host.iter().rposition(|&b| b == b']').map_or(0, |i| i + 1);
    let port_at = host[after_bracket..]
        .iter()
        .rposition(|&b| b == b':')
        .map(|i| i + after_bracket);
    match port_at {
        Some(i) => {
            out.extend_from_slice(&host[..i]);
            out.extend_from_slice(suffix.as_bytes());
            out.extend_from_slice(&host[i..]);
        }
        None => {
            out.extend_from_slice(host);
            out.extend_from_slice(suffix.as_bytes());
        }
    }
}

/// How the response body goes to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFraming {
    None,
    Length(u64),
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients).
    Close,
}

/// Choose the client-side framing for an upstream response.
pub fn client_framing(resp: &ResponseHead, client: Version) -> ClientFraming {
    match resp.framing {
        ResponseFraming::None => ClientFraming::None,
        ResponseFraming::Length(n) => ClientFraming::Length(n),
        ResponseFraming::Chunked | ResponseFraming::Close => match client {
            Version::Http11 => ClientFraming::Chunked,
            Version::Http10 => ClientFraming::Close,
        },
    }
}

/// Write the response head sent to the client.
pub fn write_response_head(
    out: &mut BytesMut,
    resp: &ResponseHead,
    framing: ClientFraming,
    client: Version,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, resp.status as u64);
    out.extend_from_slice(b" ");
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    for f in &resp.fields {
        if f.hop {
            continue;
        }
        out.extend_from_slice(resp.name(f));
        out.extend_from_slice(b": ");
        out.extend_from_slice(resp.value(f));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ClientFraming::None => {
            if resp.status != 204 && !(100..200).contains(&resp.status) {
                if let Some(n) = resp.content_length {
                    out.extend_from_slice(b"content-length: ");
                    write_u64(out, n);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        ClientFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ClientFraming::Close => {}
    }
    if resp.status == 101 {
        if let Some(up) = resp.upgrade {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            out.extend_from_slice(up.get(&resp.raw));
            out.extend_from_slice(b"\r\n");
        }
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An engine-made response with a short plain-text body naming the reason.
pub fn write_error_response(out: &mut BytesMut, status: u16, reason: &str, close: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{reason}\n",
        reason_phrase(status),
        reason.len() + 1,
        if close { "connection: close\r\n" } else { "" },
    );
}

/// Standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_suffix_before_port() {
        for (host, want) in [
            ("a.b:8080", "a.b-shadow:8080"),
            ("a.b", "a.b-shadow"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("[::1]", "[::1]-shadow"),
        ] {
            let mut out = BytesMut::new();
            write_host_with_suffix(&mut out, host.as_bytes(), "-shadow");
            assert_eq!(&out[..], want.as_bytes());
        }
    }
}

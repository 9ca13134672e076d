//! Shared inputs and fixtures for the criterion benches in `benches/benches/`.
//!
//! Owns the byte strings every bench feeds the codec (so `parse` and bare
//! httparse see the same head), the route table the `route` bench walks, and
//! a blocking keep-alive HTTP/1.1 client plus engine configs for `latency`.
//! Nothing here is measured by itself; it must stay deterministic so runs
//! compare across commits.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::{Bytes, BytesMut};
use shadowtee::h1::{parse_request, RequestHead, RequestLimits};

/// A browser-like GET head (Firefox on Linux, logged in, with a tenant
/// header), 300–500 bytes like a real browser's. It matches the 8th route of
/// [`ROUTES_TOML`] and no earlier one.
pub const BROWSER_GET: &[u8] = b"GET /api/v2/catalog/items?page=3&sort=price HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/catalog/shoes\r\n\
Cookie: session=6f1c2a9e4b7d40c1; theme=dark; cart=3\r\n\
X-Tenant: acme\r\n\
Connection: keep-alive\r\n\
\r\n";

/// Parse [`BROWSER_GET`] once, the way the engine does (the head is split off
/// a `BytesMut` and frozen, so its `raw` is refcounted, not a static).
pub fn parsed_browser_get() -> RequestHead {
    let mut buf = BytesMut::from(BROWSER_GET);
    match parse_request(&mut buf, &RequestLimits::default()) {
        Ok(Some(head)) => head,
        other => panic!("BROWSER_GET must parse: {other:?}"),
    }
}

/// `total` bytes of body in chunked transfer coding, `chunk` bytes per chunk
/// (the last chunk may be shorter), ending with the zero chunk and no trailers.
pub fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    assert!(chunk > 0);
    let mut out = Vec::with_capacity(total + total / chunk * 12 + 16);
    let mut left = total;
    let mut byte = b'a';
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.resize(out.len() + n, byte);
        out.extend_from_slice(b"\r\n");
        byte = if byte == b'z' { b'a' } else { byte + 1 };
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Body bytes split into refcounted pieces the way a decoder hands them out
/// (slices of one frozen read buffer).
pub fn body_pieces(total: usize, pieces: usize) -> Vec<Bytes> {
    let mut buf = BytesMut::from(&vec![b'x'; total][..]);
    let each = total / pieces;
    let mut out: Vec<Bytes> = (1..pieces).map(|_| buf.split_to(each).freeze()).collect();
    out.push(buf.freeze());
    out
}

/// Ten routes, first match wins; [`BROWSER_GET`] is caught by the 8th,
/// `catalog-tenant`, after failing on path, method or header in the others.
pub const ROUTES_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "v1"
endpoints = ["127.0.0.1:9"]

[[upstreams]]
name = "v2"
endpoints = ["127.0.0.1:10"]

[[routes]]
name = "health"
match = { path_exact = "/healthz" }
destinations = [{ upstream = "v1", weight = 1 }]

[[routes]]
name = "static"
match = { path_prefix = "/static/", methods = ["GET", "HEAD"] }
destinations = [{ upstream = "v1", weight = 1 }]

[[routes]]
name = "api-v1"
match = { path_prefix = "/api/v1/" }
destinations = [{ upstream = "v1", weight = 1 }]

[[routes]]
name = "api-v2-writes"
match = { path_prefix = "/api/v2/", methods = ["POST", "PUT", "PATCH", "DELETE"] }
destinations = [{ upstream = "v2", weight = 1 }]

[[routes]]
name = "tenant-globex"
match = { path_prefix = "/api/v2/", headers = { "x-tenant" = "globex" } }
destinations = [{ upstream = "v2", weight = 1 }]

[[routes]]
name = "orders"
match = { path_prefix = "/api/v2/orders" }
destinations = [{ upstream = "v2", weight = 1 }]

[[routes]]
name = "catalog-canary"
match = { path_prefix = "/api/v2/catalog", methods = ["GET"], headers = { "x-canary" = "1" } }
destinations = [{ upstream = "v2", weight = 1 }]

[[routes]]
name = "catalog-tenant"
match = { path_prefix = "/api/v2/catalog", methods = ["GET", "HEAD"], headers = { "x-tenant" = "acme" } }
destinations = [{ upstream = "v1", weight = 80 }, { upstream = "v2", weight = 20 }]

[[routes]]
name = "api"
match = { path_prefix = "/api/" }
destinations = [{ upstream = "v1", weight = 1 }]

[[routes]]
name = "default"
destinations = [{ upstream = "v1", weight = 1 }]
"#;

/// Index of the route [`BROWSER_GET`] must land on.
pub const EXPECTED_ROUTE: usize = 7;

/// Engine config for the `latency` bench: one core's worth of settings, port
/// 0 for the listener and admin, one route to `primary`, and when `mirror` is
/// given a 100% shadow to it.
pub fn engine_toml(primary: SocketAddr, mirror: Option<SocketAddr>) -> String {
    let mut t = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout_ms = 1000

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "primary"
endpoints = ["{primary}"]
"#
    );
    if let Some(m) = mirror {
        t.push_str(&format!(
            r#"
[[upstreams]]
name = "shadow"
endpoints = ["{m}"]
"#
        ));
    }
    t.push_str(
        r#"
[[routes]]
name = "all"
[[routes.destinations]]
upstream = "primary"
weight = 100
"#,
    );
    if mirror.is_some() {
        t.push_str(
            r#"
[[routes.mirrors]]
upstream = "shadow"
percent = 100.0
"#,
        );
    }
    t
}

/// The request the `latency` bench sends on every round trip.
pub const LATENCY_GET: &[u8] = b"GET /bench HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: shadowtee-bench\r\nAccept: */*\r\n\r\n";

/// A blocking keep-alive HTTP/1.1 client for one connection. It understands
/// just enough of a response to find its end: Content-Length bodies only.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Send `request`, read one whole response; returns its status.
    pub fn round_trip(&mut self, request: &[u8]) -> io::Result<u16> {
        self.stream.write_all(request)?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head_len) = parsed {
                let status = resp.code.unwrap_or(0);
                let body_len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            "response without Content-Length",
                        )
                    })?;
                let want = head_len + body_len;
                while self.buf.len() < want {
                    self.fill(&mut chunk)?;
                }
                if self.buf.len() != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bytes after the response (unexpected pipelining)",
                    ));
                }
                return Ok(status);
            }
            self.fill(&mut chunk)?;
        }
    }

    fn fill(&mut self, chunk: &mut [u8]) -> io::Result<()> {
        let n = self.stream.read(chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_get_is_typical_size() {
        assert!(
            (300..=500).contains(&BROWSER_GET.len()),
            "{}",
            BROWSER_GET.len()
        );
    }

    #[test]
    fn browser_get_hits_the_eighth_route() {
        let cfg = config_schema::parse(ROUTES_TOML).expect("routes parse");
        assert_eq!(cfg.routes.len(), 10);
        let head = parsed_browser_get();
        let path = head.path();
        let hit = cfg
            .routes
            .iter()
            .position(|r| r.matcher.matches(head.method(), path, |n| head.header(n)));
        assert_eq!(hit, Some(EXPECTED_ROUTE));
    }

    #[test]
    fn chunked_body_decodes_to_its_length() {
        for chunk in [16, 4096, 5000] {
            let mut buf = BytesMut::from(&chunked_body(65536, chunk)[..]);
            let mut dec = shadowtee::h1::Decoder::chunked();
            let mut got = 0;
            loop {
                match dec.decode(&mut buf).expect("valid chunked") {
                    shadowtee::h1::Decoded::Data(d) => got += d.len(),
                    shadowtee::h1::Decoded::Done => break,
                    shadowtee::h1::Decoded::NeedMore => panic!("input is complete"),
                }
            }
            assert_eq!(got, 65536);
        }
    }

    #[test]
    fn engine_configs_validate() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        config_schema::parse(&engine_toml(a, None)).expect("plain");
        config_schema::parse(&engine_toml(a, Some(a))).expect("mirror");
    }
}

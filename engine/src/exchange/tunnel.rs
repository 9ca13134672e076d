//! After a 101 for an offered upgrade: relay bytes both ways until both
//! sides are done (reads are cancel-safe, so racing them loses nothing).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::net::{read_into, RxBuf, UpConn};

/// Relay bytes both ways after a 101 until both sides are done.
pub(super) async fn tunnel(
    client: &mut TcpStream,
    rbuf: &mut RxBuf,
    mut up: UpConn,
    idle: Duration,
) {
    if !rbuf.is_empty() {
        if up.write_all(rbuf).await.is_err() {
            return;
        }
        rbuf.clear();
    }
    if !up.buf.is_empty() {
        let pending = up.buf.split();
        if client.write_all(&pending).await.is_err() {
            return;
        }
    }
    let mut cbuf = BytesMut::with_capacity(16 * 1024);
    let mut client_open = true;
    let mut up_open = true;
    let _ = client.set_read_timeout(Some(idle));
    let _ = up.stream.set_read_timeout(Some(idle));
    while client_open || up_open {
        enum Got {
            Client(io::Result<usize>),
            Up(io::Result<usize>),
        }
        let got = {
            let a = async {
                if client_open {
                    Got::Client(read_into(client, &mut cbuf).await)
                } else {
                    std::future::pending().await
                }
            };
            let b = async {
                if up_open {
                    Got::Up(up.fill().await)
                } else {
                    std::future::pending().await
                }
            };
            futures_lite::future::or(a, b).await
        };
        match got {
            Got::Client(Ok(n)) if n > 0 => {
                if up.write_all(&cbuf).await.is_err() {
                    return;
                }
                cbuf.clear();
            }
            Got::Client(Ok(_)) => {
                client_open = false;
                let _ = up.stream.shutdown(std::net::Shutdown::Write).await;
            }
            Got::Client(Err(_)) => return,
            Got::Up(Ok(n)) if n > 0 => {
                let data = up.buf.split();
                if client.write_all(&data).await.is_err() {
                    return;
                }
            }
            Got::Up(Ok(_)) => {
                up_open = false;
                let _ = client.shutdown(std::net::Shutdown::Write).await;
            }
            Got::Up(Err(_)) => return,
        }
    }
}

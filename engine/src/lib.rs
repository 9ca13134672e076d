//! shadowtee: an HTTP/1.1 tee proxy on glommio, thread-per-core.
pub mod error;
pub mod h1;
pub mod ring;

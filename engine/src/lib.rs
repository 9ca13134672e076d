//! shadowtee: an HTTP/1.1 tee proxy on glommio, thread-per-core.
//! See `engine/LIFECYCLE.md` for a request's path through these modules.
pub mod accesslog;
pub mod admin;
pub mod compare;
pub mod deadline;
pub mod demo;
pub mod error;
pub mod h1;
pub mod mirror;
pub mod proxy;
#[cfg(test)]
mod reactor_tests;
pub mod ring;
pub mod runtime;
pub mod shared;
pub mod stats;
pub mod testserver;
pub mod upstream;
pub mod worker;

//! The binary's product edge, outside the engine library: the demo and the
//! `shadowtee compare` table. (The admin client is `shadowtee_net::get`,
//! the Istio importer the `shadowtee-istio` crate, the demo's upstreams the
//! `shadowtee-origin` crate.)

pub mod demo;
pub mod table;

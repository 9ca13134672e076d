//! The comparison of each shadow with its route's primary.
//!
//! - `pair`: joins the two outcomes of one mirrored request and records them.
//! - `records`: the per-core tables they are recorded into.
//!
//! `/compare` and the comparison metrics merge these tables when read
//! (`admin`); the `shadowtee compare` table renders that JSON (the binary's
//! `cli::table`).

mod pair;
mod records;

pub use pair::{Outcome, Pair};
pub use records::{CompareStats, Mismatch, RECENT_EVERY, RECENT_MISMATCHES};

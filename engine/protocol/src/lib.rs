//! Ringcast wire formats, shared by the engine and the load generator.
//!
//! Everything here is sans-IO: bytes in, values out. The crate owns the only
//! types that derive rkyv's `Archive`, so the shape of what crosses shards,
//! what is stored and what binary clients see is defined in one place.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod client;
pub mod close;
pub mod cluster;
pub mod deflate;
pub mod envelope;
pub mod frame;
pub mod handshake;
pub mod limits;

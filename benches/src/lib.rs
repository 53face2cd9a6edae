//! Ringcast benchmarks. The criterion benches live in `benches/`; the
//! measurement tools that drive a running engine over sockets are the
//! binaries in `src/bin/`.

pub mod chat;
pub mod client;

//! Ringcast engine: a thread-per-core io_uring WebSocket push engine.
//!
//! `engine` starts it; each `shard` owns a slice of the connections on one
//! pinned monoio runtime; `mesh` carries publications between shards;
//! `control` serves the HTTP API. See `docs/ARCHITECTURE.md`.

#![deny(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod backend_http;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod control;
pub mod engine;
pub mod im;
pub mod interest;
pub mod limits;
pub mod mesh;
pub mod metrics;
pub mod outbox;
pub mod partition;
pub mod payload;
pub mod presence;
pub mod proxy;
pub mod publication;
pub mod ratelimit;
pub mod session;
pub mod shard;
pub mod streams;
pub mod sys;
pub mod tls;
pub mod uring;
pub mod webhook;

pub use engine::{Engine, EngineError};

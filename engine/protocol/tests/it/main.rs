//! Tests of `ringcast-protocol` through its public API only, as the engine,
//! the load generator and clients use it.

mod api;
mod golden;
mod golden_im;

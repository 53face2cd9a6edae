//! Integration tests: a real engine in this process, the real
//! `ringcast-loadgen` binary (and its worker processes) against it.

mod connect;
mod fanout;
mod reconnect;
mod util;

//! Integration tests: a real engine in this process, the real
//! `ringcast-loadgen` binary (and its worker processes) against it.

mod chat;
mod connect;
mod fake;
mod fanout;
mod profiles;
mod reconnect;
mod report;
mod util;

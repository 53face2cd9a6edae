//! End-to-end tests of the engine over real sockets.
//!
//! Clients are tungstenite (an implementation not written here) for normal
//! traffic, and a raw TCP client for the malformed input tungstenite refuses
//! to produce. Each scenario runs on both I/O drivers (`e2e!`), so the epoll
//! fallback passes the same tests as io_uring.

mod util;

mod api;
mod api_complete;
mod auth;
mod binary;
mod cluster;
mod crash;
mod crash_im;
mod deflate;
mod durable;
mod fd_budget;
mod handshake;
mod heartbeat;
mod history_time;
mod im_delivery;
mod im_dm;
mod im_group_ops;
mod im_groups;
mod im_recall;
mod im_retention;
mod im_review;
mod im_signals;
mod limits;
mod outbox_events;
mod permissions;
mod presence_watch;
mod proxy;
mod proxy_stall;
mod publish_path;
mod pubsub;
mod rate_limits;
mod shutdown;
mod slow_consumer;
mod store_failure;
mod tidy;
mod tls;
mod tuning;
mod violations;
mod webhooks;

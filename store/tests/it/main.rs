//! Integration tests of `ringcast-store` against real fjall in temp dirs.
//! One binary, one module per area (style guide §7).

mod cursors;
mod dedup;
mod failure;
mod im;
mod im_delivery;
mod im_groups;
mod im_recall;
mod im_retention;
mod kill;
mod outbox;
mod recovery;
mod resources;
mod retention;
mod sink;
mod streams;
mod time;
mod util;

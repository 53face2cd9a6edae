//! Webhooks: durable events delivered to the app's backend.
pub mod schedule;
pub mod sign;

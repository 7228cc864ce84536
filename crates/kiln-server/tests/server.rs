//! The server's integration tests, one binary so the server and its
//! dependencies are linked once: each module starts its own in-process
//! server on random ports, on SQLite.
//!
//! - `http`: the REST API's answers, refusals and description; forges'
//!   webhooks (`http::hooks`).
//! - `grpc`: the agent service: sessions, routing, fencing, results.
//! - `events`: the change feed (`GET /api/v1/events`).
//! - `log_view`: windows of a log read from database chunks and from the
//!   blob store alike.

#[path = "events.rs"]
mod events;
#[path = "grpc.rs"]
mod grpc;
#[path = "http.rs"]
mod http;
#[path = "log_view.rs"]
mod log_view;

//! The supervisor's admin API as its clients see it: the JSON views and
//! answers of every endpoint ([`views`]) and [`AdminClient`], the HTTP
//! client of `supctl`, the test harnesses and any program that drives a
//! cluster.
//!
//! The crate is small on purpose: serde types and a reqwest client, no
//! openraft, no RocksDB. The supervisor builds these views from its
//! replicated state (`supervisor::views`); everything else only reads them.
//! The field names are the outside contract (docs/reference.md): add
//! fields, never rename or drop one.

pub mod client;
pub mod logs;
pub mod stream;
pub mod views;

pub use client::{AdminClient, ClientError};
pub use logs::LogStream;
pub use reqwest::StatusCode;
pub use stream::{EventFilter, EventStream, StreamItem};
pub use views::*;

//! The supervisor cluster: three or more replicas that keep software modules
//! alive across a fleet of nodes (patent US 9,201,744 B2, claims 1 and 2).
//!
//! ## Data flow
//! ```text
//!  agent ──heartbeat (packed status codes)──► http::agent ─► Leader::heartbeat
//!                                             │ leader only
//!            ┌────────────────────────────────▼───────────────┐
//!            │ leader::Leader   observe::Observed (memory)    │
//!            │   control loop: plan(state, observed, now)     │
//!            │   ──► transitions, one log entry per pass      │
//!            │   ──► package retrieval from depmgr            │
//!            └────────────────┬───────────────────────────────┘
//!                             ▼ openraft (raft-store on RocksDB)
//!            state::ClusterState::apply  (every replica, pure)
//!                             │
//!  agent ◄──reply: lease + directives::directives_for(state, table)
//! ```
//!
//! ## Modules
//! - [`state`]: the replicated state and its deterministic `apply`, one
//!   transition struct per change with its behaviour beside it.
//! - [`observe`]: heartbeat ingestion, what the leader knows of each node
//!   (memory only).
//! - [`plan`]: the pure reconciler: state + observations + clock → the
//!   transitions to commit and the packages to retrieve.
//! - [`directives`]: what each agent is told, derived from committed state;
//!   [`prestage`]: the `Prefetch` directives that pre-stage a package on
//!   the node a module would fail over to next.
//! - [`leader`]: the leader-only control loop (I/O edge of `plan`), the
//!   leader's side of the heartbeat protocol, package retrieval.
//! - [`raft`], [`network`]: openraft type configuration and HTTP Raft RPC;
//!   [`vouch`]: with TLS, admitting a member this replica has not learnt of
//!   yet on the word of one it trusts.
//! - [`http`]: one file per surface (Raft RPC, agents, admin API,
//!   forwarding, guards, metrics) and who may call each (`http::auth`:
//!   with TLS, by the identity of the client certificate); [`views`]: the
//!   admin API's JSON.
//! - [`app`], [`server`], [`config`]: wiring, start and stop; [`error`]:
//!   the one error type.
//!
//! The admin API's JSON types and its client live in the `admin-api` crate,
//! `supctl` in its own crate: neither links openraft nor RocksDB.

pub mod app;
pub mod backup;
pub mod config;
pub mod directives;
pub mod error;
pub mod http;
pub mod leader;
pub mod network;
pub mod observe;
pub mod plan;
pub mod prestage;
pub mod raft;
#[cfg(test)]
mod scenarios;
pub mod server;
pub mod state;
pub mod views;
pub mod vouch;

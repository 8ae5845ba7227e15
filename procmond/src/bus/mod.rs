//! The local event bus between collectors and the agent (docs/reference.md §4):
//! `protocol` (frames, envelopes, topics), `broker` (the server, in the
//! agent or embedded in `watch`) and `client` (collectors, `ctl`, tests).

pub mod authz;
pub mod broker;
pub mod client;
pub mod limits;
pub mod protocol;
pub mod rpc;

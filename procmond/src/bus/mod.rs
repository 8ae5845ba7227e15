//! The local event bus between collectors and the agent (docs/reference.md §4):
//! `protocol` (frames, envelopes, topics), `broker` (the server, in the
//! agent or embedded in `watch`) and `client` (collectors, `ctl`, tests).
//! The transport is a Unix socket on Unix and a named pipe on Windows
//! (`pipe`); `peer` is who is connected (a uid, or a SID on Windows).

pub mod authz;
pub mod broker;
pub mod client;
pub mod limits;
pub mod peer;
pub mod pipe;
pub mod protocol;
pub mod rpc;

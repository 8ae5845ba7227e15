//! One module per `procmond` command.

pub mod capabilities;
pub mod config;
pub mod snapshot;
pub mod watch;

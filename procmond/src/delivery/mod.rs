//! Delivery: getting encoded batches from the collector to the broker
//! without losing them. `wal` keeps every batch on disk until the broker
//! acknowledges it (`wal_marks` notices when storage lost some behind its
//! back); `connector` publishes from the WAL, replays after a
//! reconnect and applies backpressure. Neither looks inside an event.

pub mod connector;
mod connector_loop;
pub mod pacer;
pub mod storage;
pub mod wal;
mod wal_dir;
pub mod wal_marks;

//! Kafka-compatible zero-copy partitioned-log broker.
//!
//! The storage and protocol layers are their own crates (under `crates/`), re-exported here under
//! their historical module names so `engine::log::…` and `crate::log::…` keep working:
//! * [`record`] (`zl-record`): record batch v2 format (pure).
//! * [`io`] (`zl-io`): the storage/socket I/O trait, io_uring and simulated implementations (the only `unsafe`).
//! * [`log`] (`zl-log`): segments, indexes, partitions, group commit, recovery, retention (no sockets).
//! * [`wire`] (`zl-wire`): Kafka framing and the hand-framed zero-copy Fetch response.
//! * [`groups`] (`zl-groups`): the group coordinator (consumer groups, committed offsets, producer ids).
//! * [`broker`]: the server and one handler per API (this crate).
//! * [`txn`]: the transaction coordinator (transactional producers, markers; issue 20).
#![forbid(unsafe_code)]
pub mod broker;
pub mod txn;
pub use zl_groups as groups;
pub use zl_io as io;
pub use zl_log as log;
pub use zl_record as record;
pub use zl_wire as wire;

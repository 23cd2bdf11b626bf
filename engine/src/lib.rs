//! Kafka-compatible zero-copy partitioned-log engine.
//!
//! * [`record`]: record batch v2 format (pure).
//! * [`io`]: the storage/socket I/O trait, io_uring and simulated implementations (the only `unsafe`).
//! * [`log`]: segments, indexes, partitions, group commit, recovery, retention (no sockets).
//! * [`wire`]: Kafka framing and the hand-framed zero-copy Fetch response.
//! * [`broker`]: the server and one handler per API.
//! * [`groups`]: the group coordinator (consumer groups, committed offsets, producer ids).
//! * [`txn`]: the transaction coordinator (transactional producers, markers; issue 20).
pub mod broker;
pub mod groups;
pub mod io;
pub mod log;
pub mod record;
pub mod txn;
pub mod wire;

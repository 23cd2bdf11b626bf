//! Load generator for Kafka-protocol brokers: open-loop, coordinated-omission-correct throughput
//! and tail latency, with results people can read. See `loadgen/ARCHITECTURE.md`.
#![forbid(unsafe_code)]
pub mod calibrate;
pub mod client;
pub mod compare;
pub mod consumer;
pub mod encode;
pub mod env;
pub mod external;
pub mod group;
pub mod hlog;
pub mod html;
pub mod produce;
pub mod producer;
pub mod rate;
pub mod results;
pub mod retry;
pub mod run;
pub mod security;
pub mod selftest;
pub mod sink;
pub mod size;
pub mod stats;
pub mod tagged;
#[cfg(test)]
pub mod testbroker;
pub mod txn;
pub mod versus;
pub mod workers;
pub mod workload;

//! Load generator for Kafka-protocol brokers.
pub mod compare;
pub mod size;

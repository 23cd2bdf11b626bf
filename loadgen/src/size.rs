//! `loadgen size`: hardware sizing from measured results.

//! `loadgen size`: hardware sizing from measured results.
//!
//! Placeholder on the `loadgen` branch so `main.rs` compiles: the bench branch owns this file and
//! its real definitions replace these at merge time.

/// Arguments of `loadgen size` (placeholder).
#[derive(Debug, clap::Args)]
pub struct SizeArgs {
    /// Result files (placeholder: the bench branch defines the real interface).
    pub files: Vec<std::path::PathBuf>,
}

/// Runs the sizing; returns the process exit code (placeholder).
pub fn run(_args: SizeArgs) -> i32 {
    eprintln!("loadgen size: not available on this branch (owned by the bench branch)");
    2
}

//! `loadgen compare BASE NEW…`: statistical comparison of result sets (regression gate).
//!
//! Placeholder on the `loadgen` branch so `main.rs` compiles: the bench branch owns this file and
//! its real definitions replace these at merge time.

/// Arguments of `loadgen compare` (placeholder).
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Result files (placeholder: the bench branch defines the real interface).
    pub files: Vec<std::path::PathBuf>,
}

/// Runs the comparison; returns the process exit code (placeholder).
pub fn run(_args: CompareArgs) -> i32 {
    eprintln!("loadgen compare: not available on this branch (owned by the bench branch)");
    2
}

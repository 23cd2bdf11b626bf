//! `perf compare …` / `perf size …`: the same commands as `loadgen compare` / `loadgen size`
//! (same argument structs, same code), usable by `scripts/` before or without the loadgen binary
//! wiring them.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "perf", about = "Benchmark comparison and hardware sizing (same as loadgen compare / size)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare runs with a confidence interval; exit 1 on regression, 2 on bad input.
    Compare(loadgen::compare::CompareArgs),
    /// Nodes, disks and network for an events/day target from measured results.
    Size(loadgen::size::SizeArgs),
}

fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => match cli.cmd {
            Cmd::Compare(a) => loadgen::compare::run(a),
            Cmd::Size(a) => loadgen::size::run(a),
        },
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            code
        }
    };
    std::process::exit(code);
}

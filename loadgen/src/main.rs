//! `loadgen`: run | calibrate | report | selftest | compare | size | versus.
//! Exit codes: 0 ok, 1 run failed part-way or regression (compare), 2 bad input, 3 undecided
//! (compare), 4 records lost (run), 5 target rate missed (run), 130 Ctrl-C. `loadgen run --help`
//! lists the run's.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use loadgen::run::{run, summary_table, RunError, RunOptions};
use loadgen::workload::Overrides;

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Open-loop, coordinated-omission-correct load generator for Kafka-protocol brokers")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a workload (default: max-sustainable, the max-rate search against an embedded engine).
    Run(Box<RunArgs>),
    /// Measure hardware ceilings: disk write + fdatasync, loopback TCP, memory copy.
    Calibrate {
        /// Directory whose disk is measured.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Render result files into one self-contained HTML page with SVG charts.
    Report {
        /// Result JSON files.
        #[arg(required_unless_present = "base")]
        files: Vec<PathBuf>,
        /// Baseline runs (files or directories): adds the base-vs-new view of `loadgen compare`.
        #[arg(long, num_args = 1.., requires = "new", value_name = "PATH")]
        base: Vec<PathBuf>,
        /// New runs (files or directories), with --base.
        #[arg(long, num_args = 1.., requires = "base", value_name = "PATH")]
        new: Vec<PathBuf>,
        /// With --base/--new: compare runs whose workload parameters differ.
        #[arg(long)]
        force: bool,
        /// Output HTML file.
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
    },
    /// Measure the generator itself against the discarding sink (max rate, recording overhead).
    Selftest(loadgen::selftest::SelftestArgs),
    /// Compare result sets (regression gate).
    Compare(loadgen::compare::CompareArgs),
    /// Size hardware for a target from measured results.
    Size(loadgen::size::SizeArgs),
    /// One workload against several targets, interleaved, compared to the first (loadgen::versus).
    Versus(Box<loadgen::versus::VersusArgs>),
    /// Serve distributed runs: a coordinator (`loadgen run --workers`) sends this host its share
    /// of the workload (loadgen::workers).
    Worker {
        /// Address to listen on for the coordinator, host:port.
        #[arg(long)]
        listen: String,
        /// Exit after serving this many coordinator connections (default: serve forever).
        #[arg(long)]
        runs: Option<u64>,
    },
}

const RUN_EXIT_CODES: &str = "Exit status:
  0    every scheduled record of the measured window was acknowledged and at least 97 % of the
       target rate was acknowledged within the window + grace (a search: its rate was confirmed)
  1    the run failed part-way (lost connection, broker error);
       a result is written with \"complete\": false when the measured phase had started
  2    bad input (unreachable broker, bad workload, impossible rate); nothing written
  4    records lost: some scheduled record of the measured window was not acknowledged (failed,
       timed out at the drain deadline, or never sent); \"complete\": false
  5    target missed: all acknowledged, but fewer than 97 % of the target rate within the window
       + grace (\"target_met\": false), or no full-length run of the search passed, or no
       rate passed its short trials (then the result is a full-length run at the lowest rate
       tried, \"search\": {\"confirmed\": false, \"max_rate\": 0})
  130  interrupted (Ctrl-C); result written with \"complete\": false";

#[derive(clap::Args, Default)]
#[command(after_help = RUN_EXIT_CODES)]
struct RunArgs {
    /// Built-in workload name or YAML file (built-ins: max-sustainable, smoke, max-throughput-100b,
    /// throughput-1kb, many-partitions-1000, durable-fsync, backlog-drain, max-rate-search).
    #[arg(short, long, default_value = "max-sustainable")]
    workload: String,
    /// Drive external brokers instead of the embedded engine: host:port[,host:port…].
    #[arg(long)]
    bootstrap: Option<String>,
    /// No broker: encode and count into a discarding sink (measures the generator).
    #[arg(long, conflicts_with = "bootstrap")]
    sink: bool,
    /// Calibrate before the run (default: only for the embedded engine).
    #[arg(long, overrides_with = "no_calibrate")]
    calibrate: bool,
    /// Skip calibration.
    #[arg(long)]
    no_calibrate: bool,
    /// Results root folder (default results/local, ignored by git: copy a run you want to keep
    /// into results/).
    #[arg(long, default_value = "results/local")]
    out_dir: PathBuf,
    /// Sub-folder label (default: host name).
    #[arg(long)]
    label: Option<String>,
    /// Exact result file path (overrides the results/ layout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Do not write a result file.
    #[arg(long)]
    no_write: bool,
    /// Parent directory of the embedded engine's temporary data dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No live line or progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Print the result JSON to stdout; stdout then holds only the JSON (the human summary goes
    /// to stderr, or nowhere with --quiet).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    topics: loadgen::external::TopicOptions,
    #[command(flatten)]
    overrides: Overrides,
    /// Distributed run: drive `loadgen worker`s at host:port[,host:port…]; they split the rate
    /// and the partitions, start together and their histograms are merged into one result.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    workers: Vec<String>,
    /// With --workers: time from the start message to the workers' common start instant (ms).
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    start_lead_ms: u64,
    /// With --workers: refuse a worker whose clock is further than this from the coordinator's
    /// (ms); a tenth of it warns.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    max_clock_offset_ms: f64,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd.unwrap_or(Cmd::Run(Box::new(RunArgs { workload: "max-sustainable".into(), out_dir: "results/local".into(), ..Default::default() }))) {
        Cmd::Run(a) => cmd_run(*a),
        Cmd::Calibrate { dir, json } => {
            match loadgen::calibrate::calibrate(&dir, &loadgen::calibrate::Budget::default()) {
                Ok(c) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
                    } else {
                        println!(
                            "disk seq write {:.0} MB/s ({})\nfdatasync p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs ({} samples)\nloopback TCP {:.0} MB/s\nmemory copy {:.0} MB/s\ntook {:.2} s",
                            c.disk_seq_write_bytes_per_s / 1e6,
                            c.data_dir,
                            c.fdatasync_us.p50,
                            c.fdatasync_us.p99,
                            c.fdatasync_us.max,
                            c.fdatasync_us.count,
                            c.loopback_bytes_per_s / 1e6,
                            c.memcpy_bytes_per_s / 1e6,
                            c.took_s
                        );
                        if let Some(sp) = &c.spread {
                            println!(
                                "spread over {} repeats: disk {:.0}%  fdatasync p50 {:.0}%  loopback {:.0}%  memcpy {:.0}% (compare does not normalize by a ceiling that spread > 10%)",
                                sp.repeats,
                                sp.disk_seq_write * 100.0,
                                sp.fdatasync_p50 * 100.0,
                                sp.loopback * 100.0,
                                sp.memcpy * 100.0
                            );
                        }
                    }
                    0
                }
                Err(e) => {
                    eprintln!("error: calibration in {} failed: {e}", dir.display());
                    2
                }
            }
        }
        Cmd::Report { files, base, new, force, output } => match loadgen::html::report_files_with(
            &files,
            (!base.is_empty()).then_some((&base[..], &new[..], force)),
            &output,
        ) {
            Ok(()) => {
                eprintln!("wrote {}", output.display());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        Cmd::Selftest(a) => loadgen::selftest::run(a),
        Cmd::Compare(a) => loadgen::compare::run(a),
        Cmd::Size(a) => loadgen::size::run(a),
        Cmd::Versus(a) => loadgen::versus::run_versus(*a),
        Cmd::Worker { listen, runs } => loadgen::workers::serve(&listen, runs),
    };
    std::process::exit(code);
}

fn cmd_run(a: RunArgs) -> i32 {
    let mut opts = match RunOptions::from_cli(&a.workload, &a.overrides, a.bootstrap, a.data_dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    opts.sink = a.sink;
    opts.calibrate = if a.no_calibrate { Some(false) } else if a.calibrate { Some(true) } else { None };
    opts.out_dir = a.out_dir;
    opts.label = a.label;
    opts.output = a.output;
    opts.write = !a.no_write;
    opts.quiet = a.quiet;
    opts.topics = a.topics;
    if opts.topics.topic_prefix.is_empty() {
        opts.topics.topic_prefix = "loadgen".into();
    }
    let outcome = if a.workers.is_empty() {
        run(&opts)
    } else {
        let co = loadgen::workers::Coordination {
            workers: a.workers.clone(),
            start_lead_ms: a.start_lead_ms,
            max_clock_offset_ms: a.max_clock_offset_ms,
        };
        loadgen::workers::coordinate(&opts, &co)
    };
    match outcome {
        Ok(o) => {
            let mut human = format!("{}\n", summary_table(&o.result));
            if let Some(p) = &o.path {
                human.push_str(&format!("results: {} (+ {})\n", p.display(), o.result.hlog.clone().unwrap_or_default()));
            }
            if a.json {
                // stdout is the JSON document alone, so `loadgen run --json | jq` works.
                if !a.quiet {
                    eprint!("{human}");
                }
                println!("{}", serde_json::to_string_pretty(&o.result).unwrap_or_default());
            } else {
                print!("{human}");
            }
            o.exit_code
        }
        Err(RunError::Usage(e)) => {
            eprintln!("error: {e}");
            2
        }
        Err(RunError::Failed(e)) => {
            eprintln!("error: {e}");
            1
        }
    }
}

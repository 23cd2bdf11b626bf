//! `loadgen size`: hardware sizing from measured results.
//!
//! From one or more measured runs (their median publish throughput, and their calibration) and a
//! target (events/day, record size, retention, replication, headroom), compute the nodes, disks
//! and network a cluster needs, printing every step of the arithmetic so it can be checked.
//!
//! Model (Kafka-style replication: every byte is written by the leader and R-1 followers):
//! * events/s = events_per_day / 86 400; stored bytes per event = record bytes + overhead.
//! * ingress B/s = events/s × stored bytes; disk writes (cluster) = ingress × R.
//! * network in (cluster) = ingress × R (producers to leaders, leaders to followers);
//!   network out = ingress × (R - 1) + ingress × consumer fan-out.
//! * storage = ingress × 86 400 × retention days × R; disks = storage / (disk bytes × (1 - headroom)).
//! * per-node write limit = the measured publish B/s (of the result's machine, divided by the nodes
//!   it ran on), or efficiency × the target disk bandwidth when `--target-disk-bytes-per-s` is
//!   given and the result carries calibration; each limit is used at (1 - headroom).
//! * nodes = max(replication, write-throughput bound, network bound, disk-count bound).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use crate::compare::{median, InputError};

/// Arguments of `loadgen size`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Nodes, disks and network for an events/day target, from measured results")]
pub struct SizeArgs {
    /// Measured loadgen result(s); the median publish throughput is used.
    #[arg(long = "result", num_args = 1.., required = true, value_name = "RESULT.json")]
    pub results: Vec<PathBuf>,
    /// Target events per day (e.g. 1e12).
    #[arg(long)]
    pub events_per_day: f64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100.0)]
    pub record_bytes: f64,
    /// Per-event storage overhead: record framing in batch v2 (~8 B for a keyless 100 B value)
    /// plus the amortized 61 B batch header.
    #[arg(long, default_value_t = 8.0)]
    pub overhead_bytes: f64,
    /// Retention in days.
    #[arg(long, default_value_t = 7.0)]
    pub retention_days: f64,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    pub replication: u32,
    /// Fraction of every limit kept free (0.3 = plan for 70% use).
    #[arg(long, default_value_t = 0.3)]
    pub headroom: f64,
    /// Usable capacity of one disk in bytes (default 3.84 TB NVMe).
    #[arg(long, default_value_t = 3.84e12)]
    pub disk_bytes: f64,
    /// Disks per node.
    #[arg(long, default_value_t = 4)]
    pub disks_per_node: u32,
    /// NIC bandwidth per node in bytes/s, each direction (default 25 Gbit/s).
    #[arg(long, default_value_t = 3.125e9)]
    pub nic_bytes_per_s: f64,
    /// Consumer groups reading everything (network out = fan-out × ingress).
    #[arg(long, default_value_t = 1.0)]
    pub consumer_fanout: f64,
    /// Sequential write bandwidth of a target node's disk; with calibration in the results,
    /// the per-node limit becomes efficiency × this instead of the raw measured rate.
    #[arg(long)]
    pub target_disk_bytes_per_s: Option<f64>,
    /// Nodes the measured result ran on (its throughput is divided by this).
    #[arg(long, default_value_t = 1)]
    pub result_nodes: u32,
}

/// What the results say about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub runs: usize,
    pub bytes_per_s: f64,
    pub records_per_s: f64,
    pub message_size: f64,
    /// Calibrated sequential write bandwidth of the measured disk, if recorded.
    pub disk_ceiling_bytes_per_s: Option<f64>,
    /// Producer rate the runs were limited to (0 = max search).
    pub producer_rate: f64,
    /// Max-rate search results (the main job): the p99 publish latency bound their confirmed
    /// rate holds (median over runs, µs).
    pub p99_bound_us: Option<f64>,
}

/// The sizing, every intermediate figure kept for display and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub events_per_s: f64,
    pub stored_bytes_per_event: f64,
    pub ingress_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_in_bytes_per_s: f64,
    pub net_out_bytes_per_s: f64,
    pub storage_bytes: f64,
    pub node_write_limit_bytes_per_s: f64,
    pub node_write_limit_source: String,
    pub disks_for_storage: u64,
    pub nodes_for_writes: u64,
    pub nodes_for_network: u64,
    pub nodes_for_disks: u64,
    pub nodes: u64,
    pub disks: u64,
    pub disks_per_node: u64,
    pub binding: &'static str,
}

fn ceil_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Guard against 2.0000000001 from float noise turning into 3.
        (x - 1e-9).ceil().max(0.0) as u64
    } else {
        0
    }
}

fn field(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

/// Summarize measured results (median over runs).
pub fn measured(results: &[Value], result_nodes: u32) -> Result<Measured, InputError> {
    if results.is_empty() {
        return Err(InputError("no results".into()));
    }
    let mut bps = Vec::new();
    let mut rps = Vec::new();
    let mut sizes = Vec::new();
    let mut ceilings = Vec::new();
    let mut rates = Vec::new();
    let mut bounds = Vec::new();
    for (i, v) in results.iter().enumerate() {
        if v.get("schema").and_then(Value::as_str) != Some("loadgen-result/1") {
            return Err(InputError(format!("result {}: not a loadgen-result/1 document", i + 1)));
        }
        // A max-rate search (e.g. the main job, `max-sustainable`): its measured phase is the
        // full-length run at the rate it found; only a confirmed rate is a sustainable one.
        if let Some(se) = v.get("search").filter(|s| s.is_object()) {
            if se.get("confirmed").and_then(Value::as_bool) != Some(true) {
                return Err(InputError(format!(
                    "result {}: its max-rate search was not confirmed by a full-length run: no sustainable rate to size from",
                    i + 1
                )));
            }
            bounds.push(field(se, &["p99_bound_us"]).unwrap_or(0.0));
        }
        let r = field(v, &["publish", "records_per_s"]).ok_or_else(|| InputError(format!("result {}: missing publish.records_per_s", i + 1)))?;
        let size = field(v, &["workload", "message_size"]).unwrap_or(0.0);
        let b = field(v, &["publish", "bytes_per_s"]).filter(|b| *b > 0.0).unwrap_or(r * size);
        if !(r > 0.0 && b > 0.0) {
            return Err(InputError(format!("result {}: no measured throughput (records_per_s {r}, bytes_per_s {b})", i + 1)));
        }
        rps.push(r);
        bps.push(b);
        sizes.push(if size > 0.0 { size } else { b / r });
        if let Some(c) = field(v, &["calibration", "disk_seq_write_bytes_per_s"]).filter(|c| *c > 0.0) {
            ceilings.push(c);
        }
        rates.push(field(v, &["workload", "producer_rate"]).unwrap_or(0.0));
    }
    let nodes = result_nodes.max(1) as f64;
    Ok(Measured {
        runs: results.len(),
        bytes_per_s: median(&bps) / nodes,
        records_per_s: median(&rps) / nodes,
        message_size: median(&sizes),
        disk_ceiling_bytes_per_s: (ceilings.len() == results.len()).then(|| median(&ceilings)),
        producer_rate: median(&rates),
        p99_bound_us: (bounds.len() == results.len()).then(|| median(&bounds)),
    })
}

/// Validate the numeric arguments.
pub fn check_args(a: &SizeArgs) -> Result<(), InputError> {
    let pos = |name: &str, x: f64| if x > 0.0 && x.is_finite() { Ok(()) } else { Err(InputError(format!("--{name} must be > 0 (got {x})"))) };
    pos("events-per-day", a.events_per_day)?;
    pos("record-bytes", a.record_bytes)?;
    pos("retention-days", a.retention_days)?;
    pos("disk-bytes", a.disk_bytes)?;
    pos("nic-bytes-per-s", a.nic_bytes_per_s)?;
    if !(a.overhead_bytes >= 0.0 && a.consumer_fanout >= 0.0) {
        return Err(InputError("--overhead-bytes and --consumer-fanout must be >= 0".into()));
    }
    if !(0.0..0.95).contains(&a.headroom) {
        return Err(InputError(format!("--headroom must be in [0, 0.95) (got {})", a.headroom)));
    }
    if a.replication == 0 || a.disks_per_node == 0 {
        return Err(InputError("--replication and --disks-per-node must be >= 1".into()));
    }
    if let Some(t) = a.target_disk_bytes_per_s {
        pos("target-disk-bytes-per-s", t)?;
    }
    Ok(())
}

/// The sizing arithmetic.
pub fn plan(a: &SizeArgs, m: &Measured) -> Plan {
    let r = a.replication as f64;
    let usable = 1.0 - a.headroom;
    let events_per_s = a.events_per_day / 86_400.0;
    let stored = a.record_bytes + a.overhead_bytes;
    let ingress = events_per_s * stored;
    let disk_write = ingress * r;
    let net_in = ingress * r;
    let net_out = ingress * (r - 1.0) + ingress * a.consumer_fanout;
    let storage = ingress * 86_400.0 * a.retention_days * r;

    let (limit, source) = match (a.target_disk_bytes_per_s, m.disk_ceiling_bytes_per_s) {
        (Some(target), Some(ceiling)) => {
            let eff = m.bytes_per_s / ceiling;
            (eff * target, format!("efficiency {eff:.3} (measured {} / calibrated disk {}) x target disk {}", bps(m.bytes_per_s), bps(ceiling), bps(target)))
        }
        _ => (
            m.bytes_per_s,
            format!(
                "measured publish throughput {} ({} records/s of {} B, median of {} run(s){})",
                bps(m.bytes_per_s),
                si(m.records_per_s),
                m.message_size,
                m.runs,
                match m.p99_bound_us {
                    Some(b) => format!("; max sustainable rate within p99 {:.0} ms, confirmed", b / 1000.0),
                    None => String::new(),
                }
            ),
        ),
    };
    // Leader and follower writes both land on some node's disk.
    let nodes_for_writes = ceil_u64(disk_write / (limit * usable));
    let nodes_for_network = ceil_u64(net_in.max(net_out) / (a.nic_bytes_per_s * usable));
    let disks_for_storage = ceil_u64(storage / (a.disk_bytes * usable));
    let nodes_for_disks = ceil_u64(disks_for_storage as f64 / a.disks_per_node as f64);
    let candidates = [
        (a.replication as u64, "replication factor"),
        (nodes_for_writes, "write throughput per node"),
        (nodes_for_network, "network per node"),
        (nodes_for_disks, "disk capacity"),
    ];
    let (nodes, binding) = candidates.iter().copied().fold((0u64, ""), |acc, c| if c.0 > acc.0 { c } else { acc });
    let disks_per_node = ceil_u64(disks_for_storage as f64 / nodes as f64).max(1);
    Plan {
        events_per_s,
        stored_bytes_per_event: stored,
        ingress_bytes_per_s: ingress,
        disk_write_bytes_per_s: disk_write,
        net_in_bytes_per_s: net_in,
        net_out_bytes_per_s: net_out,
        storage_bytes: storage,
        node_write_limit_bytes_per_s: limit,
        node_write_limit_source: source,
        disks_for_storage,
        nodes_for_writes,
        nodes_for_network,
        nodes_for_disks,
        nodes,
        disks: disks_per_node * nodes,
        disks_per_node,
        binding,
    }
}

fn si(x: f64) -> String {
    let (v, s) = if x >= 1e15 {
        (x / 1e15, " P")
    } else if x >= 1e12 {
        (x / 1e12, " T")
    } else if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, " ")
    };
    format!("{v:.3}{s}").trim_end().to_string()
}

fn bps(x: f64) -> String {
    format!("{}B/s", si(x))
}

/// The printed explanation.
pub fn render(a: &SizeArgs, m: &Measured, p: &Plan) -> String {
    let mut s = String::new();
    let r = a.replication;
    let u = 1.0 - a.headroom;
    let _ = writeln!(s, "target: {:.3e} events/day of {} B, retention {} days, replication {r}, headroom {:.0}%", a.events_per_day, a.record_bytes, a.retention_days, a.headroom * 100.0);
    let _ = writeln!(s, "events/s        = {:.3e} / 86400 = {} events/s", a.events_per_day, si(p.events_per_s));
    let _ = writeln!(s, "bytes/event     = {} payload + {} overhead = {} B stored", a.record_bytes, a.overhead_bytes, p.stored_bytes_per_event);
    let _ = writeln!(s, "ingress         = {} x {} B = {}", si(p.events_per_s), p.stored_bytes_per_event, bps(p.ingress_bytes_per_s));
    let _ = writeln!(s, "disk writes     = ingress x {r} replicas = {}", bps(p.disk_write_bytes_per_s));
    let _ = writeln!(s, "network in      = ingress x {r} (producers -> leaders -> followers) = {}", bps(p.net_in_bytes_per_s));
    let _ = writeln!(s, "network out     = ingress x ({r}-1) replication + ingress x {} consumer fan-out = {}", a.consumer_fanout, bps(p.net_out_bytes_per_s));
    let _ = writeln!(s, "storage         = ingress x 86400 s x {} days x {r} = {}B", a.retention_days, si(p.storage_bytes));
    let _ = writeln!(s, "per-node limit  = {}", p.node_write_limit_source);
    if m.producer_rate > 0.0 {
        let _ = writeln!(s, "  note: the result(s) ran at a fixed producer rate of {} records/s, not a max-rate search: the real per-node limit may be higher", si(m.producer_rate));
    }
    if (m.message_size - a.record_bytes).abs() > 0.25 * a.record_bytes {
        let _ = writeln!(s, "  note: measured with {} B records but sizing {} B records: per-record costs differ; measure the target size", m.message_size, a.record_bytes);
    }
    let _ = writeln!(s, "nodes (writes)  = {} / ({} x {u:.2}) = {}", bps(p.disk_write_bytes_per_s), bps(p.node_write_limit_bytes_per_s), p.nodes_for_writes);
    let _ = writeln!(s, "nodes (network) = max(in, out) {} / ({} NIC x {u:.2}) = {}", bps(p.net_in_bytes_per_s.max(p.net_out_bytes_per_s)), bps(a.nic_bytes_per_s), p.nodes_for_network);
    let _ = writeln!(s, "disks (storage) = {}B / ({}B per disk x {u:.2}) = {}", si(p.storage_bytes), si(a.disk_bytes), p.disks_for_storage);
    let _ = writeln!(s, "nodes (disks)   = {} disks / {} per node = {}", p.disks_for_storage, a.disks_per_node, p.nodes_for_disks);
    let _ = writeln!(s, "nodes (min)     = replication factor {r}");
    let _ = writeln!(s, "=> {} nodes (bound by {}), {} disks per node ({} disks), NIC {} per node each way", p.nodes, p.binding, p.disks_per_node, p.disks, bps(a.nic_bytes_per_s));
    let _ = writeln!(
        s,
        "   per node at that size: {} disk writes, {} in, {} out, {}B stored",
        bps(p.disk_write_bytes_per_s / p.nodes as f64),
        bps(p.net_in_bytes_per_s / p.nodes as f64),
        bps(p.net_out_bytes_per_s / p.nodes as f64),
        si(p.storage_bytes / p.nodes as f64)
    );
    s
}

/// `loadgen size`: exit code 0, or 2 on bad input.
pub fn run(args: SizeArgs) -> i32 {
    let go = || -> Result<String, InputError> {
        check_args(&args)?;
        let mut docs = Vec::new();
        for p in &args.results {
            let bytes = std::fs::read(p).map_err(|e| InputError(format!("{}: {e}", p.display())))?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| InputError(format!("{}: bad JSON: {e}", p.display())))?;
            docs.push(v);
        }
        let m = measured(&docs, args.result_nodes)?;
        let p = plan(&args, &m);
        Ok(render(&args, &m, &p))
    };
    match go() {
        Ok(s) => {
            print!("{s}");
            0
        }
        Err(e) => {
            eprintln!("loadgen size: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SizeArgs {
        SizeArgs {
            results: vec![],
            events_per_day: 1e12,
            record_bytes: 100.0,
            overhead_bytes: 8.0,
            retention_days: 7.0,
            replication: 3,
            headroom: 0.3,
            disk_bytes: 3.84e12,
            disks_per_node: 4,
            nic_bytes_per_s: 3.125e9,
            consumer_fanout: 1.0,
            target_disk_bytes_per_s: None,
            result_nodes: 1,
        }
    }

    fn result(rps: f64, size: f64, disk: Option<f64>) -> Value {
        let mut v = serde_json::json!({
            "schema": "loadgen-result/1",
            "workload": {"name": "max-throughput-100b", "message_size": size, "producer_rate": 0},
            "publish": {"records_per_s": rps, "bytes_per_s": rps * size},
        });
        if let Some(d) = disk {
            v["calibration"] = serde_json::json!({"disk_seq_write_bytes_per_s": d});
        }
        v
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    #[test]
    fn trillion_events_a_day_arithmetic() {
        // 1 M records/s of 100 B per measured node = 100 MB/s.
        let m = measured(&[result(1e6, 100.0, Some(6e8))], 1).unwrap();
        assert_eq!(m.bytes_per_s, 1e8);
        let p = plan(&args(), &m);
        assert!(close(p.events_per_s, 1e12 / 86_400.0)); // 11.574 M/s
        assert!(close(p.ingress_bytes_per_s, 1e12 * 108.0 / 86_400.0)); // 1.25 GB/s
        assert!(close(p.disk_write_bytes_per_s, 3.0 * 1e12 * 108.0 / 86_400.0)); // 3.75 GB/s
        assert!(close(p.net_out_bytes_per_s, 3.0 * 1e12 * 108.0 / 86_400.0)); // 2 followers + 1 consumer
        assert!(close(p.storage_bytes, 1e12 * 108.0 * 7.0 * 3.0)); // 2.268 PB
        // 3.75 GB/s / (100 MB/s x 0.7) = 53.57 -> 54 nodes.
        assert_eq!(p.nodes_for_writes, 54);
        // 3.75 GB/s / (3.125 GB/s x 0.7) = 1.71 -> 2.
        assert_eq!(p.nodes_for_network, 2);
        // 2.268e15 / (3.84e12 x 0.7) = 843.75 -> 844 disks; / 4 = 211 nodes.
        assert_eq!(p.disks_for_storage, 844);
        assert_eq!(p.nodes_for_disks, 211);
        assert_eq!(p.nodes, 211);
        assert_eq!(p.binding, "disk capacity");
        assert_eq!(p.disks_per_node, 4);
        let text = render(&args(), &m, &p);
        assert!(text.contains("=> 211 nodes (bound by disk capacity)"), "{text}");
    }

    #[test]
    fn a_main_job_result_sizes_from_its_confirmed_rate() {
        // The main job's result: producer_rate 0 (searched), the measured phase at the found rate.
        let mut v = result(1.5e6, 100.0, None);
        v["search"] = serde_json::json!({"confirmed": true, "max_rate": 1.5e6, "p99_bound_us": 50000});
        let m = measured(&[v], 1).unwrap();
        assert_eq!((m.records_per_s, m.p99_bound_us), (1.5e6, Some(50000.0)));
        let text = render(&args(), &m, &plan(&args(), &m));
        assert!(text.contains("max sustainable rate within p99 50 ms, confirmed"), "{text}");
        assert!(!text.contains("fixed producer rate"), "{text}");
    }

    #[test]
    fn calibration_scales_the_node_limit_to_the_target_disk() {
        // Measured 100 MB/s on a 600 MB/s disk (efficiency 1/6); target disks write 3 GB/s -> 500 MB/s per node.
        let m = measured(&[result(1e6, 100.0, Some(6e8))], 1).unwrap();
        let a = SizeArgs { target_disk_bytes_per_s: Some(3e9), disks_per_node: 24, ..args() };
        let p = plan(&a, &m);
        assert!(close(p.node_write_limit_bytes_per_s, 5e8));
        // 3.75e9 / (5e8 x 0.7) = 10.7 -> 11.
        assert_eq!(p.nodes_for_writes, 11);
        // 844 disks / 24 = 35.2 -> 36 nodes: still storage-bound.
        assert_eq!(p.nodes, 36);
        // Without calibration in the result, the raw measured rate is used.
        let m2 = measured(&[result(1e6, 100.0, None)], 1).unwrap();
        assert!(close(plan(&a, &m2).node_write_limit_bytes_per_s, 1e8));
    }

    #[test]
    fn throughput_bound_and_medians_and_replication_floor() {
        // Three runs: median 2e5 rec/s of 100 B = 20 MB/s; big disks so throughput binds.
        let docs = [result(1e5, 100.0, None), result(2e5, 100.0, None), result(9e5, 100.0, None)];
        let m = measured(&docs, 1).unwrap();
        assert_eq!(m.records_per_s, 2e5);
        let a = SizeArgs { disk_bytes: 1e15, ..args() };
        let p = plan(&a, &m);
        // 3.75e9 / (2e7 x 0.7) = 267.9 -> 268.
        assert_eq!(p.nodes_for_writes, 268);
        assert_eq!(p.nodes, 268);
        assert_eq!(p.binding, "write throughput per node");
        // A measured 3-node cluster: per-node throughput is a third.
        assert_eq!(measured(&docs, 2).unwrap().records_per_s, 1e5);
        // Tiny load: the replication factor is the floor.
        let small = SizeArgs { events_per_day: 1e6, ..args() };
        let p = plan(&small, &m);
        assert_eq!((p.nodes, p.binding), (3, "replication factor"));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(check_args(&SizeArgs { headroom: 1.0, ..args() }).is_err());
        assert!(check_args(&SizeArgs { events_per_day: 0.0, ..args() }).is_err());
        assert!(check_args(&SizeArgs { replication: 0, ..args() }).is_err());
        assert!(check_args(&args()).is_ok());
        assert!(measured(&[serde_json::json!({"schema": "x"})], 1).is_err());
        assert!(measured(&[result(0.0, 100.0, None)], 1).is_err());
        // A search whose rate no full-length run confirmed has no sustainable rate.
        let mut unconfirmed = result(1e6, 100.0, None);
        unconfirmed["search"] = serde_json::json!({"confirmed": false, "max_rate": 0, "p99_bound_us": 50000});
        let e = measured(&[unconfirmed], 1).unwrap_err();
        assert!(e.0.contains("not confirmed"), "{}", e.0);
        let a = SizeArgs { results: vec![PathBuf::from("/nonexistent/r.json")], ..args() };
        assert_eq!(run(a), 2);
    }
}

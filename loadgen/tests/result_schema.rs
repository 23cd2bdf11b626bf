//! A produced result follows loadgen/schema/result.schema.json, on disk in the documented
//! layout, with its interval log beside it.

mod common;
use common::*;

#[test]
fn sink_run_writes_a_schema_valid_result_and_hlog() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(&[
        "run", "-w", "smoke", "--sink", "--quiet", "--rate", "20000", "--duration", "2", "--warmup", "0.5", "--calibrate",
        "--data-dir", dir.path().to_str().unwrap(),
        "--out-dir", dir.path().join("results").to_str().unwrap(), "--label", "ci",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let files = json_files(&dir.path().join("results/ci"));
    assert_eq!(files.len(), 1, "{files:?}");
    let json = &files[0];
    let name = json.file_name().unwrap().to_string_lossy();
    assert!(name.ends_with("-smoke.json") && name.len() == "2026-01-01-smoke.json".len(), "{name}");
    validate_against_schema(json);
    let r = loadgen::results::RunResult::load(json).unwrap();
    assert!(r.complete);
    assert_eq!(r.schema, "loadgen-result/1");
    assert!(r.publish.records > 30_000, "{}", r.publish.records);
    assert!(r.publish.latency_us.count > 30_000);
    // The accounting block (schema $defs/phase_accounting): 20,000 rec/s x 2 s, all acknowledged.
    let acc = r.accounting.as_ref().expect("accounting");
    assert!(acc.measure.adds_up() && acc.warmup.adds_up(), "{acc:?}");
    assert_eq!(acc.measure.scheduled, 40_000, "{acc:?}");
    assert_eq!(acc.measure.acknowledged, 40_000);
    assert!(r.target_met);
    assert!((r.projection.events_per_day - r.publish.records_per_s * 86_400.0).abs() < 1.0);
    let cal = r.calibration.as_ref().expect("calibration requested");
    assert!(cal.disk_seq_write_bytes_per_s > 1e6 && cal.loopback_bytes_per_s > 1e6 && cal.memcpy_bytes_per_s > 1e8);
    assert!(r.efficiency.memcpy_fraction.unwrap() > 0.0);
    let spread = cal.spread.as_ref().expect("calibration repeats and their spread");
    assert_eq!(spread.repeats, 3);
    assert!(spread.disk_seq_write >= 0.0 && spread.loopback >= 0.0 && spread.fdatasync_p50 >= 0.0 && spread.memcpy >= 0.0);
    assert!(r.environment.cores >= 1 && r.environment.memory_bytes > 0 && !r.environment.kernel.is_empty());
    // Provenance: the commit captured when the binary was built, not the current directory's.
    let p = r.provenance.as_ref().expect("provenance");
    assert_eq!(p.source, "build");
    assert_eq!(r.environment.git_commit, env!("LOADGEN_BUILD_COMMIT"));
    assert!(r.target.identity.is_none(), "the sink has no broker identity");
    // The interval log: HdrHistogram text format with tagged, base64 histograms.
    let hlog = std::fs::read_to_string(json.with_extension("hlog")).unwrap();
    assert!(hlog.contains("#[StartTime: "), "{hlog}");
    // Intervals are tagged <metric>.<phase>, and each phase starts with a marker comment.
    assert!(hlog.lines().any(|l| l.starts_with("Tag=publish.measure,")), "{hlog}");
    assert!(hlog.lines().any(|l| l.starts_with("Tag=publish.warmup,")), "{hlog}");
    assert!(hlog.contains("#[Phase: warmup, StartTimestamp: ") && hlog.contains("#[Phase: measure, StartTimestamp: "), "{hlog}");
    assert_eq!(r.hlog.as_deref(), Some(json.with_extension("hlog").file_name().unwrap().to_str().unwrap()));
    // The measured window's interval histograms (selected by tag, as a standard reader does)
    // add up to the result's publish latency count: warmup excluded.
    let mut total = 0u64;
    for item in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(hlog.as_bytes()) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(iv)) = item {
            if matches!(iv.tag().map(|t| t.as_str()), Some("publish.measure" | "publish.drain")) {
                let bytes = base64_decode(iv.encoded_histogram());
                let h: hdrhistogram::Histogram<u64> =
                    hdrhistogram::serialization::Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                total += h.len();
            }
        }
    }
    assert_eq!(total, r.publish.latency_us.count);
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        buf = (buf << 6) | T.iter().position(|x| *x == c).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

//! `loadgen report` renders one self-contained HTML page with the SVG charts; a headless
//! Chromium renders it and the charts are in the DOM.

mod common;
use common::*;

/// A sink run; returns its result path and whether its target was met (exit 0) or missed (exit
/// 5, allowed only where `may_miss`: a debug-build generator on a busy 2-core machine may not
/// reach 2 M rec/s, and the report must render — and flag — such a run too).
fn sink_run_status(dir: &std::path::Path, sub: &str, rate: &str, may_miss: bool) -> (std::path::PathBuf, bool) {
    // Same file name in different folders: labels must still differ.
    let p = dir.join(sub).join("run.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let out = run_cli(&["run", "--sink", "--quiet", "--rate", rate, "--duration", "1.5", "--warmup", "0.5", "-o", p.to_str().unwrap()]);
    let code = out.status.code();
    let ok = code == Some(0) || (may_miss && code == Some(5));
    assert!(ok, "exit {code:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(p.exists(), "no result written");
    (p, code == Some(0))
}

fn sink_run(dir: &std::path::Path, sub: &str, rate: &str) -> std::path::PathBuf {
    sink_run_status(dir, sub, rate, false).0
}

#[test]
fn report_renders_charts_and_headless_chromium_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = [sink_run(dir.path(), "base/a", "20000"), sink_run(dir.path(), "base/b", "20000")];
    let new = [sink_run(dir.path(), "new/a", "20000"), sink_run(dir.path(), "new/b", "20000")];
    let (big, big_met) = sink_run_status(dir.path(), "big", "2000000", true);
    let html_path = dir.path().join("report.html");
    let out = run_cli(&[
        "report", big.to_str().unwrap(), "--base", base[0].to_str().unwrap(), base[1].to_str().unwrap(), "--new", new[0].to_str().unwrap(),
        new[1].to_str().unwrap(), "-o", html_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    if let Ok(keep) = std::env::var("LOADGEN_KEEP_REPORT") {
        std::fs::copy(&html_path, keep).unwrap();
    }
    // Self-contained: no scripts, no external references.
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"));
    for id in ["chart-spectrum", "chart-throughput", "chart-p99", "chart-compare", "chart-run-1", "chart-run-5"] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "missing {id}");
    }
    // Five runs overlaid on the spectrum, each under its own key; nothing cut off.
    let spectrum = &html[html.find("chart-spectrum").unwrap()..html.find("chart-throughput").unwrap()];
    assert_eq!(spectrum.matches("<polyline class=\"series\"").count(), 5);
    for k in 1..=5 {
        assert!(spectrum.contains(&format!(">R{k} publish<")), "R{k} missing from the legend");
    }
    assert!(!html.contains('…'), "a label was cut off");
    // The summary names each file uniquely (same file name, different folders).
    for label in [">base/a/run.json<", ">base/b/run.json<", ">new/a/run.json<", ">new/b/run.json<", "/big/run.json<"] {
        assert_eq!(html.matches(label).count(), 1, "{label}");
    }
    // Target vs achieved, send delay, consume rate, workload parameters.
    for col in ["target rec/s", "achieved rec/s", "of target", "consume rec/s", "send delay p99 ms", "topics × partitions", "linger ms"] {
        assert!(html.contains(&format!("<th>{col}</th>")), "{col}");
    }
    // A missed target is flagged, never shown as achieved.
    assert_eq!(html.contains(" (short)"), !big_met, "missed-target mark does not match the run's exit status");
    // Phase boundaries on each run's panel (warmup → measure at least).
    let panel = &html[html.find("chart-run-1").unwrap()..html.find("chart-run-2").unwrap()];
    assert!(panel.contains("class=\"phase\"") && panel.contains(">measure<"), "no phase boundary in the run panel");
    // Throughput overlay on a log axis: 20 k and 2 M both readable.
    let thr = &html[html.find("chart-throughput").unwrap()..html.find("chart-p99").unwrap()];
    assert!(thr.contains("records/s (log scale)"));
    // Base vs new: 2 runs per side are figures with intervals, and no verdict.
    assert!(html.contains("id=\"compare-outcome\" class=\"warn\"><b>UNDECIDED"), "compare outcome missing");
    assert!(html.contains("undecided (no verdict)"));
    assert!(html.matches("class=\"interval\"").count() >= 2);

    let Some(dom) = chromium_dom(&html_path) else { return };
    for id in ["chart-spectrum", "chart-throughput", "chart-p99"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} not in the rendered DOM");
    }
    assert!(dom.matches("<polyline").count() >= 15, "series missing from the DOM");
    assert!(dom.contains("id=\"chart-compare\""), "compare chart not in the DOM");
    assert!(dom.contains("99.99%"), "percentile axis labels missing");
}

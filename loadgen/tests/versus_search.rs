//! `loadgen versus` with a `producerRate: 0` workload: each run searches its own max sustainable
//! rate, and the comparison reports that found rate (not the confirmation run's publish rate).

mod common;

#[test]
fn versus_reports_each_targets_found_rate() {
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("search.yaml");
    std::fs::write(
        &wl,
        "name: vs-search-test\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nsubscriptionsPerTopic: 1\n\
         producersPerTopic: 1\nconsumerPerSubscription: 1\nproducerRate: 0\np99BoundMs: 200\nsearchStartRate: 2000\n\
         searchStepSeconds: 0.3\nsearchHalfRate: false\ndurationSeconds: 1\nwarmupSeconds: 0\ndrainSeconds: 3\n\
         acks: -1\ndurability: never\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = common::run_cli(&[
        "versus",
        "-w",
        wl.to_str().unwrap(),
        "--target",
        "a=embedded",
        "--target",
        "b=embedded",
        "--rounds",
        "1",
        "-o",
        out.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("versus.json")).unwrap()).unwrap();
    assert_eq!(v["p99_bound_ms"].as_f64(), Some(200.0));
    let rows = v["rows"].as_array().unwrap();
    // The confirmation run's publish rate is not shown as if it were the target's capacity.
    assert!(!rows.iter().any(|r| r["figure"] == "publish rate"), "{rows:?}");
    for t in ["a", "b"] {
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("runs/{t}-r0.json"))).unwrap()).unwrap();
        let s = &run["search"];
        assert_eq!(s["confirmed"], true, "{s}");
        // searchHalfRate: false: no half-rate run.
        assert!(s.get("half_rate").is_none_or(|h| h.is_null()), "{s}");
        let found = s["max_rate"].as_f64().unwrap();
        assert!(found >= 2000.0);
        let row = rows
            .iter()
            .find(|r| r["figure"] == "max sustainable rate" && r["target"] == t)
            .unwrap_or_else(|| panic!("no max sustainable rate row for {t}: {rows:?}"));
        assert_eq!(row["median"].as_f64(), Some(found), "{row}");
        let mb = rows.iter().find(|r| r["figure"] == "max sustainable throughput" && r["target"] == t).unwrap();
        assert!((mb["median"].as_f64().unwrap() - found * 100.0 / 1e6).abs() < 1e-9, "{mb}");
    }
    let md = std::fs::read_to_string(out.join("versus.md")).unwrap();
    assert!(md.contains("max sustainable rate (records/s)") && md.contains("within 200 ms"), "{md}");
}

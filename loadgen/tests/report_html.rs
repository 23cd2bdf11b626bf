//! `loadgen report` renders one self-contained HTML page with the SVG charts; a headless
//! Chromium renders it and the charts are in the DOM.

mod common;
use common::*;

fn make_results(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for (i, rate) in ["20000", "40000"].iter().enumerate() {
        let p = dir.join(format!("run{i}.json"));
        let out = run_cli(&["run", "--sink", "--quiet", "--rate", rate, "--duration", "2", "--warmup", "0", "-o", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        files.push(p);
    }
    files
}

#[test]
fn report_renders_charts_and_headless_chromium_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_results(dir.path());
    let html_path = dir.path().join("report.html");
    let out = run_cli(&["report", files[0].to_str().unwrap(), files[1].to_str().unwrap(), "-o", html_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: no scripts, no external references.
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"));
    for id in ["chart-spectrum", "chart-throughput", "chart-p99"] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "missing {id}");
    }
    // Two runs overlaid on the spectrum.
    let spectrum = &html[html.find("chart-spectrum").unwrap()..html.find("chart-throughput").unwrap()];
    assert_eq!(spectrum.matches("<polyline class=\"series\"").count(), 2);

    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        if std::env::var_os("LOADGEN_SKIP_BROWSER").is_some() {
            eprintln!("LOADGEN_SKIP_BROWSER set and no chromium: skipping the browser half");
            return;
        }
        panic!("headless Chromium not found: apt-get install -y chromium (or set LOADGEN_SKIP_BROWSER=1)");
    };
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html_path.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn chromium");
    // Bounded: kill the browser if it hangs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for id in ["chart-spectrum", "chart-throughput", "chart-p99"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} not in the rendered DOM");
    }
    assert!(dom.matches("<polyline").count() >= 6, "series missing from the DOM");
    assert!(dom.contains("99.99%"), "percentile axis labels missing");
}

//! Every scheduled record is accounted for, through the real binaries: the project's `broker`
//! runs as an external process, `loadgen run --bootstrap` drives it, and the broker is frozen
//! (SIGSTOP) part-way. The per-phase counts add up exactly to the schedule, unacknowledged
//! records get a censored latency, and the exit status says what happened.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use loadgen::results::{PhaseAccounting, RunResult};


/// Run loadgen against `broker`; freeze the broker when the `nth` live line of the measured
/// phase appears (1 = one second into the window), thaw it `stall` later (None: only at the
/// end). Returns (exit code, stdout, result).
fn run_with_stall(broker: &Broker, args: &[&str], nth: usize, stall: Option<Duration>) -> (i32, String, RunResult) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut child = bin()
        .args(["run", "-w", "smoke", "--bootstrap", &broker.addr, "--no-calibrate", "-o"])
        .arg(&out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut seen = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" measure]") {
                seen += 1;
                if seen == nth {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The freeze is triggered by the run's own progress, not by a sleep.
    rx.recv_timeout(Duration::from_secs(30)).expect("loadgen never reached the measured phase");
    broker.signal("-STOP");
    if let Some(d) = stall {
        std::thread::sleep(d); // the fault's length (the stall being injected), not a wait for a condition
        broker.signal("-CONT");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(out.is_file(), "no result written; stderr:\n{stderr}");
    validate_against_schema(&out);
    let r = RunResult::load(&out).unwrap();
    (status.code().unwrap_or(-1), stdout, r)
}

fn assert_adds_up(a: &PhaseAccounting) {
    assert!(a.adds_up(), "accounting does not add up: {a:?}");
    assert_eq!(a.scheduled, a.acknowledged + a.failed + a.timed_out + a.not_sent, "{a:?}");
    assert_eq!(a.sent, a.acknowledged + a.failed + a.timed_out, "{a:?}");
    assert_eq!(a.unacknowledged_latency_us.count, a.failed + a.timed_out + a.not_sent, "{a:?}");
}

#[test]
fn broker_frozen_past_the_drain_deadline_loses_records_visibly() {
    let broker = Broker::start();
    // 5,000 rec/s for 3 s after 0.5 s of warmup, 1 s of drain; frozen 1 s into the window
    // until the end: about 2 s of the window and everything after are never acknowledged.
    let (code, stdout, r) = run_with_stall(
        &broker,
        &["--rate", "5000", "--warmup", "0.5", "--duration", "3", "--drain", "1", "--partitions", "2"],
        1,
        None,
    );
    assert_eq!(code, 4, "exit status for lost records; stdout:\n{stdout}");
    assert!(!r.complete);
    assert!(!r.target_met);
    let a = r.accounting.as_ref().expect("accounting");
    assert_adds_up(&a.warmup);
    assert_adds_up(&a.measure);
    // The open-loop schedule: 5,000 rec/s x 3 s (per-producer rounding only).
    assert!((14_990..=15_010).contains(&a.measure.scheduled), "{:?}", a.measure);
    assert!((2_490..=2_510).contains(&a.warmup.scheduled), "{:?}", a.warmup);
    assert_eq!(a.warmup.acknowledged, a.warmup.scheduled, "the warmup ran before the freeze");
    assert!(a.measure.timed_out > 0, "requests in flight at the freeze time out: {:?}", a.measure);
    assert!(a.measure.not_sent > 0, "records behind the full in-flight window are never sent: {:?}", a.measure);
    assert!(a.measure.acknowledged > 0 && a.measure.acknowledged < a.measure.scheduled);
    // Censored latency: from the intended time to the end of the drain; the earliest lost
    // records were intended ~1 s into the window, the drain ended 2 s + 1 s later.
    let c = &a.measure.unacknowledged_latency_us;
    assert!(c.max >= 2.5e6 && c.max < 10e6, "censored max {} µs", c.max);
    assert!(c.p50 >= 1e6, "censored p50 {} µs", c.p50);
    assert_eq!(r.publish.records, a.measure.acknowledged);
    assert_eq!(r.publish.latency_us.count, a.measure.acknowledged, "every acknowledged record has a latency");
    assert!(stdout.contains("[INCOMPLETE"), "{stdout}");
    assert!(stdout.contains("RECORDS NOT ACKNOWLEDGED"), "{stdout}");
    assert!(stdout.contains(&format!("not sent {}", a.measure.not_sent)), "{stdout}");
}

#[test]
fn broker_frozen_across_the_window_end_misses_the_target_but_loses_nothing() {
    let broker = Broker::start();
    // Frozen 2 s into a 3 s window for 2 s, 6 s of drain: every record is acknowledged in the
    // drain, but the last third of the window only after the window's end + grace.
    let (code, stdout, r) = run_with_stall(
        &broker,
        &["--rate", "5000", "--warmup", "0.5", "--duration", "3", "--drain", "6", "--partitions", "2"],
        2,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(code, 5, "exit status for a missed target; stdout:\n{stdout}");
    assert!(r.complete, "nothing was lost");
    assert!(!r.target_met);
    let a = r.accounting.as_ref().expect("accounting");
    assert_adds_up(&a.measure);
    assert_eq!(a.measure.acknowledged, a.measure.scheduled);
    assert_eq!(a.measure.unacknowledged_latency_us.count, 0);
    assert!(a.measure.acknowledged_in_time < a.measure.scheduled * 97 / 100, "{:?}", a.measure);
    // Late records are measured from their intended time: the stall shows in the tail.
    assert!(r.publish.latency_us.max >= 1.0e6, "max {} µs", r.publish.latency_us.max);
    assert!(stdout.contains("[TARGET MISSED]"), "{stdout}");
    // The throughput figure is what the broker achieved (acks received during the window),
    // not the offered rate: the drain's acks of the stalled third do not count towards it.
    assert!(r.publish.records_per_s < 0.97 * 5000.0, "a stalled broker reads as {} rec/s of 5,000", r.publish.records_per_s);
    assert!((r.projection.events_per_day - r.publish.records_per_s * 86_400.0).abs() < 1.0);
    // Target missed: the figure is the acks delivered during the window, which the per-second
    // series saw too (the measured seconds average to it).
    let secs: Vec<(f64, f64)> = r.timeseries.windows(2).filter(|p| p[1].phase == "measure").map(|p| (p[1].t_s - p[0].t_s, p[1].publish_records_per_s)).collect();
    let (t, n) = secs.iter().fold((0.0, 0.0), |(t, n), (d, x)| (t + d, n + d * x));
    assert!((n / t - r.publish.records_per_s).abs() < 1.0, "series {} vs {}", n / t, r.publish.records_per_s);
    assert_eq!(Some(r.publish.records_per_s), r.publish.acks_in_window_per_s);
    let in_time = r.publish.records_in_time_per_s.expect("records_in_time_per_s");
    assert!((in_time - a.measure.acknowledged_in_time as f64 / r.duration_s).abs() < 1.0, "{in_time}");
    let incl = r.publish.records_per_s_incl_drain.expect("records_per_s_incl_drain");
    assert!((incl - a.measure.acknowledged as f64 / r.duration_s).abs() < 1.0, "{incl}");
    assert!(stdout.contains("TARGET MISSED: its own records acknowledged by its end + grace"), "{stdout}");
}

#[test]
fn a_broker_that_stops_reading_cannot_hold_the_run_past_its_drain_deadline() {
    let broker = Broker::start();
    // Far more bytes in flight than the sockets buffer (8 partitions x 8 requests x up to 1 MiB):
    // once the broker is frozen, the producer's writes block; they must give up at the drain
    // deadline, with the broker still frozen.
    let started = Instant::now();
    let (code, stdout, r) = run_with_stall(
        &broker,
        &[
            "--rate", "50000", "--message-size", "1000", "--partitions", "8", "--batch-size", "1048576",
            "--max-in-flight", "8", "--linger-ms", "5", "--warmup", "0.5", "--duration", "3", "--drain", "1",
        ],
        1,
        None,
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "loadgen took {took:?} with the broker frozen");
    assert_eq!(code, 4, "{stdout}");
    let a = r.accounting.as_ref().expect("accounting");
    assert_adds_up(&a.measure);
    assert!(a.measure.timed_out > 0 && a.measure.not_sent > 0, "{:?}", a.measure);
    assert!((149_990..=150_010).contains(&a.measure.scheduled), "{:?}", a.measure);
}

#[test]
fn backlog_run_accounts_every_produced_record() {
    // Backlog mode: produce with consumers stopped until ~5 MB are acknowledged, then drain.
    // The producers' schedule ends where they were halted; every record of it is accounted.
    let mut w = loadgen::workload::Workload::load("backlog-drain").unwrap();
    w.consumer_backlog_size_gb = 0.005;
    w.producer_rate = 20_000.0;
    w.partitions_per_topic = 2;
    w.drain_seconds = 20.0;
    w.durability = "never".into();
    let dir = tempfile::tempdir().unwrap();
    let mut o = loadgen::run::RunOptions::new(w);
    o.quiet = true;
    o.calibrate = Some(false);
    o.data_dir = Some(dir.path().to_path_buf());
    o.output = Some(dir.path().join("r.json"));
    let out = loadgen::run::run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    validate_against_schema(&dir.path().join("r.json"));
    let r = out.result;
    assert!(r.drain.as_ref().unwrap().caught_up, "{:?}", r.drain);
    let a = r.accounting.as_ref().unwrap();
    assert_adds_up(&a.measure);
    assert_eq!(a.measure.acknowledged, a.measure.scheduled, "{a:?}");
    assert!(a.measure.scheduled >= 4_000, "{a:?}");
    assert_eq!(r.publish.records, a.measure.acknowledged);
    assert!(r.complete);
    // 0, or 5 if this shared machine kept the generator below 97 % of 20 k rec/s.
    assert!(out.exit_code == 0 || out.exit_code == 5 && !r.target_met, "exit {}", out.exit_code);
}

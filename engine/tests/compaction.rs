//! Log compaction: the cleaner keeps the latest record per key with its offset, removes
//! tombstones after `delete.retention.ms`, leaves the active segment alone, and a crash at any
//! step of its swap leaves every segment whole (old or new) on SimIo.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use engine::io::{CrashMode, Io, IoFile, SimIo};
use engine::log::cleaner::{clean_partition, records_of, CleanLimits};
use engine::log::{Durability, LogConfig, LogManager, Partition};
use engine::record::build;

type Value = Option<Vec<u8>>;
type Model = BTreeMap<u64, (Vec<u8>, Value)>;

fn limits() -> CleanLimits {
    CleanLimits { rate_bytes: u64::MAX, map_bytes_max: 1 << 20, batch_bytes_max: 1 << 20, index_interval_bytes: 256 }
}

/// Every record from the log start to the high watermark (offsets may skip between batches).
fn read_records(p: &Partition) -> Model {
    let mut out = Model::new();
    let mut next = p.log_start_offset();
    let hw = p.high_watermark();
    while next < hw {
        let bytes = p.read_copy(next as i64, 1 << 20).expect("read below the high watermark");
        assert!(!bytes.is_empty(), "read at {next} below hw {hw} returned nothing");
        for (info, b) in split_batches(&bytes) {
            assert!(info.last_offset() as u64 >= next, "batch [{}, {}] is below {next}", info.base_offset, info.last_offset());
            for (o, k, v) in records_of(&b, MAX).expect("records parse") {
                if o >= next {
                    assert!(out.insert(o, (k.expect("keyed"), v)).is_none(), "offset {o} twice");
                }
            }
            next = info.last_offset() as u64 + 1;
        }
    }
    out
}

/// `n` batches of 3 keyed records over 7 keys, codecs none/gzip/zstd in turn; key "dead" is
/// written, then deleted by a tombstone with an old timestamp. Returns the model.
fn fill(p: &Partition, n: u64) -> Model {
    let mut model = Model::new();
    let now = engine::log::now_ms();
    for i in 0..n {
        let keys: Vec<Vec<u8>> = (0..3).map(|j| format!("k{}", (i * 3 + j) % 7).into_bytes()).collect();
        let vals: Vec<Vec<u8>> = (0..3).map(|j| format!("v{i}-{j}-{}", "x".repeat(40)).into_bytes()).collect();
        let (keys, vals, ts): (Vec<Vec<u8>>, Vec<Value>, i64) = match i {
            10 => (vec![b"dead".to_vec()], vec![Some(b"alive".to_vec())], now),
            50 => (vec![b"dead".to_vec()], vec![None], 1_000),
            _ => (keys, vals.into_iter().map(Some).collect(), now),
        };
        let recs: Vec<build::Rec<'_>> =
            keys.iter().zip(&vals).map(|(k, v)| build::Rec { key: Some(k), value: v.as_deref(), timestamp_delta: 0 }).collect();
        let plain = build::batch_with(&recs, ts, -1, -1, -1);
        let mut b = match i % 3 {
            0 => plain,
            1 => build::compressed(&plain, 1),
            _ => build::compressed(&plain, 4),
        };
        let at = p.append_durable(&mut b).expect("append");
        for (j, (k, v)) in keys.into_iter().zip(vals).enumerate() {
            model.insert(at.base_offset + j as u64, (k, v));
        }
    }
    model
}

/// What compaction of `model` below `end` must leave (tombstones kept or not). The last
/// record of each sealed segment (`ends`) is always kept (segments stay contiguous), as a
/// tombstone of its key when a later record of the key supersedes it.
fn compacted(model: &Model, end: u64, keep_tombstones: bool, ends: &[u64]) -> Model {
    let mut latest: HashMap<&[u8], u64> = HashMap::new();
    for (o, (k, _)) in model.range(..end) {
        latest.insert(k, *o);
    }
    model
        .iter()
        .filter(|(o, (k, v))| {
            **o >= end || ends.contains(o) || (latest[k.as_slice()] == **o && (keep_tombstones || v.is_some()))
        })
        .map(|(o, (k, v))| {
            let superseded = *o < end && latest[k.as_slice()] != *o;
            (*o, (k.clone(), if superseded { None } else { v.clone() }))
        })
        .collect()
}

/// Whether the record served at `o` is the one written there, or (a segment's last record that
/// a later one superseded) a tombstone of its key.
fn as_written(model: &Model, o: u64, kv: &(Vec<u8>, Value)) -> bool {
    model.get(&o).is_some_and(|w| w == kv || (w.0 == kv.0 && kv.1.is_none()))
}

/// The last offset of each sealed segment.
fn segment_ends(p: &Partition) -> Vec<u64> {
    p.sealed_segments()
        .into_iter()
        .filter_map(|(_, f, size, _)| {
            let mut buf = vec![0u8; size as usize];
            f.read_exact_at(&mut buf, 0).unwrap();
            split_batches(&buf).last().map(|(info, _)| info.last_offset() as u64)
        })
        .collect()
}

fn active_base(p: &Partition) -> u64 {
    p.sealed_segments().last().map(|(b, _, s, _)| (*b, *s)).map_or(0, |_| {
        // The active segment starts where the sealed ones end: the first offset not in them.
        let mut end = 0;
        for (_, f, size, _) in p.sealed_segments() {
            let mut buf = vec![0u8; size as usize];
            f.read_exact_at(&mut buf, 0).unwrap();
            if let Some((info, _)) = split_batches(&buf).last() {
                end = info.last_offset() as u64 + 1;
            }
        }
        end
    })
}

#[test]
fn cleaner_keeps_the_latest_record_per_key_at_its_offset_and_removes_old_tombstones() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = PathBuf::from("/data/t-0");
    let cfg = small_cfg(Durability::Group, 4096);
    let p = open(&io, &dir, &cfg).unwrap();
    let model = fill(&p, 200);
    assert!(p.sealed_segments().len() >= 5, "the test needs several sealed segments");
    let end = active_base(&p);
    let ends = segment_ends(&p);
    assert_eq!(read_records(&p), model);
    let stop = AtomicBool::new(false);

    // Tombstones younger than delete.retention.ms stay (the "dead" one is at ts 1000: keep it
    // with a retention reaching back before it).
    let now = engine::log::now_ms();
    let st = clean_partition(&p, now, now as u64, &limits(), &stop).unwrap();
    assert!(st.segments_swapped > 0 && st.records_removed > 0, "{st:?}");
    assert_eq!(st.tombstones_removed, 0);
    let want = compacted(&model, end, true, &ends);
    assert!(want.len() < model.len() / 4, "compaction removed too little to test anything");
    assert_eq!(read_records(&p), want);
    assert!(want.values().any(|(k, v)| k == b"dead" && v.is_none()), "the tombstone is kept");

    // Then removed once older than delete.retention.ms.
    let st = clean_partition(&p, now, 60_000, &limits(), &stop).unwrap();
    assert_eq!(st.tombstones_removed, 1, "{st:?}");
    let want = compacted(&model, end, false, &ends);
    assert_eq!(read_records(&p), want);
    // A read from an offset compaction removed starts at the next record.
    let gap = (p.log_start_offset()..end).find(|o| !want.contains_key(o)).expect("a removed offset");
    let next = *want.range(gap..).next().unwrap().0;
    let bytes = p.read_copy(gap as i64, 1 << 20).unwrap();
    let first = split_batches(&bytes)[0].1.clone();
    assert_eq!(records_of(&first, MAX).unwrap()[0].0, next);

    // Appends continue; the log reopens as it is, from checkpointed indexes and without them.
    let mut more = Model::new();
    for (o, kv) in fill(&p, 3) {
        more.insert(o, kv);
    }
    let mut want = want;
    want.extend(more);
    assert_eq!(read_records(&p), want);
    p.close().unwrap();
    drop(p);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(read_records(&p), want);
    p.close().unwrap();
    drop(p);
    for name in io.list_dir(&dir).unwrap() {
        if name.ends_with(".index") || name.ends_with(".timeindex") {
            io.remove_file(&dir.join(name)).unwrap();
        }
    }
    io.sync_dir(&dir).unwrap();
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(read_records(&p), want);
}

/// A key deleted by a tombstone stays deleted once the tombstone is removed, even when a value
/// of it was the last record of a segment (kept so that segments stay contiguous): that record
/// is kept as a tombstone of its key, never as the value.
#[test]
fn a_superseded_segment_end_never_brings_a_deleted_key_back() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = PathBuf::from("/data/t-0");
    let p = open(&io, &dir, &small_cfg(Durability::Group, 4096)).unwrap();
    let one = |k: &[u8], v: Option<&[u8]>, ts: i64| {
        let mut b = build::batch_with(&[build::Rec { key: Some(k), value: v, timestamp_delta: 0 }], ts, -1, -1, -1);
        p.append_durable(&mut b).unwrap();
    };
    let now = engine::log::now_ms();
    // Values of "dead" until a segment rolls: the first segment ends with one of them.
    for i in 0..1000 {
        if p.sealed_segments().len() == 1 {
            break;
        }
        one(b"dead", Some(format!("value-{i}-{}", "x".repeat(60)).as_bytes()), now);
    }
    assert_eq!(p.sealed_segments().len(), 1);
    one(b"dead", None, 1_000);
    for i in 0..1000 {
        if p.sealed_segments().len() == 3 {
            break;
        }
        one(format!("k{}", i % 5).as_bytes(), Some(&[b'y'; 60]), now);
    }
    assert_eq!(p.sealed_segments().len(), 3);
    let st = clean_partition(&p, now, 60_000, &limits(), &AtomicBool::new(false)).unwrap();
    assert!(st.segments_swapped > 0, "{st:?}");
    let dead: Vec<_> = read_records(&p).into_iter().filter(|(_, (k, _))| k == b"dead").collect();
    assert!(!dead.is_empty(), "the first segment's last record stays");
    assert!(dead.iter().all(|(_, (_, v))| v.is_none()), "a value of the deleted key is back: {dead:?}");
    // A second pass changes nothing more.
    let before = read_records(&p);
    clean_partition(&p, now, 60_000, &limits(), &AtomicBool::new(false)).unwrap();
    assert_eq!(read_records(&p), before);
}

#[test]
fn a_full_key_map_cleans_only_the_segments_it_covers() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = PathBuf::from("/data/t-0");
    let p = open(&io, &dir, &small_cfg(Durability::Group, 4096)).unwrap();
    let model = fill(&p, 200);
    let stop = AtomicBool::new(false);
    // Room for a few keys only: the pass must stop at a segment boundary, not fail.
    let lim = CleanLimits { map_bytes_max: 3 * 70, ..limits() };
    let st = clean_partition(&p, engine::log::now_ms(), u64::MAX / 2, &lim, &stop).unwrap();
    assert!(st.map_full, "{st:?}");
    let got = read_records(&p);
    for (o, kv) in &got {
        assert!(as_written(&model, *o, kv), "offset {o} changed: {kv:?}");
    }
    // Every key's latest record is still there.
    let mut latest: HashMap<&[u8], u64> = HashMap::new();
    for (o, (k, _)) in &model {
        latest.insert(k, *o);
    }
    for o in latest.values() {
        assert!(got.contains_key(o), "latest record at {o} removed");
    }
}

/// An `Io` that takes the crash image a power cut would leave just before its `at`-th
/// directory-level operation (open, create, remove, rename, directory fsync).
#[derive(Debug)]
struct CrashAt {
    sim: SimIo,
    ops: AtomicU64,
    at: AtomicU64,
    mode: CrashMode,
    image: Mutex<Option<SimIo>>,
}

impl CrashAt {
    fn op(&self) {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n == self.at.load(Ordering::SeqCst) {
            *self.image.lock().unwrap() = Some(self.sim.crash(self.mode, n));
        }
    }
}

impl Io for CrashAt {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn IoFile>> {
        self.op();
        self.sim.open(path, create)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.op();
        self.sim.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.op();
        self.sim.rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.op();
        self.sim.remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.sim.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.op();
        self.sim.sync_dir(path)
    }
}

/// A power cut before every directory-level step of a cleaning pass (and after the last):
/// the log reopens, every record it serves is the one written at that offset, and every record
/// compaction keeps is there (each segment is the old one or the new one, whole).
#[test]
fn crash_sweep_during_compaction_leaves_old_or_new_segments_whole() {
    let dir = PathBuf::from("/data/t-0");
    let cfg = small_cfg(Durability::Group, 4096);
    let mut at = 0;
    let mut points = 0;
    loop {
        let sim = SimIo::new();
        let io = sim_io(&sim);
        let p = open(&io, &dir, &cfg).unwrap();
        let model = fill(&p, 60);
        let end = active_base(&p);
    let ends = segment_ends(&p);
        p.close().unwrap();
        drop(p);
        let mode = if at % 2 == 0 { CrashMode::DropUnsynced } else { CrashMode::TearAndFlip };
        let crash = Arc::new(CrashAt { sim: sim.clone(), ops: AtomicU64::new(0), at: AtomicU64::new(u64::MAX), mode, image: Mutex::new(None) });
        let p = open(&(crash.clone() as Arc<dyn Io>), &dir, &cfg).unwrap();
        // Armed among the cleaner's steps (those of opening are not swept here).
        crash.at.store(crash.ops.load(Ordering::SeqCst) + at, Ordering::SeqCst);
        let stop = AtomicBool::new(false);
        let st = clean_partition(&p, engine::log::now_ms(), 60_000, &limits(), &stop).unwrap();
        assert!(st.segments_swapped > 0);
        let image = crash.image.lock().unwrap().take();
        let done = image.is_none();
        let image = image.unwrap_or_else(|| sim.crash(mode, at));
        let io2: Arc<dyn Io> = Arc::new(image);
        let p2 = open(&io2, &dir, &cfg).unwrap_or_else(|e| panic!("crash point {at}: reopen failed: {e}"));
        let got = read_records(&p2);
        for (o, kv) in &got {
            assert!(as_written(&model, *o, kv), "crash point {at}: offset {o} is not what was written: {kv:?}");
        }
        for o in compacted(&model, end, false, &ends).keys() {
            assert!(got.contains_key(o), "crash point {at}: kept record at offset {o} lost");
        }
        assert!(
            !io2.list_dir(&dir).unwrap().iter().any(|n| n.ends_with(".cleaned")),
            "crash point {at}: a .cleaned file survived the reopen"
        );
        points += 1;
        if done {
            break;
        }
        at += 1;
    }
    assert!(points > 10, "only {points} crash points");
}

/// The same sweep over `__consumer_offsets` as the group coordinator writes it (commits, an
/// OffsetDelete and a DeleteGroups as tombstones, group records, with the coordinator's record
/// encoding): after a power cut at every step of a cleaning pass that also removes the
/// tombstones, the replay of the reopened log gives exactly the offsets and groups before it.
#[test]
fn crash_sweep_compacting_consumer_offsets_keeps_the_committed_state() {
    use engine::groups::store::{
        append_commits, append_groups, append_tombstones, group_value, restore_groups, restore_offsets, CommitEntry,
        Committed, GroupRecord,
    };
    let dir = PathBuf::from("/data/__consumer_offsets-0");
    let cfg = small_cfg(Durability::Group, 2048);
    let entry = |t: &str, p: i32, o: i64| CommitEntry {
        topic: t.into(),
        partition: p,
        committed: Committed { offset: o, leader_epoch: -1, metadata: Some(String::new()), commit_timestamp_ms: 1 },
    };
    let mut at = 0;
    let mut points = 0;
    loop {
        let sim = SimIo::new();
        let io = sim_io(&sim);
        let p = Partition::open("__consumer_offsets", 0, &dir, io.clone(), cfg.clone(), Arc::new(engine::log::Notifier::default())).unwrap();
        let wait = |r: Result<engine::log::AppendInfo, engine::log::AppendError>| p.wait_durable(r.unwrap().next_offset).unwrap();
        wait(append_commits(&p, "del", &[entry("t", 0, 1), entry("t", 1, 2)]));
        wait(append_commits(&p, "gone", &[entry("t", 0, 3)]));
        let group = |generation| GroupRecord {
            protocol_type: "consumer".into(),
            generation,
            protocol: None,
            leader: None,
            state_timestamp_ms: 1,
            members: Vec::new(),
        };
        for (g, generation) in [("keep", 1), ("gone", 1), ("keep", 2)] {
            wait(append_groups(&p, &[(g.into(), Some(group_value(&group(generation))))]));
        }
        for i in 0..120 {
            wait(append_commits(&p, &format!("g{}", i % 3), &[entry("t", i % 5, i as i64)]));
            if i == 40 {
                wait(append_tombstones(&p, "del", &[("t".into(), 0)], false));
                wait(append_tombstones(&p, "gone", &[("t".into(), 0)], true));
            }
        }
        let want = restore_offsets(&p).unwrap();
        assert!(want.contains_key("del") && !want.contains_key("gone") && want.len() == 4, "{want:?}");
        let want_groups = restore_groups(&p).unwrap();
        assert_eq!(want_groups.keys().collect::<Vec<_>>(), vec!["keep"]);
        p.close().unwrap();
        drop(p);
        let mode = if at % 2 == 0 { CrashMode::DropUnsynced } else { CrashMode::TearAndFlip };
        let crash = Arc::new(CrashAt { sim: sim.clone(), ops: AtomicU64::new(0), at: AtomicU64::new(u64::MAX), mode, image: Mutex::new(None) });
        let cio: Arc<dyn Io> = crash.clone();
        let p = Partition::open("__consumer_offsets", 0, &dir, cio, cfg.clone(), Arc::new(engine::log::Notifier::default())).unwrap();
        crash.at.store(crash.ops.load(Ordering::SeqCst) + at, Ordering::SeqCst);
        // delete.retention.ms 0: the tombstones go in this pass.
        let st = clean_partition(&p, engine::log::now_ms() + 1, 0, &limits(), &AtomicBool::new(false)).unwrap();
        assert!(st.segments_swapped > 0 && st.tombstones_removed > 0, "{st:?}");
        let image = crash.image.lock().unwrap().take();
        let done = image.is_none();
        let image = image.unwrap_or_else(|| sim.crash(mode, at));
        let p2 = Partition::open("__consumer_offsets", 0, &dir, Arc::new(image), cfg.clone(), Arc::new(engine::log::Notifier::default()))
            .unwrap_or_else(|e| panic!("crash point {at}: reopen failed: {e}"));
        assert_eq!(restore_offsets(&p2).unwrap(), want, "crash point {at}: the replay differs");
        assert_eq!(restore_groups(&p2).unwrap(), want_groups, "crash point {at}: the groups' replay differs");
        points += 1;
        if done {
            break;
        }
        at += 1;
    }
    assert!(points > 10, "only {points} crash points");
}

/// The coordinator's replay of `__consumer_offsets` is consistent with a cleaner pass running
/// in the middle of it: a plain scan that read a value in an old segment and then the compacted
/// segment whose tombstone was removed brings the deleted offset back; `store::replay` sees the
/// segments change and replays again.
#[test]
fn a_cleaner_pass_during_the_offsets_replay_does_not_bring_a_deleted_offset_back() {
    use engine::groups::store::{append_commits, append_tombstones, apply_offset_record, replay, scan_records, CommitEntry, Committed};
    // Segments of 400 KB and 4 KB commits: the replay's first 1 MiB read ends before the
    // tombstone, which is in the fourth segment.
    let cfg = small_cfg(Durability::Group, 400_000);
    let entry = |p: i32, o: i64| CommitEntry {
        topic: "t".into(),
        partition: p,
        committed: Committed { offset: o, leader_epoch: -1, metadata: Some("m".repeat(4000)), commit_timestamp_ms: 1 },
    };
    let build = || {
        let sim = SimIo::new();
        let dir = PathBuf::from("/data/__consumer_offsets-0");
        let p = Partition::open("__consumer_offsets", 0, &dir, sim_io(&sim), cfg.clone(), Arc::new(engine::log::Notifier::default())).unwrap();
        let wait = |r: Result<engine::log::AppendInfo, engine::log::AppendError>| p.wait_durable(r.unwrap().next_offset).unwrap();
        wait(append_commits(&p, "del", &[entry(0, 1)]));
        let mut i = 0;
        let mut deleted = false;
        while p.sealed_segments().len() < 4 {
            if p.sealed_segments().len() == 3 && !deleted {
                wait(append_tombstones(&p, "del", &[("t".into(), 0)], false));
                deleted = true;
            }
            wait(append_commits(&p, "busy", &[entry(i % 3, i as i64)]));
            i += 1;
            assert!(i < 2000);
        }
        p
    };
    fn compact_once(p: &Partition) -> impl FnMut() + '_ {
        let mut done = false;
        move || {
            if !done {
                done = true;
                let st = clean_partition(p, engine::log::now_ms() + 1, 0, &limits(), &AtomicBool::new(false)).unwrap();
                assert!(st.tombstones_removed > 0, "{st:?}");
            }
        }
    }
    // A plain scan with the pass after its first record: the hazard is real.
    let p = build();
    let mut all = Default::default();
    let mut hook = compact_once(&p);
    scan_records(&p, |k, v| {
        hook();
        apply_offset_record(&mut all, k, v)
    })
    .unwrap();
    assert!(all.get("del").is_some_and(|m| m.contains_key(&("t".to_string(), 0))), "the plain scan did not see the hazard");
    // The replay starts over and gets the state the log holds.
    let p = build();
    let mut hook = compact_once(&p);
    let all = replay(&p, |all, k, v| {
        hook();
        apply_offset_record(all, k, v)
    })
    .unwrap();
    assert!(!all.contains_key("del"), "a deleted offset came back: {:?}", all.get("del"));
    assert_eq!(all["busy"].len(), 3);
}

#[test]
fn cleaner_never_touches_the_active_segment() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = PathBuf::from("/data/t-0");
    // One big segment: everything is in the active segment.
    let cfg = LogConfig { ..small_cfg(Durability::Group, 1 << 20) };
    let p = open(&io, &dir, &cfg).unwrap();
    let model = fill(&p, 50);
    assert!(p.sealed_segments().is_empty());
    let st = clean_partition(&p, engine::log::now_ms(), 0, &limits(), &AtomicBool::new(false)).unwrap();
    assert_eq!(st.segments_swapped, 0);
    assert_eq!(read_records(&p), model);
}

/// confluent-kafka against the broker (`tests/interop/compaction.py`): a compacted topic keeps
/// the latest value of each key at the offset it was produced at, the tombstoned key disappears
/// after delete.retention.ms, and a record without a key is refused with INVALID_RECORD.
#[test]
fn confluent_kafka_sees_a_compacted_topic() {
    let py = require_tool("python3");
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|_| {}, dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/compaction.py");
    let out = std::process::Command::new("timeout")
        .arg("180")
        .arg(py)
        .arg(script)
        .args(["--bootstrap", &broker.local_addr().to_string(), "--topic", "cmp"])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "compaction.py failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(r["null_key"], "INVALID_RECORD", "{r}");
    eprintln!("reads: {} {}", r["read_stats"], r["read_errors"]);
    let rows = |v: &serde_json::Value| -> Vec<(u64, String, Option<String>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| (x[0].as_u64().unwrap(), x[1].as_str().unwrap().to_string(), x[2].as_str().map(str::to_string)))
            .collect()
    };
    let produced = rows(&r["produced"]);
    let got = rows(&r["records"]);
    let by_offset: HashMap<u64, &(u64, String, Option<String>)> = produced.iter().map(|x| (x.0, x)).collect();
    let mut latest: HashMap<&str, &(u64, String, Option<String>)> = HashMap::new();
    for x in &produced {
        latest.insert(&x.1, x);
    }
    // Offsets preserved: each record read is the one produced at its offset (or, a segment's
    // last record that a later one superseded, a tombstone of its key).
    for x in &got {
        let w = by_offset.get(&x.0);
        assert!(
            w == Some(&x) || w.is_some_and(|w| w.1 == x.1 && x.2.is_none()),
            "record {x:?} is not what was produced at its offset"
        );
    }
    // The latest value of every live key is there; no value of the tombstoned key is left.
    for (k, x) in &latest {
        if *k == "k9" {
            assert!(x.2.is_none());
            assert!(!got.iter().any(|g| g.1 == "k9" && g.2.is_some()), "tombstoned key still read: {got:?}");
        } else {
            assert!(got.contains(x), "latest record of {k} ({x:?}) missing; reads {} {}, read {:?}", r["reads"], r["read_errors"], got.iter().map(|g| g.0).collect::<Vec<_>>());
        }
    }
    assert!(got.len() < produced.len() / 3, "{} of {} records left: not compacted", got.len(), produced.len());
    broker.shutdown().unwrap();
}

/// The producer state recovery rebuilds from batch headers survives compaction: the last batch
/// of each idempotent producer is kept whole, so after a reopen the producer's next sequence is
/// accepted and a retry of its last batch is still a duplicate.
#[test]
fn idempotent_producer_state_survives_compaction_and_reopen() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = PathBuf::from("/data/t-0");
    let cfg = small_cfg(Durability::Group, 4096);
    let p = open(&io, &dir, &cfg).unwrap();
    let keyed = |seq: i32, pid: i64| {
        let k = format!("k{}", seq % 3).into_bytes();
        let v = format!("v{seq}-{}", "x".repeat(60)).into_bytes();
        build::batch_with(&[build::Rec { key: Some(&k), value: Some(&v), timestamp_delta: 0 }], 1_000, pid, 0, seq)
    };
    for seq in 0..60 {
        p.append_durable(&mut keyed(seq, 7)).unwrap();
    }
    let last = keyed(59, 7);
    // Another producer's records roll the idempotent producer's batches into sealed segments.
    for seq in 0..120 {
        p.append_durable(&mut keyed(seq, 8)).unwrap();
    }
    let before = p.producer_state(7);
    assert_eq!(before, Some((0, 59)));
    let st = clean_partition(&p, engine::log::now_ms(), 0, &limits(), &AtomicBool::new(false)).unwrap();
    assert!(st.records_removed > 50, "{st:?}");
    p.close().unwrap();
    drop(p);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.producer_state(7), before);
    assert!(p.append_durable(&mut last.clone()).unwrap().duplicate, "a retry of the last batch is a duplicate");
    p.append_durable(&mut keyed(60, 7)).expect("the next sequence is accepted");
}

/// The background cleaner of a LogManager compacts a `cleanup.policy=compact` topic on its own,
/// and the scrub then checks the compacted segments (gaps between batches) without reporting
/// damage or fencing anything.
#[test]
fn manager_cleaner_compacts_and_the_scrub_accepts_compacted_segments() {
    use engine::log::{LogManager, TopicConfig};
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let data = PathBuf::from("/data");
    let cfg = LogConfig { scrub_rate_mib: 1000, ..small_cfg(Durability::Group, 4096) };
    let m = LogManager::open(&data, io.clone(), cfg.clone()).unwrap();
    let overrides = TopicConfig::from_pairs([("cleanup.policy", "compact"), ("segment.bytes", "4096")], cfg.batch_bytes_max).unwrap();
    m.create_topic_with_config("c", 1, overrides).unwrap();
    let p = m.partition("c", 0).unwrap();
    let model = fill(&p, 200);
    let end = active_base(&p);
    let ends = segment_ends(&p);
    // The tombstone (timestamp 1000) is older than the default delete.retention.ms: removed too.
    let want = compacted(&model, end, false, &ends);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while read_records(&p) != want {
        assert!(std::time::Instant::now() < deadline, "the cleaner did not compact within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    m.close().unwrap();
    drop((p, m));
    // Reopened: the scrub's first pass runs right away over the compacted sealed segments.
    let m = LogManager::open(&data, io.clone(), cfg).unwrap();
    let p = m.partition("c", 0).unwrap();
    let sealed = p.sealed_segments().len() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while m.scrub.segments_checked.load(Ordering::Relaxed) < sealed {
        assert!(std::time::Instant::now() < deadline, "the scrub did not finish its pass within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(m.scrub.damage.lock().unwrap().is_empty(), "{:?}", m.scrub.damage.lock().unwrap());
    assert_eq!(p.fenced_at(), None);
    assert_eq!(read_records(&p), want);
}

/// A panic while cleaning one partition (a bug; here SimIo panics in the sync of that
/// partition's first `.cleaned` output) marks that partition uncleanable, leaves it served as
/// it was, and the cleaner thread goes on compacting the other partitions, as Kafka's
/// LogCleaner does. Before, the panic ended the cleaner thread: no partition was compacted
/// again for the broker's lifetime, with nothing but the panic message to tell.
#[test]
fn a_panic_cleaning_one_partition_marks_it_uncleanable_and_the_cleaner_goes_on() {
    let sim = SimIo::new();
    sim.set_sync_panic_path(Some(&format!("bad-0/{:020}.log{}", 0, engine::log::cleaner::CLEANED_SUFFIX)));
    let cfg = LogConfig { compact: true, delete_retention_ms: 0, ..small_cfg(Durability::Group, 4096) };
    let m = LogManager::open(Path::new("/data"), sim_io(&sim), cfg.clone()).unwrap();
    m.create_topic("bad", 1, Some(cfg.clone())).unwrap();
    m.create_topic("good", 1, Some(cfg)).unwrap();
    let bad = m.partition("bad", 0).unwrap();
    let bad_model = fill(&bad, 200);
    assert!(bad.sealed_segments().len() >= 5, "the test needs several sealed segments");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while m.uncleanable_partitions().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the cleaner never reported bad-0 uncleanable");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let u = m.uncleanable_partitions();
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!((u[0].0.as_str(), u[0].1), ("bad", 0));
    assert!(u[0].2.contains("injected panic in sync_data"), "{u:?}");
    assert_eq!(read_records(&bad), bad_model, "the uncleanable partition is served as it was");

    // The cleaner thread is still there: the other compacted partition is compacted.
    let good = m.partition("good", 0).unwrap();
    let good_model = fill(&good, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while read_records(&good).len() == good_model.len() {
        assert!(std::time::Instant::now() < deadline, "the cleaner stopped: good-0 was never compacted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(read_records(&good).len() < good_model.len() / 2);
    // bad-0 is skipped from then on, not retried into the same panic.
    assert_eq!(m.uncleanable_partitions().len(), 1);
    assert_eq!(read_records(&bad), bad_model);
    sim.set_sync_panic_path(None);
}

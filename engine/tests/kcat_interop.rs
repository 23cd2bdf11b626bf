//! Debian's kcat (librdkafka) against the embedded broker: 100,000 keyed records to a
//! 3-partition topic, consumed back with `-o beginning -e`; content and per-partition order
//! compared. Uncompressed, lz4 and zstd.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use common::{require_tool, run, start_broker};
use engine::log::Durability;

const RECORDS: usize = 100_000;
const KEYS: usize = 997;

fn roundtrip(codec: Option<&str>) {
    let kcat = require_tool("kcat");
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 3);
    let addr = broker.local_addr().to_string();
    let topic = format!("kcat-{}", codec.unwrap_or("none"));

    let mut input = String::with_capacity(RECORDS * 40);
    for i in 0..RECORDS {
        input.push_str(&format!("key-{}:value-{i}-{}\n", i % KEYS, "x".repeat(i % 50)));
    }
    let mut p = Command::new(&kcat);
    p.args(["-b", &addr, "-P", "-K:", "-t", &topic, "-X", "linger.ms=20"]);
    if let Some(z) = codec {
        p.args(["-z", z]);
    }
    run(&mut p, Some(input.as_bytes()), Duration::from_secs(180));

    let mut c = Command::new(&kcat);
    c.args(["-b", &addr, "-C", "-t", &topic, "-o", "beginning", "-e", "-f", "%p\t%o\t%k\t%s\n"]);
    let out = run(&mut c, None, Duration::from_secs(180));
    let text = String::from_utf8(out).unwrap();

    // partition -> [(offset, i)] in consumed order
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    let mut key_partition: HashMap<String, i32> = HashMap::new();
    let mut seen = vec![false; RECORDS];
    for line in text.lines() {
        let mut f = line.splitn(4, '\t');
        let (p, o, k, v) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let p: i32 = p.parse().unwrap();
        let o: i64 = o.parse().unwrap();
        let i: usize = v.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(k, format!("key-{}", i % KEYS), "key/value mismatch");
        assert_eq!(v, format!("value-{i}-{}", "x".repeat(i % 50)), "value corrupted");
        assert!(!seen[i], "record {i} delivered twice");
        seen[i] = true;
        let prev = key_partition.insert(k.to_string(), p);
        assert!(prev.is_none() || prev == Some(p), "key {k} in two partitions");
        per_partition.entry(p).or_default().push((o, i));
    }
    assert!(seen.iter().all(|s| *s), "missing records: {}", seen.iter().filter(|s| !**s).count());
    assert_eq!(per_partition.len(), 3, "records should spread over all 3 partitions");
    for (p, recs) in &per_partition {
        for (n, w) in recs.windows(2).enumerate() {
            assert_eq!(w[1].0, w[0].0 + 1, "partition {p}: offsets not consecutive at {n}");
            assert!(w[1].1 > w[0].1, "partition {p}: produce order not kept at offset {}", w[1].0);
        }
        assert_eq!(recs[0].0, 0);
    }
    broker.shutdown().unwrap();
}

#[test]
fn kcat_roundtrip_100k_keyed_records_uncompressed() {
    roundtrip(None);
}

#[test]
fn kcat_roundtrip_100k_keyed_records_lz4() {
    roundtrip(Some("lz4"));
}

#[test]
fn kcat_roundtrip_100k_keyed_records_zstd() {
    roundtrip(Some("zstd"));
}

//! Criterion benchmarks of the loadgen's batch compression (issue 19): closing one 16 KiB
//! batch (`BatchBuilder::finish_into`: header, compression, CRC) per codec, for 100 B and 1 KiB
//! records whose payloads are half random, half zero bytes (`randomBytesRatio: 0.5`) with keys
//! `key-N`. `Throughput::Elements` = records, so criterion reports records/s (ns/record =
//! 1e9 / that). Each codec's compression ratio on the same batches is printed to stderr before
//! its benchmark.
//!
//! `cargo bench -p bench --bench compression` (env `BENCH_PROFILE=quick` for the short
//! profile; `-- --test` runs each once).

use std::time::Duration;

use bench::BenchClock;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loadgen::encode::{BatchBuilder, BatchFormat, PayloadPool};
use loadgen::produce::Codec;

const BATCH_BYTES: usize = 16 << 10;

fn config() -> Criterion<BenchClock> {
    let c = Criterion::default().with_measurement(BenchClock::from_env());
    match bench::profile() {
        bench::Profile::Quick => c.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(20),
        bench::Profile::Full => c,
    }
}

/// Fill `b` with records up to the batch size; returns the record count.
fn fill(b: &mut BatchBuilder, pool: &PayloadPool, i0: &mut u64) -> u64 {
    let mut n = 0;
    while b.len_bytes() < BATCH_BYTES {
        let key = format!("key-{}", *i0 % 1000);
        b.append(Some(key.as_bytes()), pool.get(*i0), *i0, *i0, 0, 1_700_000_000_000);
        *i0 += 1;
        n += 1;
    }
    n
}

fn compression(c: &mut Criterion<BenchClock>) {
    for size in [100usize, 1024] {
        let pool = PayloadPool::new(size, 1000, 0.5, 7);
        let mut g = c.benchmark_group(format!("compress/{size}B"));
        for codec in Codec::ALL {
            let mut b = BatchBuilder::with_format(BATCH_BYTES, BatchFormat { codec, ..Default::default() });
            let mut i0 = 0u64;
            // Ratio over 50 batches.
            let (mut raw, mut comp, mut records) = (0u64, 0u64, 0u64);
            for _ in 0..50 {
                records = fill(&mut b, &pool, &mut i0);
                let _ = b.finish();
                if let Some(c) = b.last_compression {
                    raw += c.raw_bytes;
                    comp += c.compressed_bytes;
                }
            }
            let ratio = if comp > 0 { raw as f64 / comp as f64 } else { 1.0 };
            eprintln!("compress/{size}B/{}: ratio {ratio:.2} ({records} records per 16 KiB batch)", codec.name());
            g.throughput(Throughput::Elements(records));
            let mut spare = (Vec::with_capacity(BATCH_BYTES + 1024), Vec::new());
            let clock = BenchClock::from_env();
            g.bench_function(BenchmarkId::from_parameter(codec.name()), |bn| {
                bn.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        fill(&mut b, &pool, &mut i0);
                        let t0 = clock.now();
                        let (out, intended, _) =
                            b.finish_into(std::mem::take(&mut spare.0), std::mem::take(&mut spare.1));
                        total += clock.since(t0);
                        spare = (out, intended);
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = compression }
criterion_main!(benches);

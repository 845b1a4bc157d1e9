//! Criterion benchmarks of the pure roomcast logic (`roomcast-common`): the code that
//! runs on every command inside Redis, measured without Redis.
//!
//! Run: `cargo bench -p roomcast-benches --bench pure -- --quick`
//! (measurement times are kept short so a full run stays well under a minute).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roomcast_common::crc16::{crc16, key_slot};
use roomcast_common::gcra::{throttle, Memory, Quota};
use roomcast_common::json;
use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::{Partitioner, DEFAULT_PARTITIONS};

/// A 100-byte JSON chat payload, the same one `benches/publish.sh` sends.
const PAYLOAD: &[u8] =
    br#"{"type":"chat","user":"alice","text":"hello everyone in the lobby, this is a test msg!","n":1234567}"#;

fn bench_crc16(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc16");
    let key = b"{6.43}:inbox:edge-1";
    group.bench_function("crc16/19B", |b| b.iter(|| crc16(black_box(key))));
    group.bench_function("key_slot/plain", |b| {
        b.iter(|| key_slot(black_box(b"room:lobby:conns")))
    });
    group.bench_function("key_slot/tagged", |b| b.iter(|| key_slot(black_box(key))));
    group.finish();
}

fn bench_partition(c: &mut Criterion) {
    let mut group = c.benchmark_group("partition");
    let partitioner =
        Partitioner::new(DEFAULT_PARTITIONS).expect("16 partitions is a valid layout");
    let tagged = partitioner.tagged("lobby");
    group.bench_function("resolve/plain", |b| {
        b.iter(|| partitioner.resolve(black_box(b"lobby")).is_ok())
    });
    group.bench_function("resolve/tagged", |b| {
        b.iter(|| partitioner.resolve(black_box(tagged.as_bytes())).is_ok())
    });
    group.finish();
}

fn bench_gcra(c: &mut Criterion) {
    let mut group = c.benchmark_group("gcra");
    let quota = Quota::per_second(1000, 20).expect("1000/s is a valid quota");
    group.bench_function("throttle/allowed", |b| {
        let mut store = Memory {
            now: 1_700_000_000_000_000,
            tat: None,
        };
        b.iter(|| {
            // 1 ms per request = exactly the sustained rate: always allowed.
            store.now += 1_000;
            throttle(&mut store, black_box(&quota), black_box(1))
        })
    });
    group.bench_function("throttle/limited", |b| {
        // The TAT is 1 s ahead: every request is refused and the store never changes.
        let mut store = Memory {
            now: 1_700_000_000_000_000,
            tat: Some(1_700_000_000_000_000 + 1_000_000),
        };
        b.iter(|| throttle(&mut store, black_box(&quota), black_box(1)))
    });
    group.finish();
}

fn bench_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(PAYLOAD.len() as u64));
    group.bench_function("is_valid/100B", |b| {
        b.iter(|| json::is_valid(black_box(PAYLOAD)))
    });
    group.finish();
}

fn bench_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    let keys = PartitionKeys::new("6.43");
    group.bench_function("inbox", |b| b.iter(|| keys.inbox(black_box("edge-1"))));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = pure;
    config = config();
    targets = bench_crc16, bench_partition, bench_gcra, bench_json, bench_keys
}
criterion_main!(pure);

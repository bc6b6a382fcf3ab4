//! The digest verifier's throughput against plain `sha2` over the same buffer: the actor adds
//! messaging, which must cost next to nothing per MiB.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::Digest as _;

use berth::oci::Algorithm;
use berth::upload::verifier::{Current, DigestVerifier, Update};

const TOTAL: usize = 64 * 1024 * 1024;
const BATCH: usize = 1024 * 1024;

fn bench(c: &mut Criterion) {
    let data = Bytes::from(vec![0x5au8; TOTAL]);
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);

    group.bench_function("sha2 one buffer", |b| {
        b.iter(|| sha2::Sha256::digest(&data[..]))
    });

    group.bench_function("berth verifier actor, 1 MiB batches", |b| {
        let system = actix::System::new();
        b.iter(|| {
            system.block_on(async {
                use actix::Actor;
                let verifier = DigestVerifier::new(Algorithm::Sha256).start();
                for offset in (0..TOTAL).step_by(BATCH) {
                    verifier.do_send(Update(vec![data.slice(offset..offset + BATCH)]));
                }
                verifier.send(Current).await.unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

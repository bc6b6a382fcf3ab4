//! Parsing and validating manifests, the work of every manifest PUT.

use criterion::{criterion_group, criterion_main, Criterion};

use berth::oci::manifest::Manifest;

fn bench(c: &mut Criterion) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("storage-fixtures/oci-multiarch");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
    };
    let top = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let image_index = blob(&top);
    let parsed: serde_json::Value = serde_json::from_slice(&image_index).unwrap();
    let image = blob(parsed["manifests"][0]["digest"].as_str().unwrap());

    c.bench_function("parse image manifest", |b| {
        b.iter(|| {
            Manifest::parse(&image, Some("application/vnd.oci.image.manifest.v1+json")).unwrap()
        })
    });
    c.bench_function("parse image index", |b| {
        b.iter(|| Manifest::parse(&image_index, None).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! What a login costs every request: checking `Authorization: Basic …` against htpasswd once
//! the password was verified (the case of a CI sending credentials with each request), and a
//! Bearer token. Compare with the bcrypt check it saves (printed as "first check").

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;

use berth::auth::{Auth, Needs, Permission};
use berth::config::Config;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("ci-secret", 10).unwrap()),
    )
    .unwrap();
    let env = [
        ("REGISTRY_AUTH".to_string(), "htpasswd".to_string()),
        (
            "REGISTRY_AUTH_HTPASSWD_PATH".to_string(),
            htpasswd.display().to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let config = Config::load(None, &env).unwrap();
    let auth = Auth::from_config(&config.auth).unwrap().unwrap();
    let header = "Basic Y2k6Y2ktc2VjcmV0"; // ci:ci-secret
    let needs = Needs {
        permission: Some(Permission::Push),
        repo: Some("team/app"),
    };
    let peer = Some("127.0.0.1".parse().unwrap());
    let system = actix_rt::System::new();
    let first = std::time::Instant::now();
    system
        .block_on(auth.authorize(peer, Some(header), &needs))
        .unwrap();
    println!(
        "first check (bcrypt, cost 10): {:.1} ms",
        first.elapsed().as_secs_f64() * 1e3
    );
    c.bench_function("authorize Basic, remembered", |b| {
        b.iter(|| {
            auth.authorize(peer, Some(header), &needs)
                .now_or_never()
                .expect("a remembered password needs no blocking work")
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

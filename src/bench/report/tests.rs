//! Tests of the report: the comparison's ratios, medians and ceilings, the markdown's tables
//! and targets, the SVG chart, the plain table and `--profile`'s argument.

use super::*;

fn r(scenario: &str, registry: &str, mb_s: f64, ops_s: f64) -> ScenarioResult {
    ScenarioResult {
        scenario: scenario.into(),
        registry: registry.into(),
        mb_s,
        ops_s,
        bytes: 1 << 30,
        p99_ms: 1000.0 / ops_s.max(1.0),
        server_cpu_s: Some(mb_s / 1000.0),
        server_peak_rss_mib: Some(mb_s / 10.0),
        ..Default::default()
    }
}

#[test]
fn ratios_medians_ceilings_and_targets() {
    let results = vec![
        r("push-monolithic", "berth", 900.0, 1.0),
        r("push-monolithic", "berth", 1000.0, 1.0),
        r("push-monolithic", "berth", 2000.0, 1.0),
        r("push-monolithic", "distribution", 300.0, 1.0),
        r("manifest-get", "berth", 0.0, 50_000.0),
        r("manifest-get", "distribution", 0.0, 4_000.0),
        r("ceiling-sha256", "machine", 1900.0, 0.0),
        r("http-put", "nginx", 1500.0, 0.0),
    ];
    let cmp = Comparison::new(&results, "berth", "distribution");
    assert_eq!(
        cmp.row("push-monolithic").unwrap().ratio(),
        Some(1000.0 / 300.0)
    );
    assert_eq!(cmp.push_ceiling(), Some((1500.0, "http-put")));
    let md = cmp.markdown();
    assert!(
        md.contains("| push-monolithic | MB/s | 1000 | 300 | **3.33×** | 0.00 / 1000 | 0.00 / 1000 | 3/1 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| manifest-get | ops/s | 50000 | 4000 | **12.50×**"),
        "{md}"
    );
    assert!(
        md.contains("push-monolithic ≥ 60 % of the tightest ceiling (http-put) | 67 % | yes"),
        "{md}"
    );
    let svg = cmp.svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect").count(), 3 + 2 * 2);
    let t = table(&results, true);
    assert!(t.contains("medians"));
}

#[test]
fn ceilings_show_their_spread() {
    let results = vec![
        r("http-put", "nginx", 800.0, 0.0),
        r("http-put", "nginx", 2000.0, 0.0),
        r("http-put", "nginx", 1000.0, 0.0),
        r("push-monolithic", "berth", 700.0, 1.0),
    ];
    let cmp = Comparison::new(&results, "berth", "distribution");
    assert_eq!(cmp.push_ceiling(), Some((1000.0, "http-put")));
    let md = cmp.markdown();
    assert!(
        md.contains("| loopback HTTP PUT of the large blob (nginx) | 1000 | 800 – 2000 | 120 % | 3 | nginx |"),
        "{md}"
    );
    assert!(md.contains("| push-monolithic | 700 | 70 % |"), "{md}");
}

fn resume(label: &str, phase: &str, resume_ms: Option<f64>, error: Option<&str>) -> ScenarioResult {
    ScenarioResult {
        scenario: "resume-2g".into(),
        registry: label.into(),
        phase: Some(phase.into()),
        errors: error.is_some() as u64,
        error: error.map(str::to_string),
        phases_ms: resume_ms.map(|ms| {
            [
                ("resume", ms),
                ("status", 1.0),
                ("first_patch", ms - 1.0),
                ("complete", 9.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        }),
        ..Default::default()
    }
}

#[test]
fn resumes_have_their_own_table_and_failures_are_rows() {
    let results = vec![
        resume("berth", "prepare", None, None),
        resume(
            "berth",
            "finish",
            None,
            Some("GET upload status: 404 Not Found | x"),
        ),
        resume("distribution", "prepare", None, None),
        resume("distribution", "finish", Some(30.0), None),
        resume("distribution", "finish", Some(50.0), None),
    ];
    let cmp = Comparison::new(&results, "berth", "distribution");
    assert!(cmp.rows.is_empty());
    let md = cmp.markdown();
    assert!(
        md.contains("| 2G | berth | **failed** | – | – | – | 0/1 | `GET upload status: 404 Not Found \\| x` |"),
        "{md}"
    );
    assert!(
        md.contains("| 2G | distribution | 40.0 | 1.0 | 39.0 | 9.0 | 2/2 |  |"),
        "{md}"
    );
}

#[test]
fn other_labels_are_informational_rows() {
    let results = vec![
        r("push-chunked-8m", "berth", 800.0, 1.0),
        r("push-chunked-8m", "distribution", 200.0, 1.0),
        r("push-chunked-8m", "berth-s3", 400.0, 1.0),
    ];
    let cmp = Comparison::new(&results, "berth", "distribution");
    assert_eq!(cmp.rows.len(), 1);
    let md = cmp.markdown();
    assert!(
        md.contains(
            "| push-chunked-8m | berth-s3 | MB/s | 400 | 1 | 0 | 800 | 200 | 0.50× | 2.00× | 40 |"
        ),
        "{md}"
    );
}

#[test]
fn profiles_list_top_functions_and_unmet_targets_link_them() {
    let results = vec![
        r("push-small", "berth", 0.0, 100.0),
        r("push-small", "distribution", 0.0, 50.0),
    ];
    let mut cmp = Comparison::new(&results, "berth", "distribution");
    cmp.add_profile(
        "push-small",
        "main;sha256 3000000\nmain;memcpy 1000000\n".into(),
        Some("benches/results/flame-push-small.svg".into()),
    );
    let md = cmp.markdown();
    assert!(
        md.contains(
            "| push-small ≥ 5× distribution | 2.00× | **no** | [push-small](#profile-push-small) |"
        ),
        "{md}"
    );
    assert!(
        md.contains("<a id=\"profile-push-small\"></a>push-small (4.0 CPU ms)"),
        "{md}"
    );
    assert!(md.contains("| 1 | `sha256` | 3.0 | 75.0 % |"), "{md}");
    assert!(
        md.contains("[benches/results/flame-push-small.svg](benches/results/flame-push-small.svg)")
    );
    assert_eq!(
        parse_profile_arg("push-small=/tmp/f=x.svg"),
        Some(("push-small", "/tmp/f", Some("x.svg")))
    );
    assert_eq!(
        parse_profile_arg("push-small=/tmp/f"),
        Some(("push-small", "/tmp/f", None))
    );
    assert_eq!(parse_profile_arg("push-small"), None);
}

#[test]
fn on_a_store_measured_by_its_own_get_the_targets_are_issue_13s() {
    let results = vec![
        r("push-chunked-8m", "berth-garage", 50.0, 1.0),
        r("push-chunked-8m", "distribution-garage", 20.0, 1.0),
        r("pull-large", "berth-garage", 380.0, 1.0),
        r("pull-large", "distribution-garage", 200.0, 1.0),
        r("ceiling-store-get", "garage", 400.0, 0.0),
    ];
    let md = Comparison::new(&results, "berth-garage", "distribution-garage").markdown();
    assert!(md.contains("### Targets of issue 13"), "{md}");
    assert!(!md.contains("Targets of issue 3"), "{md}");
    assert!(
        md.contains("| push-chunked-8m ≥ 2× distribution-garage | 2.50× | yes |"),
        "{md}"
    );
    assert!(
        md.contains("| pull-large ≥ 90 % of the store's GET | 95 % | yes |"),
        "{md}"
    );
}

fn lat(scenario: &str, registry: &str, ops_s: f64, p50_ms: f64) -> ScenarioResult {
    ScenarioResult {
        p50_ms,
        ..r(scenario, registry, 0.0, ops_s)
    }
}

#[test]
fn peers_get_columns_and_the_ratio_to_the_best_other() {
    let results = vec![
        r("pull-after-push", "berth", 900.0, 1.0),
        r("pull-after-push", "distribution", 600.0, 1.0),
        r("pull-after-push", "angos", 1200.0, 1.0),
        r("pull-after-push", "dist3", 300.0, 1.0),
        r("push-small", "berth", 0.0, 500.0),
        r("push-small", "distribution", 0.0, 100.0),
    ];
    let peers = ["angos".to_string(), "dist3".to_string()];
    let cmp = Comparison::with_peers(&results, "berth", "distribution", &peers);
    assert!(cmp.others.is_empty());
    let md = cmp.markdown();
    assert!(
        md.contains("| scenario | unit | berth | distribution | angos | dist3 | berth ÷ distribution | berth ÷ best other | berth p50 / p99 ms | distribution p50 / p99 ms | angos p50 / p99 ms | dist3 p50 / p99 ms | runs | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"),
        "{md}"
    );
    assert!(
        md.contains("| pull-after-push | MB/s | 900 | 600 | 1200 | 300 | **1.50×** | **0.75×** (angos) | 0.00 / 1000 | 0.00 / 1000 | 0.00 / 1000 | 0.00 / 1000 | 1/1/1/1 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| push-small | ops/s | 500 | 100 | – | – | **5.00×** | **5.00×** (distribution) |"
        ),
        "{md}"
    );
    // A peer whose runs failed is shown, but is not the best other.
    let mut failing = results.clone();
    failing.push(ScenarioResult {
        errors: 20,
        ..r("catalog-first", "angos", 0.0, 1500.0)
    });
    failing.push(r("catalog-first", "berth", 0.0, 300.0));
    failing.push(r("catalog-first", "distribution", 0.0, 10.0));
    let md = Comparison::with_peers(&failing, "berth", "distribution", &peers).markdown();
    assert!(
        md.contains("| catalog-first | ops/s | 300 | 10.0 | 1500 | – | **30.00×** | **30.00×** (distribution) |"),
        "{md}"
    );
    // Without peers the table keeps its columns.
    let md = Comparison::new(&results, "berth", "distribution").markdown();
    assert!(md.contains("| scenario | unit | berth | distribution | berth ÷ distribution | berth p50 / p99 ms | distribution p50 / p99 ms | runs | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"), "{md}");
    assert!(
        md.contains("| pull-after-push | angos | MB/s | 1200 |"),
        "{md}"
    );
}

#[test]
fn issue_14s_targets_appear_with_its_rows() {
    let without = vec![
        r("push-small", "berth", 0.0, 500.0),
        r("push-small", "distribution", 0.0, 100.0),
    ];
    let md = Comparison::new(&without, "berth", "distribution").markdown();
    assert!(!md.contains("Targets of issue 14"), "{md}");

    let results = vec![
        r("pull-after-push", "berth", 900.0, 1.0),
        r("pull-after-push", "distribution", 1000.0, 1.0),
        // The unhashed GET is not what a hashed pull is held against.
        r("http-get", "nginx", 2000.0, 0.0),
        r("http-get-hashed", "nginx", 950.0, 0.0),
        r("push-small", "berth", 0.0, 500.0),
        r("push-small", "distribution", 0.0, 100.0),
        lat("manifest-put-1", "berth", 300.0, 3.0),
        lat("manifest-put-1", "berth-nofsync", 1000.0, 1.0),
        lat("manifest-put-1", "distribution", 200.0, 4.0),
        lat("catalog-20k-first", "berth", 50.0, 20.0),
        lat("catalog-20k-first", "distribution", 20.0, 45.0),
        lat("tags-100k-middle", "berth", 10.0, 80.0),
        lat("tags-100k-middle", "distribution", 20.0, 40.0),
    ];
    let md = Comparison::new(&results, "berth", "distribution").markdown();
    assert!(md.contains("### Targets of issue 3"), "{md}");
    assert!(md.contains("### Targets of issue 14"), "{md}");
    let section = &md[md.find("### Targets of issue 14").unwrap()..];
    for line in [
        "| pull-after-push ≥ 1.0× distribution | 0.90× | **no** |",
        "| push-small ≥ 3.0× distribution | 5.00× | yes |",
        "| pull-after-push ≥ 90 % of nginx's GET (hashed alike) | 95 % | yes |",
        "| manifest-put-1 p50 with fsync ≤ 2× berth-nofsync's | 3.0 vs 1.0 ms | **no** |",
        "| catalog-20k-first p50 ≤ 50 ms and below distribution's | 20.0 vs 45.0 ms | yes |",
        "| tags-100k-middle p50 ≤ 50 ms and below distribution's | 80.0 vs 40.0 ms | **no** |",
        "| every row ≥ 1.0× distribution | 3 of 5; behind: pull-after-push 0.90×, tags-100k-middle 0.50× | **no** |",
    ] {
        assert!(section.contains(line), "{line}\n{md}");
    }
    assert!(
        md.contains("| catalog-20k-first | ops/s | 50.0 | 20.0 | **2.50×**"),
        "{md}"
    );
}

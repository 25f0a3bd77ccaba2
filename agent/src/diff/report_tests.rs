//! Tests of the report: counts, samples (bounded, redacted), JSON lines round trip,
//! terminal table and HTML.

use super::*;
use crate::diff::response::Fnv64;

fn summary(status: u16, body: &str, headers: &[(&str, &str)]) -> ResponseSummary {
    ResponseSummary {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body_len: body.len() as u64,
        body_hash: Fnv64::of(body.as_bytes()),
        body: Some(body.as_bytes().to_vec()),
        ..ResponseSummary::default()
    }
}

fn cmp(outcome: DiffOutcome, fields: &[&str]) -> Comparison {
    Comparison {
        outcome,
        fields: fields.iter().map(|f| f.to_string()).collect(),
        truncated: 0,
    }
}

fn sample() -> PairSample {
    PairSample {
        method: "GET".into(),
        target: "/users/1".into(),
        prod: summary(
            200,
            r#"{"name":"ada","token":"s3cret"}"#,
            &[("set-cookie", "sid=1"), ("x-api-key", "k")],
        ),
        shadow: summary(
            200,
            r#"{"name":"bob","token":"s3cret"}"#,
            &[("authorization", "Bearer x")],
        ),
    }
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

fn filled() -> DiffReport {
    let mut r = DiffReport::new(ReportConfig {
        redact_headers: vec!["X-Api-Key".into()],
        redact_paths: vec![JsonPath::parse("$..token").unwrap()],
        ..ReportConfig::default()
    });
    for i in 0..20 {
        r.record(
            "GET /users/{id}",
            &cmp(DiffOutcome::Match, &[]),
            ms(3),
            ms(4),
            None,
        );
        if i % 2 == 0 {
            r.record(
                "GET /users/{id}",
                &cmp(DiffOutcome::Body, &["$.name"]),
                ms(3),
                ms(40),
                Some(sample()),
            );
        }
    }
    r.record(
        "POST /orders",
        &cmp(DiffOutcome::Status, &["status", "header:content-type"]),
        ms(700),
        ms(1),
        Some(sample()),
    );
    r.record(
        "POST /orders",
        &cmp(DiffOutcome::ProdMissing, &[]),
        None,
        ms(1),
        None,
    );
    r
}

#[test]
fn counts_latencies_and_fields_per_route() {
    let r = filled();
    let (_, users) = r.routes().next().unwrap();
    assert_eq!(
        (
            users.count(DiffOutcome::Match),
            users.count(DiffOutcome::Body)
        ),
        (20, 10)
    );
    assert_eq!(
        (users.prod_latency.count(), users.shadow_latency.count()),
        (30, 30)
    );
    let top = users.top_fields(5);
    assert_eq!(top[0].0, "$.name");
    assert_eq!(top[0].1.count, 10);
    assert_eq!(top[0].1.example, "\"ada\" → \"bob\"");
    let orders = r.routes().nth(1).unwrap().1;
    assert_eq!(orders.prod_latency.count(), 1);
    assert_eq!(orders.top_fields(5)[1].1.example, "200 → 200");
}

#[test]
fn samples_are_bounded_deterministic_and_redacted() {
    let r = filled();
    let mut out = Vec::new();
    r.write_jsonl(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let pairs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"pair\""))
        .collect();
    // 5 of the 10 body pairs, the status pair and the prod_missing pair; matches none.
    assert_eq!(pairs.len(), 5 + 1 + 1, "{text}");
    for secret in ["s3cret", "sid=1", "Bearer", "\"k\""] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains(REDACTED));
    let mut again = Vec::new();
    filled().write_jsonl(&mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), text);
}

#[test]
fn jsonl_alone_rebuilds_the_report_and_files_merge() {
    let r = filled();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diff.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    r.write_jsonl(&mut f).unwrap();
    drop(f);
    let back = report_from_files(std::slice::from_ref(&path)).unwrap();
    assert_eq!(back.terminal_table(), r.terminal_table());
    let twice = report_from_files(&[path.clone(), path.clone()]).unwrap();
    let users = twice.routes().next().unwrap().1;
    assert_eq!(users.count(DiffOutcome::Match), 40);
    assert_eq!(users.top_fields(1)[0].1.count, 20);
    assert_eq!(users.prod_latency.count(), 60);

    std::fs::write(&path, "{\"kind\":\"route\",\"route\":\"x\"}\n").unwrap();
    let e = report_from_files(&[path]).unwrap_err();
    assert!(
        e.to_string()
            .contains("diff.jsonl:1: not a diff report line (no counts)"),
        "{e}"
    );
}

#[test]
fn terminal_table_lists_counts_and_top_fields() {
    let t = filled().terminal_table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("route"), "{t}");
    assert!(lines[0].contains("prod_missing"));
    assert!(t.contains("GET /users/{id}"));
    assert!(t.contains("    $.name  10  e.g. \"ada\" → \"bob\""), "{t}");
    let users: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&users[2..], ["20", "0", "0", "10", "0", "0", "0"]);
}

#[test]
fn html_is_self_contained_and_escaped() {
    let mut r = filled();
    r.record(
        "GET /<script>",
        &cmp(DiffOutcome::Headers, &["header:x<y"]),
        ms(1),
        ms(1),
        None,
    );
    let html = r.render_html();
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;"));
    for banned in ["http://", "https://", "<link", "src=", "url("] {
        assert!(!html.contains(banned), "{banned}");
    }
    assert!(html.contains("<svg"));
    assert!(html.contains("<td class=\"bad\">10</td>"));
}

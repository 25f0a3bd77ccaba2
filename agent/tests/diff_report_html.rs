//! The diff report's HTML page in a real browser: headless Chromium renders the page
//! `render_html` wrote; its DOM shows the numbers of `terminal_table`, a screenshot is a
//! real PNG, and the page fetches nothing. Needs `chromium` (.ci/setup installs it): on
//! CI its absence fails the test, elsewhere it is skipped with a line saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shadowtap::diff::compare::{Comparison, JsonPath};
use shadowtap::diff::report::{report_from_files, DiffReport, PairSample, ReportConfig};
use shadowtap::diff::{DiffOutcome, ResponseSummary};

/// True when the test should go on (chromium is there); fails on CI when it is not.
fn require_chromium(test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let reason = "chromium is not installed (.ci/setup installs it)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run on CI: {reason}");
    }
    println!("SKIP {test}: {reason}");
    false
}

fn summary(status: u16, body: &str) -> ResponseSummary {
    ResponseSummary {
        status,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body_len: body.len() as u64,
        body: Some(body.as_bytes().to_vec()),
        ..ResponseSummary::default()
    }
}

fn report() -> DiffReport {
    let mut r = DiffReport::new(ReportConfig {
        redact_paths: vec![JsonPath::parse("$..token").unwrap()],
        ..ReportConfig::default()
    });
    let pair = |fields: &[&str], outcome| Comparison {
        outcome,
        fields: fields.iter().map(|f| f.to_string()).collect(),
        truncated: 0,
    };
    let sample = |p: &str, s: &str, ps, ss| PairSample {
        method: "GET".into(),
        target: "/users/7?x=1".into(),
        prod: summary(ps, p),
        shadow: summary(ss, s),
    };
    for i in 0..37u64 {
        let ms = |n| Some(Duration::from_millis(n));
        r.record(
            "GET /users/{id}",
            &Comparison::only(DiffOutcome::Match),
            ms(2 + i % 5),
            ms(3 + i % 7),
            None,
        );
        if i % 3 == 0 {
            r.record(
                "GET /users/{id}",
                &pair(&["$.user.name"], DiffOutcome::Body),
                ms(4),
                ms(60 + i),
                Some(sample(
                    r#"{"user":{"name":"ada"}}"#,
                    r#"{"user":{"name":"bob"}}"#,
                    200,
                    200,
                )),
            );
        }
        if i % 10 == 0 {
            r.record(
                "POST /orders",
                &pair(&["status"], DiffOutcome::Status),
                ms(15),
                ms(900),
                Some(sample("{}", "oops", 201, 500)),
            );
        }
    }
    r.record(
        "/helloworld.Greeter/SayHello",
        &Comparison::only(DiffOutcome::ShadowTimeout),
        Some(Duration::from_millis(1)),
        None,
        None,
    );
    r
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("diff_report_html");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium(args: &[&str], page: &Path) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Counts per route from the terminal table: lines not indented, after the header; the
/// route is everything before the last seven numbers.
fn table_counts(table: &str) -> Vec<(String, Vec<u64>)> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let (route, counts) = words.split_at(words.len() - DiffOutcome::ALL.len());
            (
                route.join(" "),
                counts.iter().map(|c| c.parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// The counts of a route's row in the dumped DOM's summary table.
fn dom_counts(dom: &str, route: &str) -> Vec<u64> {
    let summary = &dom[dom.find("id=\"summary\"").expect("summary table")..];
    let row = &summary[summary
        .find(&format!("<code>{route}</code>"))
        .unwrap_or_else(|| panic!("{route} row"))..];
    let row = &row[..row.find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
            text.parse().unwrap()
        })
        .collect()
}

#[test]
fn html_report_in_a_browser_shows_the_terminal_numbers_and_fetches_nothing() {
    if !require_chromium("diff_report_html") {
        return;
    }
    let dir = output_dir();
    // Through the file: the JSON lines alone make the report.
    let jsonl = dir.join("diff.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    report().write_jsonl(&mut f).unwrap();
    drop(f);
    let report = report_from_files(&[jsonl]).unwrap();
    let table = report.terminal_table();
    let html = report.render_html();
    for banned in ["http://", "https://", "<script", "<link", "src=", "url("] {
        assert!(!html.contains(banned), "the page holds {banned}");
    }
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();

    let dom = String::from_utf8(chromium(&["--dump-dom"], &page).stdout).unwrap();
    let routes = table_counts(&table);
    assert_eq!(routes.len(), 3, "{table}");
    for (route, counts) in &routes {
        assert_eq!(&dom_counts(&dom, route), counts, "{route}\n{table}");
    }
    assert!(
        dom.contains("$.user.name"),
        "top field missing from the page"
    );
    assert!(
        dom.contains("\"ada\" → \"bob\""),
        "example missing from the page"
    );
    assert!(dom.contains("<svg"), "no latency chart");

    let png = dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,900",
        ],
        &page,
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.len() > 1000, "screenshot of {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    println!("screenshot: {}", png.display());
}

//! What `shadowtap inspect` prints (issue 21, item 10): a line for every request seen,
//! with its outcome, so the summary's counts can be found line by line; `--headers`,
//! `--body N`; the table's local or UTC ISO 8601 times, protocol version and aligned
//! columns. The real binary, on a capture built here.

#[expect(
    dead_code,
    reason = "shared capture builder; this file uses the pcapng writer and TCP frames"
)]
mod captures;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use captures::{Capture, Endpoint, FIN_ACK, PSH_ACK, SYN};

const SERVER: Endpoint = (Ipv4Addr::new(10, 9, 0, 1), 8080);

fn client(port: u16) -> Endpoint {
    (Ipv4Addr::new(10, 9, 0, 2), port)
}

/// One connection: SYN (unless `mid_way`), the bytes in one segment, FIN.
fn connection(c: &mut Capture, port: u16, bytes: &[u8], mid_way: bool) {
    if !mid_way {
        c.tcp(client(port), SERVER, 0, SYN, b"");
    }
    c.tcp(client(port), SERVER, 1, PSH_ACK, bytes);
    let end = 1 + u32::try_from(bytes.len()).expect("small");
    c.tcp(client(port), SERVER, end, FIN_ACK, b"");
}

/// A request of each outcome inspect can tell, in this order: complete (with a binary
/// body), unparseable, not_copied, incomplete, untrusted.
fn every_outcome(path: &Path) {
    let mut c = Capture::create(path);
    connection(
        &mut c,
        41000,
        b"POST /ok?q=1 HTTP/1.1\r\nHost: api.example\r\nX-Trace: abc\r\nContent-Length: 6\r\n\r\nhi\x00\xffyo",
        false,
    );
    connection(
        &mut c,
        41001,
        b"POST /both HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        false,
    );
    connection(
        &mut c,
        41002,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
        false,
    );
    connection(
        &mut c,
        41003,
        b"PUT /cut HTTP/1.0\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly this",
        false,
    );
    connection(
        &mut c,
        41004,
        b"GET /joined HTTP/1.1\r\nHost: a\r\n\r\n",
        true,
    );
    c.finish();
}

struct Run {
    stdout: String,
    summary: String,
}

fn inspect(path: &Path, args: &[&str], tz: &str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowtap"));
    cmd.arg("inspect").arg(path).args(args).env("TZ", tz);
    for (name, _) in std::env::vars() {
        if name.starts_with("SHADOWTAP_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("run shadowtap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("requests seen:"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
        .to_string();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        summary,
    }
}

/// `name N` in the summary line.
fn count(summary: &str, name: &str) -> usize {
    let at = summary
        .find(&format!("{name} "))
        .unwrap_or_else(|| panic!("no {name} in {summary}"));
    summary[at + name.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {name} in {summary}"))
}

#[test]
fn every_request_seen_has_a_line_with_its_outcome_and_the_lines_add_up_to_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outcomes.pcapng");
    every_outcome(&path);
    let run = inspect(&path, &[], "UTC");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let outcomes: Vec<&str> = lines
        .iter()
        .map(|v| v["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [
            "complete",
            "unparseable",
            "not_copied",
            "incomplete",
            "untrusted"
        ],
        "{}\n{}",
        run.summary,
        run.stdout
    );
    let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &outcomes {
        *by_outcome.entry(o).or_default() += 1;
    }
    for (outcome, n) in &by_outcome {
        assert_eq!(count(&run.summary, outcome), *n, "{}", run.summary);
    }
    assert_eq!(count(&run.summary, "requests seen:"), lines.len());
    // Every line says when, who and (when known) which method.
    for (v, port) in lines.iter().zip(41000..) {
        assert_eq!(v["client"], format!("10.9.0.2:{port}"), "{v}");
        assert_eq!(v["server"], "10.9.0.1:8080", "{v}");
        assert!(v["ts"].as_f64().expect("ts") > 1.7e9, "{v}");
    }
    assert_eq!(lines[1]["method"], "POST");
    assert_eq!(
        lines[1]["reason"], "both Content-Length and Transfer-Encoding",
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["method"], "CONNECT");
    assert_eq!(lines[2]["reason"], "connect");
    // The complete line keeps every field it had, in the same order, `outcome` added.
    let complete = run.stdout.lines().next().expect("a line");
    assert!(
        complete.ends_with(
            r#","method":"POST","target":"/ok?q=1","version":"HTTP/1.1","host":"api.example","headers":3,"body_len":6,"chunked":false,"outcome":"complete"}"#
        ),
        "{complete}"
    );
}

#[test]
fn headers_and_body_start_are_shown_on_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outcomes.pcapng");
    every_outcome(&path);
    let run = inspect(&path, &["--headers", "--body", "4"], "UTC");
    let first: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().expect("a line")).expect("JSON");
    assert_eq!(
        first["header_block"],
        "Host: api.example\r\nX-Trace: abc\r\nContent-Length: 6\r\n"
    );
    // Non-printable bytes escaped, cut at 4.
    assert_eq!(first["body_start"], "hi\\x00\\xff");
    // Without the flags, neither field.
    let plain = inspect(&path, &[], "UTC");
    assert!(!plain.stdout.contains("header_block"), "{}", plain.stdout);
    assert!(!plain.stdout.contains("body_start"), "{}", plain.stdout);

    let table = inspect(
        &path,
        &["--format", "table", "--headers", "--body", "100"],
        "UTC",
    );
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(rows[1].contains("/ok?q=1"), "{}", table.stdout);
    assert_eq!(rows[2], "    Host: api.example", "{}", table.stdout);
    assert_eq!(rows[3], "    X-Trace: abc");
    assert_eq!(rows[4], "    Content-Length: 6");
    assert_eq!(rows[5], "    body: hi\\x00\\xffyo");
}

#[test]
fn table_shows_iso_times_local_or_utc_versions_and_aligned_columns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outcomes.pcapng");
    every_outcome(&path);
    // The capture starts at 1700000000 s: 22:13:20 UTC, 03:43:20 the next day at UTC+5:30 (a POSIX TZ string: no tz database needed).
    let local = inspect(&path, &["--format", "table"], "IST-5:30");
    let rows: Vec<&str> = local.stdout.lines().collect();
    assert!(rows[0].starts_with("TIME "), "{}", local.stdout);
    assert!(
        rows[1].starts_with("2023-11-15T03:43:20.000+05:30 complete "),
        "{}",
        local.stdout
    );
    let utc = inspect(&path, &["--format", "table", "--utc"], "IST-5:30");
    let rows: Vec<&str> = utc.stdout.lines().collect();
    assert!(
        rows[1].starts_with("2023-11-14T22:13:20.000Z "),
        "{}",
        utc.stdout
    );
    assert_eq!(rows.len(), 6, "a header and five requests:\n{}", utc.stdout);
    // Columns line up: each heading starts where its values start.
    let header = rows[0];
    for (column, value_of) in [
        ("OUTCOME", 1usize),
        ("CLIENT", 2),
        ("SERVER", 3),
        ("PROTOCOL", 4),
        ("METHOD", 5),
    ] {
        let at = header.find(column).expect("column");
        for row in &rows[1..] {
            let fields: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(
                row[at..].split_whitespace().next(),
                Some(fields[value_of]),
                "{column} in {row:?}"
            );
        }
    }
    let versions: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split_whitespace().nth(4).expect("version"))
        .collect();
    assert_eq!(versions, ["HTTP/1.1", "-", "-", "-", "-"], "{}", utc.stdout);
    assert!(rows[2].contains("unparseable"), "{}", rows[2]);
    assert!(
        rows[2].ends_with("- (both Content-Length and Transfer-Encoding)"),
        "{}",
        rows[2]
    );
}

//! Bad input to the real binary (issue 6, item 2): corpus captures corrupted many ways by
//! a seeded generator, and every flag given an out-of-range value. Each run must end by
//! itself with exit 0 (what could be read was read), 1 (damage past the file header: the
//! summary of what came before it and one line naming the offset) or 2 (one line on
//! stderr saying what is wrong), never a panic (exit 101), a signal or a hang.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a run may take: the inputs are a few KiB, so anything near this is a hang.
const LIMIT: Duration = Duration::from_secs(20);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/zeek-http")
}

struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn shadowtap(args: &[&str]) -> Ended {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shadowtap");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shadowtap {args:?} hangs (killed after {LIMIT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ended {
        code: status.code(),
        stdout: reader.join().expect("stdout"),
        stderr: err_reader.join().expect("stderr"),
    }
}

/// xorshift64*: a fixed seed gives the same mutations on every run, so a failure names
/// a case that can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One corruption of `bytes`, named for the failure message.
fn mutate(bytes: &[u8], rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let mut b = bytes.to_vec();
    let len = b.len();
    let kind = rng.below(10);
    let name = match kind {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            "bit flips"
        }
        1 => {
            b.truncate(rng.below(len));
            "truncated"
        }
        2 => {
            // A length field or anything else set to all ones.
            let i = rng.below(len.saturating_sub(4));
            b[i..i + 4].copy_from_slice(&[0xff; 4]);
            "0xffffffff written"
        }
        3 => {
            let i = rng.below(len);
            let n = rng.below(len - i);
            b[i..i + n].fill(0);
            "zeroed range"
        }
        4 => {
            let i = rng.below(len);
            let junk: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
            "bytes inserted"
        }
        5 => {
            let i = rng.below(len);
            let n = rng.below(len - i);
            b.drain(i..i + n);
            "range removed"
        }
        6 => {
            let i = rng.below(len);
            let n = rng.below(len - i).min(2000);
            let copy = b[i..i + n].to_vec();
            let at = rng.below(len);
            b.splice(at..at, copy);
            "range duplicated"
        }
        7 => {
            // Header fields: magic, version, snaplen, link type.
            let field = [0usize, 4, 16, 20][rng.below(4)];
            if field + 4 <= len {
                let v = [0u32, u32::MAX, 0x8000_0000, rng.next() as u32][rng.below(4)];
                b[field..field + 4].copy_from_slice(&v.to_le_bytes());
            }
            "header field replaced"
        }
        8 => {
            // A huge snaplen and record lengths near it: allocation bait.
            if len >= 24 {
                b[16..20].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
            }
            if len >= 40 {
                b[32..36].copy_from_slice(&0x0400_0000u32.to_le_bytes());
            }
            "huge snaplen"
        }
        _ => {
            let i = rng.below(len);
            b[i] = rng.next() as u8;
            "byte replaced"
        }
    };
    (name, b)
}

fn assert_clean_end(case: &str, run: &Ended) {
    assert!(
        !run.stderr.contains("panicked"),
        "{case}: panic\n{}",
        run.stderr
    );
    match run.code {
        Some(0) => assert!(
            run.stderr.contains("requests seen:"),
            "{case}: exit 0 without a summary:\n{}",
            run.stderr
        ),
        // Damage past the file header: the summary of what came before, then one line
        // naming the file and the byte offset.
        Some(1) => {
            assert!(
                run.stderr.contains("requests seen:"),
                "{case}: exit 1 without a summary:\n{}",
                run.stderr
            );
            let errors: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("shadowtap: "))
                .collect();
            assert_eq!(errors.len(), 1, "{case}: {}", run.stderr);
            assert!(errors[0].contains(" at byte "), "{case}: {:?}", errors[0]);
        }
        Some(2) => {
            let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(
                lines.len(),
                1,
                "{case}: error not one line:\n{}",
                run.stderr
            );
            assert!(
                lines[0].starts_with("shadowtap: "),
                "{case}: {:?}",
                lines[0]
            );
        }
        other => panic!("{case}: exit {other:?}\n{}", run.stderr),
    }
}

#[test]
fn corrupted_corpus_files_end_with_exit_0_or_1_with_summary_or_one_line_and_exit_2() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus (../shared/corpus/zeek-http)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "pcap" || e == "pcapng")
                && std::fs::metadata(p).is_ok_and(|m| m.len() < 64 << 10)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus too small: {}", files.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x5348_4144_5354_4150);
    let rounds = 400;
    let (mut ok, mut damaged, mut errors) = (0, 0, 0);
    for round in 0..rounds {
        let source = &files[round % files.len()];
        let bytes = std::fs::read(source).expect("read corpus file");
        let (how, mutated) = mutate(&bytes, &mut rng);
        let path = dir.path().join(format!("m{round}.pcap"));
        std::fs::write(&path, &mutated).expect("write mutation");
        let case = format!(
            "round {round}: {} {how}",
            source.file_name().and_then(|n| n.to_str()).unwrap_or("?")
        );
        let p = path.to_str().expect("utf8");
        let run = shadowtap(&["inspect", p]);
        assert_clean_end(&case, &run);
        if run.code != Some(2) {
            if run.code == Some(0) {
                ok += 1;
            } else {
                damaged += 1;
            }
            // Every line printed is a whole JSON request.
            for line in run.stdout.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{case}: bad JSON line {line:?}: {e}"));
                assert!(v["method"].is_string(), "{case}: {line}");
            }
        } else {
            errors += 1;
            assert!(
                run.stderr.contains(p),
                "{case}: error does not name the file: {}",
                run.stderr
            );
        }
        // The table format goes through other code with the same input.
        if round % 10 == 0 {
            assert_clean_end(&case, &shadowtap(&["inspect", "--format", "table", p]));
        }
    }
    eprintln!(
        "{rounds} corrupted files: {ok} read (exit 0), {damaged} read up to damage (exit 1), {errors} refused (exit 2)"
    );
    // The generator must produce every kind, or it is not testing much.
    assert!(
        ok > rounds / 4 && damaged > rounds / 20 && errors > rounds / 20,
        "{ok} ok, {damaged} damaged, {errors} errors"
    );
}

/// `ARGS` fail before doing anything, with one line naming `names`, and exit 2.
fn assert_rejected(args: &[&str], names: &str) {
    let run = shadowtap(args);
    assert_eq!(
        run.code,
        Some(2),
        "{args:?}: exit {:?}\n{}",
        run.code,
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{args:?}: stdout {}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line:\n{}", run.stderr);
    assert!(
        lines[0].contains(names),
        "{args:?}: {:?} does not name {names:?}",
        lines[0]
    );
}

#[test]
fn every_out_of_range_flag_value_is_one_line_and_exit_2() {
    let good = corpus_dir().join("get.pcap");
    let good = good.to_str().expect("utf8");
    let t = "http://127.0.0.1:9";
    let inspect = |flag: &'static str, value: &'static str| -> Vec<String> {
        ["inspect", good, flag, value].map(String::from).to_vec()
    };
    let replay = |flag: &'static str, value: &'static str| -> Vec<String> {
        ["replay", good, "--target", t, flag, value]
            .map(String::from)
            .to_vec()
    };
    let run = |flag: &'static str, value: &'static str| -> Vec<String> {
        ["run", "--port", "8080", "--target", t, flag, value]
            .map(String::from)
            .to_vec()
    };
    let mut cases: Vec<(Vec<String>, &str)> = Vec::new();
    for (flag, value) in [
        ("--max-flows", "-1"),
        ("--max-flows", "0"),
        ("--max-flows", "many"),
        ("--max-stream-buffer", "18446744073709551616"),
        ("--max-buffer", "-5"),
        ("--max-head", "0"),
        ("--max-body", "1e9"),
        ("--idle-timeout", "0"),
        ("--idle-timeout", "-1"),
        ("--port", "70000"),
        ("--port", "http"),
        ("--format", "xml"),
    ] {
        cases.push((inspect(flag, value), value));
    }
    for (flag, value) in [
        ("--percent", "100.5"),
        ("--percent", "-1"),
        ("--percent", "NaN"),
        ("--speed", "0x"),
        // clap takes a leading `-` for a flag and names that part.
        ("--speed", "-2"),
        ("--speed", "infx"),
        ("--loop", "0"),
        ("--max-in-flight", "0"),
        ("--queue-len", "0"),
        ("--max-queue-bytes", "0"),
        ("--connect-timeout", "5y"),
        ("--request-timeout", "-1"),
        ("--drain-timeout", "1e12s"),
        ("--max-rps", "0"),
        ("--max-rps", "inf"),
        ("--sample-by", "cookie"),
        ("--set-header", "NoColon"),
        ("--allow-path", "("),
        ("--deny-path", "[a-"),
        ("--allow-header", "X-A:("),
        ("--allow-method", "G ET"),
        ("--target-ca", "/nonexistent/ca.pem"),
        ("--target", "ftp://stage"),
        ("--target", "http://stage@200"),
        ("--target", "http://stage:99999"),
        ("--log-format", "yaml"),
    ] {
        // The header rule names its flag and the bad regex, not the whole NAME:REGEX.
        let names = if flag == "--allow-header" {
            flag
        } else {
            value
        };
        cases.push((replay(flag, value), names));
    }
    for (flag, value) in [
        ("--engine", "dpdk"),
        ("--ring-bytes", "-1"),
        ("--pcap-buffer", "-1"),
        ("--pcap-buffer", "lots"),
        ("--own-mark", "0x"),
        ("--duration", "soon"),
        ("--iface", ""),
    ] {
        cases.push((run(flag, value), value));
    }
    cases.push((["run", "--target", t].map(String::from).to_vec(), "--port"));
    let mut failures = Vec::new();
    for (args, names) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = std::panic::catch_unwind(|| assert_rejected(&args, names)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "?".into());
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

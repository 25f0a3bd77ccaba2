//! Every capture of the shared Zeek corpus runs through `inspect`, and the requests found
//! agree with what Wireshark's dissector found (../shared/corpus/zeek-http-tshark.tsv).
//! Where shadowtap differs on purpose, a named test below says which side is right and
//! why (RFC 9112 decides), and the general test leaves that file to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shadowtap::inspect::{inspect, InspectFormat, InspectSummary};
use shadowtap::pipeline::PipelineConfig;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

/// (method, request-target) pairs, sorted: the order of requests across connections in
/// a capture is not something either tool promises.
type Requests = Vec<(String, String)>;

/// What tshark found, per file.
fn tshark_requests() -> BTreeMap<String, Requests> {
    let tsv = std::fs::read_to_string(corpus_dir().join("zeek-http-tshark.tsv"))
        .expect("the corpus sits beside the repository at ../shared/corpus");
    let mut by_file: BTreeMap<String, Requests> = BTreeMap::new();
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 9, "short TSV line: {line}");
        let methods: Vec<&str> = cols[6].split(',').collect();
        let uris: Vec<&str> = cols[8].split(',').collect();
        // tshark joins several requests of one frame with commas; a URI with a comma
        // of its own would break this, and the corpus has none (checked here).
        assert_eq!(methods.len(), uris.len(), "ambiguous TSV line: {line}");
        let entry = by_file.entry(cols[0].to_string()).or_default();
        for (m, u) in methods.iter().zip(&uris) {
            entry.push((m.to_string(), u.to_string()));
        }
    }
    for reqs in by_file.values_mut() {
        reqs.sort();
    }
    by_file
}

fn shadowtap_requests(file: &Path) -> (Requests, InspectSummary) {
    let mut out = Vec::new();
    let summary = inspect(
        &[file.to_path_buf()],
        InspectFormat::Jsonl,
        &PipelineConfig::default(),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("inspect {}: {e}", file.display()));
    let mut reqs: Requests = String::from_utf8(out)
        .expect("jsonl is UTF-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            (
                v["method"].as_str().expect("method").to_string(),
                v["target"].as_str().expect("target").to_string(),
            )
        })
        .collect();
    reqs.sort();
    (reqs, summary)
}

fn corpus_file(name: &str) -> PathBuf {
    corpus_dir().join("zeek-http").join(name)
}

fn pairs(list: &[(&str, &str)]) -> Requests {
    let mut v: Requests = list
        .iter()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect();
    v.sort();
    v
}

/// Files where shadowtap and tshark disagree on purpose; each has its own test below.
const DIFFERENCES: &[&str] = &[];

#[test]
fn every_corpus_file_agrees_with_tshark_or_has_a_named_difference() {
    let expected = tshark_requests();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join("zeek-http"))
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 60,
        "corpus looks incomplete: {} files",
        files.len()
    );
    let mut disagreements = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let (found, summary) = shadowtap_requests(file);
        assert_eq!(
            summary.complete as usize,
            found.len(),
            "{name}: summary and output disagree"
        );
        if DIFFERENCES.contains(&name) {
            continue;
        }
        let want = expected.get(name).cloned().unwrap_or_default();
        if found != want {
            disagreements.push(format!(
                "{name}:\n  tshark:    {want:?}\n  shadowtap: {found:?}\n  summary: {summary}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} file(s) disagree with tshark and have no named test:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

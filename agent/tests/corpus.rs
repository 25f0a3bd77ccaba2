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

/// Every request seen ends in exactly one outcome.
fn assert_adds_up(name: &str, s: &InspectSummary) {
    assert_eq!(
        s.requests_seen,
        s.complete + s.incomplete + s.too_large + s.unparseable + s.untrusted + s.not_copied,
        "{name}: outcomes do not add up: {s}"
    );
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
const DIFFERENCES: &[&str] = &[
    "261_variant-01-chunk_2pow64_overflow.pcap",
    "261_variant-02-cl_uint64max.pcap",
    "261_variant-03-cl_negative.pcap",
    "261_variant-04-te_cl_desync.pcap",
    "261_variant-09-te_obs_fold.pcap",
    "261_variant-10-multi_value_te.pcap",
    "connect-with-smtp.pcap",
    "no-uri.pcap",
    "http-09-content-length-confusion.pcap",
    "get-to-ssh-server.pcap",
    "http-to-ssh.pcap",
    "http-single-conn-22.pcap",
    "zeek-image-post-1080-8000-x.pcap",
    "query-method.pcap",
    "query-method-non-standard-port.pcap",
    "connect-with-header.pcap",
    "get_nosyn.pcap",
];

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
        assert_adds_up(name, &summary);
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

/// The request-smuggling variants: framing that a server could read two ways.
/// tshark guesses one reading and shows the "smuggled" request inside the body.
/// shadowtap is right not to: RFC 9112 §6.3 says a server must reject such a message
/// (400) and close the connection, so nothing after it is a request anyone served, and
/// replaying the hidden one would do to the target what the attack tried to do to prod.
/// Each counts one request, ending `unparseable` (or `too_large` for a valid but
/// 2^64-1 Content-Length, which is well-formed but larger than any cap), and nothing
/// else is emitted.
#[test]
fn smuggling_variants_are_counted_never_guessed() {
    let cases = [
        ("261_variant-01-chunk_2pow64_overflow.pcap", "unparseable"),
        ("261_variant-02-cl_uint64max.pcap", "too_large"),
        ("261_variant-03-cl_negative.pcap", "unparseable"),
        ("261_variant-04-te_cl_desync.pcap", "unparseable"),
        ("261_variant-09-te_obs_fold.pcap", "unparseable"),
        ("261_variant-10-multi_value_te.pcap", "unparseable"),
    ];
    for (file, outcome) in cases {
        let (found, summary) = shadowtap_requests(&corpus_file(file));
        assert!(found.is_empty(), "{file}: emitted {found:?}");
        assert_eq!(summary.requests_seen, 1, "{file}: {summary}");
        let counted = match outcome {
            "unparseable" => summary.unparseable,
            _ => summary.too_large,
        };
        assert_eq!(counted, 1, "{file}: expected {outcome}: {summary}");
    }
}

/// Request lines that are not `METHOD SP target SP HTTP-version`: tshark takes
/// `CONNECT host:25 / HTTP/1.0` (four words) and `GET HTTP/1.1` (no target) as requests
/// with a guessed target. RFC 9112 §3 leaves no reading of either; shadowtap counts them
/// `unparseable` and sends nothing.
#[test]
fn malformed_request_lines_are_unparseable() {
    for file in ["connect-with-smtp.pcap", "no-uri.pcap"] {
        let (found, summary) = shadowtap_requests(&corpus_file(file));
        assert!(found.is_empty(), "{file}: emitted {found:?}");
        assert_eq!(
            (summary.requests_seen, summary.unparseable),
            (1, 1),
            "{file}: {summary}"
        );
    }
}

/// `GET /` with no version is an HTTP/0.9 simple request. tshark shows it; shadowtap
/// counts it `unparseable`, because a copy would have to invent a version and a Host,
/// and HTTP/1.1 servers answer 0.9 requests with 400 anyway.
#[test]
fn http09_simple_request_is_unparseable() {
    let (found, summary) =
        shadowtap_requests(&corpus_file("http-09-content-length-confusion.pcap"));
    assert!(found.is_empty(), "emitted {found:?}");
    assert_eq!(
        (summary.requests_seen, summary.unparseable),
        (1, 1),
        "{summary}"
    );
}

/// HTTP on ports tshark gives to other dissectors (22 is SSH, 1080 SOCKS): tshark shows
/// no request. shadowtap finds requests by content when no `--port` is given, and these
/// streams carry well-formed HTTP/1.1 requests, so it is right to report them. With a
/// port filter that leaves the port out, they are not reported.
#[test]
fn http_on_other_ports_is_found_by_content() {
    let cases = [
        ("get-to-ssh-server.pcap", pairs(&[("GET", "/")])),
        ("http-to-ssh.pcap", pairs(&[("GET", "/")])),
        ("http-single-conn-22.pcap", Vec::new()),
        ("zeek-image-post-1080-8000-x.pcap", pairs(&[("POST", "/")])),
    ];
    for (file, want) in cases {
        let (found, _) = shadowtap_requests(&corpus_file(file));
        assert_eq!(found, want, "{file}");
        let mut config = PipelineConfig::default();
        config.reassembly.ports = Some(vec![80]);
        let mut out = Vec::new();
        let summary = inspect(
            &[corpus_file(file)],
            InspectFormat::Jsonl,
            &config,
            &mut out,
        )
        .expect("inspect");
        assert_eq!(summary.requests_seen, 0, "{file} with --port 80: {summary}");
    }
}

/// `http-single-conn-22.pcap` sends `GET / HTTP/1.1` with no Host, and its (toy) server
/// answered 200. RFC 9112 §3.2 makes a server answer 400 and nginx, Envoy and Go's
/// server do; a copy would reach staging without the `-shadow` host of any route. So
/// it is counted `unparseable` (as the http_on_other_ports test above also shows).
#[test]
fn http11_without_host_is_not_copied() {
    let (found, summary) = shadowtap_requests(&corpus_file("http-single-conn-22.pcap"));
    assert!(found.is_empty(), "emitted {found:?}");
    assert_eq!(
        (summary.requests_seen, summary.unparseable),
        (1, 1),
        "{summary}"
    );
}

/// A CONNECT opens a tunnel from the server to another host: the server served it, but
/// a copy would open that tunnel from staging. tshark lists it; shadowtap counts it
/// `not_copied` and the TLS inside the tunnel as a non-HTTP stream.
#[test]
fn connect_is_counted_not_copied() {
    let (found, summary) = shadowtap_requests(&corpus_file("connect-with-header.pcap"));
    assert!(found.is_empty(), "emitted {found:?}");
    assert_eq!(
        (
            summary.requests_seen,
            summary.not_copied,
            summary.not_http_streams
        ),
        (1, 1, 1),
        "{summary}"
    );
}

/// `get_nosyn.pcap` starts after the handshake: nothing tells whether its first byte
/// starts a request or sits inside an earlier body. tshark shows the request it finds;
/// shadowtap counts it `untrusted` and copies nothing of that connection (SPEC.md, "Only
/// what the server processed"). A capture that holds only the server's SYN-ACK
/// (`zeek-image-1080-80-x.pcapng`) does give the client's start: that one is framed.
#[test]
fn a_connection_whose_start_was_not_captured_is_only_counted() {
    let (found, summary) = shadowtap_requests(&corpus_file("get_nosyn.pcap"));
    assert!(found.is_empty(), "emitted {found:?}");
    assert_eq!(
        (summary.requests_seen, summary.untrusted),
        (1, 1),
        "{summary}"
    );
    assert!(summary.lost_starts >= 1, "{summary}");
    let (found, summary) = shadowtap_requests(&corpus_file("zeek-image-1080-80-x.pcapng"));
    assert_eq!(found, pairs(&[("GET", "/zeek.png")]), "{summary}");
}

/// `QUERY` (the safe-method-with-body draft) is a method tshark's dissector does not
/// know. RFC 9110 §9.1 makes any token a method, and a shadow target should see the
/// request the client sent, so shadowtap reports it.
#[test]
fn any_token_is_a_method() {
    for file in ["query-method.pcap", "query-method-non-standard-port.pcap"] {
        let (found, _) = shadowtap_requests(&corpus_file(file));
        assert_eq!(found, pairs(&[("QUERY", "/users")]), "{file}");
    }
}

/// One line per client stream: what the real pipeline (reader, decoder, reassembly,
/// framer) makes of it. Server-side streams (responses) are left out.
fn stream_lines(file: &Path) -> Vec<String> {
    use shadowtap::capture::pcap_file::CaptureReader;
    use shadowtap::pipeline::{Pipeline, PipelineEvent};
    use shadowtap::request::NotHttpKind;

    let mut reader = CaptureReader::open(file).expect("corpus file reads");
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut streams: Vec<((String, String), Vec<String>)> = Vec::new();
    let mut note = |ev: PipelineEvent| {
        let (key, line) = match ev {
            PipelineEvent::Request(seen) => (
                (seen.client.to_string(), seen.server.to_string()),
                format!(
                    "{} {} body={}",
                    seen.request.method,
                    String::from_utf8_lossy(&seen.request.target)
                        .chars()
                        .take(24)
                        .collect::<String>(),
                    seen.request.body.len()
                ),
            ),
            PipelineEvent::Dropped {
                client,
                server,
                reason,
                ..
            } => (
                (client.to_string(), server.to_string()),
                format!("dropped {reason:?}"),
            ),
            PipelineEvent::NotHttp {
                kind: NotHttpKind::Response,
                ..
            } => return,
            // No `--diff` here: answers are not framed.
            PipelineEvent::Response { .. } | PipelineEvent::ResponseMissing { .. } => return,
            PipelineEvent::NotHttp {
                client,
                server,
                kind,
                ..
            } => (
                (client.to_string(), server.to_string()),
                format!("not-http {kind:?}"),
            ),
        };
        match streams.iter_mut().find(|(k, _)| *k == key) {
            Some((_, lines)) => lines.push(line),
            None => streams.push((key, vec![line])),
        }
    };
    while let Some(frame) = reader.next_frame().expect("corpus frame") {
        if let Ok(events) = pipeline.push_frame(&frame) {
            events.for_each(&mut note);
        }
    }
    pipeline.flush().for_each(&mut note);
    let name = file.file_name().and_then(|n| n.to_str()).expect("name");
    streams
        .into_iter()
        .enumerate()
        .map(|(n, (_, lines))| format!("{name} #{n}: {}", lines.join(" | ")))
        .collect()
}

/// Every client stream of the corpus, and what it frames to, reviewed by hand against
/// the payloads: the 261 variants and smuggle-http-request (whose second request is
/// really after the first one's 80-byte body) as in the framer's table tests; TLS after
/// CONNECT; HTTP/0.9 (also `no-uri`'s `GET HTTP/1.1`), broken request lines and cruft
/// after a request are unparseable, and nothing after them is trusted.
const ZEEK_CORPUS_STREAMS: &str = include_str!("zeek-corpus-streams.txt");

#[test]
fn every_client_stream_of_the_corpus_frames_as_reviewed() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join("zeek-http"))
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    let lines: Vec<String> = files.iter().flat_map(|f| stream_lines(f)).collect();
    let expected: Vec<&str> = ZEEK_CORPUS_STREAMS
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    if std::env::var_os("SHADOWTAP_BLESS").is_some() {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zeek-corpus-streams.txt"),
            lines.join("\n") + "\n",
        )
        .expect("write golden file");
        return;
    }
    assert_eq!(
        lines, expected,
        "run with SHADOWTAP_BLESS=1 to rewrite, then review the diff"
    );
}

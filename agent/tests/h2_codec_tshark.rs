//! The HTTP/2 codec against real traffic and a reference decoder: nghttp and h2load talk
//! h2c (prior knowledge) to nginx on loopback, tcpdump captures it, and tshark both
//! gives each direction's bytes (`follow,tcp,raw`) and decodes every header block with
//! its own HTTP/2 dissector. Our frame parser and HPACK decoder, fed those bytes, must
//! give the same header fields in the same order, in both directions. Then the late
//! join on the same bytes: from every offset, `sync` plus a parser and decoder joined
//! late must give for each stream exactly the fields above or `Undecodable`.
//! Needs root (tcpdump), nginx, nghttp, h2load, tshark (.ci/setup); under CI=true a
//! missing one fails the test.

#[expect(
    dead_code,
    reason = "shared with the replay tests, which use the helpers this test does not"
)]
mod support;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shadowtap::h2::{
    sync, Block, Decoder, Field, Frame, FrameLimits, FrameParser, Sender, SyncOutcome, SyncRules,
};
use support::{free_port, require_tools, Tcpdump};

/// nginx serving h2c with prior knowledge; killed when dropped.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, port: u16) -> Self {
        let d = dir.display();
        let conf = format!(
            "daemon off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  \
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  \
             server {{\n    listen 127.0.0.1:{port} http2;\n    \
             location / {{ add_header x-served \"yes, {port}\"; return 200 \"ok $request_uri\\n\"; }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited early: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(10), "nginx not up");
            thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The two directions of TCP stream `index` (client, server), from tshark's raw follow:
/// lines with a leading tab are the second node's (the server's).
fn follow(pcap: &Path, index: usize) -> (Vec<u8>, Vec<u8>) {
    let text = run(Command::new("tshark").arg("-r").arg(pcap).args([
        "-q",
        "-z",
        &format!("follow,tcp,raw,{index}"),
    ]));
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let (to, hex) = match line.strip_prefix('\t') {
            Some(rest) => (&mut server, rest),
            None => (&mut client, line),
        };
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for pair in hex.as_bytes().chunks(2) {
            let s = std::str::from_utf8(pair).expect("hex");
            to.push(u8::from_str_radix(s, 16).expect("hex"));
        }
    }
    (client, server)
}

/// tshark's decoding: every header field of every HEADERS frame, in order, per TCP
/// stream and direction (true: from the client).
fn tshark_fields(pcap: &Path, port: u16) -> BTreeMap<(usize, bool), Vec<Field>> {
    // A separator no header here contains.
    const AGG: char = '\u{1e}';
    let text = run(Command::new("tshark").arg("-r").arg(pcap).args([
        "-d",
        &format!("tcp.port=={port},http2"),
        "-Y",
        "http2.type == 1",
        "-T",
        "fields",
        "-e",
        "tcp.stream",
        "-e",
        "tcp.srcport",
        "-e",
        "http2.header.name",
        "-e",
        "http2.header.value",
        "-E",
        "occurrence=a",
        "-E",
        &format!("aggregator={AGG}"),
    ]));
    let mut all: BTreeMap<(usize, bool), Vec<Field>> = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [stream, src, names, values] = cols[..] else {
            panic!("tshark line {line:?}");
        };
        let key = (
            stream.parse().expect("stream"),
            src != port.to_string().as_str(),
        );
        let fields = all.entry(key).or_default();
        for (n, v) in names.split(AGG).zip(values.split(AGG)) {
            fields.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
    }
    all
}

/// Header blocks of one direction by our parser, each with its stream id.
fn header_blocks(mut parser: FrameParser, bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut frames = Vec::new();
    parser.push(bytes, &mut frames).expect("valid HTTP/2");
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Headers { stream, block, .. } => Some((stream, block)),
            _ => None,
        })
        .collect()
}

#[test]
fn codec_matches_tshark_on_nghttp_and_h2load_traffic() {
    if !require_tools(
        "codec_matches_tshark_on_nghttp_and_h2load_traffic",
        &["nginx", "nghttp", "h2load", "tshark", "tcpdump"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let pcap = dir.path().join("h2c.pcap");
    let nginx = Nginx::start(dir.path(), port);
    let tcpdump = Tcpdump::start(&pcap, port);
    let base = format!("http://127.0.0.1:{port}");
    // One connection, several requests: the same headers again (dynamic table indices),
    // a long value (Huffman and eviction), a header that differs per request.
    let long = "v".repeat(3000);
    let mut nghttp = Command::new("nghttp");
    nghttp.args([
        "-n",
        "-H",
        "x-custom: alpha",
        "-H",
        "user-agent: codec-test/1.0",
    ]);
    nghttp.args(["-H", &format!("x-long: {long}")]);
    for path in ["/a", "/b?q=1", "/a", "/c/%7Ed"] {
        nghttp.arg(format!("{base}{path}"));
    }
    run(&mut nghttp);
    run(Command::new("h2load").args([
        "-n",
        "40",
        "-c",
        "2",
        "-m",
        "8",
        "-H",
        "x-trace: abc",
        &format!("{base}/load"),
    ]));
    tcpdump.stop();
    drop(nginx);

    let reference = tshark_fields(&pcap, port);
    let connections = reference.keys().map(|k| k.0).max().expect("HEADERS seen") + 1;
    assert_eq!(connections, 3, "nghttp's connection and h2load's two");
    let limits = FrameLimits::default();
    let mut late_decoded = 0;
    let mut late_undecodable = 0;
    for index in 0..connections {
        let (client, server) = follow(&pcap, index);
        for (from_client, bytes) in [(true, &client), (false, &server)] {
            let parser = if from_client {
                FrameParser::client(limits)
            } else {
                FrameParser::server(limits)
            };
            let blocks = header_blocks(parser, bytes);
            let mut dec = Decoder::new();
            let mut by_stream: BTreeMap<u32, Vec<Field>> = BTreeMap::new();
            let mut ours = Vec::new();
            for (stream, block) in &blocks {
                let Ok(Block::Fields(list)) = dec.decode(block) else {
                    panic!("connection {index}: block of stream {stream} did not decode");
                };
                ours.extend(list.iter().cloned());
                by_stream.insert(*stream, list);
            }
            let want = reference
                .get(&(index, from_client))
                .expect("tshark saw this direction");
            assert_eq!(&ours, want, "connection {index}, client {from_client}");

            // Joined late at every offset past the preface: whatever decodes is exact.
            let sender = if from_client {
                Sender::Client
            } else {
                Sender::Server
            };
            let rules = SyncRules::new(sender);
            for off in (24..bytes.len()).step_by(7) {
                let SyncOutcome::Found(at) = sync(&bytes[off..], &rules) else {
                    continue;
                };
                let mut late = Decoder::joined_late();
                for (stream, block) in
                    header_blocks(FrameParser::joined(limits), &bytes[off + at..])
                {
                    match late.decode(&block) {
                        Ok(Block::Fields(list)) => {
                            assert_eq!(
                                Some(&list),
                                by_stream.get(&stream),
                                "connection {index}, from offset {off}, stream {stream}"
                            );
                            late_decoded += 1;
                        }
                        Ok(Block::Undecodable) => late_undecodable += 1,
                        Err(e) => panic!("joined late at {off}: {e}"),
                    }
                }
            }
        }
    }
    println!("joined late: {late_decoded} blocks decoded exactly, {late_undecodable} undecodable");
    assert!(late_decoded > 0 && late_undecodable > 0);

    // The whole capture path (`inspect`): one complete HTTP/2 request per request header
    // block tshark decoded from a client, with its :method, :path and :authority.
    let mut want: Vec<(String, String, String)> = Vec::new();
    for ((_, from_client), fields) in &reference {
        if !from_client {
            continue;
        }
        // A block's pseudo-fields come first (in any order: h2load sends :path first),
        // so a pseudo-field after a regular one starts the next request.
        let mut regular_seen = true;
        for (name, value) in fields {
            let value = String::from_utf8_lossy(value).into_owned();
            let Some(pseudo) = name.strip_prefix(b":") else {
                regular_seen = true;
                continue;
            };
            if regular_seen {
                want.push(Default::default());
                regular_seen = false;
            }
            let request = want.last_mut().expect("pushed above");
            match pseudo {
                b"method" => request.0 = value,
                b"path" => request.1 = value,
                b"authority" => request.2 = value,
                _ => {}
            }
        }
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args(["inspect", "--port", &port.to_string()])
        .arg(&pcap));
    let mut got: Vec<(String, String, String)> = Vec::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("inspect JSON line");
        assert_eq!(v["outcome"], "complete", "{line}");
        assert_eq!(v["protocol"], "h2", "{line}");
        assert_eq!(v["version"], "HTTP/2", "{line}");
        let text = |k: &str| v[k].as_str().expect(k).to_string();
        got.push((text("method"), text("target"), text("host")));
    }
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "inspect's requests against tshark's header blocks"
    );
    // nghttp asks for the same URL once.
    assert_eq!(got.len(), 43, "nghttp's 3 requests and h2load's 40");
}

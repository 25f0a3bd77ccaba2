//! Issue 19, class 5, end to end: `--allow-path`/`--deny-path` judge the path a server
//! would route (decoded unreserved characters, merged slashes, resolved dot segments),
//! and the copy that passes keeps the bytes the client sent.

#[expect(
    dead_code,
    reason = "shared test support; this file uses a few of its parts"
)]
mod support;

use std::net::SocketAddrV4;

use support::{Behaviour, CaptureBuilder, RecordingServer};

#[test]
fn path_filters_see_the_routed_path_and_the_copy_keeps_the_sent_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SocketAddrV4::new([10, 0, 0, 2].into(), 8080);
    let targets: [&[u8]; 5] = [
        b"/%61pi//v1/./orders?id=1",
        b"//api/internal/keys",
        b"/api/%2E%2e/admin",
        b"/api/v1/../internal/x",
        b"http://shop//api/internal/y",
    ];
    let mut capture = CaptureBuilder::new();
    for (i, target) in targets.iter().enumerate() {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: shop\r\n\r\n");
        capture.connection(support::client_addr(i as u32 + 1), server, &[&request]);
    }
    let pcap = dir.path().join("paths.pcapng");
    capture.write_to(&pcap);
    let sink = RecordingServer::start(Behaviour::Answer);
    let url = sink.url();
    let run = support::run_shadowtap(
        &[
            "replay",
            pcap.to_str().expect("utf8"),
            "--target",
            &url,
            "--speed",
            "max",
            "--allow-path",
            "^/api/",
            "--deny-path",
            "^/api/internal/",
        ],
        std::time::Duration::from_secs(60),
    );
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(5);
    let t = summary.target(&url);
    assert_eq!(t.get("filtered"), 4, "{summary:#?}");
    assert_eq!(t.get("replayed 2xx"), 1, "{summary:#?}");
    let arrived: Vec<Vec<u8>> = sink.received().into_iter().map(|r| r.target).collect();
    assert_eq!(
        arrived,
        vec![b"/%61pi//v1/./orders?id=1".to_vec()],
        "the copy keeps the request-target as sent"
    );
}

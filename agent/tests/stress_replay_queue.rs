//! The replay queue is bounded in bytes as well as in count (issue 6, item 1): with a
//! target that reads and never answers, live submissions past `max_queue_bytes` count as
//! `queue_full`, the count cap alone would have let them in, every request still ends in
//! one outcome, and a file replay (which waits for room) sends every copy.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shadowtap::metrics::{Accounting, Outcome, ReplayErrorKind};
use shadowtap::replay::{Replayer, TargetConfig};
use shadowtap::request::{Captured, Protocol};
use shadowtap::request::{Header, Request};
use shadowtap::sample::Percent;

/// Reads every connection to the end and never answers; counts body bytes that arrived.
fn silent_target() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, got)
}

fn post(i: usize, body: usize) -> Captured {
    Captured {
        id: i as u64,
        conn: i as u64,
        client: "10.0.0.1:40000".parse().expect("addr"),
        server: "10.0.0.2:80".parse().expect("addr"),
        request: Request {
            ts_nanos: 0,
            method: "POST".into(),
            target: format!("/q/{i}").into_bytes(),
            version_minor: 1,
            headers: vec![
                Header {
                    name: "Host".into(),
                    value: b"api".to_vec(),
                },
                Header {
                    name: "Content-Length".into(),
                    value: body.to_string().into_bytes(),
                },
            ],
            body: vec![b'q'; body],
            chunked: false,
            trailers: Vec::new(),
            ..Request::default()
        },
    }
}

fn config(addr: SocketAddr, max_queue_bytes: usize) -> TargetConfig {
    let mut cfg = TargetConfig::from_arg(&format!("http://{addr}"), Percent::ALL).expect("url");
    cfg.max_in_flight = 2;
    cfg.queue_len = 10_000;
    cfg.max_queue_bytes = max_queue_bytes;
    cfg.request_timeout = Duration::from_millis(500);
    cfg
}

const BODY: usize = 100 << 10;

#[test]
fn live_submissions_past_the_byte_cap_count_as_queue_full() {
    let (addr, _) = silent_target();
    let accounting = Arc::new(Accounting::new(vec![format!("http://{addr}")]));
    // 1 MiB holds 10 requests of 100 KiB (each a little more with its head).
    let replayer =
        Replayer::new(vec![config(addr, 1 << 20)], accounting.clone()).expect("replayer");
    let n = 200;
    for i in 0..n {
        accounting.seen(Protocol::Http1);
        replayer.submit(post(i, BODY));
    }
    let full = accounting.target(0).get(Outcome::QueueFull);
    // 200 x 100 KiB = 20 MiB offered; the count cap (10,000) would take all of them.
    assert!(
        (n as u64 - 10..=n as u64 - 9).contains(&full),
        "queue_full {full} of {n}: the byte cap should admit 9 or 10"
    );
    replayer.shutdown(Duration::from_secs(3));
    let t = accounting.target(0);
    assert_eq!(t.total(), n as u64, "outcomes add up");
    assert_eq!(
        t.get(Outcome::ReplayError(ReplayErrorKind::Timeout)),
        n as u64 - full
    );
}

#[test]
fn bytes_come_back_when_copies_finish() {
    let (addr, _) = silent_target();
    let accounting = Arc::new(Accounting::new(vec![format!("http://{addr}")]));
    let replayer =
        Replayer::new(vec![config(addr, 1 << 20)], accounting.clone()).expect("replayer");
    for round in 0..2 {
        for i in 0..20 {
            accounting.seen(Protocol::Http1);
            replayer.submit(post(round * 100 + i, BODY));
        }
        // The silent target times each copy out after 500 ms, 2 at a time: 10 copies
        // take 2.5 s, after which their bytes are free again.
        std::thread::sleep(Duration::from_millis(3500));
    }
    replayer.shutdown(Duration::from_secs(3));
    let t = accounting.target(0);
    assert_eq!(t.total(), 40);
    // Each round admits about 10: the second round found the room the first gave back.
    let timeouts = t.get(Outcome::ReplayError(ReplayErrorKind::Timeout));
    assert!((18..=20).contains(&timeouts), "timeouts {timeouts}");
    assert_eq!(t.get(Outcome::QueueFull), 40 - timeouts);
}

#[test]
fn waiting_submissions_wait_for_bytes_instead_of_dropping() {
    let (addr, got) = silent_target();
    let accounting = Arc::new(Accounting::new(vec![format!("http://{addr}")]));
    let mut cfg = config(addr, 300 << 10);
    cfg.request_timeout = Duration::from_millis(200);
    let replayer = Replayer::new(vec![cfg], accounting.clone()).expect("replayer");
    let n = 12;
    for i in 0..n {
        accounting.seen(Protocol::Http1);
        replayer.submit_waiting(post(i, BODY));
    }
    replayer.shutdown(Duration::from_secs(5));
    let t = accounting.target(0);
    assert_eq!(t.get(Outcome::QueueFull), 0);
    assert_eq!(
        t.get(Outcome::ReplayError(ReplayErrorKind::Timeout)),
        n as u64
    );
    // Every copy was sent whole before it timed out.
    assert!(
        got.load(Ordering::Relaxed) >= (n * BODY) as u64,
        "{} bytes arrived",
        got.load(Ordering::Relaxed)
    );
}

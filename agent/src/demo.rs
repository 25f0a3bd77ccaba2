//! `shadowtap demo`: a self-contained run of the main job. A local target that records
//! what it receives, the bundled capture replayed into it at full speed, and a report
//! of what arrived next to the outcome summary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::config::Speed;
use crate::http::{FramerLimits, RequestFramer};
use crate::pipeline::PipelineConfig;
use crate::replay::TargetConfig;
use crate::replay_files::{CaptureSource, ReplayPlan};
use crate::request::{Request, RequestEvent};
use crate::sample::Percent;

/// The capture `demo` replays: curl against httpbin, recorded on loopback by dumpcap
/// (scripts/make-demo-capture.sh).
pub const DEMO_CAPTURE: &[u8] = include_bytes!("../assets/demo.pcapng");

/// Its HTTP/2 part: two gRPC calls of a grpcio client to the helloworld Greeter on one
/// h2c channel (scripts/make-demo-grpc-capture.sh).
pub const DEMO_GRPC_CAPTURE: &[u8] = include_bytes!("../assets/demo-grpc.pcap");

/// A request as the recording target received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub host: String,
    pub body_len: usize,
}

/// A server on loopback that answers every request and keeps a list of what it received.
/// HTTP/1.1 requests are framed with shadowtap's own `RequestFramer`, so whatever the
/// client sends must be well-framed HTTP/1.1 to show up here; a connection that starts
/// with the HTTP/2 preface is served by the `h2` crate, each stream answered as a gRPC
/// call that succeeded (an empty message, `grpc-status: 0`).
pub struct RecordingTarget {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl RecordingTarget {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        thread::Builder::new()
            .name("demo-target".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let sink = Arc::clone(&sink);
                    // One thread per connection: the demo sees a handful of them.
                    let _ = thread::Builder::new()
                        .name("demo-conn".into())
                        .spawn(move || serve(stream, &sink));
                }
            })?;
        Ok(Self { addr, received })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(mut stream: TcpStream, sink: &Arc<Mutex<Vec<Received>>>) {
    if starts_with_preface(&stream) {
        serve_h2(stream, sink);
        return;
    }
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(0, &buf[..n], &mut events);
        for ev in events.drain(..) {
            if let RequestEvent::Request(req) = ev {
                record(&req, sink);
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if stream.write_all(reply).is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether the client's first bytes are the HTTP/2 preface (looked at without reading).
fn starts_with_preface(stream: &TcpStream) -> bool {
    let preface = crate::h2::frame::PREFACE;
    let mut head = [0u8; 24];
    for _ in 0..100 {
        match stream.peek(&mut head) {
            Ok(0) | Err(_) => return false,
            Ok(n) if !preface.starts_with(&head[..n]) => return false,
            Ok(n) if n == preface.len() => return true,
            Ok(_) => thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    false
}

/// One HTTP/2 connection: each stream recorded and answered as a successful gRPC call.
fn serve_h2(stream: TcpStream, sink: &Arc<Mutex<Vec<Received>>>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let sink = Arc::clone(sink);
    runtime.block_on(async move {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(io) = tokio::net::TcpStream::from_std(stream) else {
            return;
        };
        let Ok(mut conn) = h2::server::handshake(io).await else {
            return;
        };
        // The connection makes progress only while polled: each stream is its own task.
        while let Some(Ok((request, respond))) = conn.accept().await {
            tokio::spawn(answer_stream(request, respond, Arc::clone(&sink)));
        }
    });
}

async fn answer_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    sink: Arc<Mutex<Vec<Received>>>,
) {
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0;
    while let Some(Ok(chunk)) = body.data().await {
        body_len += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let seen = Received {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string()),
        host: parts
            .uri
            .authority()
            .map_or_else(String::new, |a| a.to_string()),
        body_len,
    };
    if let Ok(mut list) = sink.lock() {
        list.push(seen);
    }
    let Ok(head) = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
    else {
        return;
    };
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    // An empty message: no compression flag, length 0.
    let _ = send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

fn record(req: &Request, sink: &Mutex<Vec<Received>>) {
    let seen = Received {
        method: req.method.clone(),
        target: String::from_utf8_lossy(&req.target).into_owned(),
        host: String::from_utf8_lossy(req.header("host").unwrap_or(b"")).into_owned(),
        body_len: req.body.len(),
    };
    if let Ok(mut list) = sink.lock() {
        list.push(seen);
    }
}

/// `shadowtap demo`: replays `DEMO_CAPTURE` at full speed into a `RecordingTarget` and
/// prints what arrived and the outcome summary.
pub fn run_demo() -> anyhow::Result<std::process::ExitCode> {
    let target = RecordingTarget::start()?;
    let url = format!("http://{}", target.addr());
    let plan = ReplayPlan {
        sources: vec![
            CaptureSource::Embedded {
                name: "demo.pcapng (bundled: curl -> httpbin:8000)",
                bytes: DEMO_CAPTURE,
            },
            CaptureSource::Embedded {
                name: "demo-grpc.pcap (bundled: grpcio -> helloworld.Greeter, h2c)",
                bytes: DEMO_GRPC_CAPTURE,
            },
        ],
        pipeline: PipelineConfig::default(),
        targets: vec![TargetConfig::from_arg(&url, Percent::ALL)?],
        speed: Speed::Max,
        loops: 1,
        drain_timeout: std::time::Duration::from_secs(5),
        progress: false,
        credentials_in_clear: Vec::new(),
        dry_run: false,
    };
    // A closed stdout (piped into `head`) ends the output, not the demo with a panic.
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(std::io::stdout().lock(), $($arg)*);
        }};
    }
    let json = crate::logging::json();
    if !json {
        say!("demo: replaying the bundled capture into a local recording target at {url}");
    }
    let report = crate::replay_files::replay(&plan)?;
    let received = target.received();
    if json {
        let list: Vec<serde_json::Value> = received
            .iter()
            .map(|r| {
                serde_json::json!({
                    "method": r.method, "host": r.host, "body_bytes": r.body_len, "target": r.target,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({ "demo": { "target": url, "received": list } })
        );
    } else {
        say!(
            "\nthe target received {}:",
            crate::logging::count(received.len() as u64, "request", "requests")
        );
        let host_w = received
            .iter()
            .map(|r| r.host.len())
            .max()
            .unwrap_or(0)
            .max(22);
        say!(
            "  {:<7} {:<host_w$} {:>6}  TARGET",
            "METHOD",
            "HOST",
            "BODY"
        );
        for r in &received {
            say!(
                "  {:<7} {:<host_w$} {:>6}  {}",
                r.method,
                r.host,
                r.body_len,
                r.target
            );
        }
        say!();
    }
    report.print();
    Ok(std::process::ExitCode::SUCCESS)
}

//! Issue 21 item 3: `replay --speed max` into a small target. A single-threaded server
//! with a listen backlog of 1 that closes each connection after one answer (a dev box, a
//! one-worker staging pod) must get every copy, not a burst of connects that overflows
//! its accept queue and turns into a wall of connect timeouts.

#[expect(
    dead_code,
    reason = "shared test support; this file uses the runner and the capture builder"
)]
mod support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{client_addr, free_port, require_tools, run_shadowtap, CaptureBuilder};

const CONNECTIONS: u32 = 300;
const PER_CONNECTION: u32 = 4;
const REQUESTS: u64 = (CONNECTIONS * PER_CONNECTION) as u64;

fn capture(dir: &Path) -> PathBuf {
    let path = dir.join("small-target.pcapng");
    let server = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 8080);
    let mut capture = CaptureBuilder::new();
    for c in 0..CONNECTIONS {
        let requests: Vec<Vec<u8>> = (0..PER_CONNECTION)
            .map(|i| {
                format!("GET /item/{c}/{i} HTTP/1.1\r\nHost: shop.example\r\n\r\n").into_bytes()
            })
            .collect();
        let writes: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
        capture.connection(client_addr(c), server, &writes);
    }
    capture.write_to(&path);
    path
}

/// One thread, `listen(1)`, one request per connection (`Connection: close`), 1 ms of
/// work per request; writes the number of requests answered to `count` after each.
const SMALL_SERVER: &str = r#"
import socket, sys, time
port, count = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1)
print("ready", flush=True)
n = 0
while True:
    c, _ = s.accept()
    c.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"\r\n\r\n" in data:
            time.sleep(0.001)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            n += 1
            with open(count, "w") as f:
                f.write(str(n))
            # The client closes first (it was told to), so TIME-WAIT stays on its side:
            # server-side TIME-WAITs make reused client ports wait a second for a new SYN.
            c.settimeout(1)
            while c.recv(4096):
                pass
    except OSError:
        pass
    c.close()
"#;

struct SmallServer {
    child: Child,
    count: PathBuf,
}

impl SmallServer {
    fn start(port: u16, dir: &Path) -> Self {
        let count = dir.join("count");
        let mut child = Command::new("python3")
            .args(["-c", SMALL_SERVER, &port.to_string()])
            .arg(&count)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut ready = [0u8; 6];
        child
            .stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut ready)
            .expect("server ready line");
        assert_eq!(&ready, b"ready\n");
        Self { child, count }
    }

    fn answered(&self) -> u64 {
        std::fs::read_to_string(&self.count)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn speed_max_into_a_one_worker_backlog_1_target_delivers_every_copy() {
    if !require_tools(
        "speed_max_into_a_one_worker_backlog_1_target_delivers_every_copy",
        &["python3"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = capture(dir.path());
    let port = free_port();
    let server = SmallServer::start(port, dir.path());
    let target = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let done = run_shadowtap(
        &[
            "replay",
            file.to_str().expect("utf-8 path"),
            "--target",
            &target,
            "--speed",
            "max",
            "--drain-timeout",
            "60s",
        ],
        Duration::from_secs(120),
    );
    done.assert_success();
    let summary = done.summary();
    let t = summary.target(&target);
    let timeouts = t.get("replay_error timeout");
    let errors: u64 = t
        .outcomes
        .iter()
        .filter(|(label, _)| label.starts_with("replay_error"))
        .map(|(_, n)| n)
        .sum();
    let answered = server.answered();
    eprintln!(
        "{REQUESTS} copies in {:?}: {answered} answered, {errors} replay errors ({timeouts} timeouts)\n{}",
        started.elapsed(),
        done.stdout
    );
    // Sending all 64 copies at once, 55 of 1,200 timed out here. A SYN dropped twice on
    // a loaded machine (other tests, other builds) can still cost one or two.
    assert!(
        errors <= REQUESTS / 200,
        "a small target got a wall of errors:\n{}\n{}",
        done.stdout,
        done.stderr
    );
    assert_eq!(t.get("replayed 2xx"), REQUESTS - errors, "{}", done.stdout);
    assert_eq!(answered, REQUESTS - errors);
}

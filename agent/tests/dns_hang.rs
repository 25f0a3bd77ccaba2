//! Issue 19, class 7: a target whose name resolves slowly. The real binary runs in a
//! mount and network namespace of its own, with an /etc/hosts and an /etc/resolv.conf of
//! the test's: the name is in the hosts file at the start, then taken out, and the only
//! nameserver is an address whose packets go nowhere, so getaddrinfo hangs (30 s per try,
//! five tries). The replay must keep its threads flat and still end within
//! --drain-timeout of its last copy, with every request accounted for.

#[expect(
    dead_code,
    reason = "shared test support; this file uses a few of its parts"
)]
mod support;

use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::CaptureBuilder;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Skips outside CI when the test cannot run; under `CI=true` that is a failure.
fn can_run(test: &str) -> bool {
    let missing = support::missing_tools(&["unshare", "mount", "ip"]);
    if is_root() && missing.is_none() {
        return true;
    }
    let why = format!("{test}: needs root, unshare, mount and ip ({missing:?})");
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
    eprintln!("SKIP {why}");
    false
}

fn threads_of(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|d| d.count())
}

#[test]
fn a_hanging_resolver_keeps_threads_flat_and_the_drain_deadline() {
    if !can_run("dns_hang") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // 1000 connections, 8 frames 10 µs apart each: 80 ms of capture, 3.2 s at 0.025x.
    let mut capture = CaptureBuilder::new();
    let server = SocketAddrV4::new([10, 0, 0, 2].into(), 8080);
    for i in 0..1000 {
        capture.connection(
            support::client_addr(i),
            server,
            &[b"GET /x HTTP/1.1\r\nHost: shop\r\n\r\n"],
        );
    }
    let pcap = dir.path().join("many.pcapng");
    capture.write_to(&pcap);
    let name = "slow.shadowtap.test";
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {name}\n")).expect("hosts");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.77.0.2\noptions timeout:30 attempts:5\n",
    )
    .expect("resolv.conf");
    // The nameserver's address is a neighbour with a made-up MAC behind a veth whose
    // other end has no address: queries leave and nothing ever answers.
    let setup = "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/resolv.conf \
        && ip link set lo up && ip link add v0 type veth peer name v1 \
        && ip link set v0 up && ip link set v1 up && ip addr add 10.77.0.1/24 dev v0 \
        && ip neigh add 10.77.0.2 lladdr 02:00:00:00:00:99 dev v0 nud permanent \
        && shift && exec \"$@\"";
    let drain = Duration::from_secs(1);
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args(["--mount", "--net", "sh", "-c", setup])
        .arg(&hosts)
        .arg(&resolv)
        .arg(support::shadowtap_bin())
        .args(["replay", pcap.to_str().expect("utf8")])
        // Nothing listens on port 9 in the new namespace: every connect is refused,
        // and a refused connect looks the name up again.
        .args(["--target", &format!("http://{name}:9")])
        .args(["--speed", "0.025x", "--connect-timeout", "300ms"])
        .args(["--drain-timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    // The agent is the process that `unshare` and `sh` exec into: the same pid.
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1000));
    // Written in place: the bind mount shows this inode.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    let limit = Duration::from_secs(30);
    let mut most_threads = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if let Some(n) = threads_of(pid) {
            most_threads = most_threads.max(n);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("took {took:?}, at most {most_threads} threads\n{stdout}{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("still running after {limit:?} ({most_threads} threads): {stdout}{stderr}")
    });
    // No copy delivered (refused, then not resolved): exit 3.
    assert_eq!(status.code(), Some(3), "{stdout}{stderr}");
    // 3.2 s of capture, the drain, and a margin for a slow CI machine.
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(200) + drain + Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(
        most_threads <= 12,
        "{most_threads} threads: a resolver thread per lookup?"
    );
    let summary = support::Summary::parse(&stdout).expect("summary");
    summary.assert_adds_up(1000);
    let t = summary.target(&format!("http://{name}:9"));
    assert!(
        t.get("replay_error connect") >= 500,
        "refused, then not resolved: {summary:#?}"
    );
}

/// A name that never resolves is one line at the start (exit 2), within the bounded
/// start-up lookup, whatever the resolver does.
#[test]
fn a_name_that_never_resolves_is_one_line_at_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut capture = CaptureBuilder::new();
    capture.connection(
        support::client_addr(1),
        SocketAddrV4::new([10, 0, 0, 2].into(), 8080),
        &[b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n"],
    );
    let pcap = dir.path().join("one.pcapng");
    capture.write_to(&pcap);
    let started = Instant::now();
    let out = Command::new(support::shadowtap_bin())
        .args(["replay", pcap.to_str().expect("utf8")])
        .args(["--target", "http://stage.shadowtap.invalid:8080"])
        .args(["--drain-timeout", "1s", "--connect-timeout", "1s"])
        .env_remove("RUST_LOG")
        .output()
        .expect("shadowtap");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot resolve \"stage.shadowtap.invalid\""),
        "{stderr}"
    );
    // The start-up lookup waits at most 5 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

//! The libpcap live engine against real sockets, each test in a throwaway network
//! namespace so that nothing else on the host shows up in (or is disturbed by) the
//! capture. Needs root: without it the tests skip, except under CI=true where they fail.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shadowtap::capture::pcap_live::{PcapCapture, PcapLiveError, PcapOptions};
use shadowtap::capture::LinkType;

const LOOPBACK_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOOPBACK_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn is_root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: live capture tests need root (CAP_NET_RAW, CAP_SYS_ADMIN for netns) and CI=true");
    }
    eprintln!("skipping {test}: not root");
    false
}

/// A named network namespace that is deleted when dropped, even if the test panics.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "st-pcap-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `body` on a new thread that has joined this namespace: a thread's network
    /// namespace is its own, so sockets and captures it opens live there.
    fn run<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            body()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(status.success(), "ip {args:?} failed: {status}");
}

fn listen(host: IpAddr) -> TcpListener {
    TcpListener::bind(SocketAddr::new(host, 0)).expect("bind listener")
}

/// Connects, sends `request` and waits until the server side has read all of it, so the
/// packets have gone through the interface before this returns.
fn send_request(listener: &TcpListener, client: &mut TcpStream, request: &[u8]) {
    client.write_all(request).expect("client write");
    let (mut server, _) = listener.accept().expect("accept");
    let mut got = vec![0; request.len()];
    server.read_exact(&mut got).expect("server read");
    assert_eq!(got, request);
}

fn connect(listener: &TcpListener) -> TcpStream {
    TcpStream::connect(listener.local_addr().expect("listener addr")).expect("connect")
}

/// What the capture delivered, frame by frame.
struct Seen {
    link: LinkType,
    frames: Vec<(u64, Vec<u8>)>,
}

impl Seen {
    fn contains(&self, needle: &[u8]) -> bool {
        self.frames.iter().any(|(_, data)| contains(data, needle))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads frames until one contains `needle` or a few seconds pass.
fn read_until(capture: &mut PcapCapture, needle: &[u8]) -> Seen {
    let mut seen = Seen {
        link: capture.link_type(),
        frames: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match capture.next_frame().expect("next_frame") {
            Some(frame) => {
                assert_eq!(frame.link, seen.link);
                assert!(frame.data.len() as u64 <= u64::from(frame.orig_len));
                seen.frames.push((frame.ts_nanos, frame.data.to_vec()));
                if contains(frame.data, needle) {
                    break;
                }
            }
            None => continue,
        }
    }
    seen
}

/// Source and destination TCP ports of a captured frame, for the link types these tests
/// produce (Ethernet on `lo`, Linux cooked on `any`).
fn tcp_ports(link: LinkType, data: &[u8]) -> Option<(u16, u16)> {
    let (ethertype_at, l3) = match link {
        LinkType::Ethernet => (12, 14),
        LinkType::LinuxSll => (14, 16),
        LinkType::LinuxSll2 => (0, 20),
        other => panic!("unexpected link type {other:?}"),
    };
    let ethertype = u16::from_be_bytes([*data.get(ethertype_at)?, *data.get(ethertype_at + 1)?]);
    let ip = data.get(l3..)?;
    let l4 = match ethertype {
        0x0800 if ip.get(9) == Some(&6) => usize::from(ip.first()? & 0x0f) * 4,
        0x86dd if ip.get(6) == Some(&6) => 40,
        _ => return None,
    };
    let tcp = ip.get(l4..l4 + 4)?;
    Some((
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    ))
}

fn assert_only_port(seen: &Seen, port: u16) {
    for (_, data) in &seen.frames {
        let ports = tcp_ports(seen.link, data);
        assert!(
            matches!(ports, Some((s, d)) if s == port || d == port),
            "frame not TCP on port {port}: {ports:?}"
        );
    }
}

fn now_nanos() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_nanos()).expect("fits u64")
}

fn sees_request_on(iface: &'static str, host: IpAddr) {
    let ns = NetNs::create();
    ns.run(move || {
        let listener = listen(host);
        let port = listener.local_addr().unwrap().port();
        let mut capture = PcapCapture::open(iface, &[port], &PcapOptions::default())
            .unwrap_or_else(|e| panic!("open {iface}: {e}"));
        match iface {
            "any" => assert!(
                matches!(
                    capture.link_type(),
                    LinkType::LinuxSll2 | LinkType::LinuxSll
                ),
                "{:?}",
                capture.link_type()
            ),
            _ => assert_eq!(capture.link_type(), LinkType::Ethernet),
        }
        let before = now_nanos();
        let request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut client = connect(&listener);
        send_request(&listener, &mut client, request);

        let seen = read_until(&mut capture, request);
        let after = now_nanos();
        assert!(seen.contains(request), "request not captured on {iface}");
        assert_only_port(&seen, port);
        // The handshake and the request are both captured, with nanosecond wall-clock
        // timestamps that do not go backwards.
        assert!(seen.frames.len() >= 3, "{} frames", seen.frames.len());
        for (ts, _) in &seen.frames {
            assert!(
                (before - 1_000_000_000..=after + 1_000_000_000).contains(ts),
                "timestamp {ts} not between {before} and {after}"
            );
        }
        assert!(seen.frames.windows(2).all(|w| w[0].0 <= w[1].0));

        let stats = capture.stats().expect("stats");
        assert_eq!(stats.frames, seen.frames.len() as u64);
        let bytes: usize = seen.frames.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(stats.bytes, bytes as u64);
        assert!(stats.received >= stats.frames, "{stats:?}");
    });
}

#[test]
fn request_to_watched_port_is_captured_on_lo_ipv4() {
    if is_root_or_skip("request_to_watched_port_is_captured_on_lo_ipv4") {
        sees_request_on("lo", LOOPBACK_V4);
    }
}

#[test]
fn request_to_watched_port_is_captured_on_lo_ipv6() {
    if is_root_or_skip("request_to_watched_port_is_captured_on_lo_ipv6") {
        sees_request_on("lo", LOOPBACK_V6);
    }
}

#[test]
fn request_is_captured_on_any_with_cooked_framing() {
    if is_root_or_skip("request_is_captured_on_any_with_cooked_framing") {
        sees_request_on("any", LOOPBACK_V4);
    }
}

#[test]
fn unwatched_port_is_not_captured() {
    if !is_root_or_skip("unwatched_port_is_not_captured") {
        return;
    }
    let ns = NetNs::create();
    ns.run(|| {
        let watched = listen(LOOPBACK_V4);
        let unwatched = listen(LOOPBACK_V4);
        let port = watched.local_addr().unwrap().port();
        let mut capture = PcapCapture::open("lo", &[port], &PcapOptions::default()).unwrap();

        // The unwatched request goes first: once the watched one is read, anything of
        // the first that got through the filter would already have been delivered.
        let hidden = b"GET /unwatched HTTP/1.1\r\nHost: a\r\n\r\n";
        send_request(&unwatched, &mut connect(&unwatched), hidden);
        let shown = b"GET /watched HTTP/1.1\r\nHost: a\r\n\r\n";
        send_request(&watched, &mut connect(&watched), shown);

        let seen = read_until(&mut capture, shown);
        assert!(seen.contains(shown), "watched request not captured");
        assert!(!seen.contains(hidden), "unwatched request captured");
        assert_only_port(&seen, port);
    });
}

/// `extra` more excluded addresses, of both families, that no connection here uses.
fn unrelated_addresses(extra: u16) -> Vec<SocketAddr> {
    (0..extra)
        .map(|i| match i % 2 {
            0 => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8)),
                20000 + i,
            ),
            _ => SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 9, i)),
                20000 + i,
            ),
        })
        .collect()
}

fn excluded_connection_is_not_captured(host: IpAddr, extra: u16) {
    let ns = NetNs::create();
    ns.run(move || {
        let listener = listen(host);
        let port = listener.local_addr().unwrap().port();
        let mut capture = PcapCapture::open("lo", &[port], &PcapOptions::default()).unwrap();

        let mut own = connect(&listener);
        let own_addr = own.local_addr().unwrap();
        let mut exclude = unrelated_addresses(extra);
        exclude.push(own_addr);
        capture.set_excluded(&exclude).expect("set_excluded");
        let hidden = b"GET /own HTTP/1.1\r\nHost: a\r\n\r\n";
        send_request(&listener, &mut own, hidden);
        let shown = b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n";
        send_request(&listener, &mut connect(&listener), shown);

        let seen = read_until(&mut capture, shown);
        let in_user = capture.stats().unwrap().excluded_in_user;
        assert_eq!(
            in_user > 0,
            extra > 100,
            "{in_user} frames excluded in user space"
        );
        assert!(seen.contains(shown), "other connection not captured");
        assert!(
            !seen.contains(hidden),
            "excluded connection {own_addr} captured"
        );

        // Lifting the exclusion brings the connection back.
        capture.set_excluded(&[]).expect("set_excluded");
        let again = b"GET /own-again HTTP/1.1\r\nHost: a\r\n\r\n";
        own.write_all(again).unwrap();
        let seen = read_until(&mut capture, again);
        assert!(
            seen.contains(again),
            "connection still excluded after reset"
        );
    });
}

#[test]
fn excluded_local_address_is_not_captured_ipv4() {
    if is_root_or_skip("excluded_local_address_is_not_captured_ipv4") {
        excluded_connection_is_not_captured(LOOPBACK_V4, 0);
    }
}

#[test]
fn excluded_local_address_is_not_captured_ipv6() {
    if is_root_or_skip("excluded_local_address_is_not_captured_ipv6") {
        excluded_connection_is_not_captured(LOOPBACK_V6, 0);
    }
}

#[test]
fn many_excluded_addresses_still_filter_correctly() {
    // 40 addresses fit in the kernel filter; 200 are checked in user space instead.
    // Either way the result must be the same.
    if !is_root_or_skip("many_excluded_addresses_still_filter_correctly") {
        return;
    }
    excluded_connection_is_not_captured(LOOPBACK_V4, 40);
    excluded_connection_is_not_captured(LOOPBACK_V6, 200);
}

#[test]
fn read_timeout_returns_none() {
    if !is_root_or_skip("read_timeout_returns_none") {
        return;
    }
    let ns = NetNs::create();
    ns.run(|| {
        let opts = PcapOptions {
            timeout_ms: 50,
            ..PcapOptions::default()
        };
        let mut capture = PcapCapture::open("lo", &[80], &opts).unwrap();
        // With no traffic each call comes back empty; after the first has found the ring
        // empty, the others wait out the timeout rather than spinning or blocking.
        let start = Instant::now();
        for _ in 0..4 {
            assert!(capture.next_frame().unwrap().is_none());
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(capture.stats().unwrap().frames, 0);
    });
}

const EPERM_CHILD_ENV: &str = "SHADOWTAP_TEST_EPERM_CHILD";

/// Runs only inside `missing_cap_net_raw_is_named`, in a process without CAP_NET_RAW.
#[test]
#[ignore = "run by missing_cap_net_raw_is_named without CAP_NET_RAW"]
fn eperm_child() {
    assert_eq!(std::env::var(EPERM_CHILD_ENV).as_deref(), Ok("1"));
    let error = PcapCapture::open("lo", &[80], &PcapOptions::default()).unwrap_err();
    assert!(
        matches!(&error, PcapLiveError::Permission { iface, capability: "CAP_NET_RAW", .. } if iface == "lo"),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("CAP_NET_RAW") && text.contains("lo"),
        "{text}"
    );
    println!("EPERM-CHILD-OK");
}

#[test]
fn missing_cap_net_raw_is_named() {
    if !is_root_or_skip("missing_cap_net_raw_is_named") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Root without CAP_NET_RAW in its bounding set gets no CAP_NET_RAW after exec.
    let output = Command::new("setpriv")
        .args(["--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"])
        .arg(exe)
        .args(["--exact", "eperm_child", "--ignored", "--nocapture"])
        .env(EPERM_CHILD_ENV, "1")
        .output()
        .expect("running setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("EPERM-CHILD-OK"),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

//! The eBPF classifier against the kernel: synthetic frames through BPF_PROG_TEST_RUN,
//! and real TCP traffic on `lo` inside a fresh network namespace.
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON); run with `--test-threads=1`.
//! Without them each test prints a skip line, unless CI=true, where it fails.

#![cfg(feature = "ebpf")]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::{SchedClassifier, TcAttachType};
use shadowtap::capture::ebpf::{EbpfCapture, OwnedFrame, VERDICT_PASS};
use shadowtap::capture::LinkType;

const PORT: u16 = 18080;
const OWN_MARK: u32 = 0x5eed;
const RING: usize = 8 << 20;

/// Skips (or, with CI=true, fails) a test that cannot run here.
fn unavailable(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("eBPF test cannot run: {reason}");
    }
    eprintln!("skip: eBPF test needs root and a loadable classifier: {reason}");
}

fn load(ports: &[u16]) -> Option<EbpfCapture> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return None;
    }
    match EbpfCapture::load(ports, OWN_MARK, RING) {
        Ok(capture) => Some(capture),
        Err(e) => {
            unavailable(&format!("{e} ({e:?})"));
            None
        }
    }
}

fn drain(capture: &mut EbpfCapture, wait: Duration) -> Vec<OwnedFrame> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(frame) = capture
        .next_frame(deadline.saturating_duration_since(Instant::now()))
        .expect("ring buffer read")
    {
        frames.push(frame);
    }
    frames
}

fn ethernet(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    ip.extend_from_slice(l4);
    ip
}

fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&[0xfd; 16]);
    ip.extend_from_slice(&[0xfe; 16]);
    ip.extend_from_slice(l4);
    ip
}

fn tcp4_frame(dport: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(0x0800, &ipv4(6, &tcp(40000, dport, payload)))
}

#[test]
fn test_run_ipv4_tcp_to_watched_port_is_copied_and_passed() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let frame = tcp4_frame(PORT, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1, "one record for one packet");
    assert_eq!(got[0].data, frame);
    assert_eq!(got[0].orig_len as usize, frame.len());
    assert_eq!(got[0].link, LinkType::Ethernet);
    assert!(!got[0].egress);
    let stats = cap.stats().unwrap();
    assert_eq!(stats.matched, 1);
    assert_eq!(stats.bytes, frame.len() as u64);
    assert_eq!(stats.pieces, 1);
}

#[test]
fn test_run_ipv6_tcp_on_egress_is_copied_with_direction() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let frame = ethernet(0x86dd, &ipv6(6, &tcp(40000, PORT, b"POST /x HTTP/1.1\r\n")));
    assert_eq!(cap.test_run(true, &frame, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
    assert!(got[0].egress);
}

#[test]
fn test_run_ipv6_with_extension_header_and_vlan_tag_is_copied() {
    let Some(mut cap) = load(&[PORT]) else { return };
    // Destination options (8 bytes) in front of TCP.
    let mut l4 = vec![6, 0, 1, 4, 0, 0, 0, 0];
    l4.extend_from_slice(&tcp(40000, PORT, b"x"));
    let l3 = ipv6(60, &l4);
    let mut tagged = vec![0x00, 0x64, 0x86, 0xdd];
    tagged.extend_from_slice(&l3);
    let frame = ethernet(0x8100, &tagged);
    assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
}

#[test]
fn test_run_other_port_udp_and_replies_are_not_copied() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let other_port = tcp4_frame(PORT + 1, b"GET / HTTP/1.1\r\n");
    let udp = ethernet(0x0800, &ipv4(17, &tcp(40000, PORT, b"looks like tcp")));
    // Fragments of TCP are copied whatever their port (see the fragment tests below);
    // those of UDP are not.
    let mut udp_fragment = udp.clone();
    udp_fragment[14 + 6] = 0x00;
    udp_fragment[14 + 7] = 0x10; // fragment offset 16 * 8 bytes
    let reverse = ethernet(0x0800, &ipv4(6, &tcp(PORT, 40000, b"HTTP/1.1 200 OK\r\n")));
    for frame in [&other_port, &udp, &udp_fragment, &reverse] {
        assert_eq!(cap.test_run(false, frame, 0, 0).unwrap(), VERDICT_PASS);
        assert_eq!(cap.test_run(true, frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    assert!(drain(&mut cap, Duration::from_millis(200)).is_empty());
    assert_eq!(cap.stats().unwrap().matched, 0);
}

#[test]
fn test_run_port_changes_take_effect_and_batched_reads_see_every_packet() {
    // Ports at the edges of the bitmap's words, and their neighbours that are not watched.
    let Some(mut cap) = load(&[PORT, 64, 65535]) else {
        return;
    };
    for port in [PORT, 63, 64, 65, 65534, 65535, PORT + 1] {
        let frame = tcp4_frame(port, b"GET /a HTTP/1.1\r\n");
        assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    cap.set_ports(&[PORT + 1]).unwrap();
    for port in [PORT, 64, PORT + 1] {
        let frame = tcp4_frame(port, b"GET /b HTTP/1.1\r\n");
        assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < 4 && Instant::now() < deadline {
        // Two at most per read: the batch limit holds and the next read goes on from there.
        let n = cap
            .next_frames(Duration::from_millis(100), 2, |f| {
                seen.push(f.data.to_vec())
            })
            .unwrap();
        assert!(n <= 2);
    }
    let got: Vec<(u16, bool)> = seen
        .iter()
        .map(|f| {
            let dport = u16::from_be_bytes([f[14 + 20 + 2], f[14 + 20 + 3]]);
            (dport, f.ends_with(b"/b HTTP/1.1\r\n"))
        })
        .collect();
    assert_eq!(
        got,
        [(PORT, false), (64, false), (65535, false), (PORT + 1, true)]
    );
    assert!(drain(&mut cap, Duration::from_millis(200)).is_empty());
    assert_eq!(cap.stats().unwrap().matched, 4);
}

#[test]
fn test_run_truncated_packets_pass_without_records() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let full = tcp4_frame(PORT, b"");
    // The kernel itself refuses (EINVAL) test frames whose ethertype is IP but which
    // lack a whole IP header, so truncation is tried from there on, plus frames whose
    // ethertype gives the kernel nothing to check.
    for len in [14 + 20, 14 + 20 + 2, 14 + 20 + 3] {
        assert_eq!(
            cap.test_run(false, &full[..len], 0, 0).unwrap(),
            VERDICT_PASS
        );
    }
    let arp_header_only = ethernet(0x0806, &[]);
    let vlan_tag_only = ethernet(0x8100, &[0x00, 0x64, 0x08, 0x00]);
    let vlan_half_ip = ethernet(0x8100, &[0x00, 0x64, 0x08, 0x00, 0x45, 0, 0, 40]);
    for frame in [&arp_header_only, &vlan_tag_only, &vlan_half_ip] {
        assert_eq!(cap.test_run(false, frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    let bogus_ihl = {
        let mut f = full.clone();
        f[14] = 0x4f; // IHL 60 bytes, beyond the packet
        f
    };
    assert_eq!(cap.test_run(false, &bogus_ihl, 0, 0).unwrap(), VERDICT_PASS);
    assert!(drain(&mut cap, Duration::from_millis(200)).is_empty());
}

#[test]
fn test_run_own_mark_is_skipped_other_marks_are_not() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let frame = tcp4_frame(PORT, b"GET /replayed HTTP/1.1\r\n");
    assert_eq!(
        cap.test_run(true, &frame, 0, OWN_MARK).unwrap(),
        VERDICT_PASS
    );
    assert!(drain(&mut cap, Duration::from_millis(200)).is_empty());
    assert_eq!(cap.stats().unwrap().own_mark_skipped, 1);
    assert_eq!(
        cap.test_run(true, &frame, 0, OWN_MARK + 1).unwrap(),
        VERDICT_PASS
    );
    assert_eq!(drain(&mut cap, Duration::from_millis(200)).len(), 1);
}

#[test]
fn test_run_packet_spanning_many_pieces_is_rebuilt_whole() {
    let Some(mut cap) = load(&[PORT]) else { return };
    // BPF_PROG_TEST_RUN takes at most about 3.7 KiB, so shrink the pieces instead.
    cap.set_piece_len(512).unwrap();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let frame = tcp4_frame(PORT, &payload);
    assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
    let stats = cap.stats().unwrap();
    assert_eq!(stats.pieces, frame.len().div_ceil(512) as u64);
    assert_eq!(stats.incomplete_packets + stats.pieces_lost, 0);
}

#[test]
fn test_run_longer_than_all_pieces_delivers_head_and_wire_length() {
    let Some(mut cap) = load(&[PORT]) else { return };
    // 16 pieces of 64 bytes cover 1 KiB of this 3 KiB packet.
    cap.set_piece_len(64).unwrap();
    let frame = tcp4_frame(PORT, &[7u8; 3000]);
    assert_eq!(cap.test_run(false, &frame, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame[..1024]);
    assert_eq!(got[0].orig_len as usize, frame.len());
    assert_eq!(cap.stats().unwrap().truncated, 1);
}

#[test]
fn test_run_device_without_l2_header_yields_raw_frames() {
    let Some(mut cap) = load(&[PORT]) else { return };
    // test_run's skb is on loopback (ifindex 1); declare it L2-less for this object.
    cap.set_interface_l2(1, false).unwrap();
    let packet = ipv4(6, &tcp(40000, PORT, b"GET /raw HTTP/1.1\r\n"));
    assert_eq!(cap.test_run(false, &packet, 0, 0).unwrap(), VERDICT_PASS);
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, packet);
    assert_eq!(got[0].link, LinkType::Raw);
}

/// A network namespace that is deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Option<Self> {
        // Unique per test, so that tests run in parallel do not share one.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("st-ebpf-{}-{n}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            unavailable("`ip netns add` failed");
            return None;
        }
        let netns = Self { name };
        let up = netns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(up.status.success(), "lo up: {up:?}");
        Some(netns)
    }

    fn exec(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// Moves the calling thread into the namespace.
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A client socket with SO_MARK set before connect, so even its SYN carries the mark.
fn marked_connect(addr: SocketAddrV4, mark: u32) -> TcpStream {
    // SAFETY: plain socket calls on a fresh fd that TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// TCP payload of an Ethernet/IPv4 frame.
fn tcp_payload(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tcp = 14 + ihl;
    let data_off = usize::from(frame[tcp + 12] >> 4) * 4;
    &frame[tcp + data_off..]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Body whose every 4 bytes are their own index, so any slice of it says where it is from.
fn counting_body(words: u32) -> Vec<u8> {
    (0..words).flat_map(u32::to_be_bytes).collect()
}

fn is_slice_of_counting_body(body: &[u8], piece: &[u8]) -> bool {
    (0..4).any(|align| {
        let Some(word) = piece.get(align..align + 4) else {
            return false;
        };
        let index = u32::from_be_bytes(word.try_into().unwrap()) as usize;
        let Some(start) = (index * 4).checked_sub(align) else {
            return false;
        };
        body.get(start..start + piece.len()) == Some(piece)
    })
}

fn tc_filters(netns: &Netns, direction: &str) -> String {
    let out = netns.exec(&["tc", "filter", "show", "dev", "lo", direction]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn loopback_in_netns_captures_requests_but_not_own_marked_traffic() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return;
    }
    let Some(netns) = Netns::new() else { return };
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            netns.enter();
            run_loopback_scenario(&netns);
        })
        .join()
    });
    drop(netns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run_loopback_scenario(netns: &Netns) {
    let Some(mut cap) = load(&[PORT]) else { return };
    cap.attach("lo").expect("attach lo");
    assert_eq!(cap.attached(), vec!["lo".to_owned()]);
    assert!(cap.uses_tcx(), "kernel >= 6.6 should get TCX links");
    let (_, ingress) = SchedClassifier::query_tcx("lo", TcAttachType::Ingress).unwrap();
    assert_eq!(ingress.len(), 1, "one TCX program on lo ingress");

    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT);
    let listener = TcpListener::bind(addr).expect("bind");
    let body = counting_body(50_000); // 200 KB in one write: GSO skbs up to 64 KiB
    let request: &[u8] =
        b"POST /shadowtap-probe HTTP/1.1\r\nHost: probe\r\nContent-Length: 200000\r\n\r\n";
    let server = std::thread::scope(|s| {
        let server = s.spawn(|| {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).expect("server read");
                seen.push(buf.len());
            }
            seen
        });
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(request).unwrap();
        client.write_all(&body).unwrap();
        drop(client);
        let mut marked = marked_connect(addr, OWN_MARK);
        marked
            .write_all(b"GET /own-replay HTTP/1.1\r\nHost: probe-shadow\r\n\r\n")
            .unwrap();
        drop(marked);
        server.join().expect("server thread")
    });
    assert_eq!(server, vec![request.len() + body.len(), 48]);

    let frames = drain(&mut cap, Duration::from_millis(500));
    let probe: Vec<&OwnedFrame> = frames
        .iter()
        .filter(|f| contains(tcp_payload(&f.data), b"POST /shadowtap-probe"))
        .collect();
    assert!(
        probe.iter().any(|f| f.egress) && probe.iter().any(|f| !f.egress),
        "the request is seen leaving and entering lo: {probe:?}"
    );
    let now_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for f in &probe {
        assert_eq!(f.link, LinkType::Ethernet);
        assert_eq!(f.ifindex, 1);
        assert!(
            now_nanos.abs_diff(f.ts_nanos) < 5_000_000_000,
            "capture time {} is wall-clock time near {now_nanos}",
            f.ts_nanos
        );
    }
    assert!(
        !frames.iter().any(|f| contains(&f.data, b"/own-replay")),
        "traffic with the agent's own mark must not be captured"
    );
    let big: Vec<&OwnedFrame> = frames
        .iter()
        .filter(|f| f.data.len() > 16 * 1024 + 100)
        .collect();
    assert!(
        !big.is_empty(),
        "expected GSO/GRO frames larger than one piece"
    );
    for f in &big {
        assert_eq!(f.data.len(), f.orig_len as usize);
        assert!(
            is_slice_of_counting_body(&body, tcp_payload(&f.data)),
            "a large frame's payload is a contiguous, exact part of the body"
        );
    }
    let stats = cap.stats().unwrap();
    eprintln!(
        "loopback capture: {} frames, {} large; {stats:?}",
        frames.len(),
        big.len()
    );
    assert!(stats.own_mark_skipped > 0, "{stats:?}");
    assert!(stats.pieces > stats.matched, "{stats:?}");
    assert_eq!(
        stats.ring_drops + stats.pieces_lost + stats.incomplete_packets,
        0
    );

    cap.detach("lo").expect("detach");
    assert!(cap.attached().is_empty());
    // A TCX link goes with its last fd: a process another test forks at this moment holds
    // a copy until its exec closes it, so give that a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (_, ingress) = SchedClassifier::query_tcx("lo", TcAttachType::Ingress).unwrap();
        if ingress.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "detach removes the ingress link");
        std::thread::sleep(Duration::from_millis(20));
    }

    capture_ipv6_request(&mut cap);

    attach_after_detach(&mut cap, "lo");
    drop(cap);
    for direction in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, programs) = SchedClassifier::query_tcx("lo", direction).unwrap();
        assert!(programs.is_empty(), "TCX programs left on lo after drop");
    }
    assert_eq!(tc_filters(netns, "ingress"), "");
    assert_eq!(tc_filters(netns, "egress"), "");
}

/// Attaches to an interface the classifier was just detached from. A detached TCX link
/// lives on while a process that a test running beside this one is starting (`ip`, `tc`)
/// still holds a copy of its descriptor, until that process execs; attaching the same
/// program again meanwhile fails with EEXIST (seen once in CI). So retry for a moment.
fn attach_after_detach(cap: &mut EbpfCapture, iface: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match cap.attach(iface) {
            Ok(()) => return,
            Err(e) if format!("{e:?}").contains("AlreadyExists") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("attach {iface} again: {e:?}"),
        }
    }
}

/// A request over IPv6 loopback; attaches the classifier to lo for it and detaches after.
fn capture_ipv6_request(cap: &mut EbpfCapture) {
    attach_after_detach(cap, "lo");
    let addr = SocketAddrV6::new(Ipv6Addr::LOCALHOST, PORT, 0, 0);
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("skip IPv6 part: cannot bind [::1]: {e}");
            cap.detach("lo").expect("detach");
            return;
        }
    };
    let request = b"GET /over-ipv6 HTTP/1.1\r\nHost: probe\r\n\r\n";
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accept v6");
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).expect("read v6");
            buf
        });
        let mut client = TcpStream::connect(addr).expect("connect v6");
        client.write_all(request).unwrap();
        drop(client);
        assert_eq!(server.join().unwrap(), request);
    });
    let frames = drain(cap, Duration::from_millis(300));
    let hits: Vec<&OwnedFrame> = frames
        .iter()
        .filter(|f| contains(&f.data, b"GET /over-ipv6"))
        .collect();
    assert_eq!(hits.len(), 2, "one copy leaving and one entering lo");
    for f in hits {
        assert_eq!(f.data[12..14], [0x86, 0xdd], "an IPv6 Ethernet frame");
        assert_eq!(f.link, LinkType::Ethernet);
    }
    cap.detach("lo").expect("detach");
}

#[test]
fn clsact_fallback_attaches_filters_and_clears_stale_ones() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return;
    }
    let Some(netns) = Netns::new() else { return };
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            netns.enter();
            run_clsact_scenario(&netns);
        })
        .join()
    });
    drop(netns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run_clsact_scenario(netns: &Netns) {
    // One line per filter; tc prints the program name twice on it.
    let count = |direction: &str, name: &str| {
        tc_filters(netns, direction)
            .lines()
            .filter(|l| l.contains(name))
            .count()
    };
    // An agent killed before it could clean up: its filters stay on the interface.
    let Some(mut stale) = load(&[PORT]) else {
        return;
    };
    stale.set_use_tcx(false);
    stale.attach("lo").expect("attach stale");
    std::mem::forget(stale);
    assert_eq!(count("ingress", "shadowtap_in"), 1);
    assert_eq!(count("egress", "shadowtap_eg"), 1);

    let Some(mut cap) = load(&[PORT]) else { return };
    cap.set_use_tcx(false);
    cap.attach("lo").expect("attach with clsact");
    assert_eq!(
        count("ingress", "shadowtap_in"),
        1,
        "the stale filter was replaced"
    );
    assert_eq!(
        count("egress", "shadowtap_eg"),
        1,
        "the stale filter was replaced"
    );

    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT);
    let listener = TcpListener::bind(addr).expect("bind");
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).expect("read");
        });
        let mut client = TcpStream::connect(addr).expect("connect");
        client
            .write_all(b"GET /via-clsact HTTP/1.1\r\n\r\n")
            .unwrap();
        drop(client);
        server.join().unwrap();
    });
    let frames = drain(&mut cap, Duration::from_millis(300));
    let hits = frames
        .iter()
        .filter(|f| contains(&f.data, b"GET /via-clsact"))
        .count();
    assert_eq!(hits, 2, "seen on lo egress and ingress");

    drop(cap);
    assert_eq!(count("ingress", "shadowtap"), 0, "filters left after drop");
    assert_eq!(count("egress", "shadowtap"), 0, "filters left after drop");
}

const CHILD_NETNS_ENV: &str = "SHADOWTAP_EBPF_TEST_NETNS";

/// Run by `sigkill_leaves_nothing_attached` in a child process: attaches to lo in the
/// given namespace, says so, and waits to be killed.
#[test]
#[ignore = "helper process of sigkill_leaves_nothing_attached"]
fn sigkill_child_attaches_and_waits() {
    let name = std::env::var(CHILD_NETNS_ENV).expect("only run by the sigkill test");
    Netns { name }.enter_without_cleanup();
    let mut cap = EbpfCapture::load(&[PORT], OWN_MARK, RING).expect("child load");
    cap.attach("lo").expect("child attach");
    println!("ATTACHED");
    std::io::stdout().flush().unwrap();
    // Bounded, in case the parent dies before it kills us.
    std::thread::sleep(Duration::from_secs(60));
}

impl Netns {
    /// Enters an existing namespace this value does not own.
    fn enter_without_cleanup(self) {
        self.enter();
        std::mem::forget(self);
    }
}

#[test]
fn sigkill_leaves_nothing_attached() {
    use std::io::BufRead;
    if load(&[PORT]).is_none() {
        return;
    }
    let Some(netns) = Netns::new() else { return };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_attaches_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_NETNS_ENV, &netns.name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let attached = lines.any(|l| l.map(|l| l.trim() == "ATTACHED").unwrap_or(false));
    let tcx_programs = || {
        std::thread::scope(|s| {
            s.spawn(|| {
                netns.enter();
                [TcAttachType::Ingress, TcAttachType::Egress].map(|direction| {
                    let (_, programs) = SchedClassifier::query_tcx("lo", direction).unwrap();
                    programs.len()
                })
            })
            .join()
            .unwrap()
        })
    };
    let before = tcx_programs();
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    assert!(attached, "child never attached");
    assert_eq!(before, [1, 1], "child's programs on lo ingress and egress");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after = tcx_programs();
    while after != [0, 0] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = tcx_programs();
    }
    assert_eq!(after, [0, 0], "programs left attached after SIGKILL");
    assert_eq!(tc_filters(&netns, "ingress"), "");
}

#[test]
fn test_run_full_ring_counts_drops_and_keeps_earlier_packets_whole() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return;
    }
    // One page of ring: room for one 3 KiB packet, not two.
    let mut cap = match EbpfCapture::load(&[PORT], OWN_MARK, 4096) {
        Ok(cap) => cap,
        Err(e) => return unavailable(&e.to_string()),
    };
    let first = tcp4_frame(PORT, &[1u8; 3000]);
    let second = tcp4_frame(PORT, &[2u8; 3000]);
    assert_eq!(cap.test_run(false, &first, 0, 0).unwrap(), VERDICT_PASS);
    assert_eq!(cap.test_run(false, &second, 0, 0).unwrap(), VERDICT_PASS);
    let stats = cap.stats().unwrap();
    assert_eq!((stats.matched, stats.pieces, stats.ring_drops), (2, 1, 1));
    let got = drain(&mut cap, Duration::from_millis(200));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, first);
    // Drained, the ring takes packets again.
    assert_eq!(cap.test_run(false, &second, 0, 0).unwrap(), VERDICT_PASS);
    assert_eq!(drain(&mut cap, Duration::from_millis(200))[0].data, second);
}

// ---------------------------------------------------------------------------------------
// Fragments and IPv6 extension headers (issue 19, class 10).

/// An IPv4 header with the given protocol, id and flags/offset field, then `payload`.
fn ipv4_fragment(proto: u8, id: u16, flags_offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = ipv4(proto, payload);
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    ip
}

/// An IPv6 fragment header: next header, offset in bytes (a multiple of 8), more, id.
fn ipv6_fragment_header(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// An 8-byte hop-by-hop, destination options or routing header pointing at `next`.
fn ext8(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

#[test]
fn test_run_tcp_fragments_are_copied_whatever_their_port() {
    let Some(mut cap) = load(&[PORT]) else { return };
    let segment = tcp(40000, PORT + 1, &[b'x'; 64]);
    // IPv4: the first fragment (its TCP header names an unwatched port) and a later one
    // (no TCP header at all): both go to the agent, which reassembles and then filters.
    let v4_first = ethernet(0x0800, &ipv4_fragment(6, 7, 0x2000, &segment[..48]));
    let v4_later = ethernet(0x0800, &ipv4_fragment(6, 7, 6, &segment[48..]));
    // IPv6: the same, behind a hop-by-hop header; the later one's fragmentable part
    // starts with destination options.
    let mut l4 = ext8(44);
    l4.extend(ipv6_fragment_header(6, 0, true, 99));
    l4.extend_from_slice(&segment[..48]);
    let v6_first = ethernet(0x86dd, &ipv6(0, &l4));
    let mut l4 = ipv6_fragment_header(60, 48, false, 99);
    l4.extend_from_slice(&segment[48..]);
    let v6_later = ethernet(0x86dd, &ipv6(44, &l4));
    let copied = [&v4_first, &v4_later, &v6_first, &v6_later];
    // Fragments of UDP stay out, in both families.
    let udp_v4 = ethernet(0x0800, &ipv4_fragment(17, 8, 6, &segment[48..]));
    let mut l4 = ipv6_fragment_header(17, 48, false, 100);
    l4.extend_from_slice(&segment[48..]);
    let udp_v6 = ethernet(0x86dd, &ipv6(44, &l4));
    for frame in copied.iter().copied().chain([&udp_v4, &udp_v6]) {
        assert_eq!(cap.test_run(false, frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    let got: Vec<Vec<u8>> = drain(&mut cap, Duration::from_millis(200))
        .into_iter()
        .map(|f| f.data)
        .collect();
    assert_eq!(got, copied.map(|f| f.clone()));
    let stats = cap.stats().unwrap();
    assert_eq!(
        (stats.matched, stats.fragments, stats.long_chains),
        (4, 4, 0)
    );
    // The agent's own fragments are still left out.
    assert_eq!(
        cap.test_run(true, &v4_later, 0, OWN_MARK).unwrap(),
        VERDICT_PASS
    );
    assert!(drain(&mut cap, Duration::from_millis(100)).is_empty());
}

#[test]
fn test_run_ipv6_extension_chains_are_walked_to_the_tcp_port() {
    let Some(mut cap) = load(&[PORT]) else { return };
    // Hop-by-hop -> destination options -> AH (16 bytes) -> routing -> TCP.
    let chain = |dport: u16| {
        let mut l4 = ext8(60);
        l4.extend(ext8(51));
        l4.extend([43, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        l4.extend(ext8(6));
        l4.extend(tcp(40000, dport, b"GET /chain HTTP/1.1\r\n"));
        ethernet(0x86dd, &ipv6(0, &l4))
    };
    let watched = chain(PORT);
    let unwatched = chain(PORT + 1);
    // Nine destination options headers: more than the classifier walks. Copied for the
    // agent (which walks 8 and counts the rest by name), whatever the port.
    let mut l4 = Vec::new();
    for _ in 0..8 {
        l4.extend(ext8(60));
    }
    l4.extend(ext8(6));
    l4.extend(tcp(40000, PORT + 1, b"x"));
    let long = ethernet(0x86dd, &ipv6(60, &l4));
    for frame in [&watched, &unwatched, &long] {
        assert_eq!(cap.test_run(false, frame, 0, 0).unwrap(), VERDICT_PASS);
    }
    let got: Vec<Vec<u8>> = drain(&mut cap, Duration::from_millis(200))
        .into_iter()
        .map(|f| f.data)
        .collect();
    assert_eq!(got, [watched, long]);
    let stats = cap.stats().unwrap();
    assert_eq!(
        (stats.matched, stats.fragments, stats.long_chains),
        (2, 0, 1)
    );
}

/// Sends, with scapy on `iface` (towards MAC `dst_mac`), requests whose packets are
/// fragmented or carry IPv6 extension headers: each connection a SYN, the request, a FIN.
const SCAPY_FRAGMENTS: &str = r#"
import sys
from scapy.all import Ether, IP, IPv6, TCP, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment, fragment6, sendp

dst_mac, iface, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
eth = Ether(dst=dst_mac)

def request(path, body=3000):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: frag\r\nContent-Length: %d\r\n\r\n" % body) + b"b" * body

def conn(ip, sport, dport, payload, split):
    syn = eth / ip / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    data = ip / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=1) / payload
    fin = eth / ip / TCP(sport=sport, dport=dport, flags="FA", seq=1001 + len(payload), ack=1)
    return [syn] + [eth / f for f in split(data)] + [fin]

v4 = IP(src="10.77.0.1", dst="10.77.0.2")
v6 = IPv6(src="fd77::1", dst="fd77::2")
frames = []
# IPv4 fragments, sent last first.
frames += conn(v4, 41001, port, request(b"/frag-v4"), lambda p: list(reversed(fragment(p, fragsize=1200))))
# The same to a port nobody watches: copied by the classifier, left out after reassembly.
frames += conn(v4, 41002, port + 1, request(b"/other-port"), lambda p: fragment(p, fragsize=1200))
# IPv6 fragments behind a hop-by-hop header, destination options in the fragmentable part.
frag6 = lambda p: fragment6(v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=0x77) / IPv6ExtHdrDestOpt() / p[TCP], 1280)
frames += conn(v6, 41003, port, request(b"/frag-v6"), lambda p: [f[IPv6] for f in frag6(p)])
# Not fragmented: hop-by-hop and destination options in front of TCP.
ext6 = v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
frames += conn(ext6, 41004, port, request(b"/ext-v6", 100), lambda p: [p])
sendp(frames, iface=iface, verbose=0)
"#;

#[test]
fn veth_in_netns_fragmented_and_extension_header_requests_are_found() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return;
    }
    let scapy = Command::new("python3")
        .args(["-c", "import scapy.all"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !scapy {
        unavailable("python3 with scapy is missing (pip install scapy)");
        return;
    }
    let (Some(client), Some(server)) = (Netns::new(), Netns::new()) else {
        return;
    };
    let link = Command::new("ip")
        .args(["link", "add", "fr-a", "netns", &client.name, "type", "veth"])
        .args(["peer", "name", "fr-b", "netns", &server.name])
        .status()
        .expect("ip link add");
    assert!(link.success(), "veth pair");
    for (ns, dev, v4, v6) in [
        (&client, "fr-a", "10.77.0.1/24", "fd77::1/64"),
        (&server, "fr-b", "10.77.0.2/24", "fd77::2/64"),
    ] {
        for argv in [
            &["ip", "addr", "add", v4, "dev", dev][..],
            &["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"],
            &["ip", "link", "set", dev, "up"],
        ] {
            let out = ns.exec(argv);
            assert!(out.status.success(), "{argv:?}: {out:?}");
        }
    }
    let show = server.exec(&["cat", "/sys/class/net/fr-b/address"]);
    let server_mac = String::from_utf8_lossy(&show.stdout).trim().to_string();
    let frames = std::thread::scope(|s| {
        s.spawn(|| {
            server.enter();
            let mut cap = load(&[PORT])?;
            cap.attach("fr-b").expect("attach fr-b");
            let port = PORT.to_string();
            let sent = client.exec(&["python3", "-c", SCAPY_FRAGMENTS, &server_mac, "fr-a", &port]);
            assert!(sent.status.success(), "scapy: {sent:?}");
            let frames = drain(&mut cap, Duration::from_millis(500));
            Some((frames, cap.stats().unwrap()))
        })
        .join()
    });
    drop((client, server));
    let (frames, stats) = match frames {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // Through the agent's own pipeline, as `run` would: reassembly keeps only PORT.
    let mut config = shadowtap::pipeline::PipelineConfig::default();
    config.reassembly.ports = Some(vec![PORT]);
    let mut pipeline = shadowtap::pipeline::Pipeline::new(config);
    let mut found = Vec::new();
    let mut keep = |ev: shadowtap::pipeline::PipelineEvent| {
        if let shadowtap::pipeline::PipelineEvent::Request(seen) = ev {
            found.push((
                String::from_utf8_lossy(&seen.request.target).into_owned(),
                seen.request.body.len(),
            ));
        }
    };
    for f in frames.iter().filter(|f| !f.egress) {
        if let Ok(events) = pipeline.push_frame(&f.as_frame()) {
            events.for_each(&mut keep);
        }
    }
    pipeline.flush().for_each(&mut keep);
    let ip = pipeline.decoder().stats().clone();
    eprintln!("veth: {} frames; classifier {stats:?}; {ip}", frames.len());
    found.sort();
    assert_eq!(
        found,
        [
            ("/ext-v6".to_string(), 100),
            ("/frag-v4".to_string(), 3000),
            ("/frag-v6".to_string(), 3000)
        ],
        "{ip}"
    );
    // Every fragment of both families came through the classifier and was reassembled:
    // three datagrams (the unwatched port's too, before reassembly dropped its flow).
    assert!(stats.fragments >= 9, "{stats:?}");
    assert_eq!(ip.fragments_reassembled, 3, "{ip}");
    assert_eq!(ip.fragments_lost() + ip.fragment_duplicates, 0, "{ip}");
    assert_eq!(
        ip.ipv4_fragments + ip.ipv6_fragments,
        stats.fragments,
        "{ip}"
    );
}

/// A `shadowtap run` process, killed (SIGKILL) on drop unless waited for.
struct Agent {
    child: Option<std::process::Child>,
    stderr: std::path::PathBuf,
}

impl Agent {
    /// `shadowtap run` on `iface` inside `netns`, on the legacy clsact path whatever the
    /// kernel has; returns once it says the classifier is attached.
    fn start_clsact(netns: &Netns, iface: &str, stderr: std::path::PathBuf) -> Self {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                env!("CARGO_BIN_EXE_shadowtap"),
            ])
            .args([
                "run", "--port", "18080", "--engine", "ebpf", "--iface", iface,
            ])
            .args(["--target", "http://127.0.0.1:9", "--admin-addr", "off"])
            .args(["--drain-timeout", "1s"])
            .env("SHADOWTAP_EBPF_ATTACH", "clsact")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn shadowtap run");
        let mut agent = Agent {
            child: Some(child),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.log().contains("eBPF classifier attached") {
            let exited = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "agent exited ({exited:?}): {}",
                agent.log()
            );
            assert!(
                Instant::now() < deadline,
                "agent never attached: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to end.
    fn stop(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Program ids of the bpf filters named `name` on `iface`'s `direction` hook, and how
/// many of the foreign (classic BPF) filters are there.
fn filters_on(netns: &Netns, iface: &str, direction: &str, name: &str) -> (Vec<u32>, usize) {
    let out = netns.exec(&["tc", "filter", "show", "dev", iface, direction]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = text
        .lines()
        .filter(|l| l.contains(" bpf ") && l.contains(&format!("name {name} ")))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "id").expect("prog id");
            words[at + 1].parse().expect("prog id")
        })
        .collect();
    let foreign = text.lines().filter(|l| l.contains("bytecode")).count();
    (ours, foreign)
}

/// Issue 19, class 13: on the legacy clsact path a SIGKILLed agent leaves its filters
/// on the interface (they go on running); the next start removes exactly those, says so
/// in one line, attaches one of its own per direction and leaves a foreign filter alone,
/// and a clean stop leaves none of ours.
#[test]
fn clsact_leftovers_of_a_killed_agent_are_removed_at_the_next_start() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("not running as root");
        return;
    }
    if load(&[PORT]).is_none() {
        return;
    }
    let tc = Command::new("tc").arg("-V").output();
    if !tc.is_ok_and(|o| o.status.success()) {
        unavailable("`tc` (iproute2) is not on PATH");
        return;
    }
    let Some(netns) = Netns::new() else { return };
    let iface = "stv0";
    for cmd in [
        &[
            "ip", "link", "add", iface, "type", "veth", "peer", "name", "stv1",
        ][..],
        &["ip", "link", "set", iface, "up"],
        &["ip", "link", "set", "stv1", "up"],
        &["tc", "qdisc", "add", "dev", iface, "clsact"],
    ] {
        let out = netns.exec(cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    // Someone else's filters on the same hooks, matching nothing: classic BPF, so of
    // kind `bpf` like ours but without a name, one ahead of ours and one behind.
    for direction in ["ingress", "egress"] {
        for pref in ["5", "60000"] {
            let cmd = [
                "tc",
                "filter",
                "add",
                "dev",
                iface,
                direction,
                "pref",
                pref,
                "bpf",
                "bytecode",
                "1,6 0 0 0,",
                "classid",
                "1:1",
            ];
            let out = netns.exec(&cmd);
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        }
    }
    let hooks = [("ingress", "shadowtap_in"), ("egress", "shadowtap_eg")];
    let state = || hooks.map(|(direction, name)| filters_on(&netns, iface, direction, name));
    let dir = tempfile::tempdir().expect("tempdir");

    let mut first = Agent::start_clsact(&netns, iface, dir.path().join("first.err"));
    let attached = state();
    first.stop(libc::SIGKILL);
    let left = state();
    assert_eq!(left, attached, "filters changed when the agent was killed");
    for (ours, foreign) in &left {
        assert_eq!((ours.len(), *foreign), (1, 2), "{left:?}");
    }

    let mut second = Agent::start_clsact(&netns, iface, dir.path().join("second.err"));
    let log = second.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("leftover")).collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(said[0].contains("removed 2 leftover"), "{log}");
    eprintln!("second start: {}", said[0]);
    let now = state();
    for ((ours, foreign), (old, _)) in now.iter().zip(&left) {
        assert_eq!(ours.len(), 1, "one of ours per direction: {now:?}");
        assert_ne!(ours, old, "the killed agent's program is still attached");
        assert_eq!(*foreign, 2, "a foreign filter was removed: {now:?}");
    }

    let status = second.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", second.log());
    let after = state();
    assert_eq!(after, [(vec![], 2), (vec![], 2)], "after a clean stop");

    // Nothing left over: nothing said.
    let mut third = Agent::start_clsact(&netns, iface, dir.path().join("third.err"));
    assert!(!third.log().contains("leftover"), "{}", third.log());
    assert!(third.stop(libc::SIGTERM).success());
}

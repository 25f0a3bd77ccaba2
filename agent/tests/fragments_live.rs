//! `shadowtap run` with both engines on a real veth (issue 19, class 10): requests whose
//! packets are IP fragments (IPv4, and IPv6 behind a hop-by-hop header) or carry IPv6
//! extension headers are captured, reassembled and shadowed like any other, and the
//! summary counts the fragments by name. The frames are crafted with scapy and sent with
//! `sendp` from the client namespace onto the veth, as a NIC would deliver them. Their
//! destination MAC is not prod's, so prod's stack drops them unanswered (no RST ends the
//! connection early); the capture, which runs before that, sees them all.
//! Needs root, iproute2, python3 with scapy (and what `preflight` asks for).

#[expect(
    dead_code,
    reason = "shared with live_netns and stress_live; this file uses the topology and the agent runner"
)]
mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::*;

/// argv: iface, port, client IPv4, prod IPv4, tag. Each connection: SYN, the request's
/// packets, FIN.
const SCAPY_REQUESTS: &str = r#"
import sys
from scapy.all import Ether, IP, IPv6, TCP, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment, fragment6, sendp

iface, port, src4, dst4, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].encode()
eth = Ether(dst="02:00:00:00:00:99")

def request(path, body):
    head = b"POST " + path + b"?" + tag + b" HTTP/1.1\r\nHost: frag\r\nContent-Length: %d\r\n\r\n" % body
    return head + b"b" * body

def conn(ip, sport, dport, payload, split):
    syn = eth / ip / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    data = ip / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=1) / payload
    fin = eth / ip / TCP(sport=sport, dport=dport, flags="FA", seq=1001 + len(payload), ack=1)
    return [syn] + [eth / f for f in split(data)] + [fin]

v4 = IP(src=src4, dst=dst4)
v6 = IPv6(src="fd77::1", dst="fd77::2")
frames = []
frames += conn(v4, 41001, port, request(b"/frag-v4", 3000), lambda p: list(reversed(fragment(p, fragsize=1200))))
frames += conn(v4, 41002, port + 1, request(b"/other-port", 3000), lambda p: fragment(p, fragsize=1200))
frag6 = lambda p: fragment6(v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=0x77) / IPv6ExtHdrDestOpt() / p[TCP], 1280)
frames += conn(v6, 41003, port, request(b"/frag-v6", 3000), lambda p: [f[IPv6] for f in frag6(p)])
ext6 = v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
frames += conn(ext6, 41004, port, request(b"/ext-v6", 100), lambda p: [p])
# The first fragment overlapped by another with other bytes: the datagram is dropped.
v4o = IP(src=src4, dst=dst4, id=0x0bad)
def overlapping(p):
    frags = fragment(p, fragsize=1200)
    evil = IP(src=src4, dst=dst4, id=0x0bad, proto=6, flags="MF", frag=600 // 8) / (b"X" * 600)
    return [frags[0], evil] + frags[1:]
frames += conn(v4o, 41005, port, request(b"/overlap", 3000), overlapping)
sendp(frames, iface=iface, verbose=0)
"#;

fn scapy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import scapy.all"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn fragmented_and_extension_header_requests_are_shadowed_by_both_engines() {
    let test = "fragmented_and_extension_header_requests_are_shadowed_by_both_engines";
    if !preflight(test, &[]) {
        return;
    }
    if !scapy_available() {
        let reason = format!("{test}: needs python3 with scapy (pip install scapy)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{reason}");
        }
        eprintln!("SKIP {reason}");
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("frag");
    topo.start_stage();
    for engine in ["ebpf", "pcap"] {
        topo.clear_stage_log();
        let agent = topo.start_agent_on(engine, engine, PROD_IF, &[]);
        let sent = topo.client.exec(&[
            "python3",
            "-c",
            SCAPY_REQUESTS,
            "c0",
            "8000",
            CLIENT_IP,
            PROD_IP,
            engine,
        ]);
        assert!(sent.status.success(), "scapy: {sent:?}");
        let seen = topo.wait_stage(3, Duration::from_secs(10));
        // Nothing more comes (the unwatched port's request must not).
        std::thread::sleep(Duration::from_millis(300));
        let seen = if seen.len() == 3 {
            topo.stage_requests()
        } else {
            seen
        };
        // The loss is on /metrics by name (published once a second).
        let series = format!(
            "shadowtap_capture_drops_total{{engine=\"{engine}\",reason=\"ip_fragment_overlap\"}} 2"
        );
        wait_until(Duration::from_secs(5), &series, || {
            let out = topo
                .prod
                .exec(&["curl", "-s", &format!("http://{ADMIN}/metrics")]);
            String::from_utf8_lossy(&out.stdout).contains(&series)
        });
        let (summary, err) = stop_agent(agent);
        let mut got: Vec<(String, String, u64)> = seen
            .iter()
            .map(|r| (r.target.clone(), r.host.clone(), r.len))
            .collect();
        got.sort();
        let want: Vec<(String, String, u64)> =
            [("/ext-v6", 100), ("/frag-v4", 3000), ("/frag-v6", 3000)]
                .into_iter()
                .map(|(path, len)| (format!("{path}?{engine}"), "frag-shadow".to_string(), len))
                .collect();
        assert_eq!(got, want, "{engine}\nsummary:\n{summary}\n{err}");
        // Named in the summary: 3 + 3 + 4 IPv4 fragments (the unwatched port's datagram
        // is reassembled before reassembly leaves its flow out), 3 IPv6 ones; the
        // overlapped datagram's first fragment and the overlapping one dropped, its
        // other two never whole (counted when the agent stops).
        assert!(
            summary.contains("ip: 10 IPv4 and 3 IPv6 fragments, 3 datagrams reassembled, 2 fragments timed out, 2 overlapping"),
            "{engine}:\n{summary}"
        );
        assert!(
            summary.contains("(= requests seen)"),
            "{engine}:\n{summary}"
        );
        eprintln!(
            "{engine}: {}",
            summary
                .lines()
                .find(|l| l.starts_with("ip: "))
                .unwrap_or("")
        );
    }
}

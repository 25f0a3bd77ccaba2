//! `shadowtap run --engine pcap` on captures from overlay networks (issue 21, item 18):
//! VXLAN, Geneve and GRE packets arriving on a veth are opened and their inner requests
//! shadowed; and `--iface nflog:GROUP` reads what an iptables NFLOG rule logs.
//! Needs root, iproute2, python3 with scapy, iptables (and what `preflight` asks for).

#[expect(
    dead_code,
    reason = "shared with live_netns and stress_live; this file uses the topology and the agent runner"
)]
mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::*;

/// argv: iface, client IPv4, prod IPv4, tag. One connection per encapsulation (SYN, GET,
/// FIN) from pod 10.244.1.5 to pod 10.244.2.7:8000, sent by the client "node" to prod's
/// address as a NIC on an overlay node receives them; plus a request in a VXLAN packet
/// to port 4789 whose inner port is not watched.
const SCAPY_TUNNELS: &str = r#"
import sys, struct
from scapy.all import Ether, IP, TCP, UDP, GRE, Raw, sendp
from scapy.layers.vxlan import VXLAN

iface, src4, dst4, tag = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()
node = Ether(dst="02:00:00:00:00:99") / IP(src=src4, dst=dst4)
pod_eth = Ether(src="02:00:00:00:44:05", dst="02:00:00:00:44:07")
pod = IP(src="10.244.1.5", dst="10.244.2.7")

def conn(sport, dport, path, wrap):
    req = b"GET " + path + b"?" + tag + b" HTTP/1.1\r\nHost: pods\r\n\r\n"
    inner = [
        pod / TCP(sport=sport, dport=dport, flags="S", seq=1000),
        pod / TCP(sport=sport, dport=dport, flags="PA", seq=1001, ack=1) / req,
        pod / TCP(sport=sport, dport=dport, flags="FA", seq=1001 + len(req), ack=1),
    ]
    return [wrap(p) for p in inner]

geneve = Raw(struct.pack("!BBH", 0, 0, 0x6558) + b"\x00\x00\x07\x00")
frames = []
frames += conn(42001, 8000, b"/vxlan", lambda p: node / UDP(sport=50001, dport=4789) / VXLAN(vni=7) / pod_eth / p)
frames += conn(42002, 8000, b"/geneve", lambda p: node / UDP(sport=50002, dport=6081) / geneve / pod_eth / p)
frames += conn(42003, 8000, b"/gre", lambda p: node / GRE(proto=0x0800) / p)
frames += conn(42004, 9999, b"/other-port", lambda p: node / UDP(sport=50004, dport=4789) / VXLAN(vni=7) / pod_eth / p)
sendp(frames, iface=iface, verbose=0)
"#;

fn needs_scapy(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import scapy.all"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let reason = format!("{test}: needs python3 with scapy (pip install scapy)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{reason}");
        }
        eprintln!("SKIP {reason}");
    }
    ok
}

fn targets(seen: &[StageRequest]) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = seen
        .iter()
        .map(|r| (r.target.clone(), r.host.clone()))
        .collect();
    got.sort();
    got
}

#[test]
fn pcap_engine_shadows_the_requests_inside_vxlan_geneve_and_gre() {
    let test = "pcap_engine_shadows_the_requests_inside_vxlan_geneve_and_gre";
    if !preflight(test, &[]) || !needs_scapy(test) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("ovl");
    topo.start_stage();
    let agent = topo.start_agent_on("pcap", "pcap", PROD_IF, &[]);
    let sent = topo.client.exec(&[
        "python3",
        "-c",
        SCAPY_TUNNELS,
        "c0",
        CLIENT_IP,
        PROD_IP,
        "ovl",
    ]);
    assert!(sent.status.success(), "scapy: {sent:?}");
    let seen = topo.wait_stage(3, Duration::from_secs(10));
    // Nothing more comes (the unwatched inner port's request must not).
    std::thread::sleep(Duration::from_millis(300));
    let seen = if seen.len() == 3 {
        topo.stage_requests()
    } else {
        seen
    };
    let (summary, err) = stop_agent(agent);
    let want: Vec<(String, String)> = ["/geneve", "/gre", "/vxlan"]
        .iter()
        .map(|p| (format!("{p}?ovl"), "pods-shadow".to_string()))
        .collect();
    assert_eq!(targets(&seen), want, "summary:\n{summary}\n{err}");
    assert!(summary.contains("(= requests seen)"), "{summary}");
}

#[test]
fn nflog_interface_is_captured_with_the_pcap_engine() {
    let test = "nflog_interface_is_captured_with_the_pcap_engine";
    if !preflight(test, &["iptables"]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("nflog");
    topo.start_prod();
    topo.start_stage();
    // What a user writes to have netfilter log a port's packets to group 7: both
    // directions on the client's veth (the agent's own copies leave by the stage's).
    for rule in [
        ["-A", "INPUT", "-i", PROD_IF, "-p", "tcp", "--dport", "8000"],
        [
            "-A", "OUTPUT", "-o", PROD_IF, "-p", "tcp", "--sport", "8000",
        ],
    ] {
        let mut args = vec!["iptables"];
        args.extend_from_slice(&rule);
        args.extend_from_slice(&["-j", "NFLOG", "--nflog-group", "7"]);
        topo.prod.exec_ok(&args);
    }
    let agent = topo.start_agent_on("nflog", "pcap", "nflog:7", &[]);
    topo.get_headers(PROD_IP, 3, "nflog");
    let seen = topo.wait_stage(3, Duration::from_secs(10));
    let (summary, err) = stop_agent(agent);
    let want: Vec<(String, String)> = (1..=3)
        .map(|i| (format!("/headers?nflog={i}"), SHADOW_HOST.to_string()))
        .collect();
    assert_eq!(targets(&seen), want, "summary:\n{summary}\n{err}");
    assert!(summary.contains("(= requests seen)"), "{summary}");
}

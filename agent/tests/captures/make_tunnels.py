"""Writes the overlay and NFLOG captures next to this script (issue 21, item 18), read by
crafted_captures.rs. Run again after changing it: python3 make_tunnels.py

Each inner connection (SYN, one GET, FIN) goes from 10.244.1.5 (or fd44::5) to port
8080 of 10.244.2.7 (or fd44::7); its path names the encapsulation, so a test can tell
which ones were found. Outer packets go between nodes 192.168.50.1 and .2 (or fd50::1
and ::2). Timestamps are 1 ms apart."""
import os
import struct
from scapy.all import Ether, IP, IPv6, TCP, UDP, GRE, Raw, wrpcap
from scapy.layers.vxlan import VXLAN

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_ETH = Ether(src="02:00:00:00:50:01", dst="02:00:00:00:50:02")
POD_ETH = Ether(src="02:00:00:00:44:05", dst="02:00:00:00:44:07")
NODE4 = IP(src="192.168.50.1", dst="192.168.50.2")
NODE6 = IPv6(src="fd50::1", dst="fd50::2")
POD4 = IP(src="10.244.1.5", dst="10.244.2.7")
POD6 = IPv6(src="fd44::5", dst="fd44::7")


def get(path):
    return b"GET " + path + b" HTTP/1.1\r\nHost: pods\r\nUser-Agent: tunnel\r\n\r\n"


def inner_conn(ip, sport, path):
    """The inner packets (IP layer on) of one connection."""
    req = get(path)
    return [
        ip / TCP(sport=sport, dport=8080, flags="S", seq=1000),
        ip / TCP(sport=sport, dport=8080, flags="PA", seq=1001, ack=1) / req,
        ip / TCP(sport=sport, dport=8080, flags="FA", seq=1001 + len(req), ack=1),
    ]


def geneve_header(protocol, options=b""):
    # Version 0, options length in 4-byte words, no flags, protocol, VNI 0x000123.
    assert len(options) % 4 == 0
    return struct.pack("!BBH", len(options) // 4, 0, protocol) + b"\x00\x01\x23\x00" + options


def erspan2(frame):
    # ERSPAN type II: version 1, VLAN 0, session 7, index 0.
    return Raw(struct.pack("!HHI", 0x1000, 0x0007, 0)) / frame


def write(name, frames, linktype=None):
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 1000
    wrpcap(os.path.join(HERE, name), frames, linktype=linktype)


frames = []
# VXLAN over IPv4 (flannel, Calico in VXLAN mode), inner IPv4.
frames += [NODE_ETH / NODE4 / UDP(sport=50001, dport=4789) / VXLAN(vni=1) / POD_ETH / p
           for p in inner_conn(POD4, 40001, b"/vxlan-v4")]
# VXLAN over IPv6, inner IPv6.
frames += [NODE_ETH / NODE6 / UDP(sport=50002, dport=4789) / VXLAN(vni=1) / POD_ETH / p
           for p in inner_conn(POD6, 40002, b"/vxlan-v6")]
# Geneve (OVN, Cilium in Geneve mode) with an 8-byte option, an Ethernet frame inside.
option = struct.pack("!HBB", 0x0102, 0x80, 1) + b"\xAA\xBB\xCC\xDD"
frames += [NODE_ETH / NODE4 / UDP(sport=50003, dport=6081) / Raw(geneve_header(0x6558, option))
           / POD_ETH / p for p in inner_conn(POD4, 40003, b"/geneve-eth")]
# Geneve carrying IP directly (protocol 0x0800).
frames += [NODE_ETH / NODE4 / UDP(sport=50004, dport=6081) / Raw(geneve_header(0x0800)) / p
           for p in inner_conn(POD4, 40004, b"/geneve-ip")]
# GRE with a key carrying IPv4 (a plain IP-in-GRE tunnel).
frames += [NODE_ETH / NODE4 / GRE(key_present=1, key=5, proto=0x0800) / p
           for p in inner_conn(POD4, 40005, b"/gre-ip")]
# GRE over IPv6 with a sequence number, bridging Ethernet (gretap, NVGRE-like).
frames += [NODE_ETH / NODE6 / GRE(seqnum_present=1, seqence_number=9, proto=0x6558) / POD_ETH / p
           for p in inner_conn(POD6, 40006, b"/gretap-v6")]
# An ERSPAN type II mirror of a pod's frames.
frames += [NODE_ETH / NODE4 / GRE(seqnum_present=1, proto=0x88BE) / erspan2(POD_ETH / p)
           for p in inner_conn(POD4, 40007, b"/erspan")]
# Two tunnels deep: VXLAN inside an ERSPAN mirror of a node's uplink (found).
frames += [NODE_ETH / NODE4 / GRE(seqnum_present=1, proto=0x88BE)
           / erspan2(NODE_ETH / NODE4 / UDP(sport=50008, dport=4789) / VXLAN(vni=1) / POD_ETH / p)
           for p in inner_conn(POD4, 40008, b"/two-deep")]
# Three deep: refused (counted as tunnels nested too deep, never framed).
frames += [NODE_ETH / NODE4 / GRE(proto=0x0800) / NODE4 / UDP(sport=50009, dport=4789)
           / VXLAN(vni=1) / NODE_ETH / NODE4 / UDP(sport=50010, dport=4789) / VXLAN(vni=2)
           / POD_ETH / p for p in inner_conn(POD4, 40009, b"/three-deep")]
# Other UDP (DNS) between the nodes: not a tunnel.
frames += [NODE_ETH / NODE4 / UDP(sport=53000, dport=53) / Raw(b"\x12\x34" + b"\x00" * 10)]
write("tunnels.pcap", frames)


def nflog(family, packet, little=True):
    """A LINKTYPE_NFLOG frame: header, then the packet header, prefix and payload TLVs
    (lengths and types in the logging host's byte order)."""
    order = "<" if little else ">"

    def tlv(kind, value):
        raw = struct.pack(order + "HH", 4 + len(value), kind) + value
        return raw + b"\x00" * (-len(raw) % 4)

    hw_proto = 0x0800 if family == 2 else 0x86DD
    out = struct.pack("!BBH", family, 0, 5)
    out += tlv(1, struct.pack("!HBB", hw_proto, 3, 0))   # NFULA_PACKET_HDR, hook 3
    out += tlv(10, b"shadowtap\x00")                     # NFULA_PREFIX
    out += tlv(9, bytes(packet))                         # NFULA_PAYLOAD
    return Raw(out)


frames = [nflog(2, p) for p in inner_conn(POD4, 40011, b"/nflog-v4")]
frames += [nflog(10, p) for p in inner_conn(POD6, 40012, b"/nflog-v6")]
# Logged on a big-endian host.
frames += [nflog(2, p, little=False) for p in inner_conn(POD4, 40013, b"/nflog-be")]
write("nflog.pcap", frames, linktype=239)

"""Writes the fragment and IPv6 extension header captures next to this script (issue 19,
class 10), read by crafted_captures.rs. Run again after changing it: python3 make_fragments.py

Each capture holds whole connections (SYN, the request, FIN) from 10.20.0.1 or fd20::1
to port 8080, on Ethernet, timestamps 1 ms apart."""
import os
from scapy.all import (Ether, IP, IPv6, TCP, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrFragment, fragment, fragment6, wrpcap)

HERE = os.path.dirname(os.path.abspath(__file__))
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = IP(src="10.20.0.1", dst="10.20.0.2", id=0x4242)
V6 = IPv6(src="fd20::1", dst="fd20::2")


def request(path, body):
    head = b"POST " + path + b" HTTP/1.1\r\nHost: frag\r\nContent-Length: %d\r\n\r\n" % body
    return head + bytes(i % 251 for i in range(body))


def conn(ip, sport, payload, split):
    syn = ETH / ip / TCP(sport=sport, dport=8080, flags="S", seq=1000)
    data = ip / TCP(sport=sport, dport=8080, flags="PA", seq=1001, ack=1) / payload
    fin = ETH / ip / TCP(sport=sport, dport=8080, flags="FA", seq=1001 + len(payload), ack=1)
    return [syn] + [ETH / f for f in split(data)] + [fin]


def write(name, frames):
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 1000
    wrpcap(os.path.join(HERE, name), frames)


# An IPv4 request in three fragments, the last sent first.
write("frag-v4.pcap", conn(V4, 40001, request(b"/frag-v4", 2500),
                           lambda p: list(reversed(fragment(p, fragsize=1000)))))

# An IPv6 request behind hop-by-hop and destination options headers, not fragmented.
write("ext-v6.pcap", conn(V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt(), 40002,
                          request(b"/ext-v6", 100), lambda p: [p]))

# An IPv6 request in fragments behind a hop-by-hop header, destination options in the
# fragmentable part.
def frag6(p):
    whole = V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=0x66) / IPv6ExtHdrDestOpt() / p[TCP]
    return [f[IPv6] for f in fragment6(whole, 1000)]
write("frag-v6.pcap", conn(V6, 40003, request(b"/frag-v6", 2500), frag6))

# Overlapping fragments with different bytes (the second half of the first fragment
# sent again with other bytes): the datagram is dropped, as Linux would. A second
# connection, fragmented cleanly, is still found.
def overlapping(p):
    frags = fragment(p, fragsize=1000)
    evil = IP(src=V4.src, dst=V4.dst, id=V4.id, proto=6, flags="MF", frag=496 // 8) / (b"X" * 496)
    return [frags[0], evil] + frags[1:]
frames = conn(V4, 40004, request(b"/overlap", 2500), overlapping)
frames += conn(IP(src="10.20.0.1", dst="10.20.0.2", id=0x4343), 40005,
               request(b"/after-overlap", 2500), lambda p: fragment(p, fragsize=1000))
write("overlap-v4.pcap", frames)

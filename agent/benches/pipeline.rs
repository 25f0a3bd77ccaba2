//! Throughput of the pure stages (issue 2): the request framer, TCP reassembly, frame
//! decoding and the whole offline pipeline from a pcapng file in memory. Every bench
//! reports bytes/s (`Throughput::Bytes`). The traffic is synthetic but shaped like real
//! browser and API clients: keep-alive connections carrying GETs with browser headers,
//! POSTs with a Content-Length body and chunked uploads, sent in MSS-sized segments.
//!
//! `cargo bench -p shadowtap --bench pipeline`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shadowtap::capture::pcap_file::{CaptureReader, PcapngWriter};
use shadowtap::capture::{Frame, LinkType};
use shadowtap::decode::{Decoder, DecoderLimits, FlowKey, Segment, TcpFlags};
use shadowtap::http::{FramerLimits, RequestFramer};
use shadowtap::pipeline::{Pipeline, PipelineConfig, PipelineEvent};
use shadowtap::reassembly::{FlowTable, ReassemblyConfig, StreamEnd, StreamKey, StreamSink};
use shadowtap::request::{Protocol, RequestEvent};

/// Payload bytes per segment, as on an Ethernet path with TCP timestamps.
const MSS: usize = 1448;
const SERVER_PORT: u16 = 8080;
const FLOWS: usize = 64;
const REQUESTS_PER_FLOW: usize = 40;

const BROWSER_GET: &str = "GET /assets/app.3f9a1c.js?v=20241105&lang=en-GB HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.7\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/catalogue/shoes?page=2&sort=price\r\n\
Cookie: session=7b2f0c1e9d8a4b6f8e1d2c3b4a5f6e7d; consent=1; ab=variant-b; _ga=GA1.2.1234567890.1700000000\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
Connection: keep-alive\r\n\r\n";

const API_POST_HEAD: &str = "POST /api/v2/orders HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: okhttp/4.12.0\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl\r\n\
X-Request-Id: 5d1c6e0a-4a7b-4f3c-9a51-0e6f2b7d8c90\r\n";

const CHUNKED_HEAD: &str = "POST /upload/telemetry HTTP/1.1\r\n\
Host: ingest.example.com\r\n\
User-Agent: collector/1.8\r\n\
Content-Type: application/x-ndjson\r\n\
Transfer-Encoding: chunked\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// The i-th request of a connection: mostly GETs, every 4th a POST with a JSON body
/// (every 8th larger than one segment), every 10th a chunked upload.
fn request(i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if i % 10 == 9 {
        out.extend_from_slice(CHUNKED_HEAD.as_bytes());
        for c in 0..3 {
            let line = format!("{{\"seq\":{i},\"chunk\":{c},\"metric\":\"cpu\",\"value\":0.42}}\n");
            out.extend_from_slice(format!("{:x}\r\n", line.len()).as_bytes());
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else if i % 4 == 3 {
        let items = if i % 8 == 7 { 60 } else { 6 };
        let mut body = String::from("{\"items\":[");
        for n in 0..items {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&format!("{{\"sku\":\"SKU-{n:05}\",\"qty\":{}}}", n % 3 + 1));
        }
        body.push_str("]}");
        out.extend_from_slice(API_POST_HEAD.as_bytes());
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body.as_bytes());
    } else {
        out.extend_from_slice(BROWSER_GET.as_bytes());
    }
    out
}

/// One captured TCP segment, owned.
struct Packet {
    ts_nanos: u64,
    flow: FlowKey,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

impl Packet {
    fn segment(&self) -> Segment<'_> {
        Segment {
            ts_nanos: self.ts_nanos,
            flow: self.flow,
            seq: self.seq,
            ack: self.ack,
            flags: TcpFlags(self.flags),
            payload: &self.payload,
            missing: 0,
        }
    }

    /// Ethernet / IPv4 (no options) / TCP (no options) frame carrying the segment.
    fn frame(&self) -> Vec<u8> {
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let ip_len = 20 + 20 + self.payload.len();
        let mut f = Vec::with_capacity(14 + ip_len);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&(ip_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&v4(self.flow.src).octets());
        f.extend_from_slice(&v4(self.flow.dst).octets());
        f.extend_from_slice(&self.flow.src.port().to_be_bytes());
        f.extend_from_slice(&self.flow.dst.port().to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        f.extend_from_slice(&[0x50, self.flags, 0xFF, 0xFF, 0, 0, 0, 0]);
        f.extend_from_slice(&self.payload);
        f
    }
}

/// Keep-alive connections, interleaved round-robin as a busy server sees them: handshake,
/// requests in MSS-sized segments, a response after each, FIN from both sides. Every
/// 16th client data segment trades places with the one before it (out of order).
fn conversations() -> Vec<Packet> {
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), SERVER_PORT));
    let mut per_flow: Vec<Vec<Packet>> = Vec::new();
    for f in 0..FLOWS {
        let client = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 1, (f / 250) as u8, (f % 250) as u8 + 1),
            40_000 + f as u16,
        ));
        let up = FlowKey {
            src: client,
            dst: server,
        };
        let down = up.reversed();
        // Some ISNs near the wrap, so sequence unwrapping is on the measured path.
        let mut cseq = (f as u32).wrapping_mul(0x9E37_79B9).wrapping_sub(40_000);
        let mut sseq = (f as u32).wrapping_mul(0x85EB_CA6B);
        let mut pkts = Vec::new();
        let mut pkt = |flow, seq, ack, flags, payload: &[u8]| {
            pkts.push(Packet {
                ts_nanos: 0,
                flow,
                seq,
                ack,
                flags,
                payload: payload.to_vec(),
            })
        };
        const S: u8 = TcpFlags::SYN;
        const A: u8 = TcpFlags::ACK;
        const F: u8 = TcpFlags::FIN;
        const P: u8 = TcpFlags::PSH;
        pkt(up, cseq, 0, S, &[]);
        pkt(down, sseq, cseq.wrapping_add(1), S | A, &[]);
        cseq = cseq.wrapping_add(1);
        sseq = sseq.wrapping_add(1);
        pkt(up, cseq, sseq, A, &[]);
        for r in 0..REQUESTS_PER_FLOW {
            let req = request(f + r);
            for piece in req.chunks(MSS) {
                pkt(up, cseq, sseq, A | P, piece);
                cseq = cseq.wrapping_add(piece.len() as u32);
            }
            pkt(down, sseq, cseq, A | P, RESPONSE);
            sseq = sseq.wrapping_add(RESPONSE.len() as u32);
            pkt(up, cseq, sseq, A, &[]);
        }
        pkt(up, cseq, sseq, F | A, &[]);
        pkt(down, sseq, cseq.wrapping_add(1), F | A, &[]);
        pkt(up, cseq.wrapping_add(1), sseq.wrapping_add(1), A, &[]);
        per_flow.push(pkts);
    }
    let longest = per_flow.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = per_flow.into_iter().map(Vec::into_iter).collect();
    let mut all = Vec::new();
    for _ in 0..longest {
        for it in &mut iters {
            if let Some(p) = it.next() {
                all.push(p);
            }
        }
    }
    let mut data_seen = 0;
    for i in 1..all.len() {
        if all[i].flow.dst.port() == SERVER_PORT && !all[i].payload.is_empty() {
            data_seen += 1;
            if data_seen % 16 == 0 && all[i - 1].flags & TcpFlags::SYN == 0 {
                all.swap(i - 1, i);
            }
        }
    }
    for (i, p) in all.iter_mut().enumerate() {
        p.ts_nanos = 1_700_000_000_000_000_000 + i as u64 * 10_000;
    }
    all
}

fn bench_framer(c: &mut Criterion) {
    // One client stream, pushed the way reassembly hands it over: a request per segment,
    // or MSS-sized pieces of a large one.
    let mut pushes: Vec<Vec<u8>> = Vec::new();
    for r in 0..400 {
        pushes.extend(request(r).chunks(MSS).map(<[u8]>::to_vec));
    }
    let bytes: usize = pushes.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("request_mix_400", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut framer = RequestFramer::new(FramerLimits::default());
            let mut requests = 0;
            for (i, push) in pushes.iter().enumerate() {
                framer.push(i as u64, push, &mut out);
                requests += out
                    .drain(..)
                    .filter(|e| matches!(e, RequestEvent::Request(_)))
                    .count();
            }
            framer.finish(0, &mut out);
            out.clear();
            assert_eq!(requests, 400);
            black_box(requests)
        })
    });
    group.finish();
}

/// Counts what reassembly delivers, so nothing is optimised away.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    gaps: u64,
    ends: u64,
}

impl StreamSink for CountingSink {
    fn data(&mut self, _stream: StreamKey, _ts_nanos: u64, bytes: &[u8]) {
        self.bytes += black_box(bytes).len() as u64;
    }
    fn gap(&mut self, _stream: StreamKey, _ts_nanos: u64, missing: u64) {
        self.gaps += missing;
    }
    fn end(&mut self, _stream: StreamKey, _ts_nanos: u64, _how: StreamEnd) {
        self.ends += 1;
    }
    fn distrust(&mut self, _stream: StreamKey, _ts_nanos: u64) {
        self.ends += 1;
    }
}

fn bench_reassembly(c: &mut Criterion) {
    let packets = conversations();
    let bytes: usize = packets.iter().map(|p| p.payload.len()).sum();
    let client_bytes: u64 = packets
        .iter()
        .filter(|p| p.flow.dst.port() == SERVER_PORT)
        .map(|p| p.payload.len() as u64)
        .sum();
    let mut group = c.benchmark_group("reassembly");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("64_flows_in_order_and_swapped", |b| {
        b.iter(|| {
            let mut table = FlowTable::new(ReassemblyConfig {
                ports: Some(vec![SERVER_PORT]),
                ..ReassemblyConfig::default()
            });
            let mut sink = CountingSink::default();
            for p in &packets {
                table.push(&p.segment(), &mut sink);
            }
            table.flush(u64::MAX, &mut sink);
            assert_eq!((sink.bytes, sink.gaps), (client_bytes, 0));
            assert_eq!(sink.ends, FLOWS as u64);
            black_box(sink.bytes)
        })
    });
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let packets = conversations();
    let frames: Vec<(u64, Vec<u8>)> = packets.iter().map(|p| (p.ts_nanos, p.frame())).collect();
    let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("ethernet_ipv4_tcp", |b| {
        b.iter_batched_ref(
            || Decoder::new(DecoderLimits::default()),
            |decoder| {
                let mut payload = 0;
                for (ts, data) in &frames {
                    let frame = Frame {
                        ts_nanos: *ts,
                        link: LinkType::Ethernet,
                        data,
                        orig_len: data.len() as u32,
                    };
                    if let Ok(Some(seg)) = decoder.decode(&frame) {
                        payload += seg.payload.len();
                    }
                }
                black_box(payload)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let packets = conversations();
    let mut writer = PcapngWriter::new(Vec::new()).expect("writing to memory");
    let iface = writer
        .add_interface(LinkType::Ethernet, 65_535, Some("eth0"))
        .expect("writing to memory");
    for p in &packets {
        let frame = p.frame();
        writer
            .write_frame(iface, p.ts_nanos, &frame, frame.len() as u32)
            .expect("writing to memory");
    }
    let file = writer.into_inner();
    let expected = FLOWS * REQUESTS_PER_FLOW;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("pcapng_in_memory", |b| {
        b.iter(|| {
            let mut reader = CaptureReader::new(&file[..]).expect("a pcapng file");
            let mut pipeline = Pipeline::new(PipelineConfig::default());
            let mut requests = 0;
            let is_request = |e: &PipelineEvent| matches!(e, PipelineEvent::Request(_));
            while let Some(frame) = reader.next_frame().expect("a well-formed file") {
                if let Ok(events) = pipeline.push_frame(&frame) {
                    requests += events.filter(is_request).count();
                }
            }
            requests += pipeline.flush().filter(is_request).count();
            assert_eq!(requests, expected);
            black_box(requests)
        })
    });
    group.finish();
}

/// The metrics' hot path (one outcome and one response recorded per copy, from the
/// replay tasks) and a scrape of `/metrics` with four targets.
fn bench_metrics(c: &mut Criterion) {
    use shadowtap::metrics::{Accounting, Outcome, Registry, StatusClass};
    use std::sync::Arc;
    let targets: Vec<String> = (0..4).map(|i| format!("http://stage-{i}:8080")).collect();
    let accounting = Arc::new(Accounting::new(targets));
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_outcome", |b| {
        let counters = accounting.target(1);
        b.iter(|| {
            counters.record(
                Protocol::Http1,
                black_box(Outcome::Replayed(StatusClass::Success)),
            );
            counters.record_response(StatusClass::Success, black_box(1_500_000));
        })
    });
    let registry = Registry::new(accounting.clone());
    group.bench_function("scrape", |b| b.iter(|| black_box(registry.render())));
    group.finish();
}

criterion_group! {
    name = benches;
    // The machine is shared: short runs, enough samples for a stable median.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_framer, bench_reassembly, bench_decode, bench_pipeline, bench_metrics
}
criterion_main!(benches);

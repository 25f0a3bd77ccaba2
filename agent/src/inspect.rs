//! `shadowtap inspect`: read capture files, print the requests found, no network.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::capture::pcap_file::CaptureReader;
use crate::http::{DropReason, NotHttpKind};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineEvent, SeenRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    Jsonl,
    Table,
}

/// Tally of what `inspect` found, printed on stderr at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InspectSummary {
    pub requests_seen: u64,
    pub complete: u64,
    pub incomplete: u64,
    pub too_large: u64,
    pub unparseable: u64,
    pub not_http_streams: u64,
    pub frames: u64,
    pub decode_errors: u64,
    pub truncated_files: u64,
    /// What the memory caps of reassembly gave up, by reason.
    pub flows_evicted: u64,
    pub flows_timed_out: u64,
    pub too_far_ahead: u64,
    pub buffer_overflows: u64,
    pub retransmit_mismatch: u64,
    /// Streams that gave up a request in progress to keep framing under its budget.
    pub framer_overflows: u64,
}

impl InspectSummary {
    fn count_drop(&mut self, reason: &DropReason) {
        self.requests_seen += 1;
        match reason {
            DropReason::Incomplete => self.incomplete += 1,
            DropReason::TooLarge => self.too_large += 1,
            DropReason::Unparseable(_) => self.unparseable += 1,
        }
    }
}

/// One request as `inspect --format jsonl` prints it.
#[derive(Serialize)]
struct RequestLine<'a> {
    ts: f64,
    client: &'a str,
    server: &'a str,
    method: &'a str,
    target: std::borrow::Cow<'a, str>,
    version: &'static str,
    host: Option<std::borrow::Cow<'a, str>>,
    headers: usize,
    body_len: usize,
    chunked: bool,
}

impl<'a> RequestLine<'a> {
    fn new(seen: &'a SeenRequest, client: &'a str, server: &'a str) -> Self {
        let r = &seen.request;
        Self {
            ts: r.ts_nanos as f64 / 1e9,
            client,
            server,
            method: &r.method,
            target: String::from_utf8_lossy(&r.target),
            version: if r.version_minor == 0 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
            host: r.header("host").map(String::from_utf8_lossy),
            headers: r.headers.len(),
            body_len: r.body.len(),
            chunked: r.chunked,
        }
    }
}

/// Buffers reused for every printed request: a line is built whole and written with one
/// call, since per-field writes through `dyn Write` and the address formatting cost more
/// than the rest of the pipeline on small requests.
#[derive(Default)]
struct LineBuffers {
    client: AddrText,
    server: AddrText,
    line: Vec<u8>,
}

/// The text of the last address formatted: the server of consecutive requests is mostly
/// the same one.
#[derive(Default)]
struct AddrText {
    addr: Option<SocketAddr>,
    text: String,
}

impl AddrText {
    fn get(&mut self, addr: SocketAddr) -> &str {
        if self.addr != Some(addr) {
            self.text.clear();
            push_socket_addr(&mut self.text, addr);
            self.addr = Some(addr);
        }
        &self.text
    }
}

/// Appends `addr` as `Display` writes it. IPv4 skips `fmt`, whose padding support makes
/// `Ipv4Addr`'s `Display` slow; IPv6 is rare enough to go through it.
fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    let mut digits = itoa::Buffer::new();
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Errors `inspect` reports: which file, and why.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {source}")]
    Capture {
        path: PathBuf,
        source: crate::capture::pcap_file::CaptureFileError,
    },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// Reads every file in order through one pipeline per file and writes the requests to
/// `out`. Returns the summary; the first unreadable file stops the run.
pub fn inspect(
    files: &[PathBuf],
    format: InspectFormat,
    config: &PipelineConfig,
    out: &mut dyn Write,
) -> Result<InspectSummary, InspectError> {
    let mut summary = InspectSummary::default();
    let mut bufs = LineBuffers::default();
    if format == InspectFormat::Table {
        writeln!(
            out,
            "{:<17} {:<45} {:<45} {:<8} {:>8} {:<30} TARGET",
            "TS", "CLIENT", "SERVER", "METHOD", "BODY", "HOST"
        )?;
    }
    for path in files {
        let capture_err = |source| InspectError::Capture {
            path: path.clone(),
            source,
        };
        let mut reader = CaptureReader::open(path).map_err(capture_err)?;
        let mut pipeline = Pipeline::new(config.clone());
        while let Some(frame) = reader.next_frame().map_err(capture_err)? {
            // A frame that does not decode is counted in the pipeline's stats.
            if let Ok(events) = pipeline.push_frame(&frame) {
                for ev in events {
                    emit(&ev, format, &mut summary, &mut bufs, out)?;
                }
            }
        }
        for ev in pipeline.flush() {
            emit(&ev, format, &mut summary, &mut bufs, out)?;
        }
        summary.frames += pipeline.stats().frames;
        summary.decode_errors += pipeline.stats().decode_errors;
        summary.framer_overflows += pipeline.stats().framer_overflows;
        let flows = pipeline.flows().stats();
        summary.flows_evicted += flows.flows_evicted;
        summary.flows_timed_out += flows.flows_timed_out;
        summary.too_far_ahead += flows.too_far_ahead;
        summary.buffer_overflows += flows.buffer_overflows;
        summary.retransmit_mismatch += flows.retransmit_mismatch;
        if reader.stats().truncated_tail {
            summary.truncated_files += 1;
        }
    }
    out.flush()?;
    Ok(summary)
}

fn emit(
    ev: &PipelineEvent,
    format: InspectFormat,
    summary: &mut InspectSummary,
    bufs: &mut LineBuffers,
    out: &mut dyn Write,
) -> io::Result<()> {
    match ev {
        PipelineEvent::Request(seen) => {
            summary.requests_seen += 1;
            summary.complete += 1;
            let client = bufs.client.get(seen.client);
            let server = bufs.server.get(seen.server);
            let line = RequestLine::new(seen, client, server);
            match format {
                InspectFormat::Jsonl => {
                    bufs.line.clear();
                    serde_json::to_writer(&mut bufs.line, &line)?;
                    bufs.line.push(b'\n');
                    out.write_all(&bufs.line)
                }
                InspectFormat::Table => writeln!(
                    out,
                    "{:<17.6} {:<45} {:<45} {:<8} {:>8} {:<30} {}",
                    line.ts,
                    line.client,
                    line.server,
                    line.method,
                    line.body_len,
                    line.host.as_deref().unwrap_or("-"),
                    line.target
                ),
            }
        }
        PipelineEvent::Dropped { reason, .. } => {
            summary.count_drop(reason);
            Ok(())
        }
        PipelineEvent::NotHttp { kind, .. } => {
            if *kind != NotHttpKind::Response {
                summary.not_http_streams += 1;
            }
            Ok(())
        }
    }
}

impl std::fmt::Display for InspectSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests seen: {} (complete {}, incomplete {}, too_large {}, unparseable {}); \
             non-HTTP streams: {}; frames: {} ({} undecodable); reassembly: {} flows \
             evicted, {} timed out, {} segments too far ahead, {} buffer overflows, {} \
             retransmits with other bytes, {} framer overflows{}",
            self.requests_seen,
            self.complete,
            self.incomplete,
            self.too_large,
            self.unparseable,
            self.not_http_streams,
            self.frames,
            self.decode_errors,
            self.flows_evicted,
            self.flows_timed_out,
            self.too_far_ahead,
            self.buffer_overflows,
            self.retransmit_mismatch,
            self.framer_overflows,
            if self.truncated_files > 0 {
                format!("; {} file(s) end mid-record", self.truncated_files)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addr_text_matches_display() {
        let addrs = [
            "0.0.0.0:0",
            "10.1.2.3:80",
            "255.255.255.255:65535",
            "192.168.100.9:18080",
            "[::1]:443",
            "[fe80::1%7]:8080",
            "[::ffff:10.0.0.1]:1",
        ];
        let mut text = String::from("kept ");
        for a in addrs {
            let addr: SocketAddr = a.parse().expect("test address");
            text.truncate(5);
            push_socket_addr(&mut text, addr);
            assert_eq!(text, format!("kept {addr}"));
        }
    }
}

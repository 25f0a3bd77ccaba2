//! `shadowtap inspect`: read capture files, print the requests found, no network.

use std::io::{self, Write};
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
    client: String,
    server: String,
    method: &'a str,
    target: std::borrow::Cow<'a, str>,
    version: &'static str,
    host: Option<std::borrow::Cow<'a, str>>,
    headers: usize,
    body_len: usize,
    chunked: bool,
}

impl<'a> RequestLine<'a> {
    fn new(seen: &'a SeenRequest) -> Self {
        let r = &seen.request;
        Self {
            ts: r.ts_nanos as f64 / 1e9,
            client: seen.client.to_string(),
            server: seen.server.to_string(),
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
                    emit(&ev, format, &mut summary, out)?;
                }
            }
        }
        for ev in pipeline.flush() {
            emit(&ev, format, &mut summary, out)?;
        }
        summary.frames += pipeline.stats().frames;
        summary.decode_errors += pipeline.stats().decode_errors;
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
    out: &mut dyn Write,
) -> io::Result<()> {
    match ev {
        PipelineEvent::Request(seen) => {
            summary.requests_seen += 1;
            summary.complete += 1;
            let line = RequestLine::new(seen);
            match format {
                InspectFormat::Jsonl => {
                    serde_json::to_writer(&mut *out, &line)?;
                    writeln!(out)
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
             non-HTTP streams: {}; frames: {} ({} undecodable){}",
            self.requests_seen,
            self.complete,
            self.incomplete,
            self.too_large,
            self.unparseable,
            self.not_http_streams,
            self.frames,
            self.decode_errors,
            if self.truncated_files > 0 {
                format!("; {} file(s) end mid-record", self.truncated_files)
            } else {
                String::new()
            }
        )
    }
}

//! `shadowtap inspect`: read capture files, print the requests found, no network.
//! Every request seen gets a line with its outcome (`complete`, or why it would not be
//! copied), so that the counts of the summary can be found line by line.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crossbeam_channel::{Receiver, Sender};

use crate::capture::pcap_file::CaptureReader;
use crate::decode::DecodeStats;
use crate::pipeline::{PipelineBack, PipelineConfig, PipelineEvent, PipelineFront, SinkBatch};
use crate::reassembly::ReassemblyStats;
use crate::request::{Captured, DropReason, NotHttpKind, Protocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    Jsonl,
    Table,
}

/// What `inspect` prints, beyond the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InspectOptions {
    pub format: InspectFormat,
    /// A line for each request not framed whole too (`incomplete`, `unparseable`, ...),
    /// with what is known of it; off, only complete requests are printed.
    pub all_outcomes: bool,
    /// Print the header block of each complete request.
    pub headers: bool,
    /// Print the first this many body bytes (escaped) of each complete request.
    pub body: Option<usize>,
    /// Table times in UTC rather than local time.
    pub utc: bool,
}

impl InspectOptions {
    /// Complete requests only, nothing more: what `inspect` printed before outcomes.
    pub fn complete_only(format: InspectFormat) -> Self {
        Self {
            format,
            all_outcomes: false,
            headers: false,
            body: None,
            utc: false,
        }
    }
}

/// Tally of what `inspect` found, printed on stderr at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InspectSummary {
    pub requests_seen: u64,
    pub complete: u64,
    pub incomplete: u64,
    pub too_large: u64,
    pub unparseable: u64,
    /// On connections whose framing state was lost (start not seen, gap, conflicting
    /// retransmissions) or after the server stopped reading: counted, never framed.
    pub untrusted: u64,
    /// CONNECT and `OPTIONS *`: served, never copied.
    pub not_copied: u64,
    /// HTTP/2 streams of connections joined late whose header block named a table
    /// entry inserted before the join.
    pub undecodable: u64,
    /// HTTP/2 streams the client reset before they ended.
    pub reset: u64,
    /// Requests seen by protocol (`Protocol::index`): HTTP/1.x, HTTP/2.
    pub by_protocol: [u64; 2],
    /// HTTP/2 connections and the streams opened on them, by how their start was seen
    /// (`h2::ConnStart::index`: preface, upgrade, joined late).
    pub h2_connections: [u64; 3],
    pub h2_streams: [u64; 3],
    pub not_http_streams: u64,
    pub frames: u64,
    pub decode_errors: u64,
    pub truncated_files: u64,
    /// What the memory caps of reassembly gave up, by reason.
    pub flows_evicted: u64,
    pub flows_timed_out: u64,
    pub too_far_ahead: u64,
    pub buffer_overflows: u64,
    pub holes_timed_out: u64,
    pub retransmit_mismatch: u64,
    /// Client streams picked up without their start, and distrusted at a retransmission
    /// with other bytes (their requests from then on are `untrusted`).
    pub lost_starts: u64,
    pub conflict_distrusts: u64,
    /// Streams that gave up a request in progress to keep framing under its budget.
    pub framer_overflows: u64,
    /// What the IP layer did: fragments reassembled or lost, extension chains.
    pub ip: DecodeStats,
    /// Files damaged part-way: `FILE: corrupt capture at byte N: why`, one per file.
    /// Reading a damaged file stops at the damage; what came before is reported, the
    /// other files are read, and the binary exits 1.
    pub damaged: Vec<String>,
}

impl InspectSummary {
    fn count_drop(&mut self, reason: &DropReason) {
        self.requests_seen += 1;
        match reason {
            DropReason::Incomplete => self.incomplete += 1,
            DropReason::TooLarge => self.too_large += 1,
            DropReason::Unparseable(_) => self.unparseable += 1,
            DropReason::Untrusted => self.untrusted += 1,
            DropReason::NotCopied(_) => self.not_copied += 1,
            DropReason::Undecodable => self.undecodable += 1,
            DropReason::Reset => self.reset += 1,
        }
    }
}

/// Buffers reused for every printed request: lines are built in `lines` and written in
/// large pieces, since per-line writes through `dyn Write` and the address formatting cost
/// more than the rest of the pipeline on small requests.
#[derive(Default)]
struct LineBuffers {
    addrs: ConnText,
    lines: Vec<u8>,
}

/// `LineBuffers::lines` is handed to the writer once it holds this much.
const WRITE_AT: usize = 64 * 1024;

impl LineBuffers {
    fn write_out(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.lines)?;
        self.lines.clear();
        Ok(())
    }
}

/// Slots of `ConnText`.
const CONN_SLOTS: usize = 256;

/// The address text of connections seen lately, one slot per connection id modulo
/// `CONN_SLOTS`: requests of connections open together interleave, and their ids are
/// given out in order, so they rarely share a slot (client ports, the earlier key, did).
/// A slot is trusted only for the same two addresses: ids start again with each file.
struct ConnText {
    slots: Vec<ConnSlot>,
}

#[derive(Clone, Default)]
struct ConnSlot {
    addrs: Option<(SocketAddr, SocketAddr)>,
    client: String,
    server: String,
}

impl Default for ConnText {
    fn default() -> Self {
        Self {
            slots: vec![ConnSlot::default(); CONN_SLOTS],
        }
    }
}

impl ConnText {
    /// The text of `client` and `server`, the addresses of connection `conn`.
    fn get(&mut self, conn: u64, client: SocketAddr, server: SocketAddr) -> (&str, &str) {
        // The remainder is below `CONN_SLOTS`, so the cast loses nothing.
        let slot = &mut self.slots[(conn % CONN_SLOTS as u64) as usize];
        if slot.addrs != Some((client, server)) {
            slot.client.clear();
            push_socket_addr(&mut slot.client, client);
            slot.server.clear();
            push_socket_addr(&mut slot.server, server);
            slot.addrs = Some((client, server));
        }
        (&slot.client, &slot.server)
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
    #[error("`-` (standard input) can be read only once: name it once")]
    StdinOnce,
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// Reads every file in order through one pipeline per file and writes the complete
/// requests to `out` (see `inspect_with`).
pub fn inspect(
    files: &[PathBuf],
    format: InspectFormat,
    config: &PipelineConfig,
    out: &mut (dyn Write + Send),
) -> Result<InspectSummary, InspectError> {
    inspect_with(files, &InspectOptions::complete_only(format), config, out)
}

/// Reads every file in order through one pipeline per file and writes the requests to
/// `out` as `opts` says. Returns the summary; the first file that cannot be opened or is
/// not a capture stops the run, a file damaged part-way is read up to the damage
/// (`damaged`).
pub fn inspect_with(
    files: &[PathBuf],
    opts: &InspectOptions,
    config: &PipelineConfig,
    out: &mut (dyn Write + Send),
) -> Result<InspectSummary, InspectError> {
    let stdin_uses = files
        .iter()
        .filter(|p| crate::capture::pcap_file::is_stdin(p))
        .count();
    if stdin_uses > 1 {
        return Err(InspectError::StdinOnce);
    }
    let mut summary = InspectSummary::default();
    let mut bufs = LineBuffers::default();
    if opts.format == InspectFormat::Table {
        writeln!(
            out,
            "{:<TIME_W$} {:<OUTCOME_W$} {:<ADDR_W$} {:<ADDR_W$} {:<8} {:<7} {:>8} {:<HOST_W$} TARGET",
            "TIME", "OUTCOME", "CLIENT", "SERVER", "PROTOCOL", "METHOD", "BODY", "HOST"
        )?;
    }
    let progress = crate::progress::Progress::new(
        true,
        crate::progress::total_bytes(files.iter().map(PathBuf::as_path)),
    );
    let result = inspect_files(files, opts, config, &mut summary, &mut bufs, out, &progress);
    progress.finish();
    // Lines of the requests found before an error are still printed.
    let written = bufs.write_out(out).and_then(|()| out.flush());
    result?;
    written?;
    Ok(summary)
}

/// What the reading thread hands to the printing one, in capture order.
enum FromReader {
    Batch(SinkBatch),
    /// A file was read to its end (its streams' ends are in the batches before). Boxed:
    /// one per file, and the batches, many, stay small.
    FileEnd(Box<FileCounts>),
}

/// One file's counters kept by the reading thread.
struct FileCounts {
    frames: u64,
    decode_errors: u64,
    ip: DecodeStats,
    flows: ReassemblyStats,
    truncated: bool,
    latest_ts: u64,
    /// The error that stopped reading the file part-way.
    damage: Option<String>,
}

/// Batches on their way to the printing thread; bounds what reading runs ahead. The
/// same for line buffers on their way to the writing thread.
const BATCHES_IN_FLIGHT: usize = 4;

/// The printing side of the writing thread: full line buffers go over, emptied ones
/// come back.
struct Handoff {
    full: Sender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

impl Handoff {
    /// Sends `lines` to be written and leaves an empty buffer in its place.
    fn send(&self, lines: &mut Vec<u8>) -> io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(lines.capacity()));
        let full = std::mem::replace(lines, next);
        // The writer only stops early on an error of its own, which is then reported.
        self.full
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the writing thread stopped"))
    }
}

/// The writing thread: writes the line buffers in order, hands them back emptied.
fn write_lines(
    out: &mut (dyn Write + Send),
    full: &Receiver<Vec<u8>>,
    empty: &Sender<Vec<u8>>,
) -> io::Result<()> {
    for mut lines in full {
        out.write_all(&lines)?;
        lines.clear();
        // Full when the printer allocated meanwhile: then this one is dropped.
        let _ = empty.try_send(lines);
    }
    Ok(())
}

fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Reads every file in order and prints what it found. Three threads, since one core
/// could not keep within the goal: this one frames and formats; a second reads, decodes
/// and reassembles, handing reassembly's output over in `SinkBatch`es; a third writes
/// the formatted lines (a copy into the page cache when stdout is a file). Emptied
/// batches and buffers go back. The events, and so the output, are those of one
/// `Pipeline` per file.
fn inspect_files(
    files: &[PathBuf],
    opts: &InspectOptions,
    config: &PipelineConfig,
    summary: &mut InspectSummary,
    bufs: &mut LineBuffers,
    out: &mut (dyn Write + Send),
    progress: &crate::progress::Progress,
) -> Result<(), InspectError> {
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT);
    let (spare_tx, spare_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT + 2);
    let (full_tx, full_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded(BATCHES_IN_FLIGHT + 2);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("inspect-read".into())
            .spawn_scoped(scope, move || {
                read_files(files, config, &batch_tx, &spare_rx, progress)
            })
            .map_err(InspectError::Output)?;
        let writer = std::thread::Builder::new()
            .name("inspect-write".into())
            .spawn_scoped(scope, move || write_lines(out, &full_rx, &empty_tx))
            .map_err(InspectError::Output)?;
        let handoff = Handoff {
            full: full_tx,
            empty: empty_rx,
        };
        let printed = print_batches(batch_rx, &spare_tx, opts, config, summary, bufs, &handoff);
        // The writer ends once it wrote what it was sent; the reader stops at its next
        // batch once the receiver is gone.
        drop(handoff);
        let written = joined(writer);
        let read = joined(reader);
        // An output error came first when there was one: printing and reading stopped
        // because of it. The writer's own error says more than the printer's.
        written?;
        printed?;
        read
    })
}

/// The reading thread: frames through decode and reassembly, recorded in batches.
/// Stops quietly when the printing side is gone (it reports why).
fn read_files(
    files: &[PathBuf],
    config: &PipelineConfig,
    batches: &Sender<FromReader>,
    spares: &Receiver<SinkBatch>,
    progress: &crate::progress::Progress,
) -> Result<(), InspectError> {
    let fresh = || spares.try_recv().unwrap_or_default();
    let mut read_before = 0;
    for path in files {
        progress.message(path.display().to_string());
        let capture_err = |source| InspectError::Capture {
            path: path.clone(),
            source,
        };
        let mut reader = CaptureReader::open(path).map_err(capture_err)?;
        let mut front = PipelineFront::new(config);
        let mut batch = fresh();
        let mut damage = None;
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    // Damage past the header: what came before is reported as at the
                    // end of a file (streams ended, partial requests `incomplete`),
                    // and the next file is read.
                    damage = Some(capture_err(e).to_string());
                    break;
                }
            };
            // A frame that does not decode is counted in the front's stats.
            let _ = front.push_frame(&frame, &mut batch);
            if batch.is_full() {
                progress.set(read_before + reader.stats().bytes);
                let full = std::mem::replace(&mut batch, fresh());
                if batches.send(FromReader::Batch(full)).is_err() {
                    return Ok(());
                }
            }
        }
        front.flush(&mut batch);
        read_before += reader.stats().bytes;
        progress.set(read_before);
        let counts = FileCounts {
            frames: front.stats().frames,
            decode_errors: front.stats().decode_errors,
            ip: front.decoder().stats().clone(),
            flows: front.flows().stats().clone(),
            truncated: reader.stats().truncated_tail,
            latest_ts: front.latest_ts(),
            damage,
        };
        if batches.send(FromReader::Batch(batch)).is_err()
            || batches.send(FromReader::FileEnd(Box::new(counts))).is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The printing thread: frames the recorded streams and prints the requests, until the
/// reader is done.
fn print_batches(
    batches: Receiver<FromReader>,
    spares: &Sender<SinkBatch>,
    opts: &InspectOptions,
    config: &PipelineConfig,
    summary: &mut InspectSummary,
    bufs: &mut LineBuffers,
    out: &Handoff,
) -> io::Result<()> {
    let mut back = PipelineBack::new(config);
    for msg in batches {
        match msg {
            FromReader::Batch(mut batch) => {
                back.replay(&batch, |ev| print(ev, opts, summary, bufs, out))?;
                batch.clear();
                // Full when the reader is behind on taking them back: then it is dropped.
                let _ = spares.try_send(batch);
            }
            FromReader::FileEnd(counts) => {
                back.finish(counts.latest_ts, |ev| print(ev, opts, summary, bufs, out))?;
                summary.frames += counts.frames;
                summary.decode_errors += counts.decode_errors;
                summary.ip.add(&counts.ip);
                summary.damaged.extend(counts.damage);
                summary.framer_overflows += back.framer_overflows();
                let (h2_connections, h2_streams) = back.h2_stats();
                for i in 0..3 {
                    summary.h2_connections[i] += h2_connections[i];
                    summary.h2_streams[i] += h2_streams[i];
                }
                let flows = counts.flows;
                summary.flows_evicted += flows.flows_evicted;
                summary.flows_timed_out += flows.flows_timed_out;
                summary.too_far_ahead += flows.too_far_ahead;
                summary.buffer_overflows += flows.buffer_overflows;
                summary.holes_timed_out += flows.holes_timed_out;
                summary.retransmit_mismatch += flows.retransmit_mismatch;
                summary.lost_starts += flows.lost_starts;
                summary.conflict_distrusts += flows.conflict_distrusts;
                if counts.truncated {
                    summary.truncated_files += 1;
                }
                back = PipelineBack::new(config);
            }
        }
    }
    Ok(())
}

/// Prints one event, then hands a request's buffers back to the framer (see
/// `http::recycle`).
fn print(
    ev: PipelineEvent,
    opts: &InspectOptions,
    summary: &mut InspectSummary,
    bufs: &mut LineBuffers,
    out: &Handoff,
) -> io::Result<()> {
    emit(&ev, opts, summary, bufs, out)?;
    if let PipelineEvent::Request(seen) = ev {
        crate::http::recycle(seen.request);
    }
    Ok(())
}

fn emit(
    ev: &PipelineEvent,
    opts: &InspectOptions,
    summary: &mut InspectSummary,
    bufs: &mut LineBuffers,
    out: &Handoff,
) -> io::Result<()> {
    match ev {
        PipelineEvent::Request(seen) => {
            summary.requests_seen += 1;
            summary.by_protocol[seen.request.protocol.index()] += 1;
            summary.complete += 1;
            let r = &seen.request;
            let (client, server) = bufs.addrs.get(seen.conn, seen.client, seen.server);
            match opts.format {
                InspectFormat::Jsonl => {
                    push_json_line(&mut bufs.lines, seen, client, server);
                    if opts.headers || opts.body.is_some() {
                        push_json_extras(&mut bufs.lines, r, opts);
                    }
                }
                InspectFormat::Table => {
                    let host = r.authority().map(String::from_utf8_lossy);
                    // A gRPC call shows its `service/method` where a target goes.
                    let target = r.grpc_method().unwrap_or(&r.target);
                    push_table_line(
                        &mut bufs.lines,
                        opts,
                        TableLine {
                            ts_nanos: r.ts_nanos,
                            outcome: "complete",
                            client,
                            server,
                            version: if r.is_grpc() {
                                "gRPC"
                            } else {
                                r.version_text()
                            },
                            method: &r.method,
                            body: Some(r.body.len()),
                            host: host.as_deref().unwrap_or("-"),
                            target: &String::from_utf8_lossy(target),
                        },
                    )?;
                    push_table_extras(&mut bufs.lines, r, opts)?;
                }
            }
            if bufs.lines.len() >= WRITE_AT {
                out.send(&mut bufs.lines)?;
            }
            Ok(())
        }
        PipelineEvent::Dropped {
            ts_nanos,
            protocol,
            client,
            server,
            reason,
            method,
        } => {
            summary.count_drop(reason);
            summary.by_protocol[protocol.index()] += 1;
            if opts.all_outcomes {
                let (outcome, why) = outcome_of(reason);
                let mut client_text = String::new();
                push_socket_addr(&mut client_text, *client);
                let mut server_text = String::new();
                push_socket_addr(&mut server_text, *server);
                match opts.format {
                    InspectFormat::Jsonl => push_json_drop(
                        &mut bufs.lines,
                        *ts_nanos,
                        &client_text,
                        &server_text,
                        method.as_deref(),
                        (outcome, why),
                        *protocol,
                    ),
                    InspectFormat::Table => {
                        let target = why.map(|w| format!("- ({w})"));
                        push_table_line(
                            &mut bufs.lines,
                            opts,
                            TableLine {
                                ts_nanos: *ts_nanos,
                                outcome,
                                client: &client_text,
                                server: &server_text,
                                version: match protocol {
                                    Protocol::H2 => "HTTP/2",
                                    Protocol::Http1 => "-",
                                },
                                method: method.as_deref().unwrap_or("-"),
                                body: None,
                                host: "-",
                                target: target.as_deref().unwrap_or("-"),
                            },
                        )?;
                    }
                }
                if bufs.lines.len() >= WRITE_AT {
                    out.send(&mut bufs.lines)?;
                }
            }
            Ok(())
        }
        PipelineEvent::NotHttp { kind, .. } => {
            if !matches!(kind, NotHttpKind::Response | NotHttpKind::Untrusted) {
                summary.not_http_streams += 1;
            }
            Ok(())
        }
        // `inspect` does not frame answers.
        PipelineEvent::Response { .. } | PipelineEvent::ResponseMissing { .. } => Ok(()),
    }
}

/// Capture time in seconds, as printed.
fn ts_secs(ts_nanos: u64) -> f64 {
    ts_nanos as f64 / 1e9
}

/// The outcome name of a request not framed whole (as in the summary and `/metrics`),
/// and what more is known of why.
fn outcome_of(reason: &DropReason) -> (&'static str, Option<&'static str>) {
    match reason {
        DropReason::Incomplete => ("incomplete", None),
        DropReason::TooLarge => ("too_large", None),
        DropReason::Unparseable(why) => ("unparseable", Some(why)),
        DropReason::Untrusted => ("untrusted", None),
        DropReason::NotCopied(what) => ("not_copied", Some(what.label())),
        DropReason::Undecodable => ("undecodable", None),
        DropReason::Reset => ("reset", None),
    }
}

/// Column widths of the table: an ISO 8601 time to the millisecond with its offset, the
/// longest outcome, an IPv4 address with its port (IPv6 ones run over), a short host.
const TIME_W: usize = 29;
const OUTCOME_W: usize = 11;
const ADDR_W: usize = 21;
const HOST_W: usize = 24;

/// One table row.
struct TableLine<'a> {
    ts_nanos: u64,
    outcome: &'a str,
    client: &'a str,
    server: &'a str,
    version: &'a str,
    method: &'a str,
    body: Option<usize>,
    host: &'a str,
    target: &'a str,
}

fn push_table_line(
    out: &mut Vec<u8>,
    opts: &InspectOptions,
    line: TableLine<'_>,
) -> io::Result<()> {
    let body = line.body.map_or_else(|| "-".to_string(), |n| n.to_string());
    writeln!(
        out,
        "{:<TIME_W$} {:<OUTCOME_W$} {:<ADDR_W$} {:<ADDR_W$} {:<8} {:<7} {:>8} {:<HOST_W$} {}",
        iso_time(line.ts_nanos, opts.utc),
        line.outcome,
        line.client,
        line.server,
        line.version,
        printable(line.method.as_bytes()),
        body,
        printable(line.host.as_bytes()),
        printable(line.target.as_bytes()),
    )
}

/// The header block and body start under a table row, indented.
fn push_table_extras(
    out: &mut Vec<u8>,
    r: &crate::request::Request,
    opts: &InspectOptions,
) -> io::Result<()> {
    if opts.headers {
        for h in &r.headers {
            writeln!(
                out,
                "    {}: {}",
                printable(h.name.as_bytes()),
                printable(&h.value)
            )?;
        }
    }
    if let Some(n) = opts.body {
        if !r.body.is_empty() {
            let shown = &r.body[..n.min(r.body.len())];
            let more = if shown.len() < r.body.len() {
                "..."
            } else {
                ""
            };
            writeln!(out, "    body: {}{more}", escape_bytes(shown))?;
        }
    }
    Ok(())
}

/// `header_block` (the header lines as sent, lossy UTF-8) and `body_start` (the first
/// bytes, escaped), added to a JSON line before its closing brace.
fn push_json_extras(out: &mut Vec<u8>, r: &crate::request::Request, opts: &InspectOptions) {
    // The line ends with `}\n`; the fields go in before it.
    out.truncate(out.len() - 2);
    if opts.headers {
        let mut block = Vec::new();
        for h in &r.headers {
            block.extend_from_slice(h.name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(&h.value);
            block.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b",\"header_block\":");
        push_json_lossy(out, &block);
    }
    if let Some(n) = opts.body {
        out.extend_from_slice(b",\"body_start\":");
        push_json_str(out, &escape_bytes(&r.body[..n.min(r.body.len())]));
    }
    out.extend_from_slice(b"}\n");
}

/// A JSON line for a request seen but not framed whole: what is known of it.
fn push_json_drop(
    out: &mut Vec<u8>,
    ts_nanos: u64,
    client: &str,
    server: &str,
    method: Option<&str>,
    (outcome, why): (&str, Option<&str>),
    protocol: Protocol,
) {
    out.extend_from_slice(b"{\"ts\":");
    out.extend_from_slice(
        zmij::Buffer::new()
            .format_finite(ts_secs(ts_nanos))
            .as_bytes(),
    );
    out.extend_from_slice(b",\"client\":\"");
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\",\"server\":\"");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\",\"method\":");
    match method {
        Some(m) => push_json_str(out, m),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"outcome\":");
    push_json_str(out, outcome);
    if let Some(why) = why {
        out.extend_from_slice(b",\"reason\":");
        push_json_str(out, why);
    }
    if protocol == Protocol::H2 {
        out.extend_from_slice(b",\"protocol\":\"h2\"");
    }
    out.extend_from_slice(b"}\n");
}

/// Bytes as printable ASCII: `\xNN` for anything else and for `\` itself, so binary
/// bodies and odd header bytes cannot garble a terminal.
fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7F).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Text for a table cell: as is when printable, escaped otherwise.
fn printable(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(escape_bytes(bytes)),
    }
}

/// ISO 8601 to the millisecond: local time with its offset, or UTC with `Z`.
fn iso_time(ts_nanos: u64, utc: bool) -> String {
    let secs = i64::try_from(ts_nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let millis = ts_nanos / 1_000_000 % 1000;
    let time: libc::time_t = secs;
    // SAFETY: `tm` is plain data, valid all zero; both calls only write into it and are
    // the thread-safe variants.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        if utc {
            !libc::gmtime_r(&time, &mut tm).is_null()
        } else {
            !libc::localtime_r(&time, &mut tm).is_null()
        }
    };
    if !ok {
        return format!("{:.3}", ts_secs(ts_nanos));
    }
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
    if utc {
        return format!("{date}Z");
    }
    let offset = tm.tm_gmtoff;
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!("{date}{sign}{:02}:{:02}", offset / 3600, offset % 3600 / 60)
}

/// Appends one `jsonl` line. Written by hand: serde_json's serializer was a fifth of
/// `inspect`. Numbers use the formatters serde_json uses (zmij, itoa), strings the same
/// escapes, so lines are byte for byte what `serde_json::to_writer` printed.
fn push_json_line(out: &mut Vec<u8>, seen: &Captured, client: &str, server: &str) {
    let r = &seen.request;
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(b"{\"ts\":");
    out.extend_from_slice(
        zmij::Buffer::new()
            .format_finite(ts_secs(r.ts_nanos))
            .as_bytes(),
    );
    // Address text is digits, dots, colons, brackets, hex and `%`: nothing to escape.
    out.extend_from_slice(b",\"client\":\"");
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\",\"server\":\"");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(b",\"method\":");
    push_json_str(out, &r.method);
    out.extend_from_slice(b",\"target\":");
    push_json_lossy(out, &r.target);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(r.version_text().as_bytes());
    out.extend_from_slice(b"\",\"host\":");
    // HTTP/2: `:authority` (or its host field).
    match r.authority() {
        Some(host) => push_json_lossy(out, host),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"headers\":");
    out.extend_from_slice(int.format(r.headers.len()).as_bytes());
    out.extend_from_slice(b",\"body_len\":");
    out.extend_from_slice(int.format(r.body.len()).as_bytes());
    // `outcome` after the fields older versions printed: readers of those still work.
    out.extend_from_slice(if r.chunked {
        b",\"chunked\":true,\"outcome\":\"complete\""
    } else {
        b",\"chunked\":false,\"outcome\":\"complete\""
    });
    // HTTP/2 lines say so, with the stream and, for gRPC, `service/method`.
    if r.protocol == Protocol::H2 {
        out.extend_from_slice(b",\"protocol\":\"h2\",\"stream\":");
        out.extend_from_slice(int.format(r.stream_id).as_bytes());
        if let Some(method) = r.grpc_method() {
            out.extend_from_slice(b",\"grpc\":");
            push_json_lossy(out, method);
        }
    }
    out.extend_from_slice(b"}\n");
}

/// `bytes` as a JSON string of their UTF-8 reading, each invalid sequence replaced by
/// U+FFFD as `String::from_utf8_lossy` does.
fn push_json_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    if plain(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    for chunk in bytes.utf8_chunks() {
        push_json_escaped(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if plain(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
    } else {
        push_json_escaped(out, s);
    }
    out.push(b'"');
}

/// ASCII with nothing to escape: the usual target, host and method. One branch-free pass
/// (the compiler vectorises it), instead of a table lookup per byte.
fn plain(bytes: &[u8]) -> bool {
    !bytes.iter().fold(false, |odd, &b| {
        odd | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\')
    })
}

/// What a byte becomes inside a JSON string: 0 for itself, `u` for `\u00XX`, else the
/// letter after the backslash. Control characters, quote and backslash only, as
/// serde_json escapes (DEL and non-ASCII pass through).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

fn push_json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

/// ` (12.5%)`: the part `n` is of `total`, when there is a total.
fn share(n: u64, total: u64) -> String {
    if n == 0 || total == 0 {
        return String::new();
    }
    format!(" ({:.1}%)", n as f64 * 100.0 / total as f64)
}

impl std::fmt::Display for InspectSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests seen: {} (complete {}, incomplete {}, too_large {}, unparseable {}, \
             untrusted {}{}, not_copied {}); HTTP/2: undecodable {}, reset {}; by protocol: \
             http1 {}, h2 {}; HTTP/2 connections: {} from the preface, {} upgraded, {} joined \
             late ({} streams on those); non-HTTP streams: {}; frames: {} ({} undecodable); reassembly: {} flows \
             evicted, {} timed out, {} segments too far ahead, {} buffer overflows, {} \
             holes given up after the hole timeout, {} retransmits with other bytes, {} \
             framer overflows; streams distrusted: {} started before the capture, {} at \
             conflicting retransmits; {}{}{}",
            self.requests_seen,
            self.complete,
            self.incomplete,
            self.too_large,
            self.unparseable,
            self.untrusted,
            share(self.untrusted, self.requests_seen),
            self.not_copied,
            self.undecodable,
            self.reset,
            self.by_protocol[0],
            self.by_protocol[1],
            self.h2_connections[0],
            self.h2_connections[1],
            self.h2_connections[2],
            self.h2_streams[2],
            self.not_http_streams,
            self.frames,
            self.decode_errors,
            self.flows_evicted,
            self.flows_timed_out,
            self.too_far_ahead,
            self.buffer_overflows,
            self.holes_timed_out,
            self.retransmit_mismatch,
            self.framer_overflows,
            self.lost_starts,
            self.conflict_distrusts,
            self.ip,
            if self.truncated_files > 0 {
                format!("; {} file(s) end mid-record", self.truncated_files)
            } else {
                String::new()
            },
            if self.damaged.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} damaged file(s), read up to the damage",
                    self.damaged.len()
                )
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Header, Request};
    use proptest::prelude::*;

    /// The line as serde_json wrote it before `push_json_line`: the reference.
    #[derive(serde::Serialize)]
    struct SerdeLine<'a> {
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
        outcome: &'static str,
    }

    fn serde_line(seen: &Captured, client: &str, server: &str) -> Vec<u8> {
        let r = &seen.request;
        let line = SerdeLine {
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
            outcome: "complete",
        };
        let mut out = serde_json::to_vec(&line).expect("serialising to memory");
        out.push(b'\n');
        out
    }

    /// Bytes biased towards what needs escaping or is not UTF-8.
    fn awkward_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => any::<u8>(),
            2 => 0u8..0x20,
            1 => Just(b'"'),
            1 => Just(b'\\'),
            1 => Just(0x7f),
            2 => 0x80u8..=0xff,
        ];
        prop_oneof![
            proptest::collection::vec(byte, 0..40),
            any::<String>().prop_map(String::into_bytes),
        ]
    }

    fn request() -> impl Strategy<Value = Captured> {
        (
            any::<u64>(),
            any::<String>(),
            awkward_bytes(),
            proptest::option::of(awkward_bytes()),
            0usize..4,
            0usize..300,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(ts_nanos, method, target, host, extra, body, chunked, http10)| {
                    let mut headers: Vec<Header> = (0..extra)
                        .map(|i| Header {
                            name: format!("x-{i}"),
                            value: b"v".to_vec(),
                        })
                        .collect();
                    if let Some(host) = host {
                        headers.insert(
                            extra / 2,
                            Header {
                                name: "hOsT".into(),
                                value: host,
                            },
                        );
                    }
                    Captured {
                        id: 0,
                        conn: 0,
                        client: "10.0.0.1:40000".parse().expect("test address"),
                        server: "[fe80::1%3]:8080".parse().expect("test address"),
                        request: Request {
                            ts_nanos,
                            method,
                            target,
                            version_minor: u8::from(!http10),
                            headers,
                            body: vec![b'b'; body],
                            chunked,
                            trailers: Vec::new(),
                            ..Request::default()
                        },
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes come back from serde_json's parser as their lossy UTF-8 reading,
        /// written exactly as serde_json writes that string.
        #[test]
        fn json_string_round_trips(bytes in awkward_bytes()) {
            let mut out = Vec::new();
            push_json_lossy(&mut out, &bytes);
            let expected = String::from_utf8_lossy(&bytes);
            let parsed: String = serde_json::from_slice(&out).expect("valid JSON string");
            prop_assert_eq!(&parsed, &expected);
            prop_assert_eq!(&out, &serde_json::to_vec(&expected).expect("serialising"));
            let mut from_str = Vec::new();
            push_json_str(&mut from_str, &expected);
            prop_assert_eq!(from_str, out);
        }

        #[test]
        fn json_line_matches_serde_json(
            seen in request(),
            client in any::<SocketAddr>(),
            server in any::<SocketAddr>(),
        ) {
            let mut texts = ConnText::default();
            let (client, server) = texts.get(seen.conn, client, server);
            let mut out = b"earlier line\n".to_vec();
            push_json_line(&mut out, &seen, client, server);
            let line = &out[b"earlier line\n".len()..];
            let expected = serde_line(&seen, client, server);
            prop_assert_eq!(String::from_utf8_lossy(line), String::from_utf8_lossy(&expected));
            let value: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            prop_assert_eq!(value["method"].as_str(), Some(seen.request.method.as_str()));
        }
    }

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

    #[test]
    fn conn_text_slots_follow_the_addresses() {
        // One slot (ids CONN_SLOTS apart, and the same id again as in a second file) with
        // other addresses, and neighbouring slots.
        let addr = |a: &str| -> SocketAddr { a.parse().expect("test address") };
        let conns = [
            (0, addr("10.0.0.1:80"), addr("10.0.0.9:8080")),
            (
                CONN_SLOTS as u64,
                addr("10.0.0.2:80"),
                addr("10.0.0.9:8080"),
            ),
            (0, addr("10.0.0.1:80"), addr("10.0.0.8:8080")),
            (1, addr("[::1]:80"), addr("10.0.0.9:8080")),
            (0, addr("10.0.0.1:81"), addr("10.0.0.9:8080")),
        ];
        let mut texts = ConnText::default();
        for round in 0..3 {
            for i in 0..conns.len() {
                let (conn, client, server) = conns[(i + round) % conns.len()];
                let got = texts.get(conn, client, server);
                assert_eq!(
                    got,
                    (client.to_string().as_str(), server.to_string().as_str())
                );
            }
        }
    }
}

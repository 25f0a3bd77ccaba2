//! `StreamFramer`: which protocol a client's stream speaks, and the framer of that
//! protocol. Every stream starts as HTTP/1.x; it becomes HTTP/2 when
//! * its first bytes are the HTTP/2 preface (prior knowledge), or the preface follows an
//!   `Upgrade: h2c` request (the HTTP/1.1 framer finds both: `RequestFramer::take_h2`);
//! * its start was not seen and a chain of plausible HTTP/2 frames is found in its first
//!   `PROBE_BYTES` (a connection joined late). Until then both are tried side by side
//!   and the events of both are held back: the probe's count if it finds frames, the
//!   HTTP/1.x framer's (counts only: it copies nothing on such a stream) if it does not.
//!   So the events do not depend on how the bytes were split.

use crate::h2::{ClientConn, ConnLimits, ConnStart};
use crate::http::{FramerLimits, RequestFramer};
use crate::request::{Protocol, RequestEvent};

/// How far into a stream joined late the search for HTTP/2 frames goes. Three frames of
/// the default maximum size fit, so any HTTP/2 connection syncs well within it.
pub const PROBE_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
pub struct Probe {
    conn: ClientConn,
    events: Vec<RequestEvent>,
    /// The HTTP/1.x framer's events meanwhile.
    h1_events: Vec<RequestEvent>,
    seen: u64,
}

impl Probe {
    /// The HTTP/1.x framer's events go where they belong while the probe runs.
    fn h1_out<'a>(
        probe: &'a mut Option<Box<Probe>>,
        out: &'a mut Vec<RequestEvent>,
    ) -> &'a mut Vec<RequestEvent> {
        match probe {
            Some(p) => &mut p.h1_events,
            None => out,
        }
    }
}

/// The framer of one client->server stream, whichever protocol it turns out to be.
#[derive(Debug)]
pub enum StreamFramer {
    Http1 {
        framer: RequestFramer,
        probe: Option<Box<Probe>>,
        /// Bytes pushed so far (to know a distrust before the first byte).
        seen: u64,
    },
    H2(Box<ClientConn>),
}

/// Limits of both protocols' framers.
pub fn conn_limits(limits: FramerLimits) -> ConnLimits {
    ConnLimits {
        max_header_block: limits.max_head,
        max_body: limits.max_body,
        ..ConnLimits::default()
    }
}

impl StreamFramer {
    pub fn new(limits: FramerLimits) -> Self {
        StreamFramer::Http1 {
            framer: RequestFramer::new(limits),
            probe: None,
            seen: 0,
        }
    }

    /// The protocol the stream is framed as now.
    pub fn protocol(&self) -> Protocol {
        match self {
            StreamFramer::Http1 { .. } => Protocol::Http1,
            StreamFramer::H2(_) => Protocol::H2,
        }
    }

    /// The HTTP/2 connection, once the stream is one.
    pub fn h2(&self) -> Option<&ClientConn> {
        match self {
            StreamFramer::H2(conn) => Some(conn),
            StreamFramer::Http1 { .. } => None,
        }
    }

    pub fn push(
        &mut self,
        limits: FramerLimits,
        ts_nanos: u64,
        data: &[u8],
        out: &mut Vec<RequestEvent>,
    ) {
        match self {
            StreamFramer::H2(conn) => conn.push(ts_nanos, data, out),
            StreamFramer::Http1 {
                framer,
                probe,
                seen,
            } => {
                *seen += data.len() as u64;
                framer.push(ts_nanos, data, Probe::h1_out(probe, out));
                if let Some(handoff) = framer.take_h2() {
                    let start = if handoff.upgraded {
                        ConnStart::Upgrade
                    } else {
                        ConnStart::Preface
                    };
                    let mut conn = ClientConn::from_preface(conn_limits(limits), start);
                    conn.push(ts_nanos, &handoff.bytes, out);
                    *self = StreamFramer::H2(Box::new(conn));
                    return;
                }
                let Some(p) = probe else {
                    return;
                };
                // Only the first PROBE_BYTES are searched, however they were split.
                let room = usize::try_from(PROBE_BYTES - p.seen).unwrap_or(usize::MAX);
                let take = &data[..data.len().min(room)];
                p.seen += take.len() as u64;
                p.conn.push(ts_nanos, take, &mut p.events);
                if !p.conn.is_syncing() {
                    // Frames found: the stream is HTTP/2, and what the HTTP/1.x framer
                    // made of its bytes (counts only) is dropped with it.
                    let mut p = probe.take().expect("probe checked above");
                    out.append(&mut p.events);
                    // The rest of this push, past what the probe was given.
                    p.conn.push(ts_nanos, &data[take.len()..], out);
                    *self = StreamFramer::H2(Box::new(p.conn));
                } else if p.seen >= PROBE_BYTES {
                    out.append(&mut p.h1_events);
                    *probe = None;
                }
            }
        }
    }

    pub fn gap(&mut self, ts_nanos: u64, missing: u64, out: &mut Vec<RequestEvent>) {
        match self {
            StreamFramer::H2(conn) => conn.gap(ts_nanos, missing, out),
            StreamFramer::Http1 { framer, probe, .. } => {
                framer.gap(ts_nanos, missing, Probe::h1_out(probe, out));
                if let Some(p) = probe {
                    p.conn.gap(ts_nanos, missing, &mut p.events);
                }
            }
        }
    }

    /// The stream's bytes are no longer known to be what the server read. Before its
    /// first byte, that is a lost start: HTTP/2 frames are looked for beside HTTP/1.x.
    pub fn distrust(&mut self, limits: FramerLimits, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        match self {
            StreamFramer::H2(conn) => conn.distrust(ts_nanos, out),
            StreamFramer::Http1 {
                framer,
                probe,
                seen,
            } => {
                if *seen == 0 && probe.is_none() && !framer.is_untrusted() {
                    *probe = Some(Box::new(Probe {
                        conn: ClientConn::joined_late(conn_limits(limits)),
                        events: Vec::new(),
                        h1_events: Vec::new(),
                        seen: 0,
                    }));
                } else if let Some(p) = probe {
                    p.conn.distrust(ts_nanos, &mut p.events);
                }
                framer.distrust(ts_nanos, Probe::h1_out(probe, out));
            }
        }
    }

    /// Gives up what the stream holds (a budget over all streams).
    pub fn shed(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        match self {
            StreamFramer::H2(conn) => conn.shed(out),
            StreamFramer::Http1 { framer, probe, .. } => {
                if let Some(mut p) = probe.take() {
                    out.append(&mut p.h1_events);
                }
                framer.shed(ts_nanos, out);
            }
        }
    }

    pub fn finish(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        match self {
            StreamFramer::H2(conn) => conn.finish(out),
            StreamFramer::Http1 { framer, probe, .. } => {
                if let Some(mut p) = probe.take() {
                    out.append(&mut p.h1_events);
                }
                framer.finish(ts_nanos, out)
            }
        }
    }

    pub fn is_idle(&self) -> bool {
        match self {
            StreamFramer::H2(conn) => conn.is_idle(),
            StreamFramer::Http1 { framer, .. } => framer.is_idle(),
        }
    }

    pub fn buffered(&self) -> usize {
        match self {
            StreamFramer::H2(conn) => conn.buffered(),
            StreamFramer::Http1 { framer, probe, .. } => {
                framer.buffered() + probe.as_ref().map_or(0, |p| p.conn.buffered())
            }
        }
    }
}

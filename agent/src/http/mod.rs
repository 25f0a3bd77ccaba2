//! Incremental HTTP/1.1 request framing (RFC 9112) over a reassembled byte stream:
//! `RequestFramer` turns the client->server bytes of one connection into `HttpRequest`s,
//! drops (incomplete, too large, unparseable) and counts of bytes that are not requests.
//! `HttpRequest` and `Header` are the contract the replay stage relies on.

mod checks;
mod chunked;
mod framer;
mod sync;
#[cfg(test)]
mod tests;

pub use checks::{absolute_form, NotCopied};
pub use framer::{DropReason, FramerEvent, FramerLimits, NotHttpKind, RequestFramer};

use std::cell::RefCell;

/// A header as it was sent: name and value bytes exactly as on the wire
/// (the value without the surrounding optional whitespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// One complete request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Timestamp of the packet that carried the first byte of the request.
    pub ts_nanos: u64,
    pub method: String,
    /// The request-target exactly as sent (origin-, absolute-, authority- or asterisk-form).
    pub target: Vec<u8>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// All headers in order, as sent.
    pub headers: Vec<Header>,
    /// The body bytes; when the request was chunked, the de-chunked content.
    pub body: Vec<u8>,
    /// True when the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Trailer fields of a chunked body, in order.
    pub trailers: Vec<Header>,
}

impl HttpRequest {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }
}

thread_local! {
    /// Requests their consumer was done with (`recycle`): the framer refills their
    /// buffers instead of allocating five or more per request, which was a tenth of
    /// `inspect`. Per thread, so framers need no shared state; bounded by `MAX_SPARE`.
    static SPARE: RefCell<Vec<HttpRequest>> = const { RefCell::new(Vec::new()) };
}

/// Requests kept for reuse per thread.
const MAX_SPARE: usize = 16;
/// A recycled body keeps at most this much capacity, so the spares stay small whatever
/// went through (heads are already held to `FramerLimits::max_head`).
const MAX_SPARE_BODY: usize = 16 * 1024;

/// Hands a request back once it is no longer needed; the next request framed on this
/// thread reuses its allocations. Optional: dropping a request is always fine.
pub fn recycle(mut req: HttpRequest) {
    if req.body.capacity() > MAX_SPARE_BODY {
        req.body = Vec::new();
    }
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(req);
        }
    });
}

/// A request with the given head, built in a recycled one when there is one.
fn new_request(
    ts_nanos: u64,
    method: &str,
    target: &[u8],
    version_minor: u8,
    fields: &[httparse::Header<'_>],
) -> HttpRequest {
    let mut req = SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| HttpRequest {
            ts_nanos: 0,
            method: String::new(),
            target: Vec::new(),
            version_minor: 1,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        });
    req.ts_nanos = ts_nanos;
    req.method.clear();
    req.method.push_str(method);
    req.target.clear();
    req.target.extend_from_slice(target);
    req.version_minor = version_minor;
    req.headers.truncate(fields.len());
    for (i, field) in fields.iter().enumerate() {
        match req.headers.get_mut(i) {
            Some(header) => {
                header.name.clear();
                header.name.push_str(field.name);
                header.value.clear();
                header.value.extend_from_slice(field.value);
            }
            None => req.headers.push(Header {
                name: field.name.to_owned(),
                value: field.value.to_vec(),
            }),
        }
    }
    req.body.clear();
    req.chunked = false;
    req.trailers.clear();
    req
}

#[cfg(test)]
mod recycle_tests {
    use super::*;

    fn frame(stream: &[u8]) -> Vec<FramerEvent> {
        let mut framer = RequestFramer::new(FramerLimits::default());
        let mut out = Vec::new();
        // Small pieces, so requests are built while others are still in flight.
        for (i, piece) in stream.chunks(7).enumerate() {
            framer.push(i as u64, piece, &mut out);
        }
        framer.finish(99, &mut out);
        out
    }

    fn recycle_all(events: Vec<FramerEvent>) {
        for ev in events {
            if let FramerEvent::Request(req) = ev {
                recycle(req);
            }
        }
    }

    /// Requests built in recycled ones equal those built fresh: nothing of the earlier
    /// request (longer values, more headers, body, trailers, chunked) leaks through.
    #[test]
    fn recycled_requests_carry_nothing_over() {
        let big = b"POST /a/long/target?with=query HTTP/1.1\r\nHost: first.example\r\n\
            X-One: 1111111111\r\nX-Two: 2222222222\r\nX-Three: 3\r\n\
            Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTrailer-A: t\r\n\r\n\
            PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
        let small =
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n\
            DELETE /c HTTP/1.1\r\nHost: y\r\nA: b\r\nC: d\r\n\r\n";
        SPARE.with_borrow_mut(Vec::clear);
        let fresh = frame(small);
        let first = frame(big);
        assert_eq!(
            first
                .iter()
                .filter(|e| matches!(e, FramerEvent::Request(_)))
                .count(),
            2
        );
        recycle_all(first);
        assert_eq!(SPARE.with_borrow(Vec::len), 2);
        let reused = frame(small);
        assert_eq!(SPARE.with_borrow(Vec::len), 0);
        assert_eq!(reused, fresh);
        // More spares than kept: the pool stays bounded.
        let many: Vec<_> = (0..MAX_SPARE).map(|_| frame(small)).collect();
        for events in many {
            recycle_all(events);
        }
        assert_eq!(SPARE.with_borrow(Vec::len), MAX_SPARE);
    }
}

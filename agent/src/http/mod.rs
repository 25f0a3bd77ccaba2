//! Incremental HTTP/1.1 request framing (RFC 9112) over a reassembled byte stream:
//! `RequestFramer` turns the client->server bytes of one connection into `Request`s,
//! drops (incomplete, too large, unparseable) and counts of bytes that are not requests.
//! `Request` and `Header` are the contract the replay stage relies on.

mod checks;
mod chunked;
mod framer;
mod sync;
#[cfg(test)]
mod tests;

pub use checks::absolute_form;
pub(crate) use checks::{normalised_authority, valid_authority};
pub use framer::{FramerLimits, RequestFramer};
pub(crate) use sync::is_tchar;

use crate::request::{Header, Protocol, Request};

use std::cell::RefCell;

thread_local! {
    /// Requests their consumer was done with (`recycle`): the framer refills their
    /// buffers instead of allocating five or more per request, which was a tenth of
    /// `inspect`. Per thread, so framers need no shared state; bounded by `MAX_SPARE`.
    static SPARE: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
}

/// Requests kept for reuse per thread.
const MAX_SPARE: usize = 16;
/// A recycled body keeps at most this much capacity, so the spares stay small whatever
/// went through (heads are already held to `FramerLimits::max_head`).
const MAX_SPARE_BODY: usize = 16 * 1024;

/// Hands a request back once it is no longer needed; the next request framed on this
/// thread reuses its allocations. Optional: dropping a request is always fine.
pub fn recycle(mut req: Request) {
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
) -> Request {
    let mut req = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
    req.ts_nanos = ts_nanos;
    req.protocol = Protocol::Http1;
    req.stream_id = 0;
    req.h2_authority = None;
    req.scheme.clear();
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
    use crate::request::RequestEvent;

    fn frame(stream: &[u8]) -> Vec<RequestEvent> {
        let mut framer = RequestFramer::new(FramerLimits::default());
        let mut out = Vec::new();
        // Small pieces, so requests are built while others are still in flight.
        for (i, piece) in stream.chunks(7).enumerate() {
            framer.push(i as u64, piece, &mut out);
        }
        framer.finish(99, &mut out);
        out
    }

    fn recycle_all(events: Vec<RequestEvent>) {
        for ev in events {
            if let RequestEvent::Request(req) = ev {
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
                .filter(|e| matches!(e, RequestEvent::Request(_)))
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

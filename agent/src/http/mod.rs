//! Incremental HTTP/1.1 request framing (RFC 9112) over a reassembled byte stream:
//! `RequestFramer` turns the client->server bytes of one connection into `HttpRequest`s,
//! drops (incomplete, too large, unparseable) and counts of bytes that are not requests.
//! `HttpRequest` and `Header` are the contract the replay stage relies on.

mod chunked;
mod framer;
mod sync;
#[cfg(test)]
mod tests;

pub use framer::{DropReason, FramerEvent, FramerLimits, NotHttpKind, RequestFramer};

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

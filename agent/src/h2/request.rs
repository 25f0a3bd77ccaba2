//! From a decoded header list to a `Request`, judged the way RFC 9113 §8 asks a server
//! to: a malformed request is a stream error (the server resets the stream and never
//! processes it), so it is counted and never copied. Only the client's fields are known
//! here; where a server could go either way, the answer is the one that copies less.

use crate::http::{normalised_authority, valid_authority};
use crate::request::{DropReason, Header, NotCopied, Protocol, Request};

use super::hpack::Field;

/// Fields RFC 9113 §8.2.2 forbids in HTTP/2 (connection-specific).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// A field value a server accepts (RFC 9113 §8.2.1): no NUL, CR or LF, no leading or
/// trailing white space. gRPC's true binary metadata (a `-bin` value starting with NUL,
/// sent only between peers that both advertised setting 0xfe03) is the one exception.
fn valid_value(name: &[u8], value: &[u8]) -> bool {
    if name.ends_with(b"-bin") && value.first() == Some(&0) {
        return true;
    }
    !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
        && !matches!(value.first(), Some(b' ' | b'\t'))
        && !matches!(value.last(), Some(b' ' | b'\t'))
}

/// A field name a server accepts: a non-empty token in lower case (§8.2.1).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| crate::http::is_tchar(b) && !b.is_ascii_uppercase())
}

/// What a request's header block says, before its body is seen.
#[derive(Debug)]
pub struct Head {
    pub request: Request,
    /// `content-length`, which the DATA frames must match (§8.1.1).
    pub content_length: Option<u64>,
    /// Why the request is not copied even if it completes (`NotCopied`).
    pub not_copied: Option<NotCopied>,
}

/// Builds the request of a stream's first header block. `Err` is why a server treats
/// it as malformed (with the method, when one was sent).
pub fn request_head(
    ts_nanos: u64,
    stream_id: u32,
    fields: Vec<Field>,
) -> Result<Head, (DropReason, Option<String>)> {
    let mut req = Request {
        ts_nanos,
        protocol: Protocol::H2,
        stream_id,
        ..Request::default()
    };
    let (mut method, mut path, mut authority, mut scheme, mut protocol) =
        (None, None, None, None, None);
    let mut regular = false;
    let mut content_length = None;
    let mut hosts = 0;
    let malformed = |why, method: &Option<Vec<u8>>| {
        let method = method
            .as_deref()
            .map(|m: &[u8]| String::from_utf8_lossy(m).into_owned());
        Err((DropReason::Unparseable(why), method))
    };
    for (name, value) in fields {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular {
                return malformed("pseudo-header field after a regular field", &method);
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"path" => &mut path,
                b"authority" => &mut authority,
                b"scheme" => &mut scheme,
                b"protocol" => &mut protocol,
                _ => return malformed("unknown pseudo-header field", &method),
            };
            if slot.is_some() {
                return malformed("pseudo-header field sent twice", &method);
            }
            if !valid_value(&name, &value) {
                return malformed("invalid pseudo-header value", &method);
            }
            *slot = Some(value);
            continue;
        }
        regular = true;
        if !valid_name(&name) {
            return malformed("invalid or upper-case field name", &method);
        }
        if !valid_value(&name, &value) {
            return malformed("invalid field value", &method);
        }
        if CONNECTION_SPECIFIC.contains(&name.as_slice()) {
            return malformed("connection-specific field", &method);
        }
        if name == b"te" && value != b"trailers" {
            return malformed("te other than trailers", &method);
        }
        if name == b"content-length" {
            let parsed = std::str::from_utf8(&value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, content_length) {
                (None, _) => return malformed("invalid content-length", &method),
                (Some(n), Some(m)) if n != m => {
                    return malformed("content-length values that differ", &method)
                }
                (Some(n), _) => content_length = Some(n),
            }
        }
        if name == b"host" {
            hosts += 1;
        }
        // Field names are ASCII tokens (checked above).
        let name = String::from_utf8(name).unwrap_or_default();
        req.headers.push(Header { name, value });
    }
    let Some(method_bytes) = method.clone() else {
        return malformed("no :method", &method);
    };
    if method_bytes.is_empty() || !method_bytes.iter().all(|&b| crate::http::is_tchar(b)) {
        return malformed("invalid :method", &method);
    }
    req.method = String::from_utf8(method_bytes).unwrap_or_default();
    let mut not_copied = None;
    if req.method == "CONNECT" {
        // A tunnel (or, with :protocol, RFC 8441's WebSocket over HTTP/2): what follows
        // on the stream is not a request.
        not_copied = Some(NotCopied::Connect);
    } else {
        if protocol.is_some() {
            return malformed(":protocol without CONNECT", &method);
        }
        let (Some(p), Some(s)) = (&path, &scheme) else {
            return malformed("no :path or :scheme", &method);
        };
        match p.as_slice() {
            [b'/', ..] => {}
            b"*" if req.method == "OPTIONS" => {
                not_copied = Some(NotCopied::OptionsAsterisk);
            }
            _ => return malformed("invalid :path", &method),
        }
        if p.contains(&b'#') || p.iter().any(|b| !b.is_ascii_graphic()) {
            return malformed("invalid :path", &method);
        }
        if s.is_empty()
            || !s
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        {
            return malformed("invalid :scheme", &method);
        }
    }
    if hosts > 1 {
        return malformed("more than one host field", &method);
    }
    let host = req.header("host").map(<[u8]>::to_vec);
    for a in authority.iter().chain(host.iter()) {
        if a.is_empty() && req.method != "CONNECT" && authority.is_none() {
            return malformed("empty host", &method);
        }
        if !a.is_empty() && !valid_authority(a) {
            return malformed("invalid :authority or host", &method);
        }
    }
    // RFC 9113 §8.3.1: a server that sees both may take either; a copy routed by the
    // one the server did not use would leave the shadow route.
    if let (Some(a), Some(h)) = (&authority, &host) {
        let scheme = scheme.as_deref().unwrap_or(b"http");
        if normalised_authority(a, scheme) != normalised_authority(h, scheme) {
            return malformed(":authority disagrees with host", &method);
        }
    }
    if authority.is_none() && host.is_none() && not_copied.is_none() {
        return malformed("no :authority and no host", &method);
    }
    req.target = path.unwrap_or_default();
    req.h2_authority = authority;
    req.scheme = scheme.unwrap_or_default();
    Ok(Head {
        request: req,
        content_length,
        not_copied,
    })
}

/// Checks a trailing header block: no pseudo-header fields (§8.1), valid names/values.
pub fn trailers(fields: Vec<Field>) -> Result<Vec<Header>, &'static str> {
    let mut out = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        if name.starts_with(b":") {
            return Err("pseudo-header field in trailers");
        }
        if !valid_name(&name) || !valid_value(&name, &value) {
            return Err("invalid trailer field");
        }
        if CONNECTION_SPECIFIC.contains(&name.as_slice()) {
            return Err("connection-specific field in trailers");
        }
        let name = String::from_utf8(name).unwrap_or_default();
        out.push(Header { name, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, value: &str) -> Field {
        (name.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    fn grpc_fields() -> Vec<Field> {
        vec![
            f(":method", "POST"),
            f(":scheme", "http"),
            f(":path", "/helloworld.Greeter/SayHello"),
            f(":authority", "grpc-hello.example.cn:8000"),
            f("content-type", "application/grpc"),
            f("te", "trailers"),
            f("grpc-timeout", "5S"),
        ]
    }

    #[test]
    fn a_grpc_call_becomes_a_request() {
        let head = request_head(7, 3, grpc_fields()).unwrap();
        let r = &head.request;
        assert_eq!(r.protocol, Protocol::H2);
        assert_eq!(r.stream_id, 3);
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, b"/helloworld.Greeter/SayHello");
        assert_eq!(r.authority(), Some(&b"grpc-hello.example.cn:8000"[..]));
        assert_eq!(r.scheme, b"http");
        assert_eq!(r.headers.len(), 3);
        assert!(r.is_grpc());
        assert!(head.not_copied.is_none());
    }

    #[test]
    fn malformed_requests_are_unparseable_with_their_method() {
        let cases: Vec<(Vec<Field>, &str)> = vec![
            (
                vec![f(":scheme", "http"), f(":path", "/"), f(":authority", "a")],
                "no :method",
            ),
            (
                vec![f(":method", "GET"), f(":path", "/"), f(":authority", "a")],
                "no :path or :scheme",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "x"),
                    f(":authority", "a"),
                ],
                "invalid :path",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("X-Up", "1"),
                ],
                "invalid or upper-case field name",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("connection", "close"),
                ],
                "connection-specific field",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("te", "gzip"),
                ],
                "te other than trailers",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f("x", "1"),
                    f(":path", "/"),
                    f(":authority", "a"),
                ],
                "pseudo-header field after a regular field",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                ],
                "pseudo-header field sent twice",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("host", "b"),
                ],
                ":authority disagrees with host",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "u@a"),
                ],
                "invalid :authority or host",
            ),
            (
                vec![f(":method", "GET"), f(":scheme", "http"), f(":path", "/")],
                "no :authority and no host",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("content-length", "1"),
                    f("content-length", "2"),
                ],
                "content-length values that differ",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f("x", "a\r\nb"),
                ],
                "invalid field value",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                    f(":authority", "a"),
                    f(":protocol", "websocket"),
                ],
                ":protocol without CONNECT",
            ),
        ];
        for (fields, why) in cases {
            let err = request_head(0, 1, fields).unwrap_err();
            assert_eq!(err.0, DropReason::Unparseable(why), "{why}");
        }
        let err = request_head(0, 1, vec![f(":method", "GET"), f(":scheme", "http")]).unwrap_err();
        assert_eq!(err.1.as_deref(), Some("GET"));
    }

    #[test]
    fn authority_and_host_that_agree_are_fine_and_host_alone_is_enough() {
        let mut fields = grpc_fields();
        fields.push(f("host", "GRPC-hello.example.cn:8000"));
        assert!(request_head(0, 1, fields).is_ok());
        let head = request_head(
            0,
            1,
            vec![
                f(":method", "GET"),
                f(":scheme", "http"),
                f(":path", "/"),
                f("host", "h:80"),
            ],
        )
        .unwrap();
        assert_eq!(head.request.authority(), Some(&b"h:80"[..]));
    }

    #[test]
    fn connect_and_options_asterisk_are_not_copied() {
        let head = request_head(
            0,
            1,
            vec![f(":method", "CONNECT"), f(":authority", "a:443")],
        )
        .unwrap();
        assert_eq!(head.not_copied, Some(NotCopied::Connect));
        let head = request_head(
            0,
            1,
            vec![
                f(":method", "OPTIONS"),
                f(":scheme", "http"),
                f(":path", "*"),
                f(":authority", "a"),
            ],
        )
        .unwrap();
        assert_eq!(head.not_copied, Some(NotCopied::OptionsAsterisk));
    }

    #[test]
    fn true_binary_metadata_is_accepted_only_on_bin_keys() {
        let mut fields = grpc_fields();
        fields.push((b"x-trace-bin".to_vec(), vec![0, 1, 2, 0xff]));
        assert!(request_head(0, 1, fields).is_ok());
        let mut fields = grpc_fields();
        fields.push((b"x-trace".to_vec(), vec![0, 1]));
        assert!(request_head(0, 1, fields).is_err());
    }

    #[test]
    fn trailers_refuse_pseudo_fields() {
        assert!(trailers(vec![f("grpc-status", "0")]).is_ok());
        assert_eq!(
            trailers(vec![f(":path", "/")]),
            Err("pseudo-header field in trailers")
        );
    }
}

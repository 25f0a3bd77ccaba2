//! Recognising what a byte stream is at the points where the framer has no trusted
//! boundary: the start of a stream, after a capture gap, after an `Upgrade` or `CONNECT`.
//! Two questions live here: "is this stream HTTP/1.x requests at all?" (`classify`) and
//! "does a request line start here?" (`line_check`).

use crate::request::NotHttpKind;

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest method token taken as a request line while resynchronising or at the
/// start of a stream. Registered methods are far shorter; the cap keeps text that merely
/// contains " HTTP/1.1" from being taken for a request line after a long word.
pub(crate) const MAX_METHOD: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Classified {
    /// Not enough bytes to tell.
    NeedMore,
    /// None of the known non-HTTP/1.x starts: go on looking for requests.
    Http,
    NotHttp(NotHttpKind),
}

/// `Some(true)`: `bytes` starts with `pat`; `Some(false)`: it cannot; `None`: too short.
fn starts_with(bytes: &[u8], pat: &[u8], ignore_case: bool) -> Option<bool> {
    let n = bytes.len().min(pat.len());
    let same = if ignore_case {
        bytes[..n].eq_ignore_ascii_case(&pat[..n])
    } else {
        bytes[..n] == pat[..n]
    };
    match (same, n == pat.len()) {
        (false, _) => Some(false),
        (true, true) => Some(true),
        (true, false) => None,
    }
}

/// Whether `bytes` start with an HTTP/2 SETTINGS frame header (not an ACK) on stream 0;
/// `None` while fewer than 9 bytes leave it open.
fn h2_server_start(bytes: &[u8]) -> Option<bool> {
    const SETTINGS: [u8; 9] = [0, 0, 0, 0x04, 0, 0, 0, 0, 0];
    let n = bytes.len().min(9);
    // The length (bytes 1-2 at most 16384 here) is free; the rest must match.
    let fixed = |i: usize| i == 0 || i >= 3;
    if (0..n).any(|i| fixed(i) && bytes[i] != SETTINGS[i]) {
        return Some(false);
    }
    if n < 9 {
        return None;
    }
    let len = usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
    Some(len % 6 == 0 && len <= 16_384)
}

/// What the bytes at a stream start (or resynchronisation start) are.
pub(crate) fn classify(bytes: &[u8]) -> Classified {
    if bytes.is_empty() {
        return Classified::NeedMore;
    }
    // A TLS record header: handshake content type, then a 3.x version (SSL 3.0 .. TLS 1.3
    // all put 0x03 0x00..=0x04 on the wire).
    let tls = match bytes {
        [0x16] | [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] => Some(*minor <= 0x04),
        _ => Some(false),
    };
    let checks = [
        (
            starts_with(bytes, H2_PREFACE, false),
            NotHttpKind::Http2Preface,
        ),
        // The server's side of an HTTP/2 connection starts with a SETTINGS frame on
        // stream 0 (RFC 9113 §3.4); no request line starts with a NUL.
        (h2_server_start(bytes), NotHttpKind::Response),
        (tls, NotHttpKind::Tls),
        // A status line: this is the server's direction (some servers write it in lower
        // case, which clients accept).
        (starts_with(bytes, b"HTTP/1.", true), NotHttpKind::Response),
    ];
    let mut undecided = false;
    for (verdict, kind) in checks {
        match verdict {
            Some(true) => return Classified::NotHttp(kind),
            Some(false) => {}
            None => undecided = true,
        }
    }
    if undecided {
        Classified::NeedMore
    } else {
        Classified::Http
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineCheck {
    /// A prefix of something that may still become a request line.
    Partial,
    /// Cannot be a request line, whatever follows.
    Invalid,
    /// `METHOD SP target SP HTTP/1.x` and its line end; the length including the end.
    Request(usize),
    /// `METHOD SP /target` and a line end, no version: an HTTP/0.9 simple request.
    Http09(usize),
}

/// RFC 9110 tchar.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `is_tchar` as a table: it runs on every method byte, and searching the symbol list
/// cost a call per byte.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// While hunting for a request line inside untrusted bytes, only method names shaped
/// like the registered ones (upper case, `-`, `_`) count: text in bodies is mostly mixed
/// case, and every method a server routes is upper case.
fn is_strict_method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Bytes a request-target may hold on the wire: visible ASCII and obs-text; never
/// space or control bytes.
fn is_target_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | 0x80..=0xff)
}

/// Checks the line at the start of `bytes`. `strict` restricts the method to the
/// upper-case shape (used while hunting); otherwise any token is a method. The answer
/// for a prefix is always `Partial` or the answer for the whole line, so that feeding
/// the same bytes in different pieces decides the same way.
pub(crate) fn line_check(bytes: &[u8], strict: bool) -> LineCheck {
    let method_ok = |b: u8| {
        if strict {
            is_strict_method_char(b)
        } else {
            is_tchar(b)
        }
    };
    let mut i = 0;
    while i < bytes.len() && method_ok(bytes[i]) {
        i += 1;
        if i > MAX_METHOD {
            return LineCheck::Invalid;
        }
    }
    if i == bytes.len() {
        return LineCheck::Partial;
    }
    if i == 0 || bytes[i] != b' ' {
        return LineCheck::Invalid;
    }
    let method = &bytes[..i];
    i += 1;
    let target_start = i;
    while i < bytes.len() && is_target_char(bytes[i]) {
        i += 1;
    }
    if i == bytes.len() {
        return LineCheck::Partial;
    }
    if i == target_start {
        return LineCheck::Invalid;
    }
    // What counts as an HTTP/0.9 simple request: an upper-case method and an absolute
    // path, or one of the methods clients really send with a broken target
    // (`GET HTTP/1.1`); other two-word lines are text, not requests.
    let simple = method.iter().all(u8::is_ascii_uppercase)
        && (bytes[target_start] == b'/' || matches!(method, b"GET" | b"HEAD" | b"POST"));
    match bytes[i] {
        b' ' => {}
        b'\r' | b'\n' if !simple => return LineCheck::Invalid,
        b'\n' => return LineCheck::Http09(i + 1),
        b'\r' => {
            return match bytes.get(i + 1) {
                None => LineCheck::Partial,
                Some(b'\n') => LineCheck::Http09(i + 2),
                Some(_) => LineCheck::Invalid,
            }
        }
        _ => return LineCheck::Invalid,
    }
    i += 1;
    const VERSION: &[u8] = b"HTTP/1.";
    let rest = &bytes[i..];
    match starts_with(rest, VERSION, false) {
        None => return LineCheck::Partial,
        Some(false) => return LineCheck::Invalid,
        Some(true) => {}
    }
    i += VERSION.len();
    match bytes.get(i) {
        None => return LineCheck::Partial,
        Some(b'0' | b'1') => {}
        Some(_) => return LineCheck::Invalid,
    }
    i += 1;
    match (bytes.get(i), bytes.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => LineCheck::Partial,
        (Some(b'\n'), _) => LineCheck::Request(i + 1),
        (Some(b'\r'), Some(b'\n')) => LineCheck::Request(i + 2),
        _ => LineCheck::Invalid,
    }
}

/// A whole line that starts like a request (upper-case method, space) and ends with an
/// HTTP/1.x version, whatever lies between: a request line a client got wrong, as
/// opposed to bytes of some other protocol.
pub(crate) fn is_broken_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method_len = line
        .iter()
        .take_while(|&&b| is_strict_method_char(b))
        .count();
    (1..=MAX_METHOD).contains(&method_len)
        && line.get(method_len) == Some(&b' ')
        && (line.ends_with(b" HTTP/1.0") || line.ends_with(b" HTTP/1.1"))
}

/// The method at the start of a (possibly partial or broken) head, for drop records.
pub(crate) fn method_hint(head: &[u8]) -> Option<String> {
    let end = head.iter().position(|&b| b == b' ')?;
    let method = &head[..end];
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    // tchar is ASCII, so this cannot fail; no panic either way.
    std::str::from_utf8(method).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_needs_only_enough_bytes_to_rule_out_each_kind() {
        assert_eq!(classify(b""), Classified::NeedMore);
        assert_eq!(classify(b"G"), Classified::Http);
        assert_eq!(classify(b"PR"), Classified::NeedMore);
        assert_eq!(classify(b"POST"), Classified::Http);
        assert_eq!(classify(b"HE"), Classified::Http);
        assert_eq!(classify(b"HTTP/1"), Classified::NeedMore);
        assert_eq!(
            classify(b"http/1.1 200 OK"),
            Classified::NotHttp(NotHttpKind::Response)
        );
        assert_eq!(classify(&[0x16, 0x03]), Classified::NeedMore);
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02]),
            Classified::NotHttp(NotHttpKind::Tls)
        );
        assert_eq!(classify(&[0x16, 0x03, 0x05]), Classified::Http);
        assert_eq!(classify(&H2_PREFACE[..23]), Classified::NeedMore);
        assert_eq!(
            classify(H2_PREFACE),
            Classified::NotHttp(NotHttpKind::Http2Preface)
        );
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Classified::Http);
        // An HTTP/2 server's first frame: SETTINGS on stream 0 (the server's side).
        let settings = [0, 0, 12, 4, 0, 0, 0, 0, 0];
        assert_eq!(classify(&settings[..5]), Classified::NeedMore);
        assert_eq!(
            classify(&settings),
            Classified::NotHttp(NotHttpKind::Response)
        );
        assert_eq!(classify(&[0, 0, 7, 4, 0, 0, 0, 0, 0]), Classified::Http);
        assert_eq!(classify(&[0, 0, 6, 4, 1, 0, 0, 0, 0]), Classified::Http);
    }

    #[test]
    fn tchar_table_is_the_rfc_9110_token_set() {
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), rfc, "byte {b:#04x}");
        }
    }

    #[test]
    fn line_check_answers_prefixes_consistently() {
        let cases: &[(&[u8], bool, LineCheck)] = &[
            (b"GET / HTTP/1.1\r\n", true, LineCheck::Request(16)),
            (b"GET / HTTP/1.0\n", true, LineCheck::Request(15)),
            (b"get / HTTP/1.1\r\n", true, LineCheck::Invalid),
            (b"get / HTTP/1.1\r\n", false, LineCheck::Request(16)),
            (b"GET /zeek.html\n", false, LineCheck::Http09(15)),
            (b"GET /x\r\n", true, LineCheck::Http09(8)),
            (b"GET HTTP/1.1\r\n", false, LineCheck::Http09(14)),
            (b"PUT HTTP/1.1\r\n", false, LineCheck::Invalid),
            (b"Hello world\r\n", false, LineCheck::Invalid),
            (b"GET / HTTP/2.0\r\n", false, LineCheck::Invalid),
            (b"GET  / HTTP/1.1\r\n", false, LineCheck::Invalid),
            (b"T / HTTP\n", false, LineCheck::Invalid),
            (b"GET / HTTP/1.1\rX", false, LineCheck::Invalid),
        ];
        for (line, strict, want) in cases {
            assert_eq!(line_check(line, *strict), *want, "{:?}", line);
            for cut in 0..line.len() {
                let got = line_check(&line[..cut], *strict);
                assert!(
                    got == LineCheck::Partial || got == *want,
                    "{:?} cut at {cut}: {got:?}",
                    line
                );
            }
        }
    }

    #[test]
    fn broken_request_lines_are_told_from_other_protocols() {
        assert!(is_broken_request_line(b"CONNECT host:25 / HTTP/1.0\r\n"));
        assert!(is_broken_request_line(b"GET a b HTTP/1.1\n"));
        assert!(!is_broken_request_line(b"SSH-2.0-OpenSSH_9.6 HTTP/1.1\r\n"));
        assert!(!is_broken_request_line(b"220 mail ESMTP\r\n"));
        assert!(!is_broken_request_line(b"GET / HTTP/2.0\r\n"));
        assert!(!is_broken_request_line(b"get / HTTP/1.1\r\n"));
    }

    #[test]
    fn method_hint_takes_a_token_before_the_first_space() {
        assert_eq!(method_hint(b"POST /x HTTP/1.1"), Some("POST".into()));
        assert_eq!(method_hint(b"POST"), None);
        assert_eq!(method_hint(b"PO\x01ST /"), None);
    }
}

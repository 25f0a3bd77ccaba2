//! Message body framing rules (RFC 9112 §6): which of Content-Length, chunked or no
//! body applies to a request head, and the chunk-size line of a chunked body. Anything
//! ambiguous is an error here, never a guess: these are the places request smuggling
//! lives.

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Neither Content-Length nor Transfer-Encoding: requests are never close-delimited,
    /// so there is no body.
    NoBody,
    Length(u64),
    Chunked,
}

/// The longest chunk-size line (size, extensions, CRLF) accepted. Extensions carry a few
/// parameters at most; a longer line is an attack on buffers, not a request.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;

/// Optional white space (SP / HTAB) trimmed from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `1*DIGIT` as a u64: no sign, no space, no empty value, no overflow. Leading zeros are
/// part of the grammar and accepted (`0050` is 50).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The framing of a request from its version and header fields (name, value).
/// Errors say why the framing is refused, for logs and tests.
pub(crate) fn framing_of<'a>(
    version_minor: u8,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Framing, &'static str> {
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut codings = 0usize;
    let mut only_chunked = true;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 §6.3 (5): a list of identical values ("5, 5") or repeated
            // identical fields may be taken as that one value; anything else is invalid.
            for part in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(part)).ok_or("invalid Content-Length")?;
                match length {
                    Some(prev) if prev != n => return Err("conflicting Content-Length values"),
                    _ => length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for part in value.split(|&b| b == b',') {
                let coding = trim_ows(part);
                // List syntax allows empty elements; they name no coding.
                if coding.is_empty() {
                    continue;
                }
                codings += 1;
                only_chunked &= coding.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
    if !te_seen {
        return Ok(length.map_or(Framing::NoBody, Framing::Length));
    }
    if length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if version_minor == 0 {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        return Err("Transfer-Encoding in an HTTP/1.0 request");
    }
    // We forward plain chunked only: another coding (gzip, identity, a repeated chunked)
    // either makes the length unknowable or is a known desync trick.
    if !only_chunked || codings != 1 {
        return Err("Transfer-Encoding other than exactly chunked");
    }
    Ok(Framing::Chunked)
}

/// The size from a chunk-size line (without its CRLF): `1*HEXDIG`, then optional
/// extensions `*( BWS ";" BWS name [ BWS "=" BWS value ] )` which are not interpreted,
/// only checked to hold no control bytes.
pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("invalid chunk size");
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or("chunk size overflows")?;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if ext.is_empty() && rest.is_empty() {
        return Ok(size);
    }
    // White space alone after the size is BWS before nothing: not in the grammar.
    if ext.first() != Some(&b';') || rest.iter().any(|&b| rest_is_control(b)) {
        return Err("invalid chunk extension");
    }
    Ok(size)
}

fn rest_is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(minor: u8, headers: &[(&str, &str)]) -> Result<Framing, &'static str> {
        framing_of(
            minor,
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    #[test]
    fn content_length_values() {
        assert_eq!(framing(1, &[]), Ok(Framing::NoBody));
        assert_eq!(
            framing(1, &[("Content-Length", "5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(1, &[("content-length", "5, 5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(1, &[("Content-Length", "5"), ("Content-Length", "5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(1, &[("Content-Length", "00000000000000000000000000000050")]),
            Ok(Framing::Length(50))
        );
        assert_eq!(
            framing(1, &[("Content-Length", "18446744073709551615")]),
            Ok(Framing::Length(u64::MAX))
        );
        for bad in [
            "",
            "-1",
            "+5",
            "5a",
            " ",
            "5,",
            "18446744073709551616",
            "0x10",
            "5 5",
        ] {
            assert_eq!(
                framing(1, &[("Content-Length", bad)]),
                Err("invalid Content-Length"),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing(1, &[("Content-Length", "5"), ("Content-Length", "6")]),
            Err("conflicting Content-Length values")
        );
        assert_eq!(
            framing(1, &[("Content-Length", "5, 6")]),
            Err("conflicting Content-Length values")
        );
    }

    #[test]
    fn transfer_encoding_values() {
        assert_eq!(
            framing(1, &[("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(1, &[("transfer-encoding", "Chunked")]),
            Ok(Framing::Chunked)
        );
        for bad in [
            "chunked, identity",
            "gzip, chunked",
            "identity",
            "",
            "chunked, chunked",
            "chunked;q=1",
        ] {
            assert_eq!(
                framing(1, &[("Transfer-Encoding", bad)]),
                Err("Transfer-Encoding other than exactly chunked"),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing(
                1,
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked")
                ]
            ),
            Err("Transfer-Encoding other than exactly chunked")
        );
        assert_eq!(
            framing(
                1,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "50")]
            ),
            Err("both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            framing(0, &[("Transfer-Encoding", "chunked")]),
            Err("Transfer-Encoding in an HTTP/1.0 request")
        );
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"1aF"), Ok(0x1af));
        assert_eq!(parse_chunk_size(b"000000000000000000005"), Ok(5));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_chunk_size(b"5;name=value"), Ok(5));
        assert_eq!(parse_chunk_size(b"5 ; name=\"q v\""), Ok(5));
        assert_eq!(
            parse_chunk_size(b"10000000000000000"),
            Err("chunk size overflows")
        );
        assert_eq!(parse_chunk_size(b""), Err("invalid chunk size"));
        assert_eq!(parse_chunk_size(b"zz"), Err("invalid chunk size"));
        assert_eq!(parse_chunk_size(b"-1"), Err("invalid chunk size"));
        assert_eq!(parse_chunk_size(b"5 "), Err("invalid chunk extension"));
        assert_eq!(parse_chunk_size(b"5x"), Err("invalid chunk extension"));
        assert_eq!(parse_chunk_size(b"5;a\x00"), Err("invalid chunk extension"));
    }
}

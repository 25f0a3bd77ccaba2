//! A target's URL (`http(s)://host[:port][/][@PERCENT]`) and its TLS client
//! configuration. The URL only says where to connect: the copy keeps the captured
//! request-target byte for byte and Host comes from the captured request, so a URL with
//! a path, query or fragment is refused rather than have that part silently dropped.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

use crate::sample::{Percent, PercentError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where copies go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl TargetUrl {
    /// Two URLs with the same key name the same destination: scheme, host (ASCII case
    /// folded, as DNS does) and port (`http://stage` and `http://STAGE:80` are one).
    pub fn destination_key(&self) -> (Scheme, String, u16) {
        (self.scheme, self.host.to_ascii_lowercase(), self.port)
    }
}

/// The first `--target` value that names the same destination as an earlier one, with
/// that earlier one: `(earlier, later)`. Each target samples and sends on its own, so one
/// listed twice would get two copies of every request it keeps. Unparsable values are
/// skipped (their own parser reports them).
pub fn duplicate_target(values: &[String]) -> Option<(&str, &str)> {
    let mut seen: Vec<((Scheme, String, u16), &str)> = Vec::new();
    for value in values {
        let Ok((url, _)) = parse_target(value) else {
            continue;
        };
        let key = url.destination_key();
        if let Some((_, earlier)) = seen.iter().find(|(k, _)| *k == key) {
            return Some((earlier, value));
        }
        seen.push((key, value));
    }
    None
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why a `--target` value is refused. Each one shows the URL as [`redact_userinfo`]
/// gives it, so a password typed into it is never printed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetUrlError {
    #[error("target {0:?} must start with http:// or https://")]
    Scheme(String),
    #[error("target {0:?} holds a space or a control character")]
    Character(String),
    #[error("target {0:?} has no host")]
    NoHost(String),
    #[error("target {0:?}: user info (`user:password@`) is not supported: copies keep the client's Authorization (or --set-header Authorization:... to give them one); `@` only introduces a percent, as in http://stage:8000@12.5")]
    UserInfo(String),
    #[error("target {url:?}: bad port {port:?} (1 to 65535)")]
    Port { url: String, port: String },
    #[error("target {0:?}: unclosed `[` in an IPv6 host")]
    Ipv6(String),
    #[error("target {url:?}: bad percent after `@`: {source}")]
    Percent { url: String, source: PercentError },
    #[error("target {url:?}: a path ({path:?}) is not supported: the URL only says where to connect, and each copy keeps the captured request's path and query byte for byte; give scheme, host and port only (like http://stage:8080), and route copies at the target by their -shadow Host")]
    Path { url: String, path: String },
}

/// What may follow the last `@` of a target as its sampling percent; anything else there
/// is a host after user info.
fn looks_like_percent(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'%')
}

/// `text` with the password of a URL's user info replaced by `***` (`user:***@host`),
/// or all of the user info when it has no `:` (a lone token is as secret as a password).
/// Text without user info comes back as it was. For every message that shows a value
/// that may be a target URL.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.into();
    };
    let rest = &text[start..];
    // The authority ends at the path, query or fragment; a percent suffix may follow a
    // path and hold no `@` of interest.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut at = authority.rfind('@');
    if let Some(i) = at {
        if authority_end == rest.len() && looks_like_percent(&authority[i + 1..]) {
            at = authority[..i].rfind('@');
        }
    }
    let Some(at) = at else {
        return text.into();
    };
    let userinfo = &authority[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{}{shown}{}", &text[..start], &rest[at..]).into()
}

/// Parses `http(s)://host[:port][/]` with an optional `@PERCENT` at the end.
pub fn parse_target(text: &str) -> Result<(TargetUrl, Option<Percent>), TargetUrlError> {
    let shown = redact_userinfo(text).into_owned();
    // The host ends up in logs, summaries and metric labels, and in the TLS server name.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TargetUrlError::Character(shown));
    }
    let (scheme, rest) = if let Some(r) = text.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = text.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(TargetUrlError::Scheme(shown));
    };
    let (rest, percent) = match rest.rsplit_once('@') {
        Some((before, pct)) if looks_like_percent(pct) => {
            let p = pct.parse().map_err(|source| TargetUrlError::Percent {
                url: shown.clone(),
                source,
            })?;
            (before, Some(p))
        }
        _ => (rest, None),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(TargetUrlError::UserInfo(shown));
    }
    // A lone `/` is how many people write a bare origin; anything more would have to be
    // dropped or spliced into the request-target, and the copy is the captured request.
    let path = &rest[authority.len()..];
    if !path.is_empty() && path != "/" {
        return Err(TargetUrlError::Path {
            path: path.to_string(),
            url: shown,
        });
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| TargetUrlError::Ipv6(shown.clone()))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => {
                    return Err(TargetUrlError::Port {
                        url: shown.clone(),
                        port: after.to_string(),
                    })
                }
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(TargetUrlError::NoHost(shown.clone()));
    }
    let port = match port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&n| n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| TargetUrlError::Port {
                url: shown.clone(),
                port: p.to_string(),
            })?,
    };
    Ok((
        TargetUrl {
            scheme,
            host: host.to_string(),
            port,
        },
        percent,
    ))
}

#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("cannot read --target-ca {path}: {source}")]
    CaFile {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--target-ca {0} holds no certificate")]
    CaEmpty(String),
    #[error("--target-ca {path}: certificate rejected: {source}")]
    CaCert { path: String, source: rustls::Error },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How a `https` target's certificate is checked.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra roots (PEM), on top of the public web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate. Off by default; for staging gateways with self-made certs.
    pub insecure: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration of one target.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &opts.ca_file {
            add_pem_roots(&mut roots, path)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `client_config` offering HTTP/2 by ALPN (and nothing else): the HTTP/2 client's.
pub fn h2_client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut config = ClientConfig::clone(&*client_config(opts)?);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::CaFile {
            path: shown.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::CaEmpty(shown));
    }
    for cert in certs {
        roots.add(cert).map_err(|source| TlsSetupError::CaCert {
            path: shown.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The SNI / certificate name for a target host.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// `--insecure`: trusts any certificate, but still checks that the handshake signatures
/// are valid for the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(scheme: Scheme, host: &str, port: u16) -> TargetUrl {
        TargetUrl {
            scheme,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn target_url_table() {
        let ok: &[(&str, TargetUrl, Option<u32>)] = &[
            ("http://stage", url(Scheme::Http, "stage", 80), None),
            ("https://stage", url(Scheme::Https, "stage", 443), None),
            (
                "http://stage:8000@12.5",
                url(Scheme::Http, "stage", 8000),
                Some(125_000),
            ),
            (
                "http://stage:8000/@50",
                url(Scheme::Http, "stage", 8000),
                Some(500_000),
            ),
            ("https://[::1]:8443/", url(Scheme::Https, "::1", 8443), None),
            (
                "http://[fd00::1]@100",
                url(Scheme::Http, "fd00::1", 80),
                Some(1_000_000),
            ),
            ("http://10.0.0.1:9", url(Scheme::Http, "10.0.0.1", 9), None),
        ];
        for (text, want, pct) in ok {
            let (got, p) = parse_target(text).unwrap();
            assert_eq!(&got, want, "{text}");
            assert_eq!(p.map(Percent::ppm), *pct, "{text}");
        }
        assert!(matches!(
            parse_target("ftp://x"),
            Err(TargetUrlError::Scheme(_))
        ));
        for bad in [
            "http://h\r\nX: y",
            "http://h x:80",
            "http://h\0",
            "http://h:80\n@50",
        ] {
            assert!(
                matches!(parse_target(bad), Err(TargetUrlError::Character(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_target("stage:80"),
            Err(TargetUrlError::Scheme(_))
        ));
        assert!(matches!(
            parse_target("http://"),
            Err(TargetUrlError::NoHost(_))
        ));
        assert!(matches!(
            parse_target("http://:80"),
            Err(TargetUrlError::NoHost(_))
        ));
        assert!(matches!(
            parse_target("http://u@h/x"),
            Err(TargetUrlError::UserInfo(_))
        ));
        assert!(matches!(
            parse_target("http://u@h@5"),
            Err(TargetUrlError::UserInfo(_))
        ));
        assert!(matches!(
            parse_target("http://h:0"),
            Err(TargetUrlError::Port { .. })
        ));
        assert!(matches!(
            parse_target("http://h:99999"),
            Err(TargetUrlError::Port { .. })
        ));
        assert!(matches!(
            parse_target("http://h:"),
            Err(TargetUrlError::Port { .. })
        ));
        assert!(matches!(
            parse_target("http://h:+80"),
            Err(TargetUrlError::Port { .. })
        ));
        assert!(matches!(
            parse_target("http://[::1"),
            Err(TargetUrlError::Ipv6(_))
        ));
        assert!(matches!(
            parse_target("http://[::1]x"),
            Err(TargetUrlError::Port { .. })
        ));
        for (bad, path) in [
            ("http://gw:8080/prefix", "/prefix"),
            ("http://gw:8080/prefix/@50", "/prefix/"),
            ("http://gw/?q=1", "/?q=1"),
            ("http://gw?q", "?q"),
            ("http://gw#frag", "#frag"),
            ("https://[::1]:8443//", "//"),
        ] {
            match parse_target(bad) {
                Err(TargetUrlError::Path { path: p, .. }) => assert_eq!(p, path, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let e = parse_target("http://h@120").unwrap_err();
        assert!(e.to_string().contains("above 100"), "{e}");
        assert_eq!(
            url(Scheme::Https, "::1", 8443).to_string(),
            "https://[::1]:8443"
        );
    }

    #[test]
    fn duplicates_are_the_same_scheme_host_and_port() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            duplicate_target(&list(&["http://stage", "http://STAGE:80/@10"])),
            Some(("http://stage", "http://STAGE:80/@10"))
        );
        assert_eq!(
            duplicate_target(&list(&["http://a:1", "http://b:1", "http://a:1@5"])),
            Some(("http://a:1", "http://a:1@5"))
        );
        for distinct in [
            &["http://stage", "https://stage"][..],
            &["http://stage:80", "http://stage:8080"],
            &["http://[::1]:80", "http://127.0.0.1:80"],
            &["http://stage", "ftp://stage", "ftp://stage"],
        ] {
            assert_eq!(duplicate_target(&list(distinct)), None, "{distinct:?}");
        }
    }

    #[test]
    fn user_info_is_refused_and_never_shown() {
        let refused = [
            "http://user:s3cret@127.0.0.1:8080",
            "http://user:s3cret@127.0.0.1:8080@50",
            "http://s3cret@stage",
            "https://user:s3cret@[::1]:8443/x@12.5",
            "http://user:p@s3cret@stage:80",
        ];
        for text in refused {
            let e = parse_target(text).unwrap_err();
            assert!(matches!(e, TargetUrlError::UserInfo(_)), "{text}: {e}");
            let shown = e.to_string();
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("***@"), "{shown}");
        }
        let cases = [
            ("http://u:pw@h:1", "http://u:***@h:1"),
            ("http://u:pw@h:1@50", "http://u:***@h:1@50"),
            ("http://token@h/p?q", "http://***@h/p?q"),
            ("http://u:p@w@h", "http://u:***@h"),
            ("http://h:1@50", "http://h:1@50"),
            ("http://h/x@y", "http://h/x@y"),
            ("no url", "no url"),
        ];
        for (text, want) in cases {
            assert_eq!(redact_userinfo(text), want, "{text}");
        }
        // Other errors of a URL with user info do not show it either.
        for text in [
            "ftp://u:s3cret@h",
            "http://u:s3cret@h:99999",
            "http://u:s3cret@h@150",
        ] {
            let e = parse_target(text).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn tls_configs_build() {
        assert!(client_config(&TlsOptions::default()).is_ok());
        assert!(client_config(&TlsOptions {
            ca_file: None,
            insecure: true
        })
        .is_ok());
        let missing = client_config(&TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            insecure: false,
        });
        assert!(matches!(missing, Err(TlsSetupError::CaFile { .. })));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let r = client_config(&TlsOptions {
            ca_file: Some(empty),
            insecure: false,
        });
        assert!(matches!(r, Err(TlsSetupError::CaEmpty(_))), "{r:?}");
    }
}

//! Shared pieces of the end-to-end replay tests: the `shadowtap` binary run as a child
//! (with its exit code, output and peak memory), its summary parsed, a recording HTTP
//! server that can also misbehave, a builder of synthetic pcapng captures, and launchers
//! of real tools (gunicorn + httpbin, tcpdump).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use shadowtap::capture::pcap_file::PcapngWriter;
use shadowtap::capture::LinkType;

pub fn shadowtap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shadowtap")
}

pub fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/zeek-http")
        .join(name)
}

/// FNV-1a, 64 bits: enough to tell bodies apart in a test, with no dependency.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `host[:port]` with the shadow suffix before the port, as SPEC.md "Host header" says.
pub fn shadow_host(host: &str) -> String {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => format!("{}-shadow{}", &host[..i], &host[i..]),
        _ => format!("{host}-shadow"),
    }
}

// ---------------------------------------------------------------------------------------
// The binary as a child process.

/// How one run of the binary ended.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident set of the child, from `wait4`'s rusage.
    pub max_rss_kib: u64,
}

impl Finished {
    pub fn summary(&self) -> Summary {
        Summary::parse(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "cannot parse the summary ({e}):\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "shadowtap failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `shadowtap ARGS`, killing it past `limit`, and reports how it ended.
pub fn run_shadowtap(args: &[&str], limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = Command::new(shadowtap_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shadowtap");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let pid = child.id() as libc::pid_t;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our own child.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        assert!(got >= 0, "wait4: {}", std::io::Error::last_os_error());
        if got == pid {
            break (status, rusage);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shadowtap {args:?} still running after {limit:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Reaped by wait4 above; dropping a `Child` neither waits nor kills.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Finished {
        code,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed: started.elapsed(),
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------
// The summary that `replay` prints.

#[derive(Debug, Default)]
pub struct TargetSummary {
    pub url: String,
    /// `replayed 2xx`, `not_sampled`, `replay_error connect`, ...
    pub outcomes: BTreeMap<String, u64>,
    pub total: u64,
    /// The summary said `(= requests seen)`.
    pub says_equal: bool,
}

impl TargetSummary {
    pub fn get(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seen: u64,
    pub targets: Vec<TargetSummary>,
}

impl Summary {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Summary::default();
        let mut seen = None;
        for line in text.lines() {
            // `12 requests seen in 0.50s (...)`, `1 request seen in ...`.
            let words: Vec<&str> = line.split_whitespace().collect();
            if seen.is_none()
                && matches!(words.get(1), Some(&"request" | &"requests"))
                && words.get(2) == Some(&"seen")
            {
                seen = Some(
                    words[0]
                        .parse::<u64>()
                        .map_err(|e| format!("{line:?}: {e}"))?,
                );
            } else if let Some(url) = line.strip_prefix("target ") {
                s.targets.push(TargetSummary {
                    url: url.trim().to_string(),
                    ..TargetSummary::default()
                });
            } else if line.starts_with("  ") {
                let t = s.targets.last_mut().ok_or("outcome row before a target")?;
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.first() == Some(&"total") {
                    t.total = words
                        .get(1)
                        .ok_or("total without a number")?
                        .parse()
                        .map_err(|e| format!("{line:?}: {e}"))?;
                    t.says_equal = line.contains("(= requests seen)");
                } else {
                    let (n, label) = words.split_last().ok_or("empty row")?;
                    let n: u64 = n.parse().map_err(|e| format!("{line:?}: {e}"))?;
                    t.outcomes.insert(label.join(" "), n);
                }
            }
        }
        s.seen = seen.ok_or("no `N requests seen in ...` line")?;
        if s.targets.is_empty() {
            return Err("no target section".into());
        }
        Ok(s)
    }

    pub fn target(&self, url_prefix: &str) -> &TargetSummary {
        self.targets
            .iter()
            .find(|t| t.url.starts_with(url_prefix))
            .unwrap_or_else(|| panic!("no target {url_prefix} in {self:#?}"))
    }

    /// Every target's outcome rows add up to its total, which equals the requests seen.
    pub fn assert_adds_up(&self, expected_seen: u64) {
        assert_eq!(self.seen, expected_seen, "requests seen: {self:#?}");
        for t in &self.targets {
            let sum: u64 = t.outcomes.values().sum();
            assert_eq!(sum, t.total, "rows of {} do not add up: {self:#?}", t.url);
            assert_eq!(t.total, self.seen, "total of {}: {self:#?}", t.url);
            assert!(t.says_equal, "summary does not say `(= requests seen)`");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A target that records what it receives.

/// What a test target does with each request it has read.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `200 OK` with a short body, keep-alive.
    Answer,
    /// Reads the request and never answers; keeps the connection open.
    Silent,
    /// Reads the request head, then closes with SO_LINGER 0 (an RST).
    Reset,
    /// Waits, then answers like `Answer`.
    Delay(Duration),
    /// Answers `200` declaring a 1 GiB body and streams zeros until the client leaves.
    Endless,
}

/// One request as it arrived, split from the raw bytes by this file's own parser.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request line and headers, exactly as received (through the blank line).
    pub head: Vec<u8>,
    pub method: String,
    pub target: Vec<u8>,
    pub version: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> String {
        String::from_utf8_lossy(self.header(name).unwrap_or(b"")).into_owned()
    }

    pub fn host(&self) -> String {
        self.header_str("host")
    }
}

pub struct RecordingServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    accepted: Arc<AtomicUsize>,
    streamed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RecordingServer {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let streamed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, a, s, st) = (
            received.clone(),
            accepted.clone(),
            streamed.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                a.fetch_add(1, Ordering::AcqRel);
                let (r, s, b) = (r.clone(), s.clone(), behaviour.clone());
                thread::spawn(move || serve(stream, &b, &r, &s));
            }
        });
        Self {
            addr,
            received,
            accepted,
            streamed,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    pub fn body_bytes_streamed(&self) -> u64 {
        self.streamed.load(Ordering::Acquire)
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; false at end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A whole chunked body at the start of `data`: (decoded body, bytes used), or `None`
/// while more is needed.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = at + find(&data[at..], b"\r\n")?;
        let line = std::str::from_utf8(&data[at..line_end]).expect("chunk size line");
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        at = line_end + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let end = at + find(&data[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}

/// The request line and headers of `head`; the body is filled in by the caller.
fn parse_head(head: Vec<u8>) -> Received {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().expect("request line");
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().expect("method")).into_owned();
    let target = parts.next().expect("target").to_vec();
    let version = String::from_utf8_lossy(parts.next().expect("version")).into_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let colon = l.iter().position(|&b| b == b':').expect("header colon");
            let value = l[colon + 1..].trim_ascii().to_vec();
            (String::from_utf8_lossy(&l[..colon]).into_owned(), value)
        })
        .collect();
    Received {
        method,
        target,
        version,
        headers,
        head,
        body: Vec::new(),
    }
}

fn serve(
    mut stream: TcpStream,
    behaviour: &Behaviour,
    sink: &Mutex<Vec<Received>>,
    streamed: &AtomicU64,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut stream, &mut buf) {
                return;
            }
        };
        let mut request = parse_head(buf[..head_end].to_vec());
        let value = |name: &str| {
            request
                .header(name)
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        };
        if matches!(behaviour, Behaviour::Reset) {
            reset(stream);
            return;
        }
        let (body, used) = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                if let Some((body, used)) = dechunk(&buf[head_end..]) {
                    break (body, used);
                }
                if !fill(&mut stream, &mut buf) {
                    return;
                }
            }
        } else {
            let len: usize = value("content-length").map_or(0, |v| v.trim().parse().expect("CL"));
            while buf.len() < head_end + len {
                if !fill(&mut stream, &mut buf) {
                    return;
                }
            }
            (buf[head_end..head_end + len].to_vec(), len)
        };
        buf.drain(..head_end + used);
        request.body = body;
        sink.lock().expect("lock").push(request);
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        match behaviour {
            Behaviour::Answer => {}
            Behaviour::Delay(d) => thread::sleep(*d),
            Behaviour::Silent => {
                // Keep the connection open until the client gives up.
                while fill(&mut stream, &mut buf) {}
                return;
            }
            Behaviour::Endless => {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
                if stream.write_all(head).is_err() {
                    return;
                }
                let zeros = vec![0u8; 64 * 1024];
                while stream.write_all(&zeros).is_ok() {
                    streamed.fetch_add(zeros.len() as u64, Ordering::AcqRel);
                }
                return;
            }
            Behaviour::Reset => unreachable!("handled above"),
        }
        if stream.write_all(answer).is_err() {
            return;
        }
    }
}

/// Closes with an RST rather than a FIN.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------
// Synthetic captures.

/// Writes Ethernet/IPv4/TCP frames of whole connections into a pcapng file. Each
/// connection gets a handshake, the client's data in MSS-sized segments (each element
/// of `writes` starts a new segment), a small ACK from the server, and FINs.
pub struct CaptureBuilder {
    writer: PcapngWriter<Vec<u8>>,
    iface: u32,
    ts: u64,
}

const MSS: usize = 1448;

impl Default for CaptureBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CaptureBuilder {
    pub fn new() -> Self {
        let mut writer = PcapngWriter::new(Vec::new()).expect("pcapng header");
        let iface = writer
            .add_interface(LinkType::Ethernet, 262_144, Some("synthetic0"))
            .expect("interface");
        Self {
            writer,
            iface,
            ts: 1_700_000_000_000_000_000,
        }
    }

    fn frame(
        &mut self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
    ) {
        let mut f = Vec::with_capacity(54 + data.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
        let total = u16::try_from(40 + data.len()).expect("IPv4 packet size");
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&from.ip().octets());
        ip[16..20].copy_from_slice(&to.ip().octets());
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        let check = !((folded & 0xffff) + (folded >> 16)) as u16;
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        f.extend_from_slice(&tcp);
        f.extend_from_slice(data);
        self.ts += 10_000;
        let len = u32::try_from(f.len()).expect("frame size");
        self.writer
            .write_frame(self.iface, self.ts, &f, len)
            .expect("write frame");
    }

    /// One connection from `client` to `server` carrying `writes` from the client.
    pub fn connection(&mut self, client: SocketAddrV4, server: SocketAddrV4, writes: &[&[u8]]) {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        let (c_isn, s_isn) = (1_000u32, 5_000u32);
        self.frame(client, server, c_isn, 0, SYN, &[]);
        self.frame(server, client, s_isn, c_isn + 1, SYN | ACK, &[]);
        let mut seq = c_isn + 1;
        self.frame(client, server, seq, s_isn + 1, ACK, &[]);
        for write in writes {
            for piece in write.chunks(MSS) {
                self.frame(client, server, seq, s_isn + 1, PSH | ACK, piece);
                seq = seq.wrapping_add(piece.len() as u32);
            }
        }
        self.frame(server, client, s_isn + 1, seq, ACK, &[]);
        self.frame(client, server, seq, s_isn + 1, FIN | ACK, &[]);
        self.frame(server, client, s_isn + 1, seq + 1, FIN | ACK, &[]);
        self.frame(client, server, seq + 1, s_isn + 2, ACK, &[]);
    }

    /// Moves the capture clock on: the next frame is `d` later (a quiet spell).
    pub fn pause(&mut self, d: Duration) {
        self.ts += u64::try_from(d.as_nanos()).expect("pause fits");
    }

    pub fn write_to(self, path: &Path) {
        std::fs::write(path, self.writer.into_inner()).expect("write capture");
    }
}

/// The client address of connection `i`: distinct for up to 2^24 connections.
pub fn client_addr(i: u32) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddrV4::new(ip, 20_000 + (i % 40_000) as u16)
}

// ---------------------------------------------------------------------------------------
// Real tools.

/// Why a test that needs real tools cannot run here, if it cannot.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (tcpdump needs it)".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed (.ci/setup installs it)"));
        }
    }
    None
}

/// Fails the test on CI, where every tool must be there; prints a skip line elsewhere.
/// True when the caller should go on.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let Some(reason) = missing_tools(tools) else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run on CI: {reason}");
    }
    println!("SKIP {test}: {reason}");
    false
}

fn wait_for_port(port: u16, limit: Duration, what: &str, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            start.elapsed() < limit,
            "{what} not listening on {port} after {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A free port (bound then released; fine on loopback for a test).
pub fn free_port() -> u16 {
    closed_port()
}

/// httpbin served by gunicorn on 127.0.0.1; killed when dropped.
pub struct Httpbin {
    pub port: u16,
    child: Child,
}

impl Httpbin {
    pub fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("gunicorn")
            .args([
                "-b",
                &format!("127.0.0.1:{port}"),
                "-w",
                "1",
                "-k",
                "gthread",
            ])
            .args(["--threads", "8", "--log-level", "warning", "httpbin:app"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gunicorn");
        wait_for_port(
            port,
            Duration::from_secs(20),
            "gunicorn httpbin",
            &mut child,
        );
        Self { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tcpdump -i lo -w FILE port PORT`, started and ready to capture.
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Tcpdump {
    pub fn start(file: &Path, port: u16) -> Self {
        let mut child = Command::new("tcpdump")
            // A 64 MiB buffer: a 1 MiB upload on loopback comes in a burst, and a busy
            // machine can leave tcpdump behind long enough to drop from the default 2 MiB.
            // --immediate-mode: otherwise packets wait in a kernel ring block for up to a
            // second, and those still there at SIGINT are lost without being counted.
            .args([
                "-i",
                "lo",
                "-s",
                "0",
                "-B",
                "65536",
                "--immediate-mode",
                "-U",
                "-w",
            ])
            .arg(file)
            .args(["tcp", "port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        // tcpdump says `listening on lo` once the capture is open and filtered.
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = err.read_line(&mut line).expect("tcpdump stderr");
            assert!(n > 0, "tcpdump exited before listening");
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining so tcpdump never blocks on a full pipe; the end has its counts.
        let stderr = thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            rest
        });
        Self {
            child,
            file: file.to_path_buf(),
            stderr: Some(stderr),
        }
    }

    /// Waits until tcpdump has written everything (with `-U` it writes each packet as it
    /// reads it, so the file stops growing), then SIGINT: packets still queued in the
    /// kernel when it stops would be lost, and a busy machine can leave it far behind.
    /// Fails when the kernel dropped packets: the capture would not be what was sent.
    pub fn stop(mut self) {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let start = Instant::now();
        let (mut last, mut since) = (size(&self.file), Instant::now());
        while since.elapsed() < Duration::from_millis(500)
            && start.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(50));
            let now = size(&self.file);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        // SAFETY: signalling our own child, which has not been waited on yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        let report = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        assert!(
            report
                .lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump did not capture everything (machine too busy?):\n{report}"
        );
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two requests written at once on one connection, then the responses read until the
/// server closes or goes quiet.
pub fn pipelined(port: u16, requests: &[&[u8]]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let all: Vec<u8> = requests.concat();
    s.write_all(&all).expect("write pipelined");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until we have seen as many status lines as requests, or the server closes.
    while got.windows(9).filter(|w| w == b"HTTP/1.1 ").count() < requests.len() {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// A TLS server configuration for `localhost`, its certificate signed by a CA made for
/// the test, offering `alpn` (none: no ALPN); and that CA's certificate as PEM, for
/// `--target-ca`.
pub fn localhost_tls(alpn: &[&[u8]]) -> (Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (Arc::new(config), ca.pem())
}

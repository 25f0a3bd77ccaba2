//! Scaffolding for the live tests: network namespaces joined by veth pairs, child
//! processes run inside them, the agent started in them per engine, and readers for what
//! the agent and the stage server report. Everything created here is torn down by Drop
//! guards so a failing assertion leaves no namespace or process behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests share two CPUs and measure latency; one at a time keeps them honest.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Holds `SERIAL` for one test; a test that failed holding it does not stop the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_shadowtap");

pub const CLIENT_IP: &str = "10.77.1.2";
pub const PROD_IP: &str = "10.77.1.1";
pub const PROD_STAGE_SIDE_IP: &str = "10.77.2.1";
pub const STAGE_IP: &str = "10.77.2.2";
/// prod's end of the client veth: where the agent listens.
pub const PROD_IF: &str = "pc0";
/// The Host header clients send to prod; copies arrive with `SHADOW_HOST`.
pub const HOST: &str = "Host: httpbin:8000";
pub const SHADOW_HOST: &str = "httpbin-shadow:8000";
/// The agent's default admin address, on the `prod` namespace's loopback.
pub const ADMIN: &str = "127.0.0.1:9477";

/// The recording server on stage, as the agent's `--target`.
pub fn stage_target() -> String {
    format!("http://{STAGE_IP}:8000")
}

/// Whether the live tests can run here. Under `CI=true` a missing prerequisite fails the
/// test with the reason; elsewhere it prints a skip line and the test returns early.
pub fn preflight(test: &str, extra_tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
        missing.push("root (network namespaces, eBPF)".to_string());
    }
    for tool in ["ip", "curl", "python3"].iter().chain(extra_tools) {
        if !tool_exists(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    let python_mods = Command::new("python3")
        .args(["-c", "import gunicorn, httpbin"])
        .stderr(Stdio::null())
        .status();
    if !python_mods.is_ok_and(|s| s.success()) {
        missing.push("python modules gunicorn and httpbin (.ci/setup)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("SKIP {reason}");
    false
}

pub fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command to completion and fails the test if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted (with every process still in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        // A namespace of the same name left by a killed earlier run of this pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// HTTP status of `path` on an admin server at `addr`, asked from inside this
    /// namespace; 0 when nothing answers.
    pub fn admin_status(&self, addr: &str, path: &str) -> u16 {
        let out = self.exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            "-w",
            "%{http_code}",
            &format!("http://{addr}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.name))
    }

    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a long-running process in the namespace with its output in files.
    pub fn spawn(&self, args: &[&str], out: &Path, err: &Path) -> Proc {
        let child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(File::create(out).expect("stdout file"))
            .stderr(File::create(err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.name));
        Proc {
            child: Some(child),
            stdout: out.to_path_buf(),
            stderr: err.to_path_buf(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process, killed on drop unless it was already waited for.
pub struct Proc {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn signal(&self, sig: &str) {
        run(&["kill", sig, &self.pid().to_string()]);
    }

    /// Waits at most `limit` for the process to end; fails the test otherwise.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("already waited");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not end within {limit:?}; stderr: {}",
                self.pid(),
                read(&self.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stdout_text(&self) -> String {
        read(&self.stdout)
    }

    pub fn stderr_text(&self) -> String {
        read(&self.stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// client <-> prod <-> stage, each its own namespace, with httpbin on prod:8000 and the
/// recording server on stage:8000. Fields drop in reverse order: servers, then namespaces.
pub struct Topology {
    pub prod_server: Option<Proc>,
    pub stage_server: Option<Proc>,
    pub client: Netns,
    pub prod: Netns,
    pub stage: Netns,
    pub dir: tempfile::TempDir,
}

impl Topology {
    /// `test` names the namespaces (`st-<pid>-<test>-client` and so on).
    pub fn new(test: &str) -> Self {
        let base = format!("st-{}-{test}", std::process::id());
        let client = Netns::new(format!("{base}-c"));
        let prod = Netns::new(format!("{base}-p"));
        let stage = Netns::new(format!("{base}-s"));
        let dir = tempfile::tempdir().expect("tempdir");
        let topo = Topology {
            prod_server: None,
            stage_server: None,
            client,
            prod,
            stage,
            dir,
        };
        topo.add_veth(
            (PROD_IF, &format!("{PROD_IP}/24")),
            ("c0", &format!("{CLIENT_IP}/24")),
        );
        topo.prod.exec_ok(&[
            "ip",
            "link",
            "add",
            "ps0",
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "netns",
            &topo.stage.name,
        ]);
        for (ns, iface, addr) in [
            (&topo.prod, "ps0", format!("{PROD_STAGE_SIDE_IP}/24")),
            (&topo.stage, "s0", format!("{STAGE_IP}/24")),
        ] {
            ns.exec_ok(&["ip", "addr", "add", &addr, "dev", iface]);
            ns.exec_ok(&["ip", "link", "set", iface, "up"]);
        }
        topo
    }

    /// A veth pair from prod (`prod_end`: name, address/prefix) to client (`client_end`),
    /// both ends addressed and up: the interface a pod's traffic comes in on.
    pub fn add_veth(&self, prod_end: (&str, &str), client_end: (&str, &str)) {
        let ((prod_if, prod_addr), (client_if, client_addr)) = (prod_end, client_end);
        self.prod.exec_ok(&[
            "ip",
            "link",
            "add",
            prod_if,
            "type",
            "veth",
            "peer",
            "name",
            client_if,
            "netns",
            &self.client.name,
        ]);
        for (ns, iface, addr) in [
            (&self.prod, prod_if, prod_addr),
            (&self.client, client_if, client_addr),
        ] {
            ns.exec_ok(&["ip", "addr", "add", addr, "dev", iface]);
            ns.exec_ok(&["ip", "link", "set", iface, "up"]);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// httpbin under gunicorn on prod:8000, threaded so keep-alive and pipelining work.
    pub fn start_prod(&mut self) {
        let proc = self.prod.spawn(
            &[
                "python3",
                "-m",
                "gunicorn",
                "-b",
                "0.0.0.0:8000",
                "-k",
                "gthread",
                "--threads",
                "8",
                "-w",
                "1",
                "--log-level",
                "warning",
                "httpbin:app",
            ],
            &self.path("prod.out"),
            &self.path("prod.err"),
        );
        self.prod_server = Some(proc);
        // Readiness over prod's loopback, so nothing crosses the watched veth.
        let prod = &self.prod;
        wait_until(Duration::from_secs(20), "httpbin on prod:8000", || {
            prod.exec(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "1",
                "http://127.0.0.1:8000/status/200",
            ])
            .status
            .success()
        });
    }

    pub fn stage_log(&self) -> PathBuf {
        self.path("stage.jsonl")
    }

    pub fn start_stage(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/stage_server.py");
        let log = self.stage_log();
        let proc = self.stage.spawn(
            &[
                "python3",
                script,
                STAGE_IP,
                "8000",
                log.to_str().expect("utf-8 path"),
            ],
            &self.path("stage.out"),
            &self.path("stage.err"),
        );
        self.stage_server = Some(proc);
        let out = self.path("stage.out");
        wait_until(Duration::from_secs(10), "stage server ready", || {
            read(&out).contains("ready")
        });
    }

    pub fn stage_requests(&self) -> Vec<StageRequest> {
        read(&self.stage_log())
            .lines()
            .map(StageRequest::parse)
            .collect()
    }

    pub fn clear_stage_log(&self) {
        std::fs::write(self.stage_log(), "").expect("truncate stage log");
    }

    /// Waits (bounded) until the stage server has logged `n` requests; returns them.
    pub fn wait_stage(&self, n: usize, limit: Duration) -> Vec<StageRequest> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.stage_requests();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `shadowtap run` in prod and waits until its capture is in place.
    pub fn start_agent(&self, tag: &str, args: &[&str]) -> Proc {
        let mut full = vec![BIN, "run", "--port", "8000", "--drain-timeout", "3s"];
        full.extend_from_slice(args);
        let agent = self.prod.spawn(
            &full,
            &self.path(&format!("agent-{tag}.out")),
            &self.path(&format!("agent-{tag}.err")),
        );
        wait_agent_ready(&agent);
        agent
    }

    /// `start_agent` with `--engine engine --iface iface --target` the stage server, then
    /// `extra`.
    pub fn start_agent_on(&self, tag: &str, engine: &str, iface: &str, extra: &[&str]) -> Proc {
        let target = stage_target();
        let mut args = vec!["--engine", engine, "--iface", iface, "--target", &target];
        args.extend_from_slice(extra);
        self.start_agent(tag, &args)
    }

    /// `n` GETs of `/headers?tag=1..n` to prod at `ip` on one keep-alive connection;
    /// asserts every one got 200.
    pub fn get_headers(&self, ip: &str, n: usize, tag: &str) {
        let url = format!("http://{ip}:8000/headers?{tag}=[1-{n}]");
        let codes = self.curl(&["-H", HOST, "-w", "%{http_code}\\n", &url]);
        assert_eq!(codes.len(), n, "curl answers: {codes:?}");
        assert!(codes.iter().all(|c| c == "200"), "prod answers: {codes:?}");
    }

    /// HTTP status of `path` on the agent's admin server at `addr`, asked from inside
    /// prod; 0 when nothing answers.
    pub fn admin_status(&self, addr: &str, path: &str) -> u16 {
        self.prod.admin_status(addr, path)
    }

    /// curl from the client namespace; returns one `-w` line per URL.
    pub fn curl(&self, args: &[&str]) -> Vec<String> {
        let mut full = vec!["curl", "-s", "-o", "/dev/null", "--max-time", "10"];
        full.extend_from_slice(args);
        let out = self.client.exec(&full);
        assert!(
            out.status.success(),
            "curl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

pub fn wait_agent_ready(agent: &Proc) {
    let err = agent.stderr.clone();
    wait_until(Duration::from_secs(20), "agent capture ready", || {
        let text = read(&err);
        // An error is a line of its own starting `shadowtap: `; log lines carry the
        // target `shadowtap:` after their timestamp and level.
        assert!(
            !text.lines().any(|l| l.starts_with("shadowtap: ")),
            "agent failed to start: {text}"
        );
        text.contains("eBPF classifier attached") || text.contains("libpcap capture open")
    });
}

/// Stops an agent with SIGINT and returns (stdout summary, stderr).
pub fn stop_agent(mut agent: Proc) -> (String, String) {
    agent.signal("-INT");
    let status = agent.wait(Duration::from_secs(15));
    let (out, err) = (agent.stdout_text(), agent.stderr_text());
    assert!(status.success(), "agent exited with {status}: {err}");
    (out, err)
}

/// One line of the stage server's log.
#[derive(Debug, Clone)]
pub struct StageRequest {
    pub host: String,
    pub method: String,
    pub target: String,
    pub framing: String,
    pub len: u64,
    pub sha256: String,
}

impl StageRequest {
    fn parse(line: &str) -> Self {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("stage log line {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        StageRequest {
            host: s("host"),
            method: s("method"),
            target: s("target"),
            framing: s("framing"),
            len: v["len"].as_u64().unwrap_or(0),
            sha256: s("sha256"),
        }
    }
}

/// The count on a summary row such as `replayed 2xx`, `not_sampled`, `total`; 0 when
/// the row is absent (the summary leaves out zero rows).
pub fn summary_count(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        // Outcome rows are indented; the unindented first line also starts with a word.
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(label)?;
            if !rest.starts_with(' ') {
                return None;
            }
            rest.split_whitespace().find_map(|w| w.parse::<u64>().ok())
        })
        .sum()
}

/// `N requests seen` from the summary's first line.
pub fn requests_seen(summary: &str) -> u64 {
    let words: Vec<&str> = summary.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[1] == "requests" && w[2].starts_with("seen"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no `requests seen` in summary:\n{summary}"))
}

/// Sum of every `replay_error <kind>` row.
pub fn replay_errors(summary: &str) -> u64 {
    summary_count(summary, "replay_error")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn median_ms(lines: &[String]) -> f64 {
    let mut v: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    assert!(!v.is_empty(), "no timings");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

//! Options of every subcommand, defined once with clap: each one is a flag, a
//! `SHADOWTAP_*` environment variable and a key of the `--config` TOML file (`file.rs`
//! merges them), and its value parser is the only validation of its value. The
//! reference table in the README is generated from these definitions (`reference.rs`).

mod check;
mod file;
mod reference;

pub use check::{check, unknown_variables, warn_unknown_variables, CheckError, CheckFor};
pub use file::{load, resolve, LoadError, Origin, Resolved};
pub use reference::reference_markdown;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::inspect::InspectFormat;
use crate::pipeline::PipelineConfig;
use crate::replay::filter::RequestFilter;
use crate::replay::rewrite::HeaderRules;
use crate::replay::target::TlsOptions;
use crate::replay::TargetConfig;
use crate::sample::{Percent, SampleBy};

#[derive(Debug, Parser)]
#[command(
    name = "shadowtap",
    version,
    about = "Shadow live HTTP/1.1 traffic to a test target, off the live path",
    after_help = EXAMPLES_TOP,
    after_long_help = concat!(
        "Examples:\n",
        "  shadowtap demo\n",
        "  shadowtap inspect capture.pcapng --format table\n",
        "  shadowtap replay capture.pcapng --target http://staging-gw:8080 --speed 2x\n",
        "  sudo shadowtap run --port 8080 --target http://staging-gw:8080 --percent 5\n",
        "  shadowtap config check --for replay replay.toml\n",
        "\n",
        "`shadowtap COMMAND --help` shows a command's options and examples.",
    )
)]
pub struct Cli {
    /// TOML file of options (keys are long flag names)
    ///
    /// Each key is a long flag name (`percent = 10`); flags and SHADOWTAP_* variables
    /// override it.
    #[arg(long, global = true, value_name = "FILE", env = "SHADOWTAP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format (level from RUST_LOG, default info).
    #[arg(
        help_heading = "Output",
        hide_short_help = true,
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SHADOWTAP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the HTTP requests found in capture files (no network).
    #[command(after_help = EXAMPLES_INSPECT, after_long_help = EXAMPLES_INSPECT_LONG)]
    Inspect(InspectArgs),
    /// Replay the requests of capture files to targets, with their original timing.
    #[command(after_help = EXAMPLES_REPLAY, after_long_help = EXAMPLES_REPLAY_LONG)]
    Replay(Box<ReplayArgs>),
    /// Capture live traffic on this host and shadow it (eBPF or libpcap).
    #[command(after_help = EXAMPLES_RUN, after_long_help = EXAMPLES_RUN_LONG)]
    Run(Box<RunArgs>),
    /// Replay the bundled capture into a local recording target and show what arrived.
    #[command(after_help = "Example:\n  shadowtap demo")]
    Demo,
    /// Check a configuration file, or print the reference of every option.
    #[command(subcommand, after_help = EXAMPLES_CONFIG)]
    Config(ConfigCommand),
    /// Summarise response comparisons written by `--diff-samples` (terminal, HTML).
    #[command(
        after_help = "Examples:\n  shadowtap report diff.jsonl\n  shadowtap report diff.jsonl --html report.html"
    )]
    Report(ReportArgs),
}

// Each command's help ends with examples people can run as they are (a test parses
// every one). `-h` shows the first three and points to `--help`; `--help` shows all,
// and how every option is also a variable and a file key.

const EXAMPLES_TOP: &str = "Examples:
  shadowtap demo
  shadowtap replay capture.pcapng --target http://staging-gw:8080 --speed 2x
  sudo shadowtap run --port 8080 --target http://staging-gw:8080 --percent 5
";

const EXAMPLES_RUN: &str = "Examples:
  sudo shadowtap run --port 8080 --target http://staging-gw:8080 --percent 5
  sudo shadowtap run --port 80,443 --iface 'veth*' --target http://stage:80
  sudo shadowtap run --port 8000-8010 --target http://stage:8000 --duration 5m
More options and examples: --help";

const EXAMPLES_RUN_LONG: &str = "Examples:
  sudo shadowtap run --port 8080 --target http://staging-gw:8080 --percent 5
  sudo shadowtap run --port 80,443 --iface 'veth*' --target http://stage:80
  sudo shadowtap run --port 8000-8010 --target http://stage:8000 --duration 5m
  sudo shadowtap run --port :8080 --target http://stage:8080 --engine pcap \\
      --redact-header authorization,cookie --record /tmp/seen.pcapng
  sudo shadowtap run --port 80 --target http://a:80@50 --target http://b:80@1

Every option is also a SHADOWTAP_* variable (--max-body: SHADOWTAP_MAX_BODY) \
and a key of the --config file (max-body = \"8MiB\"); flags beat variables, which \
beat the file. Sizes take k, M, G (powers of 1024); durations ms, s, m, h (a bare \
number is seconds).";

const EXAMPLES_REPLAY: &str = "Examples:
  shadowtap replay capture.pcapng --target http://staging-gw:8080
  shadowtap replay dump.pcap --port 8080 --speed 2x --target http://stage@10
  shadowtap replay a.pcap b.pcapng --speed max --loop 3 --target https://stage
More options and examples: --help";

const EXAMPLES_REPLAY_LONG: &str = "Examples:
  shadowtap replay capture.pcapng --target http://staging-gw:8080
  shadowtap replay dump.pcap --port 8080 --speed 2x --target http://stage@10
  shadowtap replay a.pcap b.pcapng --speed max --loop 3 --target https://stage
  shadowtap replay dump.pcap --target http://a:8000@50 --target http://b:8000@5

Every option is also a SHADOWTAP_* variable (--max-body: SHADOWTAP_MAX_BODY) \
and a key of the --config file (max-body = \"8MiB\"); flags beat variables, which \
beat the file. Sizes take k, M, G (powers of 1024); durations ms, s, m, h (a bare \
number is seconds).";

const EXAMPLES_INSPECT: &str = "Examples:
  shadowtap inspect capture.pcapng --format table
  shadowtap inspect capture.pcap --port 8080 > requests.jsonl
  shadowtap inspect capture.pcapng --port 8000-8010 --max-body 64MiB
More options: --help";

const EXAMPLES_INSPECT_LONG: &str = "Examples:
  shadowtap inspect capture.pcapng --format table
  shadowtap inspect capture.pcap --port 8080 > requests.jsonl
  shadowtap inspect capture.pcapng --port 8000-8010 --max-body 64MiB

Every option is also a SHADOWTAP_* variable (--max-body: SHADOWTAP_MAX_BODY) \
and a key of the --config file (max-body = \"8MiB\"); flags beat variables, which \
beat the file. Sizes take k, M, G (powers of 1024); durations ms, s, m, h (a bare \
number is seconds).";

const EXAMPLES_CONFIG: &str = "Examples:
  shadowtap config check /etc/shadowtap/config.toml
  shadowtap config check --for replay replay.toml
  shadowtap --config /etc/shadowtap/config.toml config check --for run
  shadowtap config reference > options.md";

const EXAMPLES_CONFIG_CHECK: &str = "Examples:
  shadowtap config check /etc/shadowtap/config.toml
  shadowtap config check --for replay replay.toml
  shadowtap config check --for inspect --config inspect.toml";

/// The command as its help shows it: lines of at most 80 columns (a terminal's), and
/// no `[env: ...]` after every option (the long help says once how variables are named;
/// `config reference` lists them), so that `run -h` fits a screen.
pub(crate) fn help_command() -> clap::Command {
    fn adjust(cmd: clap::Command) -> clap::Command {
        cmd.max_term_width(80)
            .mut_args(|a| a.hide_env(true))
            .mut_subcommands(adjust)
    }
    adjust(<Cli as clap::CommandFactory>::command())
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a TOML file for run, replay or inspect
    ///
    /// Reads the file as `run` (or `--for replay|inspect`) would, with the SHADOWTAP_*
    /// variables, without capturing or connecting: one line, exit code 0 when it is
    /// usable, 2 when not; misspelt SHADOWTAP_* variables are warned about.
    #[command(after_help = EXAMPLES_CONFIG_CHECK)]
    Check(CheckArgs),
    /// Print every option as a markdown table
    ///
    /// The options of `run`, `replay` and `inspect`: flag, environment variable, TOML
    /// key, default.
    Reference,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML file; default the --config file (or SHADOWTAP_CONFIG).
    pub file: Option<PathBuf>,
    /// The command the file is meant for: its required options must be there, and the
    /// summary shows what that command would use.
    #[arg(long = "for", value_enum, default_value = "run")]
    pub command: CheckFor,
}

impl CheckArgs {
    /// The line `config check` prints for a usable file.
    pub fn run(&self) -> Result<String, CheckError> {
        let file = self.file.as_deref().ok_or_else(|| {
            LoadError::Flag(
                "config check needs a file: `shadowtap config check FILE`, --config FILE or \
                 SHADOWTAP_CONFIG"
                    .into(),
            )
        })?;
        check(file, self.command)
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// pcap or pcapng files, read in order; gzip or zstd compressed too; `-` reads
    /// standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server ports: 8080, 80,443, 8000-8010 (default any)
    ///
    /// By default any port: requests are found by content. `:8080` also works.
    #[arg(help_heading = "Input", long, value_name = "PORTS", value_delimiter = ',', value_parser = parse_ports, env = "SHADOWTAP_PORT")]
    pub port: Vec<PortRange>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Output format.
    #[arg(
        help_heading = "Output",
        long,
        value_enum,
        default_value = "jsonl",
        env = "SHADOWTAP_FORMAT"
    )]
    pub format: InspectFormat,
    /// Also print each complete request's header block.
    #[arg(help_heading = "Output", long)]
    pub headers: bool,
    /// Also print the first N body bytes of each complete request (non-printable bytes
    /// escaped as \xNN).
    #[arg(help_heading = "Output", long, value_name = "N")]
    pub body: Option<usize>,
    /// Table times in UTC instead of local time.
    #[arg(help_heading = "Output", long)]
    pub utc: bool,
}

/// Memory caps of the capture side.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// Most TCP connections tracked at once; the least recently active is evicted past it.
    #[arg(help_heading = "Limits", hide_short_help = true, long, default_value_t = 50_000, value_parser = at_least_one(), env = "SHADOWTAP_MAX_FLOWS")]
    pub max_flows: usize,
    /// Out-of-order bytes buffered per stream direction.
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "SIZE", default_value = "1MiB", value_parser = size_usize, env = "SHADOWTAP_MAX_STREAM_BUFFER")]
    pub max_stream_buffer: usize,
    /// Out-of-order bytes buffered over all streams; the same cap again for the bytes
    /// of requests being framed (heads being read, bodies in progress).
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "SIZE", default_value = "16MiB", value_parser = size_usize, env = "SHADOWTAP_MAX_BUFFER")]
    pub max_buffer: usize,
    /// Largest request head (request line and headers).
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "SIZE", default_value = "64KiB", value_parser = size_usize, env = "SHADOWTAP_MAX_HEAD")]
    pub max_head: usize,
    /// Largest request body; larger requests count as `too_large` (0: only requests
    /// without a body are copied).
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "SIZE", default_value = "8MiB", value_parser = size_usize_or_zero, env = "SHADOWTAP_MAX_BODY")]
    pub max_body: usize,
    /// Time without a packet after which a connection is dropped (a bare number is
    /// seconds).
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "DURATION", default_value = "120s", value_parser = parse_positive_duration, env = "SHADOWTAP_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// How long (packet time) a hole in a stream may stay open before it is given up
    /// and what follows it is delivered after a gap. Covers a retransmit after a real
    /// loss (RTO >= 200 ms); a capture that lost a packet for good (ring overflow)
    /// holds that stream's bytes this long.
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration, env = "SHADOWTAP_HOLE_TIMEOUT")]
    pub hole_timeout: Duration,
}

/// A count or size of which 0 would turn the feature into dropping everything.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

impl LimitArgs {
    pub fn pipeline_config(&self, ports: &[PortRange]) -> PipelineConfig {
        let mut config = PipelineConfig::default();
        config.reassembly.ports = (!ports.is_empty()).then(|| port_list(ports));
        config.reassembly.max_flows = self.max_flows;
        config.reassembly.max_stream_buffer = self.max_stream_buffer;
        config.reassembly.max_total_buffer = self.max_buffer;
        config.max_framer_bytes = self.max_buffer;
        config.reassembly.idle_timeout_nanos =
            u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        config.reassembly.hole_timeout_nanos =
            u64::try_from(self.hole_timeout.as_nanos()).unwrap_or(u64::MAX);
        config.framer.max_head = self.max_head;
        config.framer.max_body = self.max_body;
        config
    }
}

/// Where shadow copies go and which ones: shared by `replay` and `run`.
#[derive(Clone, Debug, Args)]
pub struct ShadowArgs {
    /// Where copies go: http(s)://host[:port][@PERCENT]
    ///
    /// Repeat for several targets, each sampled on its own. Only says where to connect:
    /// Host is kept (with the suffix) and so is the request's path (a URL with a path is
    /// refused).
    #[arg(
        help_heading = "Target",
        long = "target",
        value_name = "URL[@PERCENT]",
        required = true,
        value_delimiter = ',',
        value_parser = check_target,
        env = "SHADOWTAP_TARGET"
    )]
    pub targets: Vec<String>,
    /// Share of requests copied: 0 to 100
    ///
    /// Each target gets this share unless its URL says `@PERCENT`; decimals allowed (0.0001
    /// steps).
    #[arg(
        help_heading = "Sampling",
        long,
        default_value = "100",
        env = "SHADOWTAP_PERCENT"
    )]
    pub percent: Percent,
    /// Keep or skip per request, connection or header:NAME
    ///
    /// What a sampling decision is keyed on: `request` (independent draw), `connection`
    /// (whole connections) or `header:NAME` (whole keys, consistent hash).
    #[arg(
        help_heading = "Sampling",
        long,
        default_value = "request",
        env = "SHADOWTAP_SAMPLE_BY"
    )]
    pub sample_by: SampleBy,
    /// Appended to the Host value before its port; empty keeps Host as sent.
    #[arg(help_heading = "Target", hide_short_help = true, long, default_value = "-shadow", value_parser = check_suffix, env = "SHADOWTAP_SHADOW_SUFFIX")]
    pub shadow_suffix: String,
    /// Only shadow these methods (repeatable); default all.
    #[arg(help_heading = "Sampling", hide_short_help = true, long, value_delimiter = ',', value_parser = check_method, env = "SHADOWTAP_ALLOW_METHOD")]
    pub allow_method: Vec<String>,
    /// Only shadow requests whose path and query match one of these regexes.
    #[arg(help_heading = "Sampling", hide_short_help = true, long, value_parser = check_regex, env = "SHADOWTAP_ALLOW_PATH")]
    pub allow_path: Vec<String>,
    /// Never shadow requests whose path and query match one of these regexes.
    #[arg(help_heading = "Sampling", hide_short_help = true, long, value_parser = check_regex, env = "SHADOWTAP_DENY_PATH")]
    pub deny_path: Vec<String>,
    /// Only shadow requests with a header matching `NAME:REGEX` (all must hold).
    #[arg(help_heading = "Sampling", hide_short_help = true, long, value_name = "NAME:REGEX", value_parser = check_header_rule, env = "SHADOWTAP_ALLOW_HEADER")]
    pub allow_header: Vec<String>,
    /// Set a header on every copy, `NAME:VALUE` (replaces the client's).
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "NAME:VALUE", value_parser = check_set_header, env = "SHADOWTAP_SET_HEADER")]
    pub set_header: Vec<String>,
    /// Remove a header from every copy.
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "NAME", value_delimiter = ',', value_parser = check_remove_header, env = "SHADOWTAP_REMOVE_HEADER")]
    pub remove_header: Vec<String>,
    /// Send this header as REDACTED (e.g. Cookie)
    ///
    /// Replaces the header's value by `REDACTED` before the copy leaves the node (e.g.
    /// Authorization, Cookie). Nothing is redacted unless listed here.
    #[arg(help_heading = "Target", long, value_name = "NAME", value_delimiter = ',', value_parser = check_redact_header, env = "SHADOWTAP_REDACT_HEADER")]
    pub redact_header: Vec<String>,
    /// Most copies per second per target; the rest count as `rate_limited`.
    #[arg(help_heading = "Sampling", hide_short_help = true, long, value_parser = check_max_rps, env = "SHADOWTAP_MAX_RPS")]
    pub max_rps: Option<f64>,
    /// Connect deadline (`2s`, `500ms`).
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration, env = "SHADOWTAP_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
    /// Deadline for a whole response head after the request is sent.
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration, env = "SHADOWTAP_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,
    /// Most copies in flight at once per target: a ceiling; each target starts at 2 and
    /// gets more while it keeps up.
    #[arg(help_heading = "Target", hide_short_help = true, long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..), env = "SHADOWTAP_MAX_IN_FLIGHT")]
    pub max_in_flight: u32,
    /// Copies waiting per target; past it they count as `queue_full`.
    #[arg(help_heading = "Limits", hide_short_help = true, long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "SHADOWTAP_QUEUE_LEN")]
    pub queue_len: u32,
    /// Memory held by copies queued or in flight per target (buffers as allocated); past
    /// it copies count as `queue_full`.
    #[arg(help_heading = "Limits", hide_short_help = true, long, value_name = "SIZE", default_value = "64MiB", value_parser = size_u64, env = "SHADOWTAP_MAX_QUEUE_BYTES")]
    pub max_queue_bytes: u64,
    /// Extra CA certificates (PEM) for https targets.
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "FILE", value_parser = check_readable_file, env = "SHADOWTAP_TARGET_CA")]
    pub target_ca: Option<PathBuf>,
    /// Do not verify https targets' certificates.
    #[arg(
        help_heading = "Target",
        hide_short_help = true,
        long,
        env = "SHADOWTAP_INSECURE"
    )]
    pub insecure: bool,
    /// Print each copy as it would be sent and send nothing
    ///
    /// Each copy goes to stdout as it would be sent (request line, headers with the
    /// `-shadow` Host, body length); no target is looked up or connected to. Copies count
    /// as `dry_run`.
    #[arg(help_heading = "Output", long, env = "SHADOWTAP_DRY_RUN")]
    pub dry_run: bool,
}

/// A flag value that does not make sense, named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Target(#[from] crate::replay::target::TargetUrlError),
    #[error(transparent)]
    Filter(#[from] crate::replay::filter::FilterError),
    #[error("--set-header {0:?} must be NAME:VALUE")]
    SetHeader(String),
    #[error("--max-rps {0} must be a positive number")]
    MaxRps(f64),
    #[error("--target-ca {path}: {source}")]
    TargetCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", duplicate_target_message(.0, .1, "--target"))]
    DuplicateTarget(String, String),
}

/// Why a target given twice is refused, naming where the list came from.
pub(crate) fn duplicate_target_message(earlier: &str, later: &str, source: &str) -> String {
    let (earlier, later) = (
        crate::replay::target::redact_userinfo(earlier),
        crate::replay::target::redact_userinfo(later),
    );
    let both = if earlier == later {
        format!("{earlier:?} is given twice")
    } else {
        format!("{earlier:?} and {later:?} are the same scheme, host and port")
    };
    format!(
        "{source}: {both}: each target samples and sends on its own, so it would get two \
         copies of every request; give it once (with @PERCENT for its share)"
    )
}

impl ShadowArgs {
    /// One `TargetConfig` per `--target`, with every shared option applied.
    pub fn target_configs(&self) -> Result<Vec<TargetConfig>, ConfigError> {
        let filter = RequestFilter::new(
            &self.allow_method,
            &self.allow_path,
            &self.deny_path,
            &self.allow_header,
        )?;
        let set = self
            .set_header
            .iter()
            .map(|s| split_set_header(s).ok_or_else(|| ConfigError::SetHeader(s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let rules =
            HeaderRules::from_lists(set, self.remove_header.clone(), self.redact_header.clone());
        if let Some(rps) = self.max_rps {
            if !(rps.is_finite() && rps > 0.0) {
                return Err(ConfigError::MaxRps(rps));
            }
        }
        if let Some((earlier, later)) = crate::replay::target::duplicate_target(&self.targets) {
            return Err(ConfigError::DuplicateTarget(
                earlier.to_string(),
                later.to_string(),
            ));
        }
        if let Some(path) = &self.target_ca {
            std::fs::metadata(path).map_err(|source| ConfigError::TargetCa {
                path: path.clone(),
                source,
            })?;
        }
        self.targets
            .iter()
            .map(|text| {
                let mut cfg = TargetConfig::from_arg(text, self.percent)?;
                cfg.sample_by = self.sample_by.clone();
                cfg.shadow_suffix = self.shadow_suffix.clone();
                cfg.filter = filter.clone();
                cfg.rules = rules.clone();
                cfg.max_rps = self.max_rps;
                cfg.connect_timeout = self.connect_timeout;
                cfg.request_timeout = self.request_timeout;
                cfg.max_in_flight = self.max_in_flight as usize;
                cfg.queue_len = self.queue_len as usize;
                cfg.max_queue_bytes = usize::try_from(self.max_queue_bytes).unwrap_or(usize::MAX);
                cfg.tls = TlsOptions {
                    ca_file: self.target_ca.clone(),
                    insecure: self.insecure,
                };
                Ok(cfg)
            })
            .collect()
    }

    /// Credential headers that would reach an `http://` target with the client's value:
    /// neither redacted, removed nor replaced by `--set-header`.
    pub fn credentials_in_clear(&self) -> Vec<&'static str> {
        let any_http = self.targets.iter().any(|t| t.starts_with("http://"));
        if !any_http {
            return Vec::new();
        }
        let named =
            |list: &[String], h: &str| list.iter().any(|n| n.trim().eq_ignore_ascii_case(h));
        let set: Vec<String> = self
            .set_header
            .iter()
            .filter_map(|s| split_set_header(s).map(|(n, _)| n))
            .collect();
        CREDENTIAL_HEADERS
            .into_iter()
            .filter(|h| {
                !named(&self.redact_header, h) && !named(&self.remove_header, h) && !named(&set, h)
            })
            .collect()
    }
}

/// `--iface`: an interface name, a glob or `any`; never empty (Linux names are at most
/// 15 bytes, a glob may be longer).
pub fn parse_iface(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an interface name, a glob like `veth*`, or `any`; not empty".into());
    }
    Ok(t.to_string())
}

/// `--admin-addr`: a socket address, or `off` for no admin server.
pub fn parse_admin_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        format!("{text:?} is not IP:PORT (like 127.0.0.1:9477 or [::1]:9477) or `off`")
    })
}

// The checks below run in clap's value parsers so that a bad value is reported the same
// way wherever it came from (flag, environment or file), naming where it came from.
// `target_configs` builds the real objects from the checked text.

fn check_target(text: &str) -> Result<String, String> {
    crate::replay::target::parse_target(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

fn check_filter(
    filter: Result<RequestFilter, crate::replay::filter::FilterError>,
    text: &str,
) -> Result<String, String> {
    filter
        .map(|_| text.to_string())
        .map_err(|e| one_line(&e.to_string()))
}

fn check_method(text: &str) -> Result<String, String> {
    check_filter(RequestFilter::new(&[text.to_string()], &[], &[], &[]), text)
}

fn check_regex(text: &str) -> Result<String, String> {
    check_filter(RequestFilter::new(&[], &[text.to_string()], &[], &[]), text)
}

fn check_header_rule(text: &str) -> Result<String, String> {
    check_filter(RequestFilter::new(&[], &[], &[], &[text.to_string()]), text)
}

fn check_set_header(text: &str) -> Result<String, String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:VALUE"))?;
    let name = name.trim();
    check_header_name(name)?;
    if let Some(framing) = derived_header(name, &DERIVED_HEADERS) {
        return Err(format!(
            "{framing} cannot be set: the copy's {framing} is derived from the captured \
             request (Host gets the shadow suffix, the body its own length)"
        ));
    }
    if let Some(c) = value.chars().find(|&c| c.is_ascii_control() && c != '\t') {
        return Err(format!(
            "the value of {name} holds the control character {c:?}; a header value may \
             not hold CR, LF, NUL or other control characters"
        ));
    }
    Ok(text.to_string())
}

fn check_remove_header(text: &str) -> Result<String, String> {
    let name = text.trim();
    check_header_name(name)?;
    // Transfer-Encoding and Connection never reach a copy anyway (re-framed, hop-by-hop).
    if let Some(framing) = derived_header(name, &["Host", "Content-Length"]) {
        return Err(format!(
            "{framing} cannot be removed: a copy without it would lose its -shadow Host or \
             its body's framing"
        ));
    }
    Ok(text.to_string())
}

fn check_redact_header(text: &str) -> Result<String, String> {
    let name = text.trim();
    check_header_name(name)?;
    if let Some(framing) = derived_header(name, &DERIVED_HEADERS) {
        return Err(format!(
            "{framing} cannot be redacted: a copy with {framing}: REDACTED would lose its \
             -shadow Host or its framing"
        ));
    }
    Ok(text.to_string())
}

/// A header name is an HTTP token (RFC 9110 5.6.2): no space, colon, CR, LF or NUL that
/// would let it end the header line early.
fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a header name is required".into());
    }
    match name.chars().find(|&c| !is_tchar(c)) {
        Some(c) => Err(format!(
            "header name {name:?} holds {c:?}; a name is letters, digits and !#$%&'*+-.^_`|~"
        )),
        None => Ok(()),
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Headers the copy derives itself: its Host (with the suffix) and its body's framing.
const DERIVED_HEADERS: [&str; 4] = ["Host", "Content-Length", "Transfer-Encoding", "Connection"];

fn derived_header(name: &str, list: &[&'static str]) -> Option<&'static str> {
    list.iter().copied().find(|h| h.eq_ignore_ascii_case(name))
}

/// `--shadow-suffix`: goes inside the Host value, so only characters a host name may hold
/// (RFC 3986 reg-name): no `:` (it would become the port), `/`, `@`, space, CR or LF.
fn check_suffix(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=%".contains(c);
    match text.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(format!(
            "{text:?} holds {c:?}; the suffix goes into the Host name, so it may hold only \
             letters, digits and -._~!$&'()*+,;=%"
        )),
        None => Ok(text.to_string()),
    }
}

fn split_set_header(text: &str) -> Option<(String, Vec<u8>)> {
    check_set_header(text).ok()?;
    let (name, value) = text.split_once(':')?;
    Some((name.trim().to_string(), value.trim().as_bytes().to_vec()))
}

/// Copies per second: below one per 1000 s is a typo, not a cap.
const MAX_RPS_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1e9;

fn check_max_rps(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rps) if MAX_RPS_RANGE.contains(&rps) => Ok(rps),
        _ => Err(format!(
            "{text:?} must be a number of copies per second from {} to {}",
            MAX_RPS_RANGE.start(),
            MAX_RPS_RANGE.end()
        )),
    }
}

fn check_readable_file(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    match std::fs::File::open(path) {
        Ok(_) => Ok(path.to_path_buf()),
        Err(e) => Err(format!("cannot read {text:?}: {e}")),
    }
}

/// A message on one line (regex errors draw a caret under the pattern on a second one).
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Headers that carry credentials; sent in clear to an `http://` target unless redacted.
const CREDENTIAL_HEADERS: [&str; 3] = ["Authorization", "Cookie", "Proxy-Authorization"];

/// `250ms`, `2s`, `1.5s`, `5m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 90s, 5m or 1h"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if !(secs.is_finite() && (0.0..1e9).contains(&secs)) {
        return Err(format!("{text:?} is out of range (0 to 1e9 seconds)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration of which 0 would turn the feature off in a surprising way.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(d)
}

/// A size as people write it: bytes (`65536`), or a number with a binary unit, any case:
/// `k`/`KB`/`KiB` = 1024, `M`/`MB`/`MiB` = 1024², `G`/`GB`/`GiB` = 1024³, `T`/`TB`/`TiB`
/// = 1024⁴ (memory sizes, as nginx and JVM flags read them); `1.5MiB` is allowed and
/// rounds down to whole bytes. No exponents (`1e3`) or signs.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size like 65536, 64k, 8MiB or 1G (units k, M, G, T: \
                 powers of 1024)"
            ))
        }
    };
    let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_ok(whole) || !digits_ok(fraction) || fraction.len() > 9 {
        return Err(format!(
            "{text:?} is not a size like 65536, 64k, 8MiB or 1G"
        ));
    }
    if shift == 0 && !fraction.is_empty() {
        return Err(format!("{text:?}: a number of bytes is whole"));
    }
    let too_big = || format!("{text:?} is too large");
    // Whole part: at most 20 digits fit a u64; more is out of range, not a typo to parse.
    let whole: u128 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_mul(1 << shift).ok_or_else(too_big)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(9));
        let part: u128 = fraction.parse().map_err(|_| too_big())?;
        bytes += (part << shift) / scale;
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

/// A size within `min..=max` (in the unit the option is given in), else a message
/// naming the bound.
fn size_within(text: &str, min: u64, max: u64, zero_means: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if n < min {
        return Err(format!("{text:?}: {zero_means}; give at least {min}"));
    }
    if n > max {
        return Err(format!(
            "{text:?} is more than the largest allowed, {max} bytes"
        ));
    }
    Ok(n)
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A buffer or size cap of which 0 would drop everything.
fn size_usize(text: &str) -> Result<usize, String> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    size_within(text, 1, max, "0 would drop every request").map(as_usize)
}

fn size_usize_or_zero(text: &str) -> Result<usize, String> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    size_within(text, 0, max, "").map(as_usize)
}

fn size_u64(text: &str) -> Result<u64, String> {
    size_within(text, 1, u64::MAX, "0 would drop every copy")
}

/// The eBPF ring: the loader rounds up to a power of two and caps it at 1 GiB.
fn size_ring(text: &str) -> Result<usize, String> {
    size_within(text, 1, 1 << 30, "0 would leave no room for a packet").map(as_usize)
}

/// libpcap takes its buffer size as a C int.
fn size_i32(text: &str) -> Result<i32, String> {
    let max = u64::try_from(i32::MAX).unwrap_or(u64::MAX);
    size_within(text, 1, max, "0 would leave no room for a packet")
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// One `--port` value: a port (`8080`, or `:8080` as in a listen address) or an
/// inclusive range (`8000-8010`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

pub fn parse_ports(text: &str) -> Result<PortRange, String> {
    let t = text.trim();
    let t = t.strip_prefix(':').unwrap_or(t);
    let port = |p: &str| -> Result<u16, String> {
        let p = p.trim();
        match p.parse::<u16>() {
            Ok(0) => Err(format!(
                "{text:?}: port 0 is not a port a server listens on; 1 to 65535"
            )),
            Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!(
                "{text:?} is not a port (1 to 65535), `:PORT` or a range like 8000-8010"
            )),
        }
    };
    let (first, last) = match t.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(t)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!(
            "{text:?}: the range runs backwards; write it {last}-{first}"
        ));
    }
    Ok(PortRange { first, last })
}

/// The ports of `--port` values, each once, in the order given.
pub fn port_list(ranges: &[PortRange]) -> Vec<u16> {
    let mut seen = std::collections::BTreeSet::new();
    ranges
        .iter()
        .flat_map(|r| r.first..=r.last)
        .filter(|p| seen.insert(*p))
        .collect()
}

/// `--speed`: `max` or a factor like `1x`, `2x`, `0.5x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    Max,
    Factor(f64),
}

impl Speed {
    /// Factors outside this range are typos: 0.001x already stretches a one-second
    /// capture to a quarter of an hour, and past 1000000x every gap is below a
    /// microsecond, which is `max`.
    pub const FACTORS: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let f: f64 =
            s.strip_suffix('x').unwrap_or(s).parse().map_err(|_| {
                format!("--speed {s:?} must be `max` or a factor like 1x, 2x, 0.5x")
            })?;
        // NaN and infinities are outside the range too.
        if !Self::FACTORS.contains(&f) {
            return Err(format!(
                "--speed {s:?} must be `max` or a factor from {}x to {}x",
                Self::FACTORS.start(),
                Self::FACTORS.end()
            ));
        }
        Ok(Speed::Factor(f))
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// pcap or pcapng files, replayed in order; gzip or zstd compressed too; `-` reads
    /// standard input (once, without --loop).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server ports: 8080, 80,443, 8000-8010 (default any)
    ///
    /// Only requests to these ports are replayed; by default any port. `:8080` also works.
    #[arg(help_heading = "Input", long, value_name = "PORTS", value_delimiter = ',', value_parser = parse_ports, env = "SHADOWTAP_PORT")]
    pub port: Vec<PortRange>,
    /// Pace: 1x, 2x, 0.5x (of the original) or max
    ///
    /// The capture's inter-arrival times scaled by this factor, or `max`: as fast as the
    /// targets answer.
    #[arg(
        help_heading = "Input",
        long,
        default_value = "1x",
        env = "SHADOWTAP_SPEED"
    )]
    pub speed: Speed,
    /// Replay the files this many times.
    #[arg(help_heading = "Input", long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), env = "SHADOWTAP_LOOP")]
    pub loops: u32,
    /// How long to wait for copies still in flight at the end.
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "SHADOWTAP_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub shadow: ShadowArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub diff: DiffArgs,
}

/// The response comparison (`--diff`): production's answers in the capture against the
/// first target's.
#[derive(Clone, Debug, Args)]
pub struct DiffArgs {
    /// Compare production's answers with the first target's (HTTP/1.1)
    ///
    /// The capture must hold the server's answers (both directions). Each copy sent to
    /// the first target is paired with production's answer to the same request and
    /// compared: status, then chosen headers, then the body (by hash, and by JSON field
    /// paths). The summary ends with the result per route.
    #[arg(help_heading = "Diff", long, env = "SHADOWTAP_DIFF")]
    pub diff: bool,
    /// Body bytes kept per answer for field-level comparison (larger: by hash only)
    #[arg(help_heading = "Diff", hide_short_help = true, long, value_name = "SIZE", default_value = "64KiB", value_parser = size_u64, env = "SHADOWTAP_DIFF_MAX_BODY")]
    pub diff_max_body: u64,
    /// A header never compared (repeat, or comma-separated)
    #[arg(
        help_heading = "Diff",
        hide_short_help = true,
        long,
        value_name = "NAME",
        value_delimiter = ',',
        env = "SHADOWTAP_DIFF_IGNORE_HEADER"
    )]
    pub diff_ignore_header: Vec<String>,
    /// A JSON path never compared: `$.timestamp`, `$.items[*].id`, `$..build` (repeat)
    #[arg(help_heading = "Diff", hide_short_help = true, long, value_name = "PATH", value_parser = parse_json_path, env = "SHADOWTAP_DIFF_IGNORE")]
    pub diff_ignore: Vec<crate::diff::compare::JsonPath>,
    /// A second copy of production's version (URL): each compared request also goes
    /// there, and a field counts as a difference only where the candidate differs from
    /// production clearly more often than this baseline does
    #[arg(
        help_heading = "Diff",
        hide_short_help = true,
        long,
        value_name = "URL",
        env = "SHADOWTAP_DIFF_BASELINE"
    )]
    pub diff_baseline: Option<String>,
    /// How much more often (percent) the candidate must differ than the baseline
    #[arg(
        help_heading = "Diff",
        hide_short_help = true,
        long,
        value_name = "PERCENT",
        default_value_t = 20.0,
        env = "SHADOWTAP_DIFF_MARGIN_RELATIVE"
    )]
    pub diff_margin_relative: f64,
    /// The least share of pairs by which the candidate must differ more (0.03: 3 in 100)
    #[arg(
        help_heading = "Diff",
        hide_short_help = true,
        long,
        value_name = "FRACTION",
        default_value_t = 0.03,
        env = "SHADOWTAP_DIFF_MARGIN_ABSOLUTE"
    )]
    pub diff_margin_absolute: f64,
    /// Write differing pairs (sampled per route and outcome) and per-route summaries as
    /// JSON lines; `shadowtap report FILE` reads them
    #[arg(
        help_heading = "Diff",
        hide_short_help = true,
        long,
        value_name = "FILE",
        env = "SHADOWTAP_DIFF_SAMPLES"
    )]
    pub diff_samples: Option<PathBuf>,
}

fn parse_json_path(text: &str) -> Result<crate::diff::compare::JsonPath, String> {
    crate::diff::compare::JsonPath::parse(text).map_err(|e| e.to_string())
}

impl DiffArgs {
    /// With `--diff`: the first target becomes the comparison's candidate and, with
    /// `--diff-baseline`, a baseline target is added that gets exactly the requests the
    /// candidate gets (same sampling, seeded alike). Returns the engine.
    pub fn attach(
        &self,
        redact_headers: &[String],
        targets: &mut Vec<TargetConfig>,
    ) -> Result<Option<std::sync::Arc<crate::diff::engine::DiffEngine>>, ConfigError> {
        use crate::replay::DiffSide;
        let Some(engine) = self.engine(redact_headers) else {
            return Ok(None);
        };
        let Some(candidate) = targets.first_mut() else {
            return Ok(None);
        };
        // One seed for both: the same requests are kept for each, in random mode too.
        let seed = candidate.seed.unwrap_or_else(|| {
            crate::sample::hash_bytes(0x0d1f, candidate.url.to_string().as_bytes())
        });
        candidate.seed = Some(seed);
        let max_body = usize::try_from(self.diff_max_body).unwrap_or(usize::MAX);
        candidate.diff = Some(DiffSide {
            engine: std::sync::Arc::clone(&engine),
            baseline: false,
            max_body,
        });
        if let Some(url) = &self.diff_baseline {
            let mut base = candidate.clone();
            base.url = crate::replay::target::parse_target(url)?.0;
            base.diff = Some(DiffSide {
                engine: std::sync::Arc::clone(&engine),
                baseline: true,
                max_body,
            });
            targets.push(base);
        }
        Ok(Some(engine))
    }

    /// The comparison's engine, or `None` without `--diff`.
    fn engine(
        &self,
        redact_headers: &[String],
    ) -> Option<std::sync::Arc<crate::diff::engine::DiffEngine>> {
        use crate::diff::compare::DiffRules;
        use crate::diff::report::ReportConfig;
        if !self.diff {
            return None;
        }
        let rules = DiffRules {
            ignore_headers: self.diff_ignore_header.clone(),
            ignore_paths: self.diff_ignore.clone(),
            ..DiffRules::default()
        };
        let report = ReportConfig {
            redact_headers: redact_headers.to_vec(),
            ..ReportConfig::default()
        };
        let engine = crate::diff::engine::DiffEngine::new(rules, report);
        let engine = match &self.diff_baseline {
            Some(_) => engine.with_baseline(crate::diff::noise::Margins {
                relative: self.diff_margin_relative,
                absolute: self.diff_margin_absolute,
            }),
            None => engine,
        };
        Some(std::sync::Arc::new(engine))
    }

    /// Production's answers framed within `--diff-max-body`.
    pub fn response_limits(&self) -> Option<crate::diff::response::ResponseLimits> {
        self.diff.then(|| crate::diff::response::ResponseLimits {
            max_body: usize::try_from(self.diff_max_body).unwrap_or(usize::MAX),
            ..Default::default()
        })
    }
}

/// `shadowtap report`: the comparison's samples files read back.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Files written by `--diff-samples`, merged
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write one self-contained HTML page here
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server ports: 8080, 80,443 or 8000-8010
    ///
    /// `:8080` also works.
    #[arg(help_heading = "Capture", long, value_name = "PORTS", required = true, value_delimiter = ',', value_parser = parse_ports, env = "SHADOWTAP_PORT")]
    pub port: Vec<PortRange>,
    /// Interfaces: names, globs (veth*) or any
    ///
    /// Names, globs (`veth*`, `cali*`) or `any`; new ones that match are picked up while
    /// running.
    #[arg(
        help_heading = "Capture",
        long,
        default_value = "any",
        value_delimiter = ',',
        value_parser = parse_iface,
        env = "SHADOWTAP_IFACE"
    )]
    pub iface: Vec<String>,
    /// Capture engine.
    #[arg(
        help_heading = "Capture",
        long,
        value_enum,
        default_value = "auto",
        env = "SHADOWTAP_ENGINE"
    )]
    pub engine: crate::capture::Engine,
    /// Stop after this long (default: at SIGINT/SIGTERM)
    #[arg(help_heading = "Capture", long, value_name = "DURATION", value_parser = parse_positive_duration, env = "SHADOWTAP_DURATION")]
    pub duration: Option<Duration>,
    /// eBPF ring buffer size, up to 1GiB (rounded up to a power of two).
    #[arg(help_heading = "Capture", hide_short_help = true, long, value_name = "SIZE", default_value = "8MiB", value_parser = size_ring, env = "SHADOWTAP_RING_BYTES")]
    pub ring_bytes: usize,
    /// libpcap kernel buffer size.
    #[arg(help_heading = "Capture", hide_short_help = true, long, value_name = "SIZE", default_value = "32MiB", value_parser = size_i32, env = "SHADOWTAP_PCAP_BUFFER")]
    pub pcap_buffer: i32,
    /// SO_MARK on the agent's own sockets, skipped by the classifier.
    #[arg(
        help_heading = "Capture",
        hide_short_help = true,
        long,
        default_value_t = 0x5348_4144,
        env = "SHADOWTAP_OWN_MARK"
    )]
    pub own_mark: u32,
    #[command(flatten)]
    pub shadow: ShadowArgs,
    /// How long to wait for copies in flight when stopping.
    #[arg(help_heading = "Target", hide_short_help = true, long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "SHADOWTAP_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Also write what is captured to this pcapng file.
    #[arg(
        help_heading = "Output",
        hide_short_help = true,
        long,
        value_name = "FILE",
        env = "SHADOWTAP_RECORD"
    )]
    pub record: Option<PathBuf>,
    /// Admin server (/metrics, /healthz): IP:PORT or off
    ///
    /// Serves /metrics, /healthz and /readyz: `IP:PORT`, or `off` for none.
    // Fully qualified so that clap takes the whole `Option` from the value parser
    // (`off` is `None`) instead of treating the option as optional.
    #[arg(
        help_heading = "Output",
        long,
        value_name = "ADDR|off",
        default_value = "127.0.0.1:9477",
        value_parser = parse_admin_addr,
        env = "SHADOWTAP_ADMIN_ADDR"
    )]
    pub admin_addr: ::std::option::Option<SocketAddr>,
    #[command(flatten)]
    pub diff: DiffArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Text that looks like what people type for numbers, plus anything at all.
    fn numberish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,4})?(ms|s|m|x|h|%)?",
            "(inf|-inf|NaN|nan|infinity|max|0x10|1_000|  1s|1 s)",
            any::<String>(),
        ]
    }

    proptest! {
        /// Every parser of a number, duration or size gives a value in range or an error
        /// that names the value; none panics.
        #[test]
        fn numeric_parsers_never_panic_and_stay_in_range(text in numberish()) {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d.as_secs_f64() < 1e9);
            }
            if let Ok(d) = parse_positive_duration(&text) {
                prop_assert!(!d.is_zero());
            }
            let _ = parse_size(&text);
            if let Ok(n) = size_i32(&text) {
                prop_assert!(n >= 1);
            }
            if let Ok(r) = parse_ports(&text) {
                prop_assert!(r.first >= 1 && r.first <= r.last);
            }
            match text.parse::<Speed>() {
                Ok(Speed::Factor(f)) => prop_assert!(Speed::FACTORS.contains(&f), "{f}"),
                Ok(Speed::Max) => prop_assert_eq!(text.as_str(), "max"),
                Err(e) => prop_assert!(e.contains("--speed")),
            }
            if let Ok(rps) = check_max_rps(&text) {
                prop_assert!(MAX_RPS_RANGE.contains(&rps));
            }
            let _ = text.parse::<Percent>();
            let _ = parse_admin_addr(&text);
        }

        /// The same values through the whole option parser and into the objects a run
        /// builds from them: an error or a value, never a panic.
        #[test]
        fn every_numeric_option_parses_or_errs_without_panic(
            index in 0usize..16,
            text in numberish(),
        ) {
            const OPTIONS: [&str; 16] = [
                "speed", "connect-timeout", "request-timeout", "drain-timeout",
                "hole-timeout", "idle-timeout", "max-flows", "max-stream-buffer",
                "max-buffer", "max-head", "max-body", "max-rps", "max-in-flight",
                "queue-len", "max-queue-bytes", "percent",
            ];
            let flag = format!("--{}={text}", OPTIONS[index]);
            let argv = ["shadowtap", "replay", "x.pcap", "--target", "http://127.0.0.1:1", &flag];
            if let Ok(Command::Replay(args)) = Cli::try_parse_from(argv).map(|c| c.command) {
                let _ = args.limits.pipeline_config(&args.port);
                let _ = args.shadow.target_configs();
            }
        }

        /// Whatever a `--set-header` value holds, an accepted one cannot start a new
        /// header line or replace the copy's framing or Host.
        #[test]
        fn accepted_set_headers_cannot_inject_lines(text in any::<String>()) {
            if let Some((name, value)) = split_set_header(&text) {
                prop_assert!(name.bytes().all(|b| is_tchar(char::from(b))));
                prop_assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
                prop_assert!(derived_header(&name, &DERIVED_HEADERS).is_none());
            }
            if let Ok(suffix) = check_suffix(&text) {
                prop_assert!(!suffix.contains([':', '/', '@', ' ', '\r', '\n', '\0']));
            }
        }
    }

    #[test]
    fn sizes_take_binary_units_and_plain_bytes() {
        for (text, want) in [
            ("65536", 65536),
            ("0", 0),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("64KB", 64 << 10),
            ("64KiB", 64 << 10),
            ("64 kib", 64 << 10),
            ("8MiB", 8 << 20),
            ("8m", 8 << 20),
            ("256Mi", 256 << 20),
            ("1G", 1 << 30),
            ("1.5MiB", 3 << 19),
            ("0.5k", 512),
            ("2T", 2 << 40),
            ("12B", 12),
            ("16777216", 16 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "k",
            "1e3",
            "-1",
            "+1",
            "1.5",
            "1..5k",
            "1x",
            "1 MiB B",
            "0x10",
            "1_000",
            "18446744073709551616",
            "16777216T",
            "99999999999999999999999999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(size_usize("0").is_err());
        assert_eq!(size_usize_or_zero("0"), Ok(0));
        assert!(size_ring("2GiB").is_err());
        assert_eq!(size_ring("1GiB"), Ok(1 << 30));
        assert!(size_i32("2GiB").is_err());
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("120", Duration::from_secs(120)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["1d", "h", "-1s", "1e400s", "NaN", "1 hour"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0ms").is_err());
    }

    #[test]
    fn ports_take_lists_ranges_and_listen_addresses() {
        let r = |first, last| PortRange { first, last };
        assert_eq!(parse_ports(":8080"), Ok(r(8080, 8080)));
        assert_eq!(parse_ports(" 443 "), Ok(r(443, 443)));
        assert_eq!(parse_ports("8000-8010"), Ok(r(8000, 8010)));
        assert_eq!(parse_ports("1-65535"), Ok(r(1, 65535)));
        for bad in [
            "0", ":0", "0-10", "10-5", "65536", "http", "", "-", "8000-", "+80",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
        assert_eq!(
            port_list(&[r(80, 80), r(8000, 8002), r(8001, 8001), r(443, 443)]),
            [80, 8000, 8001, 8002, 443]
        );
    }

    #[test]
    fn speed_range() {
        for ok in ["max", "1x", "0.001x", "1000000x", "2", "0.5x"] {
            assert!(ok.parse::<Speed>().is_ok(), "{ok}");
        }
        for bad in [
            "1e-300x", "0x", "-1x", "inf", "NaNx", "0.0009x", "1000001x", "x", "",
        ] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
    }
}

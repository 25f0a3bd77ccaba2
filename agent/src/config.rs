//! Command line: every option also reads a `SHADOWTAP_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::inspect::InspectFormat;
use crate::pipeline::PipelineConfig;

#[derive(Debug, Parser)]
#[command(
    name = "shadowtap",
    version,
    about = "Shadow live HTTP/1.1 traffic to a test target, off the live path"
)]
pub struct Cli {
    /// Log format.
    #[arg(
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
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// pcap or pcapng files, read in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server ports to look at (comma-separated); by default any port, requests are
    /// found by content.
    #[arg(long, value_delimiter = ',', env = "SHADOWTAP_PORT")]
    pub port: Vec<u16>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl", env = "SHADOWTAP_FORMAT")]
    pub format: InspectFormat,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Memory caps of the capture side.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// Most TCP connections tracked at once; the least recently active is evicted past it.
    #[arg(long, default_value_t = 100_000, env = "SHADOWTAP_MAX_FLOWS")]
    pub max_flows: usize,
    /// Out-of-order bytes buffered per stream direction.
    #[arg(long, default_value_t = 1 << 20, env = "SHADOWTAP_MAX_STREAM_BUFFER")]
    pub max_stream_buffer: usize,
    /// Out-of-order bytes buffered over all streams.
    #[arg(long, default_value_t = 64 << 20, env = "SHADOWTAP_MAX_BUFFER")]
    pub max_buffer: usize,
    /// Largest request head (request line and headers) in bytes.
    #[arg(long, default_value_t = 64 << 10, env = "SHADOWTAP_MAX_HEAD")]
    pub max_head: usize,
    /// Largest request body in bytes; larger requests count as `too_large`.
    #[arg(long, default_value_t = 8 << 20, env = "SHADOWTAP_MAX_BODY")]
    pub max_body: usize,
    /// Seconds without a packet after which a connection is dropped.
    #[arg(long, default_value_t = 120, env = "SHADOWTAP_IDLE_TIMEOUT")]
    pub idle_timeout: u64,
}

impl LimitArgs {
    pub fn pipeline_config(&self, ports: &[u16]) -> PipelineConfig {
        let mut config = PipelineConfig::default();
        config.reassembly.ports = (!ports.is_empty()).then(|| ports.to_vec());
        config.reassembly.max_flows = self.max_flows;
        config.reassembly.max_stream_buffer = self.max_stream_buffer;
        config.reassembly.max_total_buffer = self.max_buffer;
        config.reassembly.idle_timeout_nanos = self.idle_timeout.saturating_mul(1_000_000_000);
        config.framer.max_head = self.max_head;
        config.framer.max_body = self.max_body;
        config
    }
}

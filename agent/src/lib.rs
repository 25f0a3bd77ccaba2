//! shadowtap: capture HTTP/1.1 requests from packets and shadow copies of them to a
//! test target. Data flows one way:
//! capture -> decode -> reassembly -> http -> sample -> replay.
//! The pure stages (decode, reassembly, http, sample) do no I/O and read no clock.

pub mod capture;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod reassembly;
pub mod replay;
pub mod sample;

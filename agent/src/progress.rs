//! The progress bar of `replay` and `inspect` on stderr (indicatif): drawn only for a
//! person at a terminal, never into a pipe, a log file or JSON logs, so that piped
//! output holds no progress bytes.

use std::io::IsTerminal;

/// A bar over the bytes of the captures read, with a message (requests so far).
/// Cheap to share between threads (`&self`), hidden when it must not show.
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar over `total` bytes when `wanted` and stderr is a terminal (and logs are not
    /// JSON); hidden otherwise.
    pub fn new(wanted: bool, total: u64) -> Self {
        let show = wanted && std::io::stderr().is_terminal() && !crate::logging::json();
        if !show {
            return Self::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        // The template is fixed and valid; the plain bar is only a fallback.
        let style = indicatif::ProgressStyle::with_template(
            "[{bar:30}] {percent:>3}%  {binary_bytes}/{binary_total_bytes}  {msg}  eta {eta}",
        )
        .map(|s| s.progress_chars("#>-"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Self { bar }
    }

    pub fn hidden() -> Self {
        Self {
            bar: indicatif::ProgressBar::hidden(),
        }
    }

    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Bytes read so far, of all captures.
    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// The text after the bar (`12 requests`).
    pub fn message(&self, text: String) {
        self.bar.set_message(text);
    }

    /// Clears the bar, so the summary that follows starts on a clean line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The size of the files a bar runs over; a file that cannot be read counts 0 (its
/// error comes when it is opened).
pub fn total_bytes<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> u64 {
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

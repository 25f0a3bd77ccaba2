//! Project chores, one entry point: `cargo run -p xtask -- <task>`. Each task is a script
//! in the repository, so CI, the README and this file run the same steps.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// (task, script, what it does)
const TASKS: &[(&str, &str, &str)] = &[
    (
        "setup",
        ".ci/setup",
        "install every tool the build, tests and benchmarks need",
    ),
    (
        "test",
        "scripts/test.sh",
        "fmt, clippy, all tests (root ones for real), bounded fuzzing",
    ),
    (
        "bench-inspect",
        "bench/inspect.sh",
        "offline pipeline vs tshark and tcpdump",
    ),
    (
        "bench-replay",
        "bench/replay.sh",
        "replay into nginx vs wrk",
    ),
    (
        "bench-live",
        "bench/live.sh",
        "live capture cost to the served path",
    ),
    (
        "demo-capture",
        "scripts/make-demo-capture.sh",
        "re-record agent/assets/demo.pcapng",
    ),
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let Some((_, script, _)) = TASKS.iter().find(|(name, _, _)| *name == task) else {
        let list: Vec<String> = TASKS
            .iter()
            .map(|(n, _, what)| format!("  {n:<14} {what}"))
            .collect();
        bail!("unknown task {task:?}; tasks:\n{}", list.join("\n"));
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("bash")
        .arg(root.join(script))
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {script}"))?;
    if !status.success() {
        bail!("{script} failed: {status}");
    }
    Ok(())
}

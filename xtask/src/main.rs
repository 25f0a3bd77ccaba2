//! Project chores: `cargo run -p xtask -- <task>`. Filled in as tasks arrive.

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown xtask {task:?}; known: none yet")
}

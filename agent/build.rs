//! With the `ebpf` feature (default), compiles agent-ebpf for `bpf{el,eb}-unknown-none`
//! (nightly + rust-src + bpf-linker) into OUT_DIR/shadowtap-classifier, which
//! capture/ebpf.rs embeds. Without it, builds nothing, so stable alone is enough.
//!
//! The inner `cargo build` is run here rather than through aya-build, whose every line of
//! output reaches the user as a `warning: shadowtap@...` line: its output is shown only
//! when it fails. The command and flags are aya-build 0.2's.

#[cfg(feature = "ebpf")]
fn main() -> Result<(), String> {
    use std::path::PathBuf;
    use std::process::Command;

    const PACKAGE: &str = "shadowtap-ebpf";
    const BINARY: &str = "shadowtap-classifier";
    let env = |name: &str| std::env::var(name).map_err(|e| format!("{name}: {e}"));
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in ["../agent-ebpf", "../agent-common"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let target = match env("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = match env("CARGO_CFG_TARGET_ARCH")?.as_str() {
        a if a.starts_with("riscv64") => "riscv64".to_string(),
        a => a.to_string(),
    };
    // Kept apart from OUT_DIR's artifacts, as aya-build does (cargo would flock itself).
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        PACKAGE,
        "--bins",
    ])
    .args(["--release", "--target", target, "-Z", "build-std=core"])
    .arg("--target-dir")
    .arg(&target_dir)
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
    )
    // The outer build's compiler settings are for the host, not for the BPF target.
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {cmd:?} (is rustup installed?): {e}"))?;
    if !out.status.success() {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo:warning={line}");
        }
        return Err(format!(
            "building the eBPF classifier failed ({}); it needs the nightly toolchain with \
             rust-src and bpf-linker (.ci/setup installs them), or build without it: \
             --no-default-features",
            out.status
        ));
    }
    let built = target_dir.join(target).join("release").join(BINARY);
    std::fs::copy(&built, out_dir.join(BINARY))
        .map_err(|e| format!("copying {}: {e}", built.display()))?;
    Ok(())
}

#[cfg(not(feature = "ebpf"))]
fn main() {}

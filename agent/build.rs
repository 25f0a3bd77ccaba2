//! With the `ebpf` feature (default), compiles agent-ebpf for `bpfel-unknown-none` with
//! aya-build (nightly + rust-src + bpf-linker) into OUT_DIR/shadowtap-classifier, which
//! capture/ebpf.rs embeds. Without it, builds nothing, so stable alone is enough.

#[cfg(feature = "ebpf")]
fn main() -> aya_build::Result<()> {
    let ebpf = aya_build::Package {
        name: "shadowtap-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
        ..Default::default()
    };
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-common")
    );
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}

#[cfg(not(feature = "ebpf"))]
fn main() {}

//! Empty on the host: the classifier itself is the `shadowtap-classifier` binary
//! (src/main.rs), built for `bpfel-unknown-none` by the agent's build script.

#![no_std]

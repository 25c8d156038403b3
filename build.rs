//! Builds the kernel fast path (`bpf/offload.c`) with clang into OUT_DIR, where
//! `src/transport/offload` embeds it. Without clang or the libbpf headers the daemon still
//! builds: the `stunnerd_bpf` cfg stays unset and the offload reports itself unavailable.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stunnerd_bpf)");
    println!("cargo::rerun-if-changed=bpf/offload.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=STUNNERD_NO_BPF");
    if std::env::var_os("STUNNERD_NO_BPF").is_some() {
        println!("cargo::warning=STUNNERD_NO_BPF set: building without the eBPF offload");
        without("STUNNERD_NO_BPF was set");
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The multiarch include directory holds <asm/types.h>, which the uapi headers need.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let obj = out.join("offload.o");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "bpf/offload.c", "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo::rustc-cfg=stunnerd_bpf");
            println!("cargo::rustc-env=STUNNERD_OFFLOAD_BUILD=eBPF offload built in");
        }
        Ok(s) => {
            println!(
                "cargo::warning=clang failed on bpf/offload.c ({s}): building without the eBPF \
                 offload (scripts/setup.sh installs clang and libbpf-dev)"
            );
            without("clang failed on bpf/offload.c");
        }
        Err(e) => {
            println!(
                "cargo::warning=cannot run {clang} ({e}): building without the eBPF offload \
                 (scripts/setup.sh installs clang and libbpf-dev)"
            );
            without("no clang at build time");
        }
    }
}

/// Says in `stunnerd --version` why this build has no offload.
fn without(why: &str) {
    println!("cargo::rustc-env=STUNNERD_OFFLOAD_BUILD=no eBPF offload: {why}");
}

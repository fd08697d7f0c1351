//! Builds the workspace's runtime binaries inside the trixie buildroot (so
//! they link trixie's libraries), with the host's Rust toolchain bound in.
//! Paths inside the sandbox are fixed, which keeps the binaries identical
//! whichever host directories hold the source and target.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::host;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Runtime binaries to install: (path in the rootfs, built file).
#[derive(Debug, Clone)]
pub struct RuntimeBins {
    pub init: PathBuf,
    pub others: Vec<(String, PathBuf)>,
}

fn home_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(default))
}

/// Runtime packages (under `runtime/`) that have binaries, except `init`.
fn dynamic_runtime_bins(src: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let meta = host::output(
        Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
            .arg(src.join("Cargo.toml")),
    )?;
    let v: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    let runtime = src.join("runtime");
    let mut out = Vec::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let manifest = Path::new(p["manifest_path"].as_str().unwrap_or_default());
        if name == "init" || !manifest.starts_with(&runtime) {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            if t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")) {
                out.push((name.to_string(), t["name"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    Ok(out)
}

fn sandboxed_cargo(
    buildroot: &Path,
    src: &Path,
    target_dir: &Path,
    log: &Path,
    args: &[&str],
    static_crt: bool,
) -> anyhow::Result<()> {
    let mut cmd = sandbox_cmd(buildroot, src, target_dir, "build", static_crt);
    cmd.args(args);
    host::run_logged(&mut cmd, log).context("building the runtime inside the trixie buildroot")
}

/// `cargo test --release <args>` inside the trixie buildroot, in the same
/// sandbox and target directory as the image's dynamic runtime build, so
/// crates that link trixie's libraries (zfs-sys, zfs) can run their tests.
/// Output goes to the terminal.
pub fn test(buildroot: &Path, src: &Path, target_dir: &Path, args: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    host::run(Command::new("cargo").args(["fetch", "--locked", "--manifest-path"]).arg(src.join("Cargo.toml")))
        .context("fetching crates (needs crates.io, or a filled ~/.cargo/registry)")?;
    let mut cmd = sandbox_cmd(buildroot, src, target_dir, "test", false);
    cmd.args(args);
    host::run(&mut cmd).context("cargo test inside the trixie buildroot")
}

fn sandbox_cmd(buildroot: &Path, src: &Path, target_dir: &Path, subcommand: &str, static_crt: bool) -> Command {
    let cargo_home = home_dir("CARGO_HOME", ".cargo");
    let rustup_home = home_dir("RUSTUP_HOME", ".rustup");
    let mut cmd = Command::new("bwrap");
    cmd.arg("--ro-bind")
        .arg(buildroot)
        .arg("/")
        .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/srv", "--tmpfs", "/root"])
        .arg("--ro-bind")
        .arg(src)
        .arg("/srv/src")
        .arg("--bind")
        .arg(target_dir)
        .arg("/srv/target")
        .arg("--bind")
        .arg(&cargo_home)
        .arg("/root/.cargo")
        .arg("--ro-bind")
        .arg(&rustup_home)
        .arg("/root/.rustup")
        .args([
            "--setenv",
            "HOME",
            "/root",
            "--setenv",
            "CARGO_HOME",
            "/root/.cargo",
            "--setenv",
            "RUSTUP_HOME",
            "/root/.rustup",
        ])
        .args(["--setenv", "PATH", "/root/.cargo/bin:/usr/bin:/usr/sbin:/bin:/sbin"])
        .args(["--setenv", "CARGO_TERM_COLOR", "never", "--setenv", "CARGO_INCREMENTAL", "0"])
        .args([
            "--chdir",
            "/srv/src",
            "--",
            "cargo",
            subcommand,
            "--release",
            "--offline",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ]);
    cmd.arg(if static_crt { "/srv/target/static" } else { "/srv/target/dynamic" });
    if let Ok(tc) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.env("RUSTUP_TOOLCHAIN", tc);
    }
    let mut flags = String::from("--remap-path-prefix=/root/.cargo=/cargo");
    if static_crt {
        flags.push_str(" -C target-feature=+crt-static");
    }
    cmd.env("RUSTFLAGS", flags);
    // bwrap passes the environment through; keep the host's out of the sandbox.
    for k in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(k);
    }
    cmd
}

/// `true` if the ELF file has no program interpreter (statically linked).
pub fn is_static_elf(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16at(0x36), u16at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4).map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3).unwrap_or(false)
    })
}

pub fn build(src: &Path, buildroot: &Path, target_dir: &Path, logs: &Path) -> anyhow::Result<RuntimeBins> {
    std::fs::create_dir_all(target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    host::run_logged(
        Command::new("cargo").args(["fetch", "--locked", "--manifest-path"]).arg(src.join("Cargo.toml")),
        &logs.join("cargo-fetch.log"),
    )
    .context("fetching crates (needs crates.io, or a filled ~/.cargo/registry)")?;
    sandboxed_cargo(
        buildroot,
        src,
        target_dir,
        &logs.join("cargo-init.log"),
        &["-p", "init", "--bin", "triton-init"],
        true,
    )?;
    let init = target_dir.join("static").join(TARGET).join("release/triton-init");
    let bytes = std::fs::read(&init).with_context(|| format!("reading {}", init.display()))?;
    if !is_static_elf(&bytes) {
        bail!("{} is dynamically linked; stage 1 has no libc, init must be static", init.display());
    }
    let mut others = Vec::new();
    let bins = dynamic_runtime_bins(src)?;
    if !bins.is_empty() {
        let mut args: Vec<&str> = Vec::new();
        for (pkg, _) in &bins {
            args.extend(["-p", pkg.as_str()]);
        }
        sandboxed_cargo(buildroot, src, target_dir, &logs.join("cargo-runtime.log"), &args, false)?;
        for (_, bin) in &bins {
            others.push((format!("usr/bin/{bin}"), target_dir.join("dynamic").join(TARGET).join("release").join(bin)));
        }
    }
    Ok(RuntimeBins { init, others })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        let me = std::fs::read("/proc/self/exe").expect("self");
        // Test binaries are dynamically linked (PT_INTERP present).
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"not an elf"));
    }
}

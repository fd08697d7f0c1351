//! Test harness for the built platform image: a loopback HTTP server that
//! plays booter's role for `fetch=`, and QEMU (TCG) VMs whose serial console
//! the tests read and type into.

pub mod cn;
pub mod headnode;
pub mod http;
pub mod inject;
pub mod platform;
pub mod qemu;
pub mod rabbitmq;
pub mod scenario;

/// A binary of another workspace package, for tests (a test of package `ci`
/// has no `CARGO_BIN_EXE_<bin>` for other packages): `$<env_override>` if
/// set, else `cargo build --locked -p <package> --bin <bin>` into the
/// calling test executable's own target directory and profile. Panics with
/// the reason when the build fails (tests only).
pub fn workspace_bin(package: &str, bin: &str, env_override: &str) -> std::path::PathBuf {
    use std::path::Path;
    if let Some(p) = std::env::var_os(env_override) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile directory").to_path_buf();
    let target_dir = profile_dir.parent().expect("target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--locked", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(st.success(), "cargo build -p {package} --bin {bin} failed ({st})");
    let path = profile_dir.join(bin);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

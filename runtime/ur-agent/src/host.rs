//! The node side: running `sysinfo`, reading the setup-state file, the
//! startup marker and rebooting.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::identity::{Identity, IdentityError};

/// Longest a `sysinfo` run may take.
pub const SYSINFO_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the orderly reboot command may take to answer.
pub const REBOOT_CMD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SysinfoError {
    #[error("cannot run {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{} {args} did not finish within {} s", program.display(), SYSINFO_TIMEOUT.as_secs())]
    Timeout { program: PathBuf, args: String },
    #[error("{} {args} failed ({status}): {stderr}", program.display())]
    Failed { program: PathBuf, args: String, status: String, stderr: String },
    #[error("{} printed no JSON object: {reason}", program.display())]
    NotJson { program: PathBuf, reason: String },
    #[error("{}: {source}", program.display())]
    Identity { program: PathBuf, source: IdentityError },
}

/// The last line of a command's stderr, for a one-line error.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no stderr)");
    line.chars().take(300).collect()
}

async fn run_sysinfo_cmd(program: &Path, args: &[&str]) -> Result<Vec<u8>, SysinfoError> {
    let shown = args.join(" ");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SysinfoError::Spawn { program: program.to_path_buf(), source })?;
    let out = match tokio::time::timeout(SYSINFO_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(source)) => return Err(SysinfoError::Spawn { program: program.to_path_buf(), source }),
        Err(_) => return Err(SysinfoError::Timeout { program: program.to_path_buf(), args: shown }),
    };
    if !out.status.success() {
        return Err(SysinfoError::Failed {
            program: program.to_path_buf(),
            args: shown,
            status: out.status.to_string(),
            stderr: last_line(&out.stderr),
        });
    }
    Ok(out.stdout)
}

/// sysinfo output: the JSON text exactly as printed (key order kept, it
/// is published as is) and the identity found in it.
#[derive(Debug, Clone)]
pub struct SysinfoOutput {
    pub json: Vec<u8>,
    pub identity: Identity,
}

/// Runs `sysinfo` (after `sysinfo -u` when `refresh`; a failing `-u` is
/// logged and the cached output used) and checks the output.
pub async fn sysinfo(program: &Path, refresh: bool) -> Result<SysinfoOutput, SysinfoError> {
    if refresh {
        if let Err(e) = run_sysinfo_cmd(program, &["-u"]).await {
            tracing::warn!("sysinfo refresh failed, using its cached output: {e}");
        }
    }
    let out = run_sysinfo_cmd(program, &[]).await?;
    let text = String::from_utf8(out)
        .map_err(|e| SysinfoError::NotJson { program: program.to_path_buf(), reason: format!("not UTF-8 ({e})") })?;
    let text = text.trim();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => return Err(SysinfoError::NotJson { program: program.to_path_buf(), reason: "not an object".into() }),
        Err(e) => return Err(SysinfoError::NotJson { program: program.to_path_buf(), reason: e.to_string() }),
    }
    let identity = Identity::from_sysinfo(text)
        .map_err(|source| SysinfoError::Identity { program: program.to_path_buf(), source })?;
    Ok(SysinfoOutput { json: text.as_bytes().to_vec(), identity })
}

/// What the setup-state file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupState {
    Complete,
    NotComplete,
    Missing,
    /// Unreadable or not the expected JSON (the reason).
    Unreadable(String),
}

/// Reads the setup-state file (`complete: true` → set up).
pub fn setup_state(path: &Path) -> SetupState {
    match std::fs::read_to_string(path) {
        Ok(text) => match sysinfo::setup_complete(&text) {
            Some(true) => SetupState::Complete,
            Some(false) => SetupState::NotComplete,
            None => SetupState::Unreadable(format!("{} is not JSON with \"complete\"", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => SetupState::Missing,
        Err(e) => SetupState::Unreadable(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the startup marker (creating its directory).
pub fn write_marker(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, b"")
}

/// Runs a command given as program + arguments and waits up to `limit`.
pub async fn run_command(argv: &[String], limit: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    // Its own process group: when init stops ur-agent (SIGTERM to our
    // group) during the reboot this command asked for, the command is not
    // killed half-way and mistaken for a failed request.
    let child = Command::new(prog)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => Err(format!("{} failed ({}): {}", argv.join(" "), o.status, last_line(&o.stderr))),
        Ok(Err(e)) => Err(format!("{prog}: {e}")),
        Err(_) => Err(format!("{} did not finish within {} s", argv.join(" "), limit.as_secs())),
    }
}

/// The forced reboot: the configured command, else sync + reboot(2).
pub async fn force_reboot(cmd: Option<&[String]>) -> Result<(), String> {
    match cmd {
        Some(argv) => run_command(argv, REBOOT_CMD_TIMEOUT).await,
        None => {
            nix::unistd::sync();
            match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
                Ok(never) => match never {},
                Err(e) => Err(format!("reboot(2) failed: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    fn fake_sysinfo(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("sysinfo");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nif [ \"$1\" = -u ]; then echo u >> {0}/refreshed; exit 0; fi\ncat <<'EOF'\n{body}\nEOF\n",
                dir.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    const GOOD: &str =
        r#"{"UUID":"u-1","Network Interfaces":{"e0":{"MAC Address":"00:11:22:33:44:55","NIC Names":["admin"]}}}"#;

    #[test]
    fn sysinfo_output_kept_verbatim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = fake_sysinfo(dir.path(), GOOD);
        let out = rt().block_on(sysinfo(&p, true)).expect("sysinfo");
        assert_eq!(out.json, GOOD.as_bytes());
        assert_eq!(out.identity.admin_mac, "00:11:22:33:44:55");
        assert!(dir.path().join("refreshed").exists(), "-u ran first");
    }

    #[test]
    fn sysinfo_errors_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = rt().block_on(sysinfo(&dir.path().join("none"), false)).expect_err("missing");
        assert!(e.to_string().starts_with(&format!("cannot run {}/none", dir.path().display())), "{e}");
        let p = fake_sysinfo(dir.path(), "garbage");
        let e = rt().block_on(sysinfo(&p, false)).expect_err("garbage");
        assert!(e.to_string().contains("printed no JSON object"), "{e}");
        let p = fake_sysinfo(dir.path(), r#"{"UUID":"u-1"}"#);
        let e = rt().block_on(sysinfo(&p, false)).expect_err("no admin nic");
        assert!(e.to_string().contains("No admin NIC detected"), "{e}");
        let f = dir.path().join("fails");
        std::fs::write(&f, "#!/bin/sh\necho 'no dmi' >&2\nexit 3\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = rt().block_on(sysinfo(&f, false)).expect_err("fails");
        assert!(e.to_string().ends_with("failed (exit status: 3): no dmi"), "{e}");
    }

    #[test]
    fn setup_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.json");
        assert_eq!(setup_state(&p), SetupState::Missing);
        std::fs::write(&p, r#"{"complete":false,"seen_states":[]}"#).expect("write");
        assert_eq!(setup_state(&p), SetupState::NotComplete);
        std::fs::write(&p, r#"{"complete":true}"#).expect("write");
        assert_eq!(setup_state(&p), SetupState::Complete);
        std::fs::write(&p, "{").expect("write");
        assert!(matches!(setup_state(&p), SetupState::Unreadable(_)));
    }

    #[test]
    fn commands_and_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("run/triton/ur-startup");
        write_marker(&m).expect("marker");
        assert!(m.exists());
        let rt = rt();
        assert_eq!(rt.block_on(run_command(&["/bin/true".into()], Duration::from_secs(5))), Ok(()));
        let e = rt.block_on(run_command(&["/bin/false".into()], Duration::from_secs(5))).expect_err("false");
        assert!(e.starts_with("/bin/false failed (exit status: 1)"), "{e}");
        assert!(rt.block_on(run_command(&[], Duration::from_secs(5))).is_err());
        let e =
            rt.block_on(run_command(&["/bin/sleep".into(), "5".into()], Duration::from_millis(200))).expect_err("slow");
        assert!(e.contains("did not finish"), "{e}");
        let touched = dir.path().join("forced");
        let cmd = vec!["/usr/bin/touch".to_string(), touched.display().to_string()];
        assert_eq!(rt.block_on(force_reboot(Some(&cmd))), Ok(()));
        assert!(touched.exists());
    }
}

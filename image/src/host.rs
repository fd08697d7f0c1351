//! Host tools: preflight checks naming the package to install, and command
//! execution with errors that show what ran and what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const TOOLS: &[Tool] = &[
    Tool { program: "mksquashfs", package: "squashfs-tools" },
    Tool { program: "bwrap", package: "bubblewrap" },
    Tool { program: "python3", package: "python3" },
    Tool { program: "git", package: "git" },
    Tool { program: "cargo", package: "the Rust toolchain (rustup)" },
];

/// Looks `program` up on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Fails naming every missing tool and its package.
pub fn preflight(tools: &[Tool], mkosi_dir: &Path) -> anyhow::Result<()> {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t.program).is_none())
        .map(|t| format!("{} (Debian package {})", t.program, t.package))
        .collect();
    if !mkosi_dir.join("usr/lib/python3/dist-packages/mkosi/__init__.py").is_file() {
        missing.push(format!("mkosi 25 from Debian trixie, unpacked at {}", mkosi_dir.display()));
    }
    if !missing.is_empty() {
        bail!("missing host tools:\n  {}\nRun `sudo bash ci/setup.sh` once to install them.", missing.join("\n  "));
    }
    Ok(())
}

/// Runs `cmd`, streaming its output to our stderr, and fails with the
/// command line if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with its output sent to `log`; on failure the error carries
/// the last lines of the log.
pub fn run_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let f = std::fs::File::create(log).with_context(|| format!("creating log {}", log.display()))?;
    let f2 = f.try_clone().context("dup log fd")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{shown} failed ({status}); last lines of {}:\n{}", log.display(), tail.join("\n"));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let d = tempfile::tempdir().expect("tmp");
        let tools = [Tool { program: "definitely-not-a-tool-xyz", package: "xyz-tools" }];
        let e = preflight(&tools, d.path()).expect_err("missing").to_string();
        assert!(e.contains("xyz-tools") && e.contains("mkosi") && e.contains("ci/setup.sh"), "{e}");
    }

    #[test]
    fn failing_command_shows_log_tail() {
        let d = tempfile::tempdir().expect("tmp");
        let log = d.path().join("log");
        let e = run_logged(Command::new("sh").args(["-c", "echo boom; exit 3"]), &log).expect_err("fails");
        assert!(e.to_string().contains("boom"), "{e}");
    }
}

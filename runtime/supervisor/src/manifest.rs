//! Service manifests: one small TOML file per service (our format, so
//! unknown keys are errors). [`parse`] turns text into a [`Manifest`],
//! [`Manifest::validate`] turns that into a [`ServiceSpec`]; [`load_dirs`]
//! reads whole directories, reports each bad file and skips it.
//!
//! ```toml
//! name = "cn-agent"
//! exec = ["/opt/triton/bin/node", "/opt/triton/agents/cn-agent/lib/server.js"]
//! env = { NODE_ENV = "production" }
//! user = "root"                  # optional; name from /etc/passwd or a numeric uid
//! needs = ["network", "pool"]    # conditions init satisfies before starting it
//! modes = ["setup"]              # node modes it runs in (default ["setup"])
//! order = 50                     # start order (ascending); stop in reverse (default 0)
//! restart = "always"             # "always" (default) | "on-failure" | "never"
//! stop_timeout_s = 10            # SIGTERM → SIGKILL after this (default 10, 1..=3600)
//! log = true                     # stdout+stderr → <log_dir>/<name>.log (default true)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The node mode, as decided by init (pool present + setup marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The node has been set up (`sdc-server setup` done): all agents run.
    Setup,
    /// Not set up yet: only what is needed to be set up (ur-agent) runs.
    Unsetup,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Setup => "setup",
            Mode::Unsetup => "unsetup",
        })
    }
}

/// When a service is started again after it exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Any exit, even status 0, is followed by a restart (with backoff).
    #[default]
    Always,
    /// Restart after a non-zero exit or a signal; exit 0 leaves it stopped.
    OnFailure,
    /// Never restart; a failed exit leaves the service `failed`.
    Never,
}

/// Where a service's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// `<log_dir>/<name>.log`, rotated by size.
    File,
    /// `/dev/null`.
    Null,
    /// Init's own stdout/stderr (the console); for internal children.
    Inherit,
}

/// A validated service, from a manifest or built in code by init
/// (e.g. the console getty or systemd-udevd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// argv; `exec[0]` is an absolute path.
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub needs: BTreeSet<String>,
    pub modes: BTreeSet<Mode>,
    pub order: i32,
    pub restart: RestartPolicy,
    pub stop_timeout: Duration,
    pub log: LogTarget,
    /// The manifest file it came from (`None` for services built in code).
    pub source: Option<PathBuf>,
}

impl ServiceSpec {
    /// A service with the defaults: both modes, order 0, restart always,
    /// stop timeout 10 s, log to file, no conditions.
    pub fn new(name: impl Into<String>, exec: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ServiceSpec {
            name: name.into(),
            exec: exec.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            user: None,
            needs: BTreeSet::new(),
            modes: [Mode::Setup, Mode::Unsetup].into_iter().collect(),
            order: 0,
            restart: RestartPolicy::Always,
            stop_timeout: Duration::from_secs(DEFAULT_STOP_TIMEOUT_S),
            log: LogTarget::File,
            source: None,
        }
    }

    /// Checks the same rules as a manifest; returns every problem found.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        check_name(&self.name, &mut p);
        check_exec(&self.exec, &mut p);
        check_env(&self.env, &mut p);
        if let Some(u) = &self.user {
            check_user(u, &mut p);
        }
        for n in &self.needs {
            if !is_ident(n) {
                p.push(format!("needs: condition {n:?} must be lowercase letters, digits and '-'"));
            }
        }
        if self.modes.is_empty() {
            p.push("modes must list at least one of \"setup\", \"unsetup\"".into());
        }
        let t = self.stop_timeout.as_secs();
        if !(1..=MAX_STOP_TIMEOUT_S).contains(&t) {
            p.push(format!("stop_timeout_s must be between 1 and {MAX_STOP_TIMEOUT_S} (got {t})"));
        }
        p
    }
}

pub const DEFAULT_STOP_TIMEOUT_S: u64 = 10;
pub const MAX_STOP_TIMEOUT_S: u64 = 3600;

/// A manifest as written, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub exec: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub order: i32,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_s: u64,
    #[serde(default = "default_log")]
    pub log: bool,
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::Setup]
}
fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_S
}
fn default_log() -> bool {
    true
}

/// A manifest that could not be used; `path` names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read service manifest: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: cannot list service manifests: {source}", path.display())]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("{}: not a valid service manifest (TOML): {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: invalid service manifest: {}", path.display(), problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("{}: service {name:?} is already defined by {}; this file is skipped", path.display(), first.display())]
    Duplicate { path: PathBuf, name: String, first: PathBuf },
}

/// Parses manifest text (`path` is only used in errors).
pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
    toml::from_str(text).map_err(|e| ManifestError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

impl Manifest {
    /// Checks every field and builds the spec; all problems are reported at once.
    pub fn validate(self, path: &Path) -> Result<ServiceSpec, ManifestError> {
        let mut problems = Vec::new();
        let needs: BTreeSet<String> = self.needs.iter().cloned().collect();
        if needs.len() != self.needs.len() {
            problems.push("needs: remove the duplicate conditions".into());
        }
        let modes: BTreeSet<Mode> = self.modes.iter().copied().collect();
        let spec = ServiceSpec {
            name: self.name,
            exec: self.exec,
            env: self.env,
            user: self.user,
            needs,
            modes,
            order: self.order,
            restart: self.restart,
            stop_timeout: Duration::from_secs(self.stop_timeout_s),
            log: if self.log { LogTarget::File } else { LogTarget::Null },
            source: Some(path.to_path_buf()),
        };
        problems.extend(spec.problems());
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(ManifestError::Invalid { path: path.to_path_buf(), problems })
        }
    }
}

/// Reads and validates one manifest file.
pub fn load_file(path: &Path) -> Result<ServiceSpec, ManifestError> {
    let text = fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)?.validate(path)
}

/// Loads every `*.toml` file of each directory (in name order; a missing
/// directory is not an error). Bad files and duplicate names (first one
/// wins) are returned as errors next to the good services.
pub fn load_dirs(dirs: &[PathBuf]) -> (Vec<ServiceSpec>, Vec<ManifestError>) {
    let mut specs: Vec<ServiceSpec> = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                errors.push(ManifestError::ReadDir { path: dir.clone(), source });
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            match load_file(&path) {
                Ok(spec) => match specs.iter().find(|s| s.name == spec.name) {
                    Some(first) => errors.push(ManifestError::Duplicate {
                        path,
                        name: spec.name,
                        first: first.source.clone().unwrap_or_default(),
                    }),
                    None => specs.push(spec),
                },
                Err(e) => errors.push(e),
            }
        }
    }
    (specs, errors)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_name(name: &str, p: &mut Vec<String>) {
    let ok_chars =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let ok_first = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 64 || !ok_chars || !ok_first {
        p.push(format!(
            "name {name:?} must be 1-64 characters: lowercase letters, digits, '-', '_', '.', starting with a letter or digit"
        ));
    }
}

fn check_exec(exec: &[String], p: &mut Vec<String>) {
    match exec.first() {
        None => p.push("exec must list the program and its arguments, e.g. [\"/usr/bin/foo\", \"--bar\"]".into()),
        Some(prog) if !prog.starts_with('/') => {
            p.push(format!("exec[0] {prog:?} must be an absolute path (init does not search PATH)"))
        }
        Some(_) => {}
    }
    if exec.iter().any(|a| a.contains('\0')) {
        p.push("exec arguments must not contain NUL bytes".into());
    }
}

fn check_env(env: &BTreeMap<String, String>, p: &mut Vec<String>) {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(format!("env key {k:?} must be non-empty and contain no '=' or NUL"));
        }
        if v.contains('\0') {
            p.push(format!("env value of {k:?} must not contain NUL bytes"));
        }
    }
}

fn check_user(u: &str, p: &mut Vec<String>) {
    if u.is_empty() || u.contains(':') || u.contains('\0') || u.contains(char::is_whitespace) {
        p.push(format!("user {u:?} must be a user name or a numeric uid"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures(kind: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind);
        let mut v: Vec<PathBuf> = fs::read_dir(dir).expect("fixtures dir").map(|e| e.expect("entry").path()).collect();
        v.sort();
        v
    }

    #[test]
    fn valid_fixtures_load() {
        let files = fixtures("valid");
        assert!(files.len() >= 3);
        for f in files {
            let spec = load_file(&f).unwrap_or_else(|e| panic!("{e}"));
            assert!(spec.problems().is_empty(), "{}", f.display());
        }
    }

    #[test]
    fn invalid_fixtures_are_reported_with_path() {
        let files = fixtures("invalid");
        assert!(files.len() >= 5);
        for f in files {
            let err = load_file(&f).expect_err(&format!("{} should be rejected", f.display()));
            let msg = err.to_string();
            assert!(msg.contains(&f.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn full_example_fields() {
        let text = r#"
            name = "cn-agent"
            exec = ["/opt/triton/bin/node", "server.js"]
            env = { NODE_ENV = "production" }
            needs = ["network", "pool"]
            modes = ["setup", "unsetup"]
            order = 50
            restart = "on-failure"
            stop_timeout_s = 20
            log = false
        "#;
        let p = Path::new("x.toml");
        let s = parse(text, p).and_then(|m| m.validate(p)).expect("valid");
        assert_eq!(s.name, "cn-agent");
        assert_eq!(s.env.get("NODE_ENV").map(String::as_str), Some("production"));
        assert!(s.needs.contains("pool") && s.needs.contains("network"));
        assert_eq!(s.modes.len(), 2);
        assert_eq!(s.order, 50);
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.stop_timeout, Duration::from_secs(20));
        assert_eq!(s.log, LogTarget::Null);
    }

    #[test]
    fn defaults() {
        let p = Path::new("x.toml");
        let s = parse("name = \"a\"\nexec = [\"/bin/true\"]\n", p).and_then(|m| m.validate(p)).expect("valid");
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.log, LogTarget::File);
        assert_eq!(s.modes.iter().copied().collect::<Vec<_>>(), vec![Mode::Setup]);
        assert_eq!(s.order, 0);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let e = parse("name = \"a\"\nexec = [\"/bin/true\"]\nrestrat = \"never\"\n", Path::new("a.toml"))
            .expect_err("unknown key");
        assert!(e.to_string().contains("restrat"), "{e}");
    }

    #[test]
    fn all_problems_reported_at_once() {
        let p = Path::new("b.toml");
        let e = parse("name = \"Bad Name\"\nexec = [\"rel\"]\nstop_timeout_s = 0\nmodes = []\n", p)
            .and_then(|m| m.validate(p))
            .expect_err("invalid");
        match e {
            ManifestError::Invalid { problems, .. } => assert_eq!(problems.len(), 4, "{problems:?}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn load_dirs_skips_bad_and_duplicates() {
        let d1 = tempfile::tempdir().expect("tempdir");
        let d2 = tempfile::tempdir().expect("tempdir");
        fs::write(d1.path().join("a.toml"), "name = \"a\"\nexec = [\"/bin/true\"]\n").expect("write");
        fs::write(d1.path().join("bad.toml"), "name = \"b\"\n").expect("write");
        fs::write(d1.path().join("ignored.txt"), "junk").expect("write");
        fs::write(d2.path().join("a.toml"), "name = \"a\"\nexec = [\"/bin/false\"]\n").expect("write");
        fs::write(d2.path().join("c.toml"), "name = \"c\"\nexec = [\"/bin/true\"]\n").expect("write");
        let missing = d1.path().join("nope");
        let (specs, errs) = load_dirs(&[d1.path().to_path_buf(), missing, d2.path().to_path_buf()]);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(specs[0].exec, ["/bin/true"]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| matches!(e, ManifestError::Duplicate { .. })));
        assert!(errs.iter().any(|e| matches!(e, ManifestError::Parse { .. })));
    }

    #[test]
    fn programmatic_spec_checks() {
        let s = ServiceSpec::new("getty-console", ["/usr/sbin/agetty", "console"]);
        assert!(s.problems().is_empty());
        let s = ServiceSpec::new("x/y", Vec::<String>::new());
        assert_eq!(s.problems().len(), 2);
    }
}

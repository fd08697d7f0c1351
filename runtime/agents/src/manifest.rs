//! The agent manifest shipped as `agent.toml` in each agent tarball (our
//! format, so unknown keys are errors). [`parse`] turns text into a
//! [`RawManifest`], [`RawManifest::validate`] checks every field and builds an
//! [`AgentManifest`]; [`service_toml`] renders the supervisor's service
//! manifest for an installed agent.
//!
//! ```toml
//! name = "cn-agent"
//! version = "2.9.3"                      # MAJOR.MINOR.PATCH[-pre][+build]
//! command = ["bin/cn-agent", "--port", "5309"]  # argv; a relative program is in the install dir
//! env = { NODE_ENV = "production" }
//! working_dir = "."                      # optional; relative to the install dir, or absolute
//! restart = "always"                     # "always" (default) | "on-failure" | "never"
//! needs = ["network", "pool"]            # what init provides before the start
//! after = ["config-agent"]               # agents started before this one
//! ready = { tcp = "127.0.0.1:5309", within_s = 30 }
//! # or ready = { file = "/run/cn-agent.ready" }
//! # or ready = { exit_zero = ["bin/check", "--quick"], within_s = 10 }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file name of the manifest inside an agent tarball.
pub const MANIFEST_FILE: &str = "agent.toml";
/// Readiness time limit when `within_s` is not given.
pub const DEFAULT_READY_WITHIN_S: u64 = 30;
/// Upper bound for `within_s`.
pub const MAX_READY_WITHIN_S: u64 = 600;

/// When the supervisor starts an agent again after it exits on its own:
/// the supervisor's own type, so both manifests spell it the same way.
pub use supervisor::manifest::RestartPolicy;

/// What init provides before an agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// The admin network is up.
    Network,
    /// The `zones` pool is imported.
    Pool,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Network => "network",
            Need::Pool => "pool",
        }
    }
}

/// The readiness table as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub exit_zero: Option<Vec<String>>,
    #[serde(default)]
    pub within_s: Option<u64>,
}

/// A manifest as written, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub name: String,
    pub version: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub needs: Vec<Need>,
    #[serde(default)]
    pub after: Vec<String>,
    pub ready: RawReady,
}

/// How to tell that a freshly started agent works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// This file exists.
    File(PathBuf),
    /// This command (argv; a relative program is in the install dir) exits 0.
    ExitZero(Vec<String>),
}

/// A readiness check and its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub check: ReadyCheck,
    pub within: Duration,
}

/// A validated agent manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentManifest {
    pub name: String,
    pub version: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub restart: RestartPolicy,
    pub needs: BTreeSet<Need>,
    pub after: Vec<String>,
    pub ready: Ready,
}

/// A manifest that could not be used; `path` names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read agent manifest: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a valid agent manifest (TOML): {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: invalid agent manifest: {}", path.display(), problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// Parses manifest text (`path` is only used in errors).
pub fn parse(text: &str, path: &Path) -> Result<RawManifest, ManifestError> {
    toml::from_str(text).map_err(|e| ManifestError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Reads, parses and validates one manifest file.
pub fn load_file(path: &Path) -> Result<AgentManifest, ManifestError> {
    let text = fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)?.validate(path)
}

impl RawManifest {
    /// Checks every field and builds the manifest; all problems are reported at once.
    pub fn validate(self, path: &Path) -> Result<AgentManifest, ManifestError> {
        let mut p = Vec::new();
        if !is_agent_name(&self.name) {
            p.push(format!(
                "name {:?} must be 1-64 characters: lowercase letters, digits and '-', starting with a letter",
                self.name
            ));
        }
        if let Err(e) = check_version(&self.version) {
            p.push(e);
        }
        check_argv("command", &self.command, &mut p);
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.push(format!("env: key {k:?} must be non-empty and contain no '=' or NUL"));
            }
            if v.contains('\0') {
                p.push(format!("env: value of {k:?} must not contain NUL bytes"));
            }
        }
        if let Some(dir) = &self.working_dir {
            if dir.is_empty() || dir.contains('\0') {
                p.push("working_dir must be a non-empty path (relative to the install dir, or absolute)".into());
            } else if !dir.starts_with('/') && !is_contained_relative(dir) {
                p.push(format!("working_dir {dir:?} must stay inside the install dir (no '..'), or be absolute"));
            }
        }
        let needs: BTreeSet<Need> = self.needs.iter().copied().collect();
        if needs.len() != self.needs.len() {
            p.push("needs: remove the duplicate entries".into());
        }
        let mut seen = BTreeSet::new();
        for dep in &self.after {
            if !is_agent_name(dep) {
                p.push(format!("after: {dep:?} is not an agent name (lowercase letters, digits, '-')"));
            } else if *dep == self.name {
                p.push(format!("after: {dep:?} is this agent itself; remove it"));
            } else if !seen.insert(dep.as_str()) {
                p.push(format!("after: {dep:?} is listed twice; remove one"));
            }
        }
        let ready = validate_ready(&self.ready, &mut p);
        match ready {
            Some(ready) if p.is_empty() => Ok(AgentManifest {
                name: self.name,
                version: self.version,
                command: self.command,
                env: self.env,
                working_dir: self.working_dir,
                restart: self.restart,
                needs,
                after: self.after,
                ready,
            }),
            _ => Err(ManifestError::Invalid { path: path.to_path_buf(), problems: p }),
        }
    }
}

fn validate_ready(r: &RawReady, p: &mut Vec<String>) -> Option<Ready> {
    let within_s = r.within_s.unwrap_or(DEFAULT_READY_WITHIN_S);
    let mut ok = true;
    if !(1..=MAX_READY_WITHIN_S).contains(&within_s) {
        p.push(format!("ready.within_s must be between 1 and {MAX_READY_WITHIN_S} (got {within_s})"));
        ok = false;
    }
    let given = usize::from(r.tcp.is_some()) + usize::from(r.file.is_some()) + usize::from(r.exit_zero.is_some());
    if given != 1 {
        p.push(
            "ready must have exactly one of tcp = \"ADDR:PORT\", file = \"/abs/path\", exit_zero = [\"cmd\", ...]"
                .into(),
        );
        return None;
    }
    let check = if let Some(addr) = &r.tcp {
        match addr.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(ReadyCheck::Tcp(a)),
            _ => {
                p.push(format!(
                    "ready.tcp {addr:?} must be an IP address and a non-zero port, e.g. \"127.0.0.1:5309\""
                ));
                None
            }
        }
    } else if let Some(file) = &r.file {
        if file.starts_with('/') && !file.contains('\0') {
            Some(ReadyCheck::File(PathBuf::from(file)))
        } else {
            p.push(format!("ready.file {file:?} must be an absolute path, e.g. \"/run/agent.ready\""));
            None
        }
    } else if let Some(argv) = &r.exit_zero {
        let before = p.len();
        check_argv("ready.exit_zero", argv, p);
        (p.len() == before).then(|| ReadyCheck::ExitZero(argv.clone()))
    } else {
        None
    };
    match check {
        Some(check) if ok => Some(Ready { check, within: Duration::from_secs(within_s) }),
        _ => None,
    }
}

fn check_argv(field: &str, argv: &[String], p: &mut Vec<String>) {
    match argv.first() {
        None => p.push(format!("{field} must list the program and its arguments, e.g. [\"bin/agent\", \"--flag\"]")),
        Some(prog) if prog.is_empty() => p.push(format!("{field}[0] must not be empty")),
        Some(prog) if prog.contains('=') => {
            p.push(format!("{field}[0] {prog:?} must not contain '='"));
        }
        Some(prog) if !prog.starts_with('/') && !is_contained_relative(prog) => {
            p.push(format!("{field}[0] {prog:?} must be an absolute path or a path inside the install dir (no '..')"))
        }
        Some(_) => {}
    }
    if argv.iter().any(|a| a.contains('\0')) {
        p.push(format!("{field}: arguments must not contain NUL bytes"));
    }
}

/// A relative path with only normal components (no `..`, no root).
pub(crate) fn is_contained_relative(s: &str) -> bool {
    let path = Path::new(s);
    !s.is_empty()
        && !s.contains('\0')
        && !s.contains('\\')
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Agent names: 1-64 of lowercase letters, digits and '-', starting with a letter.
pub fn is_agent_name(s: &str) -> bool {
    s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a semver-ish version: `MAJOR.MINOR.PATCH`, optionally followed by
/// `-pre.release` and `+build`, identifiers of `[0-9A-Za-z-]`. Returns what to fix.
pub fn check_version(v: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "version {v:?} must look like MAJOR.MINOR.PATCH with optional -prerelease and +build, e.g. \"2.9.3\" or \"1.0.0-rc.1+20240101\""
        ))
    };
    if v.is_empty() || v.len() > 64 {
        return bad();
    }
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
        return bad();
    }
    let ident_ok =
        |s: &str| s.split('.').all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if pre.is_some_and(|p| !ident_ok(p)) || build.is_some_and(|b| !ident_ok(b)) {
        return bad();
    }
    Ok(())
}

/// The supervisor's service manifest, in its documented text format
/// (runtime/supervisor/src/manifest.rs).
#[derive(Serialize)]
struct ServiceToml<'a> {
    name: &'a str,
    exec: Vec<String>,
    needs: Vec<&'static str>,
    modes: [&'static str; 1],
    order: i32,
    restart: RestartPolicy,
    log: bool,
    env: &'a BTreeMap<String, String>,
}

/// Renders the supervisor service manifest for an agent installed in
/// `install_dir` (pass the stable path, e.g. the `current` link, so an
/// upgrade only switches the link). `order` is the start order, e.g. from
/// [`crate::order::service_orders`].
///
/// A relative program in `command` is resolved against `install_dir`. The
/// supervisor format has no working-directory key, so a `working_dir` is
/// applied through `/usr/bin/env --chdir=<dir> -- <argv>` (coreutils ≥ 8.28).
pub fn service_toml(m: &AgentManifest, install_dir: &Path, order: i32) -> Result<String, toml::ser::Error> {
    let mut argv: Vec<String> = m.command.clone();
    if let Some(prog) = argv.first_mut() {
        if !prog.starts_with('/') {
            *prog = install_dir.join(prog.as_str()).to_string_lossy().into_owned();
        }
    }
    let exec = match &m.working_dir {
        Some(dir) => {
            let dir = if dir.starts_with('/') { PathBuf::from(dir) } else { install_dir.join(dir) };
            let mut v = vec!["/usr/bin/env".to_string(), format!("--chdir={}", dir.display()), "--".to_string()];
            v.extend(argv);
            v
        }
        None => argv,
    };
    toml::to_string(&ServiceToml {
        name: &m.name,
        exec,
        needs: m.needs.iter().map(|n| n.as_str()).collect(),
        modes: ["setup"],
        order,
        restart: m.restart,
        log: true,
        env: &m.env,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "cn-agent"
version = "2.9.3"
command = ["bin/cn-agent", "--port", "5309"]
env = { NODE_ENV = "production" }
working_dir = "."
restart = "on-failure"
needs = ["network", "pool"]
after = ["config-agent"]
ready = { tcp = "127.0.0.1:5309", within_s = 20 }
"#;

    fn p() -> &'static Path {
        Path::new("cn-agent/agent.toml")
    }

    fn load(text: &str) -> Result<AgentManifest, ManifestError> {
        parse(text, p())?.validate(p())
    }

    fn problems(text: &str) -> Vec<String> {
        match load(text) {
            Err(ManifestError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn full_manifest_parses() {
        let m = load(FULL).unwrap();
        assert_eq!(m.name, "cn-agent");
        assert_eq!(m.version, "2.9.3");
        assert_eq!(m.restart, RestartPolicy::OnFailure);
        assert_eq!(m.needs, [Need::Network, Need::Pool].into_iter().collect());
        assert_eq!(m.after, vec!["config-agent"]);
        assert_eq!(m.ready.check, ReadyCheck::Tcp("127.0.0.1:5309".parse().unwrap()));
        assert_eq!(m.ready.within, Duration::from_secs(20));
    }

    #[test]
    fn minimal_manifest_defaults() {
        let m =
            load("name = \"a\"\nversion = \"0.1.0\"\ncommand = [\"/bin/a\"]\nready = { file = \"/run/a\" }\n").unwrap();
        assert_eq!(m.restart, RestartPolicy::Always);
        assert!(m.needs.is_empty() && m.after.is_empty() && m.env.is_empty() && m.working_dir.is_none());
        assert_eq!(m.ready, Ready { check: ReadyCheck::File("/run/a".into()), within: Duration::from_secs(30) });
    }

    #[test]
    fn exit_zero_ready() {
        let m = load(
            "name = \"fw\"\nversion = \"1.0.0\"\ncommand = [\"bin/fw\"]\nready = { exit_zero = [\"bin/check\", \"-q\"], within_s = 5 }\n",
        )
        .unwrap();
        assert_eq!(m.ready.check, ReadyCheck::ExitZero(vec!["bin/check".into(), "-q".into()]));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file_and_key() {
        let e = load(&format!("{FULL}\nbogus = 1\n")).unwrap_err().to_string();
        assert!(e.contains("cn-agent/agent.toml") && e.contains("bogus"), "{e}");
        let e = load(&FULL.replace("within_s = 20", "within = 20")).unwrap_err().to_string();
        assert!(e.contains("within"), "{e}");
        let e = load(&FULL.replace("\"pool\"", "\"disk\"")).unwrap_err().to_string();
        assert!(e.contains("disk"), "{e}");
        let e = load(&FULL.replace("on-failure", "sometimes")).unwrap_err().to_string();
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn missing_ready_is_an_error() {
        let e = load("name = \"a\"\nversion = \"0.1.0\"\ncommand = [\"/bin/a\"]\n").unwrap_err().to_string();
        assert!(e.contains("ready"), "{e}");
    }

    #[test]
    fn bad_fields_are_all_reported() {
        let text = r#"
name = "CN_agent"
version = "2.9"
command = ["../bin/x"]
env = { "A=B" = "x" }
working_dir = "../up"
needs = ["pool", "pool"]
after = ["CN_agent", "x", "x"]
ready = { tcp = "localhost", within_s = 0 }
"#;
        let ps = problems(text);
        for want in ["name", "version", "command[0]", "env", "working_dir", "needs", "after", "ready.within_s"] {
            assert!(ps.iter().any(|p| p.starts_with(want)), "missing {want}: {ps:?}");
        }
        assert!(ps.iter().any(|p| p.contains("listed twice")), "{ps:?}");
    }

    #[test]
    fn ready_needs_exactly_one_check() {
        let base = "name = \"a\"\nversion = \"0.1.0\"\ncommand = [\"/bin/a\"]\n";
        let ps = problems(&format!("{base}ready = {{ within_s = 5 }}\n"));
        assert!(ps[0].contains("exactly one"), "{ps:?}");
        let ps = problems(&format!("{base}ready = {{ tcp = \"127.0.0.1:1\", file = \"/x\" }}\n"));
        assert!(ps[0].contains("exactly one"), "{ps:?}");
        let ps = problems(&format!("{base}ready = {{ file = \"run/x\" }}\n"));
        assert!(ps[0].starts_with("ready.file"), "{ps:?}");
        let ps = problems(&format!("{base}ready = {{ tcp = \"127.0.0.1:0\" }}\n"));
        assert!(ps[0].starts_with("ready.tcp"), "{ps:?}");
        let ps = problems(&format!("{base}ready = {{ exit_zero = [] }}\n"));
        assert!(ps[0].starts_with("ready.exit_zero"), "{ps:?}");
        let ps = problems(&format!("{base}ready = {{ file = \"/x\", within_s = 601 }}\n"));
        assert!(ps[0].starts_with("ready.within_s"), "{ps:?}");
    }

    #[test]
    fn self_dependency_is_an_error() {
        let ps = problems(&FULL.replace("config-agent", "cn-agent"));
        assert!(ps.iter().any(|p| p.contains("itself")), "{ps:?}");
    }

    #[test]
    fn versions() {
        for good in ["0.0.1", "2.9.3", "10.20.30", "1.0.0-rc.1", "1.0.0+20240101T000000Z", "1.0.0-alpha-1+b.2"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in ["", "1", "1.2", "1.2.3.4", "v1.2.3", "1.2.x", "1.2.3-", "1.2.3+", "1.2.3-a..b", "1.2.3/x", "1..3"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_file_reads_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        fs::write(&path, FULL).unwrap();
        assert_eq!(load_file(&path).unwrap().name, "cn-agent");
        let e = load_file(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(e, ManifestError::Read { .. }) && e.to_string().contains("nope.toml"));
    }

    #[test]
    fn service_toml_is_a_valid_supervisor_manifest() {
        let m = load(FULL).unwrap();
        let dir = Path::new("/opt/smartdc/agents/lib/node_modules/cn-agent");
        let text = service_toml(&m, dir, 120).unwrap();
        let path = Path::new("cn-agent.toml");
        let spec = supervisor::manifest::parse(&text, path).unwrap().validate(path).unwrap();
        assert_eq!(spec.name, "cn-agent");
        assert_eq!(
            spec.exec,
            vec![
                "/usr/bin/env",
                "--chdir=/opt/smartdc/agents/lib/node_modules/cn-agent/.",
                "--",
                "/opt/smartdc/agents/lib/node_modules/cn-agent/bin/cn-agent",
                "--port",
                "5309"
            ]
        );
        assert_eq!(spec.order, 120);
        assert_eq!(spec.restart, supervisor::manifest::RestartPolicy::OnFailure);
        assert_eq!(spec.needs, ["network".to_string(), "pool".to_string()].into_iter().collect());
        assert_eq!(spec.modes, [supervisor::manifest::Mode::Setup].into_iter().collect());
        assert_eq!(spec.env.get("NODE_ENV").map(String::as_str), Some("production"));
        assert_eq!(spec.log, supervisor::manifest::LogTarget::File);
    }

    #[test]
    fn service_toml_without_working_dir_keeps_absolute_argv() {
        let m = load(
            "name = \"a\"\nversion = \"0.1.0\"\ncommand = [\"/usr/bin/a\", \"x y\"]\nready = { file = \"/run/a\" }\n",
        )
        .unwrap();
        let text = service_toml(&m, Path::new("/opt/a"), 0).unwrap();
        let path = Path::new("a.toml");
        let spec = supervisor::manifest::parse(&text, path).unwrap().validate(path).unwrap();
        assert_eq!(spec.exec, vec!["/usr/bin/a", "x y"]);
        assert!(spec.needs.is_empty() && spec.env.is_empty());
    }
}

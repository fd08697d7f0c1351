//! `systemctl`: a shim installed over systemd's `/usr/bin/systemctl`.
//!
//! systemd is not PID 1 on this platform: Triton's init supervises the
//! services and `triton-ctl` controls it. Scripts written for other Linux
//! platforms (the headnode's `joysetup.sh` runs `systemctl restart
//! triton-lxd.service` under `errexit`; agent installers run `enable`,
//! `start`, `reload-or-restart`, `daemon-reload`) manage systemd units that
//! this platform replaces (LXD, for instance, is replaced by LXC), so:
//!
//! - `<name>[.service]` names the init service `<name>`, or `<x>` for
//!   `triton-<x>` when `triton-<x>` itself is not a service;
//! - `start`, `stop`, `restart`, `reload-or-restart`, `try-restart`
//!   (restart only if running) act through `triton-ctl`; `status` and
//!   `is-active` read `triton-ctl status --json`;
//! - `enable`/`disable` change nothing (init starts every installed service
//!   at boot); with `--now` they also start/stop; `daemon-reload` is a no-op;
//! - a unit that does not exist here is reported on stderr; for `restart`,
//!   `reload-or-restart`, `try-restart`, `enable` and `disable` that is not
//!   an error (exit 0), while `start`, `stop`, `status` and `is-active` fail
//!   with systemd's exit codes (5, 5, 4, 3).

use serde::Deserialize;

/// Default path of `triton-ctl`.
pub const DEFAULT_TRITON_CTL: &str = "/usr/bin/triton-ctl";
/// Environment variable naming another `triton-ctl` (for tests).
pub const TRITON_CTL_ENV: &str = "TRITON_CTL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    ReloadOrRestart,
    TryRestart,
    Status,
    IsActive,
    Enable,
    Disable,
    DaemonReload,
}

impl Verb {
    fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "start" => Verb::Start,
            "stop" => Verb::Stop,
            "restart" => Verb::Restart,
            "reload-or-restart" => Verb::ReloadOrRestart,
            "try-restart" => Verb::TryRestart,
            "status" => Verb::Status,
            "is-active" => Verb::IsActive,
            "enable" => Verb::Enable,
            "disable" => Verb::Disable,
            "daemon-reload" => Verb::DaemonReload,
            _ => return None,
        })
    }

    /// A unit that does not exist on this platform is fine for these verbs.
    fn unknown_unit_is_ok(self) -> bool {
        matches!(self, Verb::Restart | Verb::ReloadOrRestart | Verb::TryRestart | Verb::Enable | Verb::Disable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub verb: Verb,
    pub units: Vec<String>,
    /// `--now` (enable/disable also start/stop).
    pub now: bool,
    /// `-q`/`--quiet`.
    pub quiet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error(
        "no command given; this platform's services are listed by `triton-ctl status` \
         (supported: start, stop, restart, reload-or-restart, try-restart, status, is-active, enable, disable, \
         daemon-reload)"
    )]
    NoVerb,
    #[error(
        "\"{0}\" is not supported on this platform, where triton init (not systemd) supervises services; \
         use triton-ctl"
    )]
    UnsupportedVerb(String),
    #[error("unknown option \"{0}\"")]
    UnknownOption(String),
    #[error("too few arguments: {0} needs a unit name")]
    NoUnit(&'static str),
}

/// Options systemd scripts commonly pass that change nothing here.
const IGNORED_OPTIONS: &[&str] =
    &["--no-block", "--no-pager", "--system", "--no-ask-password", "-l", "--full", "--no-legend", "--no-reload"];

pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut verb = None;
    let mut units = Vec::new();
    let (mut now, mut quiet) = (false, false);
    for a in args {
        match a.as_str() {
            "--now" => now = true,
            "-q" | "--quiet" => quiet = true,
            o if IGNORED_OPTIONS.contains(&o) => {}
            o if o.starts_with('-') => return Err(UsageError::UnknownOption(o.to_string())),
            w if verb.is_none() => verb = Some(Verb::parse(w).ok_or_else(|| UsageError::UnsupportedVerb(w.into()))?),
            u => units.push(u.to_string()),
        }
    }
    let verb = verb.ok_or(UsageError::NoVerb)?;
    if units.is_empty() && verb != Verb::DaemonReload {
        let name = match verb {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::ReloadOrRestart => "reload-or-restart",
            Verb::TryRestart => "try-restart",
            Verb::Status => "status",
            Verb::IsActive => "is-active",
            Verb::Enable => "enable",
            Verb::Disable => "disable",
            Verb::DaemonReload => "daemon-reload",
        };
        return Err(UsageError::NoUnit(name));
    }
    Ok(Invocation { verb, units, now, quiet })
}

/// One service from `triton-ctl status --json` (other fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Service {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatusAnswer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    services: Vec<Service>,
}

/// Parses `triton-ctl status --json` output.
pub fn parse_status(json: &str) -> Result<Vec<Service>, String> {
    let a: StatusAnswer = serde_json::from_str(json.trim()).map_err(|e| format!("unexpected answer: {e}"))?;
    if a.ok {
        Ok(a.services)
    } else {
        Err(a.error.unwrap_or_else(|| "init refused the status request".into()))
    }
}

/// The init service a unit name stands for, if any.
pub fn resolve<'a>(unit: &str, services: &'a [Service]) -> Option<&'a Service> {
    let name = unit.strip_suffix(".service").unwrap_or(unit);
    let find = |n: &str| services.iter().find(|s| s.name == n);
    find(name).or_else(|| name.strip_prefix("triton-").and_then(find))
}

/// systemd's `is-active` word for an init state.
pub fn active_word(state: &str) -> &'static str {
    match state {
        "running" => "active",
        "starting" | "backoff" => "activating",
        "stopping" => "deactivating",
        "failed" => "failed",
        _ => "inactive",
    }
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run `triton-ctl <args>`; if it fails the exit status is 1.
    Ctl(Vec<String>),
    Stdout(String),
    Stderr(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Exit status if every `Ctl` step succeeds.
    pub exit: u8,
}

fn unit_file_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// Whether a verb needs the list of services (all but `daemon-reload`).
pub fn needs_services(inv: &Invocation) -> bool {
    inv.verb != Verb::DaemonReload
}

/// Turns an invocation into steps, given init's services.
pub fn plan(inv: &Invocation, services: &[Service]) -> Plan {
    let mut steps = Vec::new();
    let mut exit = 0u8;
    let mut any_active = false;
    let ctl = |verb: &str, name: &str| Step::Ctl(vec![verb.to_string(), name.to_string()]);
    if inv.verb == Verb::DaemonReload {
        return Plan { steps, exit };
    }
    for unit in &inv.units {
        let file = unit_file_name(unit);
        let Some(svc) = resolve(unit, services) else {
            let (msg, code) = match inv.verb {
                v if v.unknown_unit_is_ok() => (
                    format!(
                        "systemctl: {file} does not exist on this platform (triton init supervises services \
                         instead of systemd; see `triton-ctl status`); nothing to do"
                    ),
                    0,
                ),
                Verb::Start => (format!("Failed to start {file}: Unit {file} not found."), 5),
                Verb::Stop => (format!("Failed to stop {file}: Unit {file} not loaded."), 5),
                Verb::Status => (format!("Unit {file} could not be found."), 4),
                _ => {
                    if !inv.quiet {
                        steps.push(Step::Stdout("inactive\n".into()));
                    }
                    (String::new(), 3)
                }
            };
            if !msg.is_empty() {
                steps.push(Step::Stderr(msg));
            }
            if code != 0 && exit == 0 {
                exit = code;
            }
            continue;
        };
        let name = svc.name.as_str();
        match inv.verb {
            Verb::Start => steps.push(ctl("start", name)),
            Verb::Stop => steps.push(ctl("stop", name)),
            Verb::Restart | Verb::ReloadOrRestart => steps.push(ctl("restart", name)),
            Verb::TryRestart => {
                if matches!(active_word(&svc.state), "active" | "activating") {
                    steps.push(ctl("restart", name));
                }
            }
            Verb::Enable | Verb::Disable => {
                let start = inv.verb == Verb::Enable;
                steps.push(Step::Stderr(format!(
                    "systemctl: {name}: {} (triton init starts every installed service at boot)",
                    if start { "always enabled" } else { "cannot be disabled persistently on this platform" }
                )));
                if inv.now {
                    steps.push(ctl(if start { "start" } else { "stop" }, name));
                }
            }
            Verb::IsActive => {
                let word = active_word(&svc.state);
                any_active |= word == "active";
                if !inv.quiet {
                    steps.push(Step::Stdout(format!("{word}\n")));
                }
            }
            Verb::Status => {
                let word = active_word(&svc.state);
                let pid = svc.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
                let last = svc.last_exit.as_deref().map(|l| format!(", last exit: {l}")).unwrap_or_default();
                steps.push(Step::Stdout(format!(
                    "* {name} - supervised by triton init\n     Active: {word} ({}{pid}, {} restarts{last})\n",
                    svc.state, svc.restarts
                )));
                if word != "active" && exit == 0 {
                    exit = 3;
                }
            }
            Verb::DaemonReload => {}
        }
    }
    if inv.verb == Verb::IsActive {
        exit = if any_active { 0 } else { 3 };
    }
    Plan { steps, exit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(args: &[&str]) -> Invocation {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parse")
    }

    fn svc(name: &str, state: &str) -> Service {
        Service { name: name.into(), state: state.into(), pid: Some(42), restarts: 0, last_exit: None }
    }

    fn services() -> Vec<Service> {
        vec![svc("cn-agent", "running"), svc("config-agent", "stopped"), svc("triton-metadata", "running")]
    }

    fn ctl(v: &str, n: &str) -> Step {
        Step::Ctl(vec![v.into(), n.into()])
    }

    #[test]
    fn parses() {
        assert_eq!(inv(&["restart", "triton-lxd.service"]).units, vec!["triton-lxd.service".to_string()]);
        let i = inv(&["--now", "enable", "-q", "a", "b", "--no-block"]);
        assert_eq!((i.verb, i.now, i.quiet, i.units.len()), (Verb::Enable, true, true, 2));
        let p = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), Err(UsageError::NoVerb));
        assert_eq!(p(&["start"]), Err(UsageError::NoUnit("start")));
        assert_eq!(p(&["mask", "x"]), Err(UsageError::UnsupportedVerb("mask".into())));
        assert_eq!(p(&["start", "--user", "x"]), Err(UsageError::UnknownOption("--user".into())));
        assert!(p(&["daemon-reload"]).is_ok());
    }

    #[test]
    fn resolves_names() {
        let s = services();
        assert_eq!(resolve("cn-agent", &s).map(|s| s.name.as_str()), Some("cn-agent"));
        assert_eq!(resolve("cn-agent.service", &s).map(|s| s.name.as_str()), Some("cn-agent"));
        assert_eq!(resolve("triton-config-agent.service", &s).map(|s| s.name.as_str()), Some("config-agent"));
        // A service really named triton-x wins over x.
        assert_eq!(resolve("triton-metadata", &s).map(|s| s.name.as_str()), Some("triton-metadata"));
        assert_eq!(resolve("triton-lxd.service", &s), None);
        assert_eq!(resolve("cn-agent.socket", &s), None);
    }

    #[test]
    fn joysetup_restart_of_lxd_is_a_noted_no_op() {
        let p = plan(&inv(&["restart", "triton-lxd.service"]), &services());
        assert_eq!(p.exit, 0);
        assert!(matches!(&p.steps[..], [Step::Stderr(m)] if m.contains("triton-lxd.service does not exist")));
    }

    #[test]
    fn known_units_map_to_triton_ctl() {
        let s = services();
        assert_eq!(plan(&inv(&["start", "cn-agent"]), &s).steps, vec![ctl("start", "cn-agent")]);
        assert_eq!(plan(&inv(&["stop", "cn-agent.service"]), &s).steps, vec![ctl("stop", "cn-agent")]);
        assert_eq!(
            plan(&inv(&["reload-or-restart", "triton-config-agent"]), &s).steps,
            vec![ctl("restart", "config-agent")]
        );
        assert_eq!(
            plan(&inv(&["try-restart", "cn-agent", "config-agent"]), &s).steps,
            vec![ctl("restart", "cn-agent")]
        );
        let p = plan(&inv(&["enable", "--now", "config-agent"]), &s);
        assert_eq!(p.steps.last(), Some(&ctl("start", "config-agent")));
        assert_eq!(p.exit, 0);
        let p = plan(&inv(&["disable", "cn-agent"]), &s);
        assert!(matches!(&p.steps[..], [Step::Stderr(_)]));
        assert_eq!(plan(&inv(&["daemon-reload"]), &s), Plan { steps: vec![], exit: 0 });
    }

    #[test]
    fn unknown_units_fail_like_systemd_where_it_matters() {
        let s = services();
        for (args, code) in [
            (&["start", "lxd"][..], 5),
            (&["stop", "lxd"][..], 5),
            (&["status", "lxd"][..], 4),
            (&["is-active", "lxd"][..], 3),
            (&["enable", "lxd"][..], 0),
            (&["disable", "lxd"][..], 0),
            (&["try-restart", "lxd"][..], 0),
            (&["reload-or-restart", "lxd"][..], 0),
        ] {
            assert_eq!(plan(&inv(args), &s).exit, code, "{args:?}");
        }
        assert_eq!(plan(&inv(&["is-active", "lxd"]), &s).steps, vec![Step::Stdout("inactive\n".into())]);
        assert_eq!(plan(&inv(&["start", "lxd", "cn-agent"]), &s).steps.last(), Some(&ctl("start", "cn-agent")));
    }

    #[test]
    fn status_and_is_active() {
        let s = services();
        let p = plan(&inv(&["is-active", "cn-agent"]), &s);
        assert_eq!((p.exit, p.steps), (0, vec![Step::Stdout("active\n".into())]));
        let p = plan(&inv(&["is-active", "-q", "config-agent"]), &s);
        assert_eq!((p.exit, p.steps), (3, vec![]));
        let p = plan(&inv(&["status", "cn-agent"]), &s);
        assert_eq!(p.exit, 0);
        assert!(matches!(&p.steps[..], [Step::Stdout(t)] if t.contains("Active: active (running, pid 42")));
        assert_eq!(plan(&inv(&["status", "config-agent"]), &s).exit, 3);
    }

    #[test]
    fn status_answer() {
        let j = r#"{"ok":true,"mode":"setup","conditions":[],"services":[{"name":"ur-agent","state":"running","pid":7,"restarts":1,"order":0}]}"#;
        assert_eq!(parse_status(j).expect("parse")[0].name, "ur-agent");
        assert_eq!(parse_status(r#"{"ok":false,"error":"nope"}"#), Err("nope".into()));
        assert!(parse_status("garbage").is_err());
    }
}

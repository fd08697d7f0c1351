//! The upgrade/rollback state machine of one agent, as a pure type.
//!
//! [`State::next`] takes an [`Event`] and returns the new state and the
//! [`Action`]s to perform; the effectful executor (later) only performs the
//! actions and feeds back the events. It owns the clock: it starts a timer on
//! [`Action::StartReadinessCheck`] and sends [`Event::ReadyTimeout`].
//!
//! Paths: `Idle` → `Begin` → `Installing` → `Installed` → `Switching` →
//! `Switched` → `Checking` → `ReadyOk` → `Committed`, or `ReadyFailed` /
//! `ReadyTimeout` → `RollingBack` → `RollbackDone` → `RolledBack`.
//!
//! The previous version is kept until the next upgrade commits: committing
//! removes the version before the previous one; a rollback removes the
//! failed version and keeps the previous one.

use std::time::Duration;

use crate::manifest::check_version;

/// Where an agent's upgrade stands. Versions are validated version strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running `current`; `previous` is still on disk.
    Idle { current: String, previous: Option<String> },
    /// Installing `to` beside `from`.
    Installing { from: String, to: String, previous: Option<String>, within: Duration },
    /// Switching the link from `from` to `to`.
    Switching { from: String, to: String, previous: Option<String>, within: Duration },
    /// `to` restarted; its readiness check runs for at most `deadline`.
    Checking { from: String, to: String, previous: Option<String>, deadline: Duration },
    /// `current` passed its readiness check; `previous` is kept.
    Committed { current: String, previous: String },
    /// `failed` did not become ready; switching back to `back`.
    RollingBack { failed: String, back: String, previous: Option<String>, reason: String },
    /// Back on `current` after `failed` did not work.
    RolledBack { current: String, previous: Option<String>, failed: String, reason: String },
}

impl State {
    /// A machine for an agent running `current`, with `previous` kept on disk.
    pub fn idle(current: impl Into<String>, previous: Option<String>) -> Self {
        State::Idle { current: current.into(), previous }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Idle { .. } => "idle",
            State::Installing { .. } => "installing",
            State::Switching { .. } => "switching",
            State::Checking { .. } => "checking",
            State::Committed { .. } => "committed",
            State::RollingBack { .. } => "rolling-back",
            State::RolledBack { .. } => "rolled-back",
        }
    }

    /// The version running (or about to run after a finished step) and the
    /// one kept on disk, for states where no upgrade is in flight.
    pub fn settled(&self) -> Option<(&str, Option<&str>)> {
        match self {
            State::Idle { current, previous } | State::RolledBack { current, previous, .. } => {
                Some((current, previous.as_deref()))
            }
            State::Committed { current, previous } => Some((current, Some(previous))),
            _ => None,
        }
    }
}

/// What happened (reported by the executor, or a request to upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Upgrade to `to`; it must become ready within `ready_within`.
    Begin { to: String, ready_within: Duration },
    /// The new version is installed and verified beside the old one.
    Installed,
    /// Installing failed (e.g. bad sha256); nothing was switched.
    InstallFailed { reason: String },
    /// The link now points at the new version.
    Switched,
    /// The link could not be switched (it still points at the old version).
    SwitchFailed { reason: String },
    /// The readiness check passed.
    ReadyOk,
    /// The readiness check failed.
    ReadyFailed { reason: String },
    /// The readiness check did not pass within the limit.
    ReadyTimeout,
    /// The link points at the old version again and the service was restarted.
    RollbackDone,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Begin { .. } => "begin",
            Event::Installed => "installed",
            Event::InstallFailed { .. } => "install-failed",
            Event::Switched => "switched",
            Event::SwitchFailed { .. } => "switch-failed",
            Event::ReadyOk => "ready-ok",
            Event::ReadyFailed { .. } => "ready-failed",
            Event::ReadyTimeout => "ready-timeout",
            Event::RollbackDone => "rollback-done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What the executor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Install `version` beside the running one (verify, unpack to a temp dir, rename).
    Install { version: String },
    /// Atomically point the agent's link at `to`.
    SwitchLink { to: String },
    /// Restart the agent's service under the supervisor.
    RestartService,
    /// Start the readiness check; report `ReadyOk`, `ReadyFailed` or `ReadyTimeout`.
    StartReadinessCheck { within: Duration },
    /// Remove an installed version that is no longer kept.
    RemoveVersion { version: String },
    /// A log line and event for operators.
    Log { level: Level, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("{agent}: event {event} is not valid while {state}")]
    InvalidEvent { agent: String, state: &'static str, event: &'static str },
    #[error("{agent}: cannot upgrade: {problem}")]
    BadVersion { agent: String, problem: String },
}

fn log(level: Level, message: String) -> Action {
    Action::Log { level, message }
}

impl State {
    /// The transition for `ev`; `agent` is used in log lines and errors.
    /// An event that is not valid in this state is an error and changes nothing.
    pub fn next(&self, agent: &str, ev: &Event) -> Result<(State, Vec<Action>), UpgradeError> {
        let invalid = || UpgradeError::InvalidEvent { agent: agent.to_string(), state: self.name(), event: ev.name() };
        use Level::*;
        Ok(match (self, ev) {
            (_, Event::Begin { to, ready_within }) => {
                let (current, previous) = self.settled().ok_or_else(invalid)?;
                check_version(to).map_err(|problem| UpgradeError::BadVersion { agent: agent.into(), problem })?;
                let idle = State::idle(current, previous.map(String::from));
                if to == current {
                    let msg = format!("{agent}: already at version {current}; nothing to do");
                    return Ok((idle, vec![log(Info, msg)]));
                }
                (
                    State::Installing {
                        from: current.into(),
                        to: to.clone(),
                        previous: previous.map(String::from),
                        within: *ready_within,
                    },
                    vec![
                        log(Info, format!("{agent}: upgrading {current} → {to}")),
                        Action::Install { version: to.clone() },
                    ],
                )
            }
            (State::Installing { from, to, previous, within }, Event::Installed) => (
                State::Switching { from: from.clone(), to: to.clone(), previous: previous.clone(), within: *within },
                vec![Action::SwitchLink { to: to.clone() }],
            ),
            (State::Installing { from, to, previous, .. }, Event::InstallFailed { reason }) => {
                let mut actions =
                    vec![log(Error, format!("{agent}: installing {to} failed: {reason}; staying on {from}"))];
                actions.extend(remove_unless_kept(to, previous.as_deref()));
                (State::idle(from.clone(), previous.clone()), actions)
            }
            (State::Switching { from, to, previous, within }, Event::Switched) => (
                State::Checking { from: from.clone(), to: to.clone(), previous: previous.clone(), deadline: *within },
                vec![Action::RestartService, Action::StartReadinessCheck { within: *within }],
            ),
            (State::Switching { from, to, previous, .. }, Event::SwitchFailed { reason }) => {
                let reason = format!("switching to {to} failed: {reason}");
                let mut actions = vec![log(Error, format!("{agent}: {reason}; staying on {from}"))];
                actions.extend(remove_unless_kept(to, previous.as_deref()));
                (
                    State::RolledBack { current: from.clone(), previous: previous.clone(), failed: to.clone(), reason },
                    actions,
                )
            }
            (State::Checking { from, to, previous, .. }, Event::ReadyOk) => {
                let mut actions =
                    vec![log(Info, format!("{agent}: upgraded {from} → {to}; keeping {from} for rollback"))];
                if let Some(old) = previous.as_deref().filter(|old| *old != to && *old != from) {
                    actions.push(Action::RemoveVersion { version: old.to_string() });
                }
                (State::Committed { current: to.clone(), previous: from.clone() }, actions)
            }
            (State::Checking { from, to, previous, deadline }, Event::ReadyFailed { .. } | Event::ReadyTimeout) => {
                let reason = match ev {
                    Event::ReadyFailed { reason } => format!("readiness check of {to} failed: {reason}"),
                    _ => format!("{to} was not ready within {}s", deadline.as_secs()),
                };
                (
                    State::RollingBack {
                        failed: to.clone(),
                        back: from.clone(),
                        previous: previous.clone(),
                        reason: reason.clone(),
                    },
                    vec![
                        log(Error, format!("{agent}: {reason}; rolling back to {from}")),
                        Action::SwitchLink { to: from.clone() },
                        Action::RestartService,
                    ],
                )
            }
            (State::RollingBack { failed, back, previous, reason }, Event::RollbackDone) => {
                let mut actions = vec![log(Warn, format!("{agent}: rolled back {failed} → {back} ({reason})"))];
                actions.extend(remove_unless_kept(failed, previous.as_deref()));
                (
                    State::RolledBack {
                        current: back.clone(),
                        previous: previous.clone(),
                        failed: failed.clone(),
                        reason: reason.clone(),
                    },
                    actions,
                )
            }
            _ => return Err(invalid()),
        })
    }
}

/// Removing a failed version, unless it is the kept previous version.
fn remove_unless_kept(version: &str, previous: Option<&str>) -> Option<Action> {
    (previous != Some(version)).then(|| Action::RemoveVersion { version: version.to_string() })
}

/// One agent's machine: [`State::next`] applied in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub agent: String,
    pub state: State,
}

impl Upgrade {
    pub fn new(agent: impl Into<String>, current: impl Into<String>, previous: Option<String>) -> Self {
        Upgrade { agent: agent.into(), state: State::idle(current, previous) }
    }

    /// Applies `ev`; on error the state is unchanged.
    pub fn handle(&mut self, ev: Event) -> Result<Vec<Action>, UpgradeError> {
        let (state, actions) = self.state.next(&self.agent, &ev)?;
        self.state = state;
        Ok(actions)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn begin(to: &str) -> Event {
        Event::Begin { to: to.into(), ready_within: W }
    }

    fn no_logs(actions: Vec<Action>) -> Vec<Action> {
        actions.into_iter().filter(|a| !matches!(a, Action::Log { .. })).collect()
    }

    fn logs(actions: &[Action]) -> Vec<(Level, &str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Log { level, message } => Some((*level, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Runs Begin → Installed → Switched and checks the actions on the way.
    fn to_checking(u: &mut Upgrade, to: &str) {
        assert_eq!(no_logs(u.handle(begin(to)).unwrap()), vec![Action::Install { version: to.into() }]);
        assert_eq!(u.handle(Event::Installed).unwrap(), vec![Action::SwitchLink { to: to.into() }]);
        assert_eq!(
            u.handle(Event::Switched).unwrap(),
            vec![Action::RestartService, Action::StartReadinessCheck { within: W }]
        );
        assert_eq!(u.state.name(), "checking");
    }

    #[test]
    fn good_version_is_committed_and_previous_kept() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        to_checking(&mut u, "1.1.0");
        let actions = u.handle(Event::ReadyOk).unwrap();
        assert_eq!(no_logs(actions.clone()), vec![]);
        assert!(logs(&actions)[0].1.contains("cn-agent: upgraded 1.0.0 → 1.1.0"));
        assert_eq!(u.state, State::Committed { current: "1.1.0".into(), previous: "1.0.0".into() });
        assert_eq!(u.state.settled(), Some(("1.1.0", Some("1.0.0"))));
    }

    #[test]
    fn second_upgrade_drops_the_oldest_version() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        to_checking(&mut u, "1.1.0");
        u.handle(Event::ReadyOk).unwrap();
        to_checking(&mut u, "1.2.0");
        let actions = no_logs(u.handle(Event::ReadyOk).unwrap());
        assert_eq!(actions, vec![Action::RemoveVersion { version: "1.0.0".into() }]);
        assert_eq!(u.state, State::Committed { current: "1.2.0".into(), previous: "1.1.0".into() });
    }

    #[test]
    fn failed_readiness_rolls_back_and_keeps_previous() {
        let mut u = Upgrade::new("vm-agent", "1.1.0", Some("1.0.0".into()));
        to_checking(&mut u, "2.0.0");
        let actions = u.handle(Event::ReadyFailed { reason: "exited with status 1".into() }).unwrap();
        let l = logs(&actions);
        assert_eq!(l[0].0, Level::Error);
        assert!(l[0].1.contains("exited with status 1") && l[0].1.contains("rolling back to 1.1.0"), "{l:?}");
        assert_eq!(no_logs(actions), vec![Action::SwitchLink { to: "1.1.0".into() }, Action::RestartService]);
        assert_eq!(u.state.name(), "rolling-back");
        let actions = u.handle(Event::RollbackDone).unwrap();
        assert_eq!(logs(&actions)[0].0, Level::Warn);
        assert_eq!(no_logs(actions), vec![Action::RemoveVersion { version: "2.0.0".into() }]);
        match &u.state {
            State::RolledBack { current, previous, failed, reason } => {
                assert_eq!((current.as_str(), previous.as_deref(), failed.as_str()), ("1.1.0", Some("1.0.0"), "2.0.0"));
                assert!(reason.contains("exited with status 1"));
            }
            s => panic!("{s:?}"),
        }
        // A new upgrade can start from the rolled-back state.
        to_checking(&mut u, "2.0.1");
    }

    #[test]
    fn timeout_rolls_back() {
        let mut u = Upgrade::new("net-agent", "1.0.0", None);
        to_checking(&mut u, "1.0.1");
        let actions = u.handle(Event::ReadyTimeout).unwrap();
        assert!(logs(&actions)[0].1.contains("not ready within 30s"), "{actions:?}");
        assert_eq!(no_logs(actions), vec![Action::SwitchLink { to: "1.0.0".into() }, Action::RestartService]);
        u.handle(Event::RollbackDone).unwrap();
        assert_eq!(u.state.settled(), Some(("1.0.0", None)));
    }

    #[test]
    fn same_version_is_a_no_op() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", Some("0.9.0".into()));
        let actions = u.handle(begin("1.0.0")).unwrap();
        assert_eq!(no_logs(actions.clone()), vec![]);
        assert!(logs(&actions)[0].1.contains("already at version 1.0.0"));
        assert_eq!(u.state, State::idle("1.0.0", Some("0.9.0".into())));
        // Also right after a commit.
        to_checking(&mut u, "1.1.0");
        u.handle(Event::ReadyOk).unwrap();
        assert_eq!(no_logs(u.handle(begin("1.1.0")).unwrap()), vec![]);
        assert_eq!(u.state, State::idle("1.1.0", Some("1.0.0".into())));
    }

    #[test]
    fn downgrade_to_the_kept_version_never_removes_it() {
        let mut u = Upgrade::new("cn-agent", "1.1.0", Some("1.0.0".into()));
        to_checking(&mut u, "1.0.0");
        assert_eq!(no_logs(u.handle(Event::ReadyOk).unwrap()), vec![]);
        assert_eq!(u.state, State::Committed { current: "1.0.0".into(), previous: "1.1.0".into() });
        // And a failed one does not remove the kept version either.
        let mut u = Upgrade::new("cn-agent", "1.1.0", Some("1.0.0".into()));
        to_checking(&mut u, "1.0.0");
        u.handle(Event::ReadyTimeout).unwrap();
        assert_eq!(no_logs(u.handle(Event::RollbackDone).unwrap()), vec![]);
    }

    #[test]
    fn install_failure_leaves_nothing_half_installed() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        u.handle(begin("1.1.0")).unwrap();
        let actions = u.handle(Event::InstallFailed { reason: "sha256 mismatch".into() }).unwrap();
        assert!(logs(&actions)[0].1.contains("sha256 mismatch"));
        assert_eq!(no_logs(actions), vec![Action::RemoveVersion { version: "1.1.0".into() }]);
        assert_eq!(u.state, State::idle("1.0.0", None));
    }

    #[test]
    fn switch_failure_stays_on_old_version() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        u.handle(begin("1.1.0")).unwrap();
        u.handle(Event::Installed).unwrap();
        let actions = u.handle(Event::SwitchFailed { reason: "EIO".into() }).unwrap();
        assert_eq!(no_logs(actions), vec![Action::RemoveVersion { version: "1.1.0".into() }]);
        assert_eq!(u.state.settled(), Some(("1.0.0", None)));
    }

    #[test]
    fn invalid_events_are_errors_and_change_nothing() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        for ev in [Event::Installed, Event::Switched, Event::ReadyOk, Event::ReadyTimeout, Event::RollbackDone] {
            let e = u.handle(ev).unwrap_err();
            assert!(matches!(e, UpgradeError::InvalidEvent { state: "idle", .. }), "{e}");
        }
        assert_eq!(u.state, State::idle("1.0.0", None));
        to_checking(&mut u, "1.1.0");
        let before = u.state.clone();
        let e = u.handle(begin("1.2.0")).unwrap_err();
        assert_eq!(e.to_string(), "cn-agent: event begin is not valid while checking");
        assert_eq!(
            u.handle(Event::RollbackDone).unwrap_err().to_string(),
            "cn-agent: event rollback-done is not valid while checking"
        );
        assert_eq!(u.state, before);
        u.handle(Event::ReadyFailed { reason: "x".into() }).unwrap();
        assert!(u.handle(Event::ReadyOk).is_err());
        assert!(u.handle(begin("1.2.0")).is_err());
    }

    #[test]
    fn bad_target_version_is_an_error() {
        let mut u = Upgrade::new("cn-agent", "1.0.0", None);
        let e = u.handle(begin("../../etc")).unwrap_err();
        assert!(matches!(e, UpgradeError::BadVersion { .. }), "{e}");
        assert_eq!(u.state, State::idle("1.0.0", None));
    }
}

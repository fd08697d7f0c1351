//! The per-service restart state machine. Pure: it is fed events with the
//! current time and answers with actions as data; the runtime performs them
//! (spawn, signal the process group) and feeds back what happened.

use std::time::{Duration, Instant};

use crate::manifest::RestartPolicy;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitKind {
    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitKind::Code(c) => write!(f, "exit {c}"),
            ExitKind::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Restart delays: `initial`, doubling up to `max`; back to `initial` once
/// the service stayed up for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), reset_after: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running and nothing scheduled (initial, stopped on request, or exited 0).
    Stopped,
    /// A `Spawn` was asked for; the runtime answers with `Spawned`/`SpawnFailed`.
    Starting {
        stop_pending: bool,
    },
    Running {
        pid: i32,
        since: Instant,
    },
    /// Waiting to be restarted at `until`.
    Backoff {
        until: Instant,
    },
    /// Exited with a failure and the policy says not to restart.
    Failed,
    /// SIGTERM sent at `deadline - stop_timeout`; SIGKILL at `deadline` unless `killed`.
    Stopping {
        pid: i32,
        deadline: Instant,
        killed: bool,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Backoff { .. } => "backoff",
            State::Failed => "failed",
            State::Stopping { .. } => "stopping",
        }
    }

    /// A process exists (or is being created) for this service.
    pub fn is_active(&self) -> bool {
        matches!(self, State::Starting { .. } | State::Running { .. } | State::Stopping { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    StartRequested,
    StopRequested,
    /// Stop if running, then start again.
    RestartRequested,
    /// The runtime started the process asked for by [`Action::Spawn`].
    Spawned {
        pid: i32,
    },
    /// The runtime could not start it (exec failed, user unknown...).
    SpawnFailed,
    Exited {
        pid: i32,
        status: ExitKind,
    },
    /// Time passed; deadlines at or before `now` fire.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the service's process; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Signal the service's process group (`pid` is its leader).
    Kill { pid: i32, signal: StopSignal },
    /// Send a `Tick` at (or after) this time.
    ScheduleAt(Instant),
}

#[derive(Debug, Clone)]
pub struct Machine {
    policy: RestartPolicy,
    stop_timeout: Duration,
    backoff: Backoff,
    state: State,
    next_delay: Duration,
    restarts: u32,
    last_exit: Option<ExitKind>,
    /// Start again once the current stop completes (restart request).
    start_after_stop: bool,
}

impl Machine {
    pub fn new(policy: RestartPolicy, stop_timeout: Duration, backoff: Backoff) -> Self {
        Machine {
            policy,
            stop_timeout,
            backoff,
            state: State::Stopped,
            next_delay: backoff.initial,
            restarts: 0,
            last_exit: None,
            start_after_stop: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// Automatic restarts so far (not counting operator starts).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    pub fn last_exit(&self) -> Option<ExitKind> {
        self.last_exit
    }
    /// The delay the next failure will cause.
    pub fn next_delay(&self) -> Duration {
        self.next_delay
    }
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
    /// When the machine next needs a `Tick`.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until } => Some(until),
            State::Stopping { deadline, killed: false, .. } => Some(deadline),
            _ => None,
        }
    }
    /// Used at shutdown: from now on exits are never followed by restarts.
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::StartRequested => self.start(),
            Event::StopRequested => {
                self.start_after_stop = false;
                self.stop(now)
            }
            Event::RestartRequested => match self.state {
                State::Running { .. } | State::Stopping { .. } => {
                    let actions = self.stop(now);
                    self.start_after_stop = true;
                    actions
                }
                _ => self.start(),
            },
            Event::Spawned { pid } => match self.state {
                State::Starting { stop_pending } => {
                    self.state = State::Running { pid, since: now };
                    if stop_pending {
                        self.stop(now)
                    } else {
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            },
            Event::SpawnFailed => match self.state {
                State::Starting { stop_pending: true } => {
                    self.state = State::Stopped;
                    Vec::new()
                }
                State::Starting { stop_pending: false } => self.after_failure(now, now, false),
                _ => Vec::new(),
            },
            Event::Exited { pid, status } => match self.state {
                State::Running { pid: p, since } if p == pid => {
                    self.last_exit = Some(status);
                    let restart = match self.policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !status.success(),
                        RestartPolicy::Never => false,
                    };
                    if restart {
                        self.after_failure(now, since, true)
                    } else {
                        self.state = if status.success() { State::Stopped } else { State::Failed };
                        Vec::new()
                    }
                }
                State::Stopping { pid: p, .. } if p == pid => {
                    self.last_exit = Some(status);
                    if std::mem::take(&mut self.start_after_stop) {
                        self.next_delay = self.backoff.initial;
                        self.state = State::Starting { stop_pending: false };
                        vec![Action::Spawn]
                    } else {
                        self.state = State::Stopped;
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            },
            Event::Tick => match self.state {
                State::Backoff { until } if now >= until => {
                    self.restarts = self.restarts.saturating_add(1);
                    self.state = State::Starting { stop_pending: false };
                    vec![Action::Spawn]
                }
                State::Stopping { pid, deadline, killed: false } if now >= deadline => {
                    self.state = State::Stopping { pid, deadline, killed: true };
                    vec![Action::Kill { pid, signal: StopSignal::Kill }]
                }
                _ => Vec::new(),
            },
        }
    }

    fn start(&mut self) -> Vec<Action> {
        match self.state {
            State::Stopped | State::Failed | State::Backoff { .. } => {
                self.next_delay = self.backoff.initial;
                self.state = State::Starting { stop_pending: false };
                vec![Action::Spawn]
            }
            State::Stopping { .. } => {
                self.start_after_stop = true;
                Vec::new()
            }
            State::Starting { .. } => {
                self.state = State::Starting { stop_pending: false };
                Vec::new()
            }
            State::Running { .. } => Vec::new(),
        }
    }

    fn stop(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Running { pid, .. } => {
                let deadline = now + self.stop_timeout;
                self.state = State::Stopping { pid, deadline, killed: false };
                vec![Action::Kill { pid, signal: StopSignal::Term }, Action::ScheduleAt(deadline)]
            }
            State::Starting { .. } => {
                self.state = State::Starting { stop_pending: true };
                Vec::new()
            }
            State::Backoff { .. } => {
                self.state = State::Stopped;
                Vec::new()
            }
            State::Stopped | State::Failed | State::Stopping { .. } => Vec::new(),
        }
    }

    /// The process ended on its own (or could not be started): back off, or
    /// give up under `never`.
    fn after_failure(&mut self, now: Instant, since: Instant, ran: bool) -> Vec<Action> {
        if self.policy == RestartPolicy::Never {
            self.state = State::Failed;
            return Vec::new();
        }
        if ran && now.saturating_duration_since(since) >= self.backoff.reset_after {
            self.next_delay = self.backoff.initial;
        }
        let until = now + self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.backoff.max);
        self.state = State::Backoff { until };
        vec![Action::ScheduleAt(until)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn machine(policy: RestartPolicy) -> Machine {
        Machine::new(policy, Duration::from_secs(10), Backoff::default())
    }

    /// Starts the machine and reports the spawn with `pid`.
    fn run(m: &mut Machine, now: Instant, pid: i32) {
        let a = m.handle(now, Event::StartRequested);
        assert_eq!(a, [Action::Spawn]);
        assert_eq!(m.handle(now, Event::Spawned { pid }), []);
    }

    /// Crash → backoff → tick → spawn, returning the delay that was used.
    fn crash_and_restart(m: &mut Machine, now: &mut Instant, pid: i32) -> Duration {
        let a = m.handle(*now, Event::Exited { pid, status: ExitKind::Code(1) });
        let until = match a.as_slice() {
            [Action::ScheduleAt(t)] => *t,
            other => panic!("expected ScheduleAt, got {other:?}"),
        };
        let delay = until - *now;
        assert_eq!(m.handle(until - Duration::from_millis(1), Event::Tick), [], "no spawn before the deadline");
        assert_eq!(m.handle(until, Event::Tick), [Action::Spawn]);
        *now = until;
        assert_eq!(m.handle(*now, Event::Spawned { pid: pid + 1 }), []);
        delay
    }

    #[test]
    fn backoff_doubles_to_cap() {
        let mut m = machine(RestartPolicy::Always);
        let mut now = Instant::now();
        run(&mut m, now, 100);
        let mut delays = Vec::new();
        for i in 0..9 {
            delays.push(crash_and_restart(&mut m, &mut now, 100 + i).as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(m.restarts(), 9);
    }

    #[test]
    fn backoff_resets_after_staying_up() {
        let mut m = machine(RestartPolicy::OnFailure);
        let mut now = Instant::now();
        run(&mut m, now, 1);
        assert_eq!(crash_and_restart(&mut m, &mut now, 1), S);
        assert_eq!(crash_and_restart(&mut m, &mut now, 2), 2 * S);
        assert_eq!(crash_and_restart(&mut m, &mut now, 3), 4 * S);
        // Up for 29 s: not long enough, keeps growing.
        now += Duration::from_secs(29);
        assert_eq!(crash_and_restart(&mut m, &mut now, 4), 8 * S);
        // Up for 30 s: back to the initial delay.
        now += Duration::from_secs(30);
        assert_eq!(crash_and_restart(&mut m, &mut now, 5), S);
        assert_eq!(crash_and_restart(&mut m, &mut now, 6), 2 * S);
    }

    #[test]
    fn policies_on_clean_and_failed_exit() {
        let now = Instant::now();
        let ok = ExitKind::Code(0);
        let bad = ExitKind::Signal(9);
        let cases = [
            (RestartPolicy::Always, ok, "backoff"),
            (RestartPolicy::Always, bad, "backoff"),
            (RestartPolicy::OnFailure, ok, "stopped"),
            (RestartPolicy::OnFailure, bad, "backoff"),
            (RestartPolicy::Never, ok, "stopped"),
            (RestartPolicy::Never, bad, "failed"),
        ];
        for (policy, status, want) in cases {
            let mut m = machine(policy);
            run(&mut m, now, 7);
            m.handle(now + S, Event::Exited { pid: 7, status });
            assert_eq!(m.state().name(), want, "{policy:?} {status}");
            assert_eq!(m.last_exit(), Some(status));
            assert_eq!(m.deadline().is_some(), want == "backoff");
        }
    }

    #[test]
    fn exit_of_other_pid_is_ignored() {
        let now = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, now, 7);
        assert_eq!(m.handle(now, Event::Exited { pid: 8, status: ExitKind::Code(1) }), []);
        assert_eq!(m.pid(), Some(7));
    }

    #[test]
    fn stop_during_backoff_cancels_restart() {
        let now = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, now, 7);
        m.handle(now, Event::Exited { pid: 7, status: ExitKind::Code(1) });
        assert_eq!(m.state().name(), "backoff");
        assert_eq!(m.handle(now, Event::StopRequested), []);
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.handle(now + Duration::from_secs(100), Event::Tick), []);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn start_during_backoff_spawns_now_with_reset_delay() {
        let now = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, now, 7);
        m.handle(now, Event::Exited { pid: 7, status: ExitKind::Code(1) });
        assert_eq!(m.next_delay(), 2 * S);
        assert_eq!(m.handle(now, Event::StartRequested), [Action::Spawn]);
        assert_eq!(m.next_delay(), S);
        assert_eq!(m.restarts(), 0, "operator starts are not counted");
    }

    #[test]
    fn stop_escalates_to_sigkill_after_timeout() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, t0, 42);
        let a = m.handle(t0, Event::StopRequested);
        let deadline = t0 + Duration::from_secs(10);
        assert_eq!(a, [Action::Kill { pid: 42, signal: StopSignal::Term }, Action::ScheduleAt(deadline)]);
        assert_eq!(m.handle(t0 + Duration::from_secs(9), Event::Tick), []);
        assert_eq!(m.handle(deadline, Event::Tick), [Action::Kill { pid: 42, signal: StopSignal::Kill }]);
        assert_eq!(m.handle(deadline + S, Event::Tick), [], "SIGKILL only once");
        assert_eq!(m.deadline(), None);
        // The exit after a stop never restarts, whatever the policy.
        assert_eq!(m.handle(deadline + S, Event::Exited { pid: 42, status: ExitKind::Signal(9) }), []);
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn stop_then_exit_before_timeout() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, t0, 42);
        m.handle(t0, Event::StopRequested);
        assert_eq!(m.handle(t0 + S, Event::Exited { pid: 42, status: ExitKind::Code(0) }), []);
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.handle(t0 + Duration::from_secs(11), Event::Tick), []);
    }

    #[test]
    fn restart_request_stops_then_spawns() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::Never);
        run(&mut m, t0, 5);
        let a = m.handle(t0, Event::RestartRequested);
        assert_eq!(a[0], Action::Kill { pid: 5, signal: StopSignal::Term });
        assert_eq!(m.handle(t0, Event::Exited { pid: 5, status: ExitKind::Signal(15) }), [Action::Spawn]);
        assert_eq!(m.handle(t0, Event::Spawned { pid: 6 }), []);
        assert_eq!(m.pid(), Some(6));
        // A stop after a restart request cancels the pending start.
        m.handle(t0, Event::RestartRequested);
        m.handle(t0, Event::StopRequested);
        assert_eq!(m.handle(t0, Event::Exited { pid: 6, status: ExitKind::Code(0) }), []);
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn spawn_failure_backs_off_or_fails() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::OnFailure);
        assert_eq!(m.handle(t0, Event::StartRequested), [Action::Spawn]);
        assert_eq!(m.handle(t0, Event::SpawnFailed), [Action::ScheduleAt(t0 + S)]);
        let mut m = machine(RestartPolicy::Never);
        m.handle(t0, Event::StartRequested);
        assert_eq!(m.handle(t0, Event::SpawnFailed), []);
        assert_eq!(m.state(), State::Failed);
    }

    #[test]
    fn stop_while_starting_kills_once_spawned() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        m.handle(t0, Event::StartRequested);
        assert_eq!(m.handle(t0, Event::StopRequested), []);
        let a = m.handle(t0, Event::Spawned { pid: 9 });
        assert_eq!(a[0], Action::Kill { pid: 9, signal: StopSignal::Term });
    }

    #[test]
    fn policy_change_at_shutdown_prevents_restart() {
        let t0 = Instant::now();
        let mut m = machine(RestartPolicy::Always);
        run(&mut m, t0, 3);
        m.set_policy(RestartPolicy::Never);
        assert_eq!(m.handle(t0, Event::Exited { pid: 3, status: ExitKind::Code(1) }), []);
        assert_eq!(m.state(), State::Failed);
    }

    #[test]
    fn exit_kind_display() {
        assert_eq!(ExitKind::Code(3).to_string(), "exit 3");
        assert_eq!(ExitKind::Signal(9).to_string(), "signal SIGKILL");
        assert_eq!(ExitKind::Signal(999).to_string(), "signal 999");
    }
}

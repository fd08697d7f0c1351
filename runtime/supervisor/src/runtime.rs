//! The runtime supervisor for PID 1: the one reaper, spawning, per-service
//! logs, the control socket and the ordered shutdown.
//!
//! One thread (the one that calls [`Supervisor::run`]) owns all state. It
//! sleeps in poll(2) on a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGUSR2) and a
//! wake pipe, with a timeout set by the next deadline (at most 1 s, so a
//! missed SIGCHLD only delays a reap). Other threads (the control socket,
//! per-service log readers, init's own threads via [`Handle`]) only send
//! messages to it.
//!
//! Signals: SIGTERM → reboot, SIGINT (ctrl-alt-del once init has called
//! `reboot(RB_DISABLE_CAD)`) → reboot, SIGUSR2 → power off.
//!
//! Shutdown: services stop in reverse `order` (every service of one order
//! value at once: SIGTERM to the process group, SIGKILL after its
//! `stop_timeout`), then `kill(-1, SIGTERM)`, `kill(-1, SIGKILL)`, the
//! [`ShutdownHooks`] (init exports the pool there), sync(2) and reboot(2),
//! all through the [`Host`] seam.
//!
//! Helpers: once the reaper runs, nobody else may wait for children, so
//! init spawns its helper processes with [`Handle::run_helper`] /
//! [`Handle::helper_output`] (the reaper thread forks them and routes their
//! exit status back). Before `run`, and from the reaper thread itself, these
//! fall back to a plain spawn + wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::host::{Host, LinuxHost, PowerAction, RebootError};
use crate::logfile::{RotatingLog, Rotation};
use crate::machine::{Action, Backoff, Event, ExitKind, Machine, State, StopSignal};
use crate::manifest::{self, LogTarget, ManifestError, Mode, RestartPolicy, ServiceSpec};
use crate::passwd;
use crate::protocol::{self, Request, Response, ServiceStatus};

/// Everything the supervisor needs from init; paths are parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Service logs: `<log_dir>/<name>.log` (init: `/var/log`).
    pub log_dir: PathBuf,
    /// Control socket (init: `/run/triton/init.sock`), created mode 0600.
    pub socket_path: PathBuf,
    /// Manifest directories, in priority order (init: `/usr/lib/triton/services`,
    /// `/opt/triton/services`).
    pub manifest_dirs: Vec<PathBuf>,
    pub mode: Mode,
    /// Conditions already satisfied (e.g. `network`, `pool`).
    pub conditions: BTreeSet<String>,
    pub rotation: Rotation,
    pub backoff: Backoff,
    /// For `user = "..."` (init: `/etc/passwd`).
    pub passwd_path: PathBuf,
    /// The environment every service starts from (then its own `env`).
    pub base_env: BTreeMap<String, String>,
    /// At shutdown: how long to wait after SIGKILL for a service, and after
    /// each `kill(-1, ...)`, before moving on.
    pub kill_grace: Duration,
    /// At shutdown: how long the [`ShutdownHooks`] may take.
    pub hook_timeout: Duration,
}

impl Config {
    pub fn new(
        log_dir: impl Into<PathBuf>,
        socket_path: impl Into<PathBuf>,
        manifest_dirs: Vec<PathBuf>,
        mode: Mode,
    ) -> Self {
        let base_env = [("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("LANG", "C.UTF-8")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config {
            log_dir: log_dir.into(),
            socket_path: socket_path.into(),
            manifest_dirs,
            mode,
            conditions: BTreeSet::new(),
            rotation: Rotation::default(),
            backoff: Backoff::default(),
            passwd_path: PathBuf::from("/etc/passwd"),
            base_env,
            kill_grace: Duration::from_secs(5),
            hook_timeout: Duration::from_secs(300),
        }
    }
}

pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What init does after every process is gone and before sync + reboot
/// (export the zones pool). Runs on its own thread while the reaper keeps
/// running, so it may use [`Handle::run_helper`].
pub trait ShutdownHooks: Send + 'static {
    fn before_power_off(&mut self, action: PowerAction) -> Result<(), HookError>;
}

impl<F> ShutdownHooks for F
where
    F: FnMut(PowerAction) -> Result<(), HookError> + Send + 'static,
{
    fn before_power_off(&mut self, action: PowerAction) -> Result<(), HookError> {
        self(action)
    }
}

/// No shutdown work.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl ShutdownHooks for NoHooks {
    fn before_power_off(&mut self, _: PowerAction) -> Result<(), HookError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("blocking SIGCHLD/SIGTERM/SIGINT/SIGUSR2: {0}")]
    BlockSignals(nix::Error),
    #[error("creating the signalfd: {0}")]
    SignalFd(nix::Error),
    #[error("creating the wake pipe: {0}")]
    Pipe(nix::Error),
    #[error("waiting for events: {0}")]
    Poll(nix::Error),
    #[error(transparent)]
    Reboot(#[from] RebootError),
}

#[derive(Debug, thiserror::Error)]
pub enum AddServiceError {
    #[error("service {name:?}: {}", problems.join("; "))]
    Invalid { name: String, problems: Vec<String> },
    #[error("service {name:?} is already defined")]
    Duplicate { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("starting {service} ({program}): {source}")]
    Spawn { service: String, program: String, source: io::Error },
    #[error("starting {service}: user {user:?} is not in {}", passwd.display())]
    UnknownUser { service: String, user: String, passwd: PathBuf },
    #[error("starting {service}: creating the log pipe: {source}")]
    Pipe { service: String, source: io::Error },
}

#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {op}: {source}", path.display())]
pub struct ControlSocketError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

/// The signals PID 1 takes through its signalfd.
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR2] {
        set.add(s);
    }
    set
}

/// Blocks the supervised signals in the calling thread. Init should call
/// this first thing in `main`, before it creates any thread: a thread that
/// does not block them could take (and, for PID 1, drop) a signal before the
/// signalfd sees it. [`Supervisor::new`] calls it too.
pub fn block_signals() -> Result<(), SupervisorError> {
    supervised_signals().thread_block().map_err(SupervisorError::BlockSignals)
}

enum Msg {
    Control { req: Request, reply: Sender<Response> },
    SetCondition { name: String, on: bool },
    SpawnHelper { cmd: Box<Command>, reply: Sender<io::Result<(Child, Receiver<ExitStatus>)>> },
    HookDone(Result<(), String>),
}

/// A cloneable, `Send` handle to a supervisor, for other threads.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    wake: Arc<OwnedFd>,
    reaper: Arc<Mutex<Option<ThreadId>>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    fn send(&self, msg: Msg) -> Result<(), Msg> {
        self.tx.send(msg).map_err(|e| e.0)?;
        // A full pipe already means "wake up"; nothing else can go wrong here.
        let _ = nix::unistd::write(self.wake.as_fd(), &[1]);
        Ok(())
    }

    /// Performs a control request, as the socket does; blocks until answered.
    pub fn request(&self, req: Request) -> Response {
        let (reply, rx) = mpsc::channel();
        if self.send(Msg::Control { req, reply }).is_err() {
            return Response::err("init's supervisor is not running");
        }
        rx.recv().unwrap_or_else(|_| Response::err("init's supervisor stopped before answering"))
    }

    /// Marks a condition satisfied (or not); waiting services whose needs
    /// are now all met start. Clearing a condition stops nothing.
    pub fn set_condition(&self, name: &str, on: bool) {
        let _ = self.send(Msg::SetCondition { name: name.to_string(), on });
    }

    fn reaper_running_elsewhere(&self) -> bool {
        let r = *self.reaper.lock().unwrap_or_else(PoisonError::into_inner);
        r.is_some_and(|t| t != thread::current().id())
    }

    /// Spawns `cmd` such that its exit status reaches the caller even though
    /// the reaper reaps every child.
    fn spawn_helper(&self, cmd: Command) -> io::Result<(Child, Option<Receiver<ExitStatus>>)> {
        let mut cmd = cmd;
        unblock_signals_in_child(&mut cmd);
        if !self.reaper_running_elsewhere() {
            return cmd.spawn().map(|c| (c, None));
        }
        let (reply, rx) = mpsc::channel();
        match self.send(Msg::SpawnHelper { cmd: Box::new(cmd), reply }) {
            Ok(()) => match rx.recv() {
                Ok(r) => r.map(|(c, s)| (c, Some(s))),
                Err(_) => Err(io::Error::other("init's supervisor stopped before starting the helper")),
            },
            Err(Msg::SpawnHelper { mut cmd, .. }) => cmd.spawn().map(|c| (c, None)),
            Err(_) => Err(io::Error::other("init's supervisor is not running")),
        }
    }

    fn wait_helper(mut child: Child, status: Option<Receiver<ExitStatus>>) -> io::Result<ExitStatus> {
        match status.map(|rx| rx.recv()) {
            Some(Ok(s)) => Ok(s),
            // No reaper (or it is gone): wait ourselves.
            None | Some(Err(_)) => child.wait(),
        }
    }

    /// Runs an init helper to completion (like `Command::status`).
    pub fn run_helper(&self, cmd: Command) -> io::Result<ExitStatus> {
        let (child, status) = self.spawn_helper(cmd)?;
        Self::wait_helper(child, status)
    }

    /// Runs an init helper and collects its output (like `Command::output`).
    pub fn helper_output(&self, cmd: Command) -> io::Result<Output> {
        let mut cmd = cmd;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, status) = self.spawn_helper(cmd)?;
        let err_pipe = child.stderr.take();
        let read_all = |pipe: Option<&mut dyn Read>| {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        };
        let err_thread = thread::Builder::new().name("helper-stderr".into()).spawn(move || {
            let mut e = err_pipe;
            read_all(e.as_mut().map(|e| e as &mut dyn Read))
        });
        let stdout = read_all(child.stdout.as_mut().map(|o| o as &mut dyn Read));
        let stderr = match err_thread {
            Ok(t) => t.join().unwrap_or_default(),
            // No thread could be started: its stderr pipe was dropped with
            // the closure, so stderr is lost (and not waited for).
            Err(_) => Vec::new(),
        };
        let status = Self::wait_helper(child, status)?;
        Ok(Output { status, stdout, stderr })
    }
}

struct Svc {
    spec: ServiceSpec,
    machine: Machine,
    /// Runs in this node mode.
    enabled: bool,
    /// Wanted but held back until its `needs` are satisfied.
    waiting: bool,
    log: Option<Arc<Mutex<RotatingLog>>>,
    last_error: Option<String>,
    waiters: Vec<(Waiter, Sender<Response>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiter {
    Stop,
    Restart,
}

enum Phase {
    Running,
    StoppingServices { action: PowerAction, levels: Vec<i32>, current: Option<(i32, Instant)> },
    KillAll { action: PowerAction, sent_kill: bool, deadline: Instant },
    Hook { action: PowerAction, deadline: Instant },
    Done,
}

/// PID 1's supervisor. See the module documentation.
pub struct Supervisor<H: Host = LinuxHost> {
    cfg: Config,
    host: H,
    services: Vec<Svc>,
    conditions: BTreeSet<String>,
    sigfd: SignalFd,
    wake_rx: File,
    handle: Handle,
    rx: Receiver<Msg>,
    pids: HashMap<i32, usize>,
    helpers: HashMap<i32, Sender<ExitStatus>>,
    on_orphan: Box<dyn FnMut(i32, ExitKind) + Send>,
    phase: Phase,
    has_children: bool,
    hook_result: Option<Result<(), String>>,
}

impl Supervisor<LinuxHost> {
    /// The supervisor with the real host (PID 1). Blocks the supervised
    /// signals in the calling thread, which must be the one calling `run`.
    pub fn new(cfg: Config) -> Result<Self, SupervisorError> {
        Self::with_host(cfg, LinuxHost)
    }
}

impl<H: Host> Supervisor<H> {
    pub fn with_host(cfg: Config, host: H) -> Result<Self, SupervisorError> {
        block_signals()?;
        let sigfd = SignalFd::with_flags(&supervised_signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(SupervisorError::SignalFd)?;
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(SupervisorError::Pipe)?;
        let (tx, rx) = mpsc::channel();
        let handle = Handle { tx, wake: Arc::new(w), reaper: Arc::new(Mutex::new(None)) };
        Ok(Supervisor {
            conditions: cfg.conditions.clone(),
            cfg,
            host,
            services: Vec::new(),
            sigfd,
            wake_rx: File::from(r),
            handle,
            rx,
            pids: HashMap::new(),
            helpers: HashMap::new(),
            on_orphan: Box::new(|pid, st| debug!(pid, status = %st, "reaped an orphan")),
            phase: Phase::Running,
            has_children: true,
            hook_result: None,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Called with the pid and status of every reaped child that is neither
    /// a service nor a helper (orphans re-parented to PID 1, children
    /// spawned before `run`). Runs on the reaper thread: keep it short.
    pub fn on_orphan_exit(&mut self, f: impl FnMut(i32, ExitKind) + Send + 'static) {
        self.on_orphan = Box::new(f);
    }

    /// Adds a service built in code (getty, udevd...) or from a manifest.
    pub fn add_service(&mut self, spec: ServiceSpec) -> Result<(), AddServiceError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(AddServiceError::Invalid { name: spec.name, problems });
        }
        if self.services.iter().any(|s| s.spec.name == spec.name) {
            return Err(AddServiceError::Duplicate { name: spec.name });
        }
        let enabled = spec.modes.contains(&self.cfg.mode);
        let log = (spec.log == LogTarget::File)
            .then(|| Arc::new(Mutex::new(RotatingLog::new(&self.cfg.log_dir, &spec.name, self.cfg.rotation))));
        let machine = Machine::new(spec.restart, spec.stop_timeout, self.cfg.backoff);
        self.services.push(Svc {
            spec,
            machine,
            enabled,
            waiting: enabled,
            log,
            last_error: None,
            waiters: Vec::new(),
        });
        self.services.sort_by(|a, b| (a.spec.order, &a.spec.name).cmp(&(b.spec.order, &b.spec.name)));
        Ok(())
    }

    /// Loads the manifest directories; every bad manifest is logged,
    /// skipped and returned.
    pub fn load_manifests(&mut self) -> Vec<ManifestError> {
        let (specs, mut errors) = manifest::load_dirs(&self.cfg.manifest_dirs);
        for spec in specs {
            let path = spec.source.clone().unwrap_or_default();
            let name = spec.name.clone();
            match self.add_service(spec) {
                Ok(()) => {}
                Err(AddServiceError::Duplicate { .. }) => {
                    errors.push(ManifestError::Duplicate { path, name, first: PathBuf::from("(built into init)") })
                }
                Err(AddServiceError::Invalid { problems, .. }) => {
                    errors.push(ManifestError::Invalid { path, problems })
                }
            }
        }
        for e in &errors {
            warn!("{e}");
        }
        errors
    }

    /// Marks a condition satisfied (or not) before `run`; see [`Handle::set_condition`].
    pub fn set_condition(&mut self, name: &str, on: bool) {
        if on {
            self.conditions.insert(name.to_string());
        } else {
            self.conditions.remove(name);
        }
    }

    /// Supervises until a shutdown completes, then reboots through the host.
    /// Never returns in PID 1 on success; if reboot(2) fails it keeps
    /// supervising (reaping, control socket) and retries every 10 s.
    pub fn run(mut self, hooks: impl ShutdownHooks) -> ! {
        let _ = self.main_loop(Box::new(hooks), true);
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }

    /// Like [`run`](Self::run), but returns what the host's reboot call
    /// returned (tests, with a fake host).
    pub fn run_to_shutdown(mut self, hooks: impl ShutdownHooks) -> Result<PowerAction, SupervisorError> {
        let r = self.main_loop(Box::new(hooks), false);
        *self.handle.reaper.lock().unwrap_or_else(PoisonError::into_inner) = None;
        r
    }

    fn main_loop(&mut self, hooks: Box<dyn ShutdownHooks>, forever: bool) -> Result<PowerAction, SupervisorError> {
        *self.handle.reaper.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread::current().id());
        if let Err(e) = start_control_socket(&self.cfg.socket_path, self.handle.clone()) {
            error!("{e}; triton-ctl will not work");
        }
        let mut hooks = Some(hooks);
        let mut retry_at: Option<(PowerAction, Instant)> = None;
        self.kick(Instant::now());
        loop {
            let now = Instant::now();
            let mut next = now + Duration::from_secs(1);
            for d in self.services.iter().filter_map(|s| s.machine.deadline()) {
                next = next.min(d);
            }
            if let Some(d) = self.phase_deadline() {
                next = next.min(d);
            }
            if let Some((_, t)) = retry_at {
                next = next.min(t);
            }
            let ms = next.saturating_duration_since(now).as_millis().saturating_add(1).min(1000);
            self.wait(PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::NONE))?;

            let now = Instant::now();
            self.read_signals(now);
            self.reap(now);
            while let Ok(msg) = self.rx.try_recv() {
                self.handle_msg(msg, now);
            }
            for idx in 0..self.services.len() {
                self.apply(idx, now, Event::Tick);
            }
            if let Some(action) = self.progress_shutdown(now, &mut hooks) {
                info!("sync and {action:?}");
                self.host.sync();
                let r = self.host.reboot(action);
                if !forever {
                    return r.map(|()| action).map_err(SupervisorError::from);
                }
                if let Err(e) = r {
                    error!("{e}; retrying in 10 s");
                }
                retry_at = Some((action, now + Duration::from_secs(10)));
            }
            if let Some((action, t)) = retry_at {
                if now >= t {
                    self.host.sync();
                    if let Err(e) = self.host.reboot(action) {
                        error!("{e}; retrying in 10 s");
                    }
                    retry_at = Some((action, now + Duration::from_secs(10)));
                }
            }
        }
    }

    fn wait(&mut self, timeout: PollTimeout) -> Result<(), SupervisorError> {
        let mut fds =
            [PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN), PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                error!("poll: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
        let mut buf = [0u8; 256];
        while matches!(self.wake_rx.read(&mut buf), Ok(n) if n > 0) {}
        Ok(())
    }

    fn read_signals(&mut self, now: Instant) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => {
                    let sig = Signal::try_from(info.ssi_signo as i32);
                    match sig {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.begin_shutdown(PowerAction::Reboot, now),
                        Ok(Signal::SIGUSR2) => self.begin_shutdown(PowerAction::PowerOff, now),
                        _ => {}
                    }
                    if let Ok(s) = sig {
                        if s != Signal::SIGCHLD {
                            info!(pid = info.ssi_pid, "received {}", s.as_str());
                        }
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!("reading the signalfd: {e}");
                    break;
                }
            }
        }
    }

    /// The one reaper: every exited child, routed by pid.
    fn reap(&mut self, now: Instant) {
        for _ in 0..100_000 {
            let (pid, kind) = match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitKind::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), ExitKind::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) => {
                    self.has_children = true;
                    return;
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => {
                    self.has_children = false;
                    return;
                }
                Err(e) => {
                    warn!("waitpid: {e}");
                    return;
                }
            };
            if let Some(idx) = self.pids.remove(&pid) {
                let svc = &mut self.services[idx];
                info!(service = %svc.spec.name, pid, status = %kind, "service exited");
                marker(svc, &format!("pid {pid} exited: {kind}"));
                if matches!(svc.machine.state(), State::Stopping { .. }) {
                    // Leftovers of a stopped service's process group.
                    let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                self.apply(idx, now, Event::Exited { pid, status: kind });
            } else if let Some(tx) = self.helpers.remove(&pid) {
                let raw = match kind {
                    ExitKind::Code(c) => (c & 0xff) << 8,
                    ExitKind::Signal(s) => s & 0x7f,
                };
                let _ = tx.send(ExitStatus::from_raw(raw));
            } else {
                (self.on_orphan)(pid, kind);
            }
        }
    }

    fn handle_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::Control { req, reply } => self.control(req, reply, now),
            Msg::SetCondition { name, on } => {
                self.set_condition(&name, on);
                if matches!(self.phase, Phase::Running) {
                    self.kick(now);
                }
            }
            Msg::SpawnHelper { mut cmd, reply } => {
                let r = cmd.spawn().and_then(|child| {
                    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
                    let (tx, rx) = mpsc::channel();
                    self.helpers.insert(pid, tx);
                    Ok((child, rx))
                });
                let _ = reply.send(r);
            }
            Msg::HookDone(r) => self.hook_result = Some(r),
        }
    }

    fn needs_met(&self, idx: usize) -> bool {
        self.services[idx].spec.needs.iter().all(|n| self.conditions.contains(n))
    }

    fn missing_needs(&self, idx: usize) -> Vec<String> {
        self.services[idx].spec.needs.iter().filter(|n| !self.conditions.contains(*n)).cloned().collect()
    }

    /// Starts the waiting services whose needs are all met, in order.
    fn kick(&mut self, now: Instant) {
        for idx in 0..self.services.len() {
            if self.services[idx].waiting && self.needs_met(idx) {
                self.services[idx].waiting = false;
                self.apply(idx, now, Event::StartRequested);
            }
        }
    }

    /// Feeds one event to a service's machine and performs its actions.
    fn apply(&mut self, idx: usize, now: Instant, event: Event) {
        let mut queue = vec![event];
        while let Some(ev) = queue.pop() {
            for action in self.services[idx].machine.handle(now, ev) {
                match action {
                    Action::Spawn => match self.spawn(idx) {
                        Ok(pid) => {
                            self.pids.insert(pid, idx);
                            self.services[idx].last_error = None;
                            queue.push(Event::Spawned { pid });
                        }
                        Err(e) => {
                            error!("{e}");
                            marker(&self.services[idx], &e.to_string());
                            self.services[idx].last_error = Some(e.to_string());
                            queue.push(Event::SpawnFailed);
                        }
                    },
                    Action::Kill { pid, signal } => {
                        let sig = match signal {
                            StopSignal::Term => Signal::SIGTERM,
                            StopSignal::Kill => Signal::SIGKILL,
                        };
                        let svc = &self.services[idx];
                        info!(service = %svc.spec.name, pid, "sending {}", sig.as_str());
                        if nix::sys::signal::killpg(Pid::from_raw(pid), sig).is_err() {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                        }
                    }
                    Action::ScheduleAt(_) => {} // deadlines are read from the machines
                }
            }
        }
        self.answer_waiters(idx);
    }

    fn answer_waiters(&mut self, idx: usize) {
        let svc = &mut self.services[idx];
        let state = svc.machine.state();
        let name = svc.spec.name.clone();
        let last_error = svc.last_error.clone();
        svc.waiters.retain(|(kind, tx)| {
            let resp = match (kind, state) {
                (_, State::Stopping { .. } | State::Starting { .. }) => return true,
                (Waiter::Stop, s) if !s.is_active() => Response::ok(format!("{name} stopped")),
                (Waiter::Restart, State::Running { pid, .. }) => Response::ok(format!("{name} restarted (pid {pid})")),
                (Waiter::Restart, s) => Response::err(format!(
                    "{name} did not come back: {}{}",
                    s.name(),
                    last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                )),
                _ => return true,
            };
            let _ = tx.send(resp);
            false
        });
    }

    fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError> {
        let spec = &self.services[idx].spec;
        let service = spec.name.clone();
        let program = spec.exec.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        cmd.args(spec.exec.iter().skip(1))
            .env_clear()
            .envs(&self.cfg.base_env)
            .envs(&spec.env)
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some(user) = &spec.user {
            let text = fs::read_to_string(&self.cfg.passwd_path).unwrap_or_default();
            let acct = passwd::lookup(&text, user).ok_or_else(|| SpawnError::UnknownUser {
                service: service.clone(),
                user: user.clone(),
                passwd: self.cfg.passwd_path.clone(),
            })?;
            cmd.uid(acct.uid).gid(acct.gid);
            if let (Some(home), false) = (acct.home, spec.env.contains_key("HOME")) {
                cmd.env("HOME", home);
            }
        }
        new_session(&mut cmd);
        let mut reader = None;
        match spec.log {
            LogTarget::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            LogTarget::Inherit => {}
            LogTarget::File => {
                let pipe_err = |source| SpawnError::Pipe { service: service.clone(), source };
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| pipe_err(io::Error::from(e)))?;
                let w2 = w.try_clone().map_err(pipe_err)?;
                cmd.stdout(Stdio::from(w)).stderr(Stdio::from(w2));
                reader = Some(r);
            }
        }
        let child = cmd.spawn().map_err(|source| SpawnError::Spawn {
            service: service.clone(),
            program: program.clone(),
            source,
        })?;
        // Closes our copies of the pipe's write end: the reader sees EOF
        // once the service (and whatever inherited its stdout) is gone.
        drop(cmd);
        let pid = i32::try_from(child.id()).map_err(|e| SpawnError::Spawn {
            service: service.clone(),
            program,
            source: io::Error::other(e),
        })?;
        drop(child);
        let svc = &self.services[idx];
        info!(service = %service, pid, "service started");
        marker(svc, &format!("started pid {pid}"));
        if let (Some(r), Some(log)) = (reader, svc.log.clone()) {
            let name = service.clone();
            let spawned = thread::Builder::new()
                .name(format!("log-{service}"))
                .spawn(move || copy_to_log(File::from(r), &log, &name));
            if let Err(e) = spawned {
                error!(service = %service, "cannot start the log thread: {e}; its output is lost");
            }
        }
        Ok(pid)
    }

    fn status(&self, now: Instant) -> Response {
        let services = self
            .services
            .iter()
            .enumerate()
            .map(|(idx, s)| {
                let st = s.machine.state();
                let state = if !s.enabled {
                    "disabled".to_string()
                } else if s.waiting {
                    "waiting".to_string()
                } else {
                    st.name().to_string()
                };
                ServiceStatus {
                    name: s.spec.name.clone(),
                    state,
                    pid: s.machine.pid(),
                    restarts: s.machine.restarts(),
                    last_exit: s.machine.last_exit().map(|e| e.to_string()),
                    uptime_s: match st {
                        State::Running { since, .. } => Some(now.saturating_duration_since(since).as_secs()),
                        _ => None,
                    },
                    restart_in_s: match st {
                        State::Backoff { until } => {
                            Some(until.saturating_duration_since(now).as_millis().div_ceil(1000) as u64)
                        }
                        _ => None,
                    },
                    waiting_for: if s.waiting { self.missing_needs(idx) } else { Vec::new() },
                    order: s.spec.order,
                }
            })
            .collect();
        Response {
            ok: true,
            mode: Some(self.cfg.mode.to_string()),
            conditions: Some(self.conditions.iter().cloned().collect()),
            services: Some(services),
            ..Default::default()
        }
    }

    fn find(&self, name: &str) -> Result<usize, String> {
        self.services.iter().position(|s| s.spec.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.services.iter().map(|s| s.spec.name.as_str()).collect();
            format!("no such service {name:?} (known: {})", known.join(", "))
        })
    }

    /// Checks a start/restart is possible; the error says why not.
    fn startable(&self, idx: usize) -> Result<(), String> {
        let s = &self.services[idx];
        if !matches!(self.phase, Phase::Running) {
            return Err("init is shutting down".into());
        }
        if !s.enabled {
            let modes: Vec<String> = s.spec.modes.iter().map(Mode::to_string).collect();
            return Err(format!(
                "{} does not run in {} mode (it runs in: {})",
                s.spec.name,
                self.cfg.mode,
                modes.join(", ")
            ));
        }
        let missing = self.missing_needs(idx);
        if !missing.is_empty() {
            return Err(format!(
                "{} needs {}, not satisfied yet; it starts by itself once it is",
                s.spec.name,
                missing.join(" and ")
            ));
        }
        Ok(())
    }

    fn control(&mut self, req: Request, reply: Sender<Response>, now: Instant) {
        let resp = match req {
            Request::Status => self.status(now),
            Request::Reboot | Request::Poweroff => {
                let action = if req == Request::Reboot { PowerAction::Reboot } else { PowerAction::PowerOff };
                let msg = if matches!(self.phase, Phase::Running) {
                    format!("{action:?} in progress: stopping services")
                } else {
                    "already shutting down".to_string()
                };
                let _ = reply.send(Response::ok(msg));
                self.begin_shutdown(action, now);
                return;
            }
            Request::Start { service } => match self.find(&service).and_then(|i| self.startable(i).map(|()| i)) {
                Err(e) => Response::err(e),
                Ok(idx) => {
                    self.apply(idx, now, Event::StartRequested);
                    let s = &self.services[idx];
                    match (s.machine.state(), &s.last_error) {
                        (State::Running { pid, .. }, _) => Response::ok(format!("{service} running (pid {pid})")),
                        (State::Stopping { .. }, _) => Response::ok(format!("{service} starts once it has stopped")),
                        (st, Some(e)) => Response::err(format!("{service}: {} ({e})", st.name())),
                        (st, None) => Response::err(format!("{service}: {}", st.name())),
                    }
                }
            },
            Request::Stop { service } => match self.find(&service) {
                Err(e) => Response::err(e),
                Ok(idx) => {
                    if !matches!(self.phase, Phase::Running) {
                        Response::err("init is shutting down")
                    } else {
                        self.services[idx].waiting = false;
                        self.services[idx].waiters.push((Waiter::Stop, reply));
                        self.apply(idx, now, Event::StopRequested);
                        return;
                    }
                }
            },
            Request::Restart { service } => match self.find(&service).and_then(|i| self.startable(i).map(|()| i)) {
                Err(e) => Response::err(e),
                Ok(idx) => {
                    self.services[idx].waiters.push((Waiter::Restart, reply));
                    self.apply(idx, now, Event::RestartRequested);
                    return;
                }
            },
        };
        let _ = reply.send(resp);
    }

    fn begin_shutdown(&mut self, action: PowerAction, now: Instant) {
        if !matches!(self.phase, Phase::Running) {
            info!("{action:?} requested; already shutting down");
            return;
        }
        info!("{action:?} requested: stopping services in reverse order");
        for idx in 0..self.services.len() {
            let s = &mut self.services[idx];
            s.waiting = false;
            s.machine.set_policy(RestartPolicy::Never);
            if matches!(s.machine.state(), State::Backoff { .. }) {
                self.apply(idx, now, Event::StopRequested);
            }
        }
        let mut levels: Vec<i32> = self.services.iter().map(|s| s.spec.order).collect();
        levels.sort_unstable();
        levels.dedup();
        self.phase = Phase::StoppingServices { action, levels, current: None };
    }

    fn phase_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::StoppingServices { current: Some((_, d)), .. } => Some(*d),
            Phase::KillAll { deadline, .. } | Phase::Hook { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Moves the shutdown on; returns the action once reboot(2) is due.
    fn progress_shutdown(&mut self, now: Instant, hooks: &mut Option<Box<dyn ShutdownHooks>>) -> Option<PowerAction> {
        for _ in 0..10_000 {
            match &mut self.phase {
                Phase::Running | Phase::Done => return None,
                Phase::StoppingServices { action, levels, current } => {
                    let action = *action;
                    if let Some((order, deadline)) = *current {
                        let busy: Vec<&str> = self
                            .services
                            .iter()
                            .filter(|s| s.spec.order == order && s.machine.state().is_active())
                            .map(|s| s.spec.name.as_str())
                            .collect();
                        if !busy.is_empty() && now < deadline {
                            return None;
                        }
                        if !busy.is_empty() {
                            warn!("{} did not exit after SIGKILL; shutdown goes on", busy.join(", "));
                        }
                        *current = None;
                    }
                    match levels.pop() {
                        Some(order) => {
                            let mut longest = Duration::ZERO;
                            let idxs: Vec<usize> =
                                (0..self.services.len()).filter(|&i| self.services[i].spec.order == order).collect();
                            for &i in &idxs {
                                longest = longest.max(self.services[i].spec.stop_timeout);
                            }
                            if let Phase::StoppingServices { current, .. } = &mut self.phase {
                                *current = Some((order, now + longest + self.cfg.kill_grace));
                            }
                            for i in idxs {
                                self.apply(i, now, Event::StopRequested);
                            }
                        }
                        None => {
                            info!("services stopped; sending SIGTERM to all processes");
                            if let Err(e) = self.host.kill_all(Signal::SIGTERM) {
                                warn!("kill(-1, SIGTERM): {e}");
                            }
                            self.phase =
                                Phase::KillAll { action, sent_kill: false, deadline: now + self.cfg.kill_grace };
                        }
                    }
                }
                Phase::KillAll { action, sent_kill, deadline } => {
                    let action = *action;
                    if self.has_children && now < *deadline {
                        return None;
                    }
                    if !*sent_kill {
                        *sent_kill = true;
                        *deadline = now + self.cfg.kill_grace;
                        if let Err(e) = self.host.kill_all(Signal::SIGKILL) {
                            warn!("kill(-1, SIGKILL): {e}");
                        }
                        continue;
                    }
                    // Every service is gone: close their log files so the
                    // hook can unmount the file system holding them (the
                    // zones pool's /var).
                    for svc in &self.services {
                        if let Some(log) = &svc.log {
                            log.lock().unwrap_or_else(PoisonError::into_inner).close();
                        }
                    }
                    self.phase = Phase::Hook { action, deadline: now + self.cfg.hook_timeout };
                    self.start_hook(action, hooks.take());
                }
                Phase::Hook { action, deadline } => {
                    let action = *action;
                    match self.hook_result.take() {
                        Some(Ok(())) => {}
                        Some(Err(e)) => error!("shutdown hook failed: {e}; going on with {action:?}"),
                        None if now < *deadline => return None,
                        None => error!("shutdown hook still running after {:?}; going on", self.cfg.hook_timeout),
                    }
                    self.phase = Phase::Done;
                    return Some(action);
                }
            }
        }
        None
    }

    fn start_hook(&mut self, action: PowerAction, hooks: Option<Box<dyn ShutdownHooks>>) {
        let Some(mut hooks) = hooks else {
            self.hook_result = Some(Ok(()));
            return;
        };
        let handle = self.handle.clone();
        let spawned = thread::Builder::new().name("shutdown-hook".into()).spawn(move || {
            let r = hooks.before_power_off(action).map_err(|e| e.to_string());
            let _ = handle.send(Msg::HookDone(r));
        });
        if let Err(e) = spawned {
            error!("cannot start the shutdown hook thread: {e}; shutdown goes on without it");
            self.hook_result = Some(Err(e.to_string()));
        }
    }
}

/// Puts the child in a new session (and so a new process group whose id is
/// its pid), so a stop can signal everything it started; and unblocks the
/// signals the supervisor blocks (a blocked mask survives fork and exec).
#[allow(unsafe_code)]
fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls pthread_sigmask(2) and setsid(2), which are async-signal-safe,
    // on a SigSet built on the stack, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            nix::unistd::setsid().map(drop).map_err(io::Error::from)
        });
    }
}

/// Makes `cmd`'s child start with no blocked signals. Every command init
/// spawns after [`block_signals`] needs this (the mask is inherited across
/// fork and exec, and std does not reset it); [`Handle::run_helper`] and
/// [`Handle::helper_output`] do it themselves.
#[allow(unsafe_code)]
pub fn unblock_signals_in_child(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // pthread_sigmask(2), which is async-signal-safe, with a stack SigSet.
    unsafe {
        cmd.pre_exec(|| SigSet::empty().thread_set_mask().map_err(io::Error::from));
    }
}

fn lock_log(log: &Mutex<RotatingLog>) -> std::sync::MutexGuard<'_, RotatingLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a supervisor line into the service's log file.
fn marker(svc: &Svc, text: &str) {
    if let Some(log) = &svc.log {
        let line = format!("[{} triton-init] {}: {text}\n", utc_now(), svc.spec.name);
        if let Err(e) = lock_log(log).write(line.as_bytes()) {
            warn!("{e}");
        }
    }
}

fn copy_to_log(mut pipe: File, log: &Mutex<RotatingLog>, name: &str) {
    let mut buf = [0u8; 16 * 1024];
    let mut warned = false;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = lock_log(log).write(&buf[..n]) {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(service = name, "{e}");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(service = name, "reading its output: {e}");
                return;
            }
        }
    }
}

/// `2024-05-01T12:00:00Z`, without a time library.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc(secs)
}

fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Binds the control socket (mode 0600) and serves it from a thread; each
/// connection gets its own thread so a slow `stop` blocks nobody else.
fn start_control_socket(path: &Path, handle: Handle) -> Result<(), ControlSocketError> {
    let err = |op| move |source| ControlSocketError { path: path.to_path_buf(), op, source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err("creating its directory"))?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err("removing the stale socket")(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err("binding"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err("setting mode 0600"))?;
    thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let h = handle.clone();
                        if let Err(e) =
                            thread::Builder::new().name("control-conn".into()).spawn(move || serve(stream, &h))
                        {
                            warn!("control socket: cannot start a connection thread: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("control socket: accept: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(drop)
        .map_err(err("starting its thread"))
}

fn serve(stream: UnixStream, handle: &Handle) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut line = String::new();
        match (&mut reader).take(protocol::MAX_LINE as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let resp = match Request::parse(&line) {
            Ok(req) => handle.request(req),
            Err(e) => Response::err(e.to_string()),
        };
        if writer.write_all(resp.to_line().as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_format() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_714_564_800 + 3723), "2024-05-01T13:02:03Z");
    }
}

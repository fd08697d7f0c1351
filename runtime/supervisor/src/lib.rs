//! Service supervision for PID 1: manifests, restart backoff, log rotation,
//! ordered shutdown, control socket.
//!
//! - [`manifest`]: the TOML service manifests (parse + validate) and [`ServiceSpec`].
//! - [`machine`]: the pure restart state machine (events in, actions out).
//! - [`logfile`]: size-rotated per-service log files.
//! - [`protocol`]: the line-delimited JSON control protocol and its client.
//! - [`host`]: the OS seam for kill(-1), sync and reboot (+ a fake, feature `fake`).
//! - [`runtime`]: the [`Supervisor`] PID 1 runs (the one reaper).
//!
//! Init's use, in order:
//! ```no_run
//! # use supervisor::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! supervisor::block_signals()?; // first thing in main, before any thread
//! // ... boot phases: helpers run with Command::status() as usual, after
//! // supervisor::unblock_signals_in_child(&mut cmd) ...
//! let mut cfg = Config::new("/var/log", "/run/triton/init.sock",
//!     vec!["/usr/lib/triton/services".into(), "/opt/triton/services".into()], Mode::Setup);
//! cfg.conditions.insert("network".into());
//! let mut sup = Supervisor::new(cfg)?;
//! let mut getty = ServiceSpec::new("getty-console", ["/usr/sbin/agetty", "--noclear", "-L", "console", "linux"]);
//! getty.log = LogTarget::Inherit;
//! sup.add_service(getty)?;
//! sup.load_manifests(); // bad manifests are logged and skipped
//! sup.set_condition("pool", true);
//! let handle = sup.handle(); // for other threads: run_helper, set_condition, request
//! sup.run(|action| -> Result<(), HookError> { /* export the pool */ Ok(()) })
//! # }
//! ```

pub mod host;
pub mod logfile;
pub mod machine;
pub mod manifest;
pub mod passwd;
pub mod protocol;
pub mod runtime;

pub use host::{Host, LinuxHost, PowerAction, RebootError};
pub use logfile::{LogError, RotatingLog, Rotation};
pub use machine::{Action, Backoff, Event, ExitKind, Machine, State, StopSignal};
pub use manifest::{LogTarget, Manifest, ManifestError, Mode, RestartPolicy, ServiceSpec};
pub use protocol::{ClientError, ProtocolError, Request, Response, ServiceStatus};
pub use runtime::{
    block_signals, unblock_signals_in_child, AddServiceError, Config, ControlSocketError, Handle, HookError, NoHooks,
    ShutdownHooks, SpawnError, Supervisor, SupervisorError,
};

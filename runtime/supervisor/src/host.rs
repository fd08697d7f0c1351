//! The OS seam for the irreversible calls of a shutdown: signalling every
//! process, sync(2) and reboot(2). [`LinuxHost`] does them for real (PID 1
//! only); [`fake::FakeHost`] (feature `fake`) records them.

use nix::sys::signal::Signal;

/// What happens at the end of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// reboot(2) with `RB_AUTOBOOT`.
    Reboot,
    /// reboot(2) with `RB_POWER_OFF`.
    PowerOff,
}

#[derive(Debug, thiserror::Error)]
#[error("reboot(2) for {action:?} failed: {source}")]
pub struct RebootError {
    pub action: PowerAction,
    pub source: nix::Error,
}

pub trait Host: Send {
    /// `kill(-1, sig)`: every process but init itself.
    fn kill_all(&mut self, sig: Signal) -> nix::Result<()>;
    fn sync(&mut self);
    /// Does not return on success on a real machine.
    fn reboot(&mut self, action: PowerAction) -> Result<(), RebootError>;
}

/// The real calls; only meaningful in PID 1.
#[derive(Debug, Default)]
pub struct LinuxHost;

impl Host for LinuxHost {
    fn kill_all(&mut self, sig: Signal) -> nix::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), sig)
    }
    fn sync(&mut self) {
        nix::unistd::sync();
    }
    fn reboot(&mut self, action: PowerAction) -> Result<(), RebootError> {
        use nix::sys::reboot::{reboot, RebootMode};
        let mode = match action {
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        };
        match reboot(mode) {
            Ok(never) => match never {},
            Err(source) => Err(RebootError { action, source }),
        }
    }
}

#[cfg(any(test, feature = "fake"))]
pub mod fake {
    //! A recording [`Host`] for tests: nothing is signalled or rebooted.
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum HostOp {
        KillAll(Signal),
        Sync,
        Reboot(PowerAction),
    }

    #[derive(Debug, Clone, Default)]
    pub struct FakeHost {
        pub ops: Arc<Mutex<Vec<HostOp>>>,
    }

    impl FakeHost {
        pub fn ops(&self) -> Vec<HostOp> {
            self.ops.lock().map(|o| o.clone()).unwrap_or_default()
        }
        fn record(&self, op: HostOp) {
            if let Ok(mut o) = self.ops.lock() {
                o.push(op);
            }
        }
    }

    impl Host for FakeHost {
        fn kill_all(&mut self, sig: Signal) -> nix::Result<()> {
            self.record(HostOp::KillAll(sig));
            Ok(())
        }
        fn sync(&mut self) {
            self.record(HostOp::Sync);
        }
        fn reboot(&mut self, action: PowerAction) -> Result<(), RebootError> {
            self.record(HostOp::Reboot(action));
            Ok(())
        }
    }
}

//! The OS seam: observe the kernel's state and apply one [`Op`].

use crate::model::Observed;
use crate::plan::Op;

/// Reads and changes the kernel's links, addresses and routes.
/// [`crate::netlink::Netlink`] talks rtnetlink; `Fake` (feature `fake`)
/// records ops and mutates an in-memory [`Observed`].
pub trait LinkApi {
    fn observe(&mut self) -> Result<Observed, ApplyError>;
    fn apply(&mut self, op: &Op) -> Result<(), ApplyError>;
}

/// Why observing or applying failed. Each names the op and interface.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("opening the rtnetlink socket: {0} (PID 1 needs CAP_NET_ADMIN in the host network namespace)")]
    Connect(#[source] std::io::Error),
    #[error("listing {what} over rtnetlink: {message}")]
    Observe { what: &'static str, message: String },
    #[error("`{op}`: no interface named {ifname} (it vanished or was renamed while networking was being configured; reboot)")]
    NoSuchLink { op: String, ifname: String },
    #[error("`{op}` failed on {ifname}: {message}{hint}")]
    Op { op: String, ifname: String, message: String, hint: String },
}

/// Applies `ops` in order, stopping at the first failure. Returns the ops
/// applied; on failure, how many were applied before it.
pub fn apply_ops(api: &mut dyn LinkApi, ops: &[Op]) -> Result<Vec<Op>, (usize, ApplyError)> {
    for (n, op) in ops.iter().enumerate() {
        tracing::debug!(op = %op, "net: apply");
        api.apply(op).map_err(|e| (n, e))?;
    }
    Ok(ops.to_vec())
}

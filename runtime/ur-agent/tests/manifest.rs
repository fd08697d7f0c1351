//! The service manifest shipped in the image
//! (`rootfs-overlay/usr/lib/triton/services/ur-agent.toml`) is valid for the
//! supervisor and starts this crate's binary in both node modes.

use std::path::Path;

use supervisor::manifest::{load_file, LogTarget, Mode, RestartPolicy};

#[test]
fn shipped_manifest_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rootfs-overlay/usr/lib/triton/services/ur-agent.toml");
    let spec = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.name, "ur-agent");
    // The image installs every runtime binary at /usr/bin/<name>.
    assert_eq!(spec.exec, [format!("/usr/bin/{}", env!("CARGO_PKG_NAME"))]);
    assert_eq!(spec.modes.iter().copied().collect::<Vec<_>>(), [Mode::Setup, Mode::Unsetup]);
    assert_eq!(spec.needs.iter().map(String::as_str).collect::<Vec<_>>(), ["network"]);
    assert_eq!(spec.restart, RestartPolicy::Always);
    assert_eq!(spec.log, LogTarget::File);
    assert!(spec.order < 50, "ur-agent starts before the other agents (order {})", spec.order);
}

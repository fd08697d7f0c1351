//! `/usr/bin/zfs`: a pass-through to OpenZFS's `/usr/sbin/zfs` for scripts
//! that put `/usr/bin` first on `PATH` (the headnode's `joysetup.sh` does).
//! The only change: `checksum=noparity`, an illumos value joysetup gives the
//! dump zvol, does not exist in OpenZFS and would fail setup; it becomes
//! `checksum=on` (the default), with a note on stderr. Linux has no ZFS dump
//! device, so the zvol is only reserved space there. Every other argument is
//! passed unchanged, and the exit status is OpenZFS's own.

/// The real `zfs` (overridable for tests with `COMPAT_ZFS`).
pub const REAL_ZFS: &str = "/usr/sbin/zfs";

/// illumos-only property values and their OpenZFS equivalents.
const REWRITES: [(&str, &str); 1] = [("checksum=noparity", "checksum=on")];

/// The arguments for OpenZFS, and a note per rewritten one.
pub fn translate(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut notes = Vec::new();
    let out = args
        .iter()
        .map(|a| match REWRITES.iter().find(|(from, _)| a == from) {
            Some((from, to)) => {
                notes.push(format!("zfs: {from} is illumos-only; using {to} on Linux"));
                (*to).to_string()
            }
            None => a.clone(),
        })
        .collect();
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn joysetup_dump_zvol_is_rewritten_and_the_rest_kept() {
        let args = s(&["create", "-V", "1024mb", "-o", "checksum=noparity", "-b", "4096", "zones/dump"]);
        let (out, notes) = translate(&args);
        assert_eq!(out, s(&["create", "-V", "1024mb", "-o", "checksum=on", "-b", "4096", "zones/dump"]));
        assert_eq!(notes.len(), 1);
        let plain = s(&["set", "atime=off", "zones"]);
        assert_eq!(translate(&plain), (plain.clone(), vec![]));
    }
}

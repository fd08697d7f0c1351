use boot_params::Cmdline;
use serde::Serialize;

/// What the kernel command line asks of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BootFlags {
    /// `noimport=true` (booter, linux-live) or `triton.noimport`: leave the disks alone.
    pub noimport: bool,
    /// `destroy_zpools=true` or `triton.destroy_zpools`: destroy the system pool.
    pub destroy_zpools: bool,
    /// `triton.force_import`: import even if another host used the pool last.
    pub force_import: bool,
}

impl BootFlags {
    pub fn from_cmdline(line: &str) -> BootFlags {
        let c = Cmdline::parse(line);
        BootFlags {
            noimport: c.flag("noimport") || c.flag("triton.noimport"),
            destroy_zpools: c.flag("destroy_zpools") || c.flag("triton.destroy_zpools"),
            force_import: c.flag("triton.force_import"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        assert_eq!(BootFlags::from_cmdline("console=ttyS0"), BootFlags::default());
        let f = BootFlags::from_cmdline("noimport=true destroy_zpools=true");
        assert!(f.noimport && f.destroy_zpools && !f.force_import);
        let f = BootFlags::from_cmdline("triton.noimport triton.destroy_zpools=1 triton.force_import=true");
        assert!(f.noimport && f.destroy_zpools && f.force_import);
        let f = BootFlags::from_cmdline("noimport=false destroy_zpools=no triton.force_import=0");
        assert_eq!(f, BootFlags::default());
    }
}

//! Pure matching of device modaliases against `modules.alias`, and load order
//! from `modules.dep`.

use std::collections::BTreeMap;

/// Parsed `modules.alias`: (pattern, module name) in file order.
#[derive(Debug, Default)]
pub struct AliasTable {
    entries: Vec<(glob::Pattern, String)>,
}

impl AliasTable {
    pub fn parse(text: &str) -> AliasTable {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                if w.next()? != "alias" {
                    return None;
                }
                let pat = glob::Pattern::new(w.next()?).ok()?;
                Some((pat, w.next()?.replace('-', "_")))
            })
            .collect();
        AliasTable { entries }
    }

    /// Modules whose alias matches `modalias`, deduplicated, in table order.
    pub fn lookup(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (p, m) in &self.entries {
            if p.matches(modalias) && !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }
}

/// Parsed `modules.dep`: module name → (path, dependency names).
#[derive(Debug, Default)]
pub struct DepTable {
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

fn name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

impl DepTable {
    pub fn parse(text: &str) -> DepTable {
        let by_name = text
            .lines()
            .filter_map(|l| {
                let (m, deps) = l.split_once(':')?;
                Some((name_of(m), (m.to_string(), deps.split_whitespace().map(name_of).collect())))
            })
            .collect();
        DepTable { by_name }
    }

    pub fn path(&self, name: &str) -> Option<&str> {
        self.by_name.get(&name.replace('-', "_")).map(|(p, _)| p.as_str())
    }

    /// `name` and its dependencies, dependencies first; `None` if unknown.
    pub fn load_order(&self, name: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        self.visit(&name.replace('-', "_"), &mut out, 0)?;
        Some(out)
    }

    fn visit(&self, name: &str, out: &mut Vec<String>, depth: usize) -> Option<()> {
        if out.iter().any(|n| n == name) || depth > 64 {
            return Some(());
        }
        let (_, deps) = self.by_name.get(name)?;
        for d in deps {
            self.visit(d, out, depth + 1)?;
        }
        out.push(name.to_string());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_match() {
        let t = AliasTable::parse(
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias pci:v00008086d*sv*sd*bc02sc00i* e1000\n",
        );
        assert_eq!(t.lookup("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"), ["e1000"]);
        assert_eq!(t.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert!(t.lookup("usb:v1234p5678").is_empty());
    }

    #[test]
    fn deps_first() {
        let d = DepTable::parse(
            "kernel/a/mlx5_core.ko: kernel/b/mlxfw.ko kernel/c/pci-hyperv-intf.ko\n\
             kernel/b/mlxfw.ko: kernel/c/pci-hyperv-intf.ko\nkernel/c/pci-hyperv-intf.ko:\n",
        );
        assert_eq!(d.load_order("mlx5_core").expect("known"), ["pci_hyperv_intf", "mlxfw", "mlx5_core"]);
        assert_eq!(d.load_order("nope"), None);
        assert_eq!(d.path("pci-hyperv-intf"), Some("kernel/c/pci-hyperv-intf.ko"));
    }
}

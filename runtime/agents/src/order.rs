//! Start order of the installed agents from their `after` lists: a
//! topological order, ties broken by name so the result is stable.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::AgentManifest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("agent {agent:?} is installed twice; remove one copy")]
    Duplicate { agent: String },
    #[error("agent {agent:?} has after = [{dep:?}], but no agent {dep:?} is installed; install it or remove it from `after`")]
    UnknownDependency { agent: String, dep: String },
    #[error("agents depend on each other in a cycle: {}; remove one of these `after` entries", cycle.join(" → "))]
    Cycle {
        /// The agents of one cycle, each one `after` the next; the first is repeated at the end.
        cycle: Vec<String>,
    },
}

/// Orders agents so each one comes after everything in its `after` list.
/// `deps` maps each agent to its `after` list.
pub fn start_order(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, OrderError> {
    for (agent, ds) in deps {
        if let Some(dep) = ds.iter().find(|d| !deps.contains_key(*d)) {
            return Err(OrderError::UnknownDependency { agent: agent.clone(), dep: dep.clone() });
        }
    }
    // Unmet dependencies per agent (deduplicated), and who waits on whom.
    let mut waiting: BTreeMap<&str, BTreeSet<&str>> =
        deps.iter().map(|(a, ds)| (a.as_str(), ds.iter().map(String::as_str).collect())).collect();
    let mut ready: BTreeSet<&str> = waiting.iter().filter(|(_, ds)| ds.is_empty()).map(|(a, _)| *a).collect();
    for a in &ready {
        waiting.remove(a);
    }
    let mut out = Vec::with_capacity(deps.len());
    while let Some(next) = ready.pop_first() {
        out.push(next.to_string());
        let freed: Vec<&str> =
            waiting.iter_mut().filter_map(|(a, ds)| (ds.remove(next) && ds.is_empty()).then_some(*a)).collect();
        for a in freed {
            waiting.remove(a);
            ready.insert(a);
        }
    }
    if waiting.is_empty() {
        Ok(out)
    } else {
        Err(OrderError::Cycle { cycle: find_cycle(&waiting) })
    }
}

/// Every agent left in `waiting` waits on another agent left in `waiting`,
/// so walking first dependencies must revisit an agent.
fn find_cycle(waiting: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    let mut path: Vec<&str> = Vec::new();
    let mut cur = waiting.keys().next().copied();
    while let Some(a) = cur {
        if let Some(pos) = path.iter().position(|p| *p == a) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(a.to_string());
            return cycle;
        }
        path.push(a);
        cur = waiting.get(a).and_then(|ds| ds.iter().find(|d| waiting.contains_key(*d)).copied());
    }
    path.iter().map(|s| s.to_string()).collect()
}

/// [`start_order`] for manifests; returns them in start order.
pub fn order_manifests(agents: &[AgentManifest]) -> Result<Vec<&AgentManifest>, OrderError> {
    let mut deps = BTreeMap::new();
    for m in agents {
        if deps.insert(m.name.clone(), m.after.clone()).is_some() {
            return Err(OrderError::Duplicate { agent: m.name.clone() });
        }
    }
    let names = start_order(&deps)?;
    Ok(names.iter().filter_map(|n| agents.iter().find(|m| &m.name == n)).collect())
}

/// First supervisor `order` value given to agents (the supervisor starts
/// services in ascending order).
pub const FIRST_SERVICE_ORDER: i32 = 100;
/// Gap between consecutive agents' `order` values.
pub const SERVICE_ORDER_STEP: i32 = 10;

/// Supervisor `order` values for agents in start order:
/// `FIRST_SERVICE_ORDER + i * SERVICE_ORDER_STEP`.
pub fn service_orders(in_start_order: &[String]) -> Vec<(String, i32)> {
    (0i32..)
        .zip(in_start_order)
        .map(|(i, n)| (n.clone(), FIRST_SERVICE_ORDER.saturating_add(i.saturating_mul(SERVICE_ORDER_STEP))))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn deps(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        v.iter().map(|(a, ds)| (a.to_string(), ds.iter().map(|d| d.to_string()).collect())).collect()
    }

    #[test]
    fn dependencies_come_first_ties_by_name() {
        let d = deps(&[
            ("vm-agent", &["config-agent", "cn-agent"]),
            ("cn-agent", &["config-agent"]),
            ("net-agent", &["config-agent", "config-agent"]),
            ("config-agent", &[]),
            ("amon-agent", &[]),
        ]);
        assert_eq!(start_order(&d).unwrap(), vec!["amon-agent", "config-agent", "cn-agent", "net-agent", "vm-agent"]);
        assert_eq!(start_order(&BTreeMap::new()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unknown_dependency() {
        let e = start_order(&deps(&[("a", &["ghost"])])).unwrap_err();
        assert_eq!(e, OrderError::UnknownDependency { agent: "a".into(), dep: "ghost".into() });
        assert!(e.to_string().contains("ghost"));
    }

    #[test]
    fn cycles_are_named() {
        let e =
            start_order(&deps(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[]), ("e", &["a"])])).unwrap_err();
        assert_eq!(e, OrderError::Cycle { cycle: vec!["a".into(), "b".into(), "c".into(), "a".into()] });
        assert!(e.to_string().contains("a → b → c → a"), "{e}");
        // The walk may start outside the cycle.
        let e = start_order(&deps(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])])).unwrap_err();
        assert_eq!(e, OrderError::Cycle { cycle: vec!["b".into(), "c".into(), "b".into()] });
    }

    #[test]
    fn manifests_and_service_orders() {
        let m = |name: &str, after: &[&str]| {
            let text = format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\ncommand = [\"/bin/x\"]\nafter = {after:?}\nready = {{ file = \"/x\" }}\n"
            );
            let p = std::path::Path::new("agent.toml");
            crate::manifest::parse(&text, p).unwrap().validate(p).unwrap()
        };
        let agents = vec![m("cn-agent", &["config-agent"]), m("config-agent", &[])];
        let ordered: Vec<&str> = order_manifests(&agents).unwrap().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(ordered, vec!["config-agent", "cn-agent"]);
        let dup = vec![m("a", &[]), m("a", &[])];
        assert_eq!(order_manifests(&dup).unwrap_err(), OrderError::Duplicate { agent: "a".into() });
        let names: Vec<String> = ordered.iter().map(|s| s.to_string()).collect();
        assert_eq!(service_orders(&names), vec![("config-agent".into(), 100), ("cn-agent".into(), 110)]);
    }
}

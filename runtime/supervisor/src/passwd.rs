//! `user = "..."` in a manifest, resolved from an `/etc/passwd`-format file
//! we read ourselves (PID 1 is static: no NSS).

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

/// Finds `user` (a name, or a numeric uid) in passwd-format `text`. A numeric
/// uid with no entry runs with gid = uid.
pub fn lookup(text: &str, user: &str) -> Option<Account> {
    let numeric: Option<u32> = user.parse().ok();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        if f[0] == user || numeric == Some(uid) {
            return Some(Account { uid, gid, home: Some(f[5].to_string()).filter(|h| !h.is_empty()) });
        }
    }
    numeric.map(|uid| Account { uid, gid: uid, home: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nbroken\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\namon:x:999:998:,,,:/opt/amon:/bin/false\n";

    #[test]
    fn by_name_and_uid() {
        assert_eq!(lookup(PASSWD, "amon"), Some(Account { uid: 999, gid: 998, home: Some("/opt/amon".into()) }));
        assert_eq!(lookup(PASSWD, "0").map(|a| a.gid), Some(0));
        assert_eq!(lookup(PASSWD, "1234"), Some(Account { uid: 1234, gid: 1234, home: None }));
        assert_eq!(lookup(PASSWD, "ghost"), None);
        assert_eq!(lookup("", "root"), None);
    }
}

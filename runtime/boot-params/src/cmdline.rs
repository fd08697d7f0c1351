/// The kernel command line split into words, in order.
///
/// Values may be double-quoted (booter writes `<aggr>_aggr="mac1,mac2"`); the
/// quotes are removed. Later occurrences of a key win in [`Cmdline::get`], as
/// with the kernel's own parameter handling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    words: Vec<(String, Option<String>)>,
}

/// Splits a command line into words the way the kernel does: whitespace
/// separates words, except inside double quotes, which are dropped.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        words.push(cur);
    }
    words
}

impl Cmdline {
    pub fn parse(line: &str) -> Cmdline {
        let words = split_words(line)
            .into_iter()
            .filter(|w| !w.is_empty())
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w, None),
            })
            .collect();
        Cmdline { words }
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.iter().rev().find(|(k, v)| k == key && v.is_some()).and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for `key`, in order (e.g. several `console=`).
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.words.iter().filter(|(k, _)| k == key).filter_map(|(_, v)| v.as_deref()).collect()
    }

    /// A boolean flag: present bare, or with a true-ish value.
    pub fn flag(&self, key: &str) -> bool {
        match self.words.iter().rev().find(|(k, _)| k == key) {
            None => false,
            Some((_, None)) => true,
            Some((_, Some(v))) => matches!(v.as_str(), "1" | "true" | "yes" | "on"),
        }
    }

    /// All words, as `(key, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.words.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotes_and_spaces() {
        assert_eq!(split_words("  a=1   b=\"x y\"\tc\n"), vec!["a=1", "b=x y", "c"]);
        assert_eq!(split_words("a=\"\""), vec!["a="]);
        assert!(split_words("   ").is_empty());
    }

    #[test]
    fn last_value_wins() {
        let c = Cmdline::parse("hostname=a hostname=b flag");
        assert_eq!(c.get("hostname"), Some("b"));
        assert_eq!(c.get("flag"), None);
        assert!(c.flag("flag"));
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_plain_words(s in "\\PC*") {
            let _ = Cmdline::parse(&s);
        }

        #[test]
        fn roundtrips_plain_words(words in proptest::collection::vec("[a-zA-Z0-9_.,:=-]{1,20}", 0..20)) {
            let line = words.join(" ");
            prop_assert_eq!(split_words(&line), words);
        }
    }
}

//! Lookup strings (`a.b`, `["a.b"].c`, `-1` for the last array item) parsed
//! into path components, following trentm/json v10+ rules:
//!
//! - the delimiter (default `.`) separates components;
//! - `["..."]`, `['...']` and `` [`...`] `` name one component literally;
//!   any other bracketed text is an error (older versions evaluated it);
//! - a component quoted with `"` or `'` outside brackets keeps its quotes;
//! - `\'`, `\"`, `` \` ``, `\\`, `\n`, `\r`, `\t`, `\v`, `\b`, `\f` are
//!   unescaped anywhere;
//! - a component that is a negative integer counts from the end of an array.

/// One component of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Bit {
    Key(String),
    /// `-N`: JavaScript's `Number("-N")`.
    Negative(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bracketed lookup string: {0} (must be of the form ['...'], [\"...\"], or [`...`])")]
pub struct LookupError(String);

fn unescape(c: char) -> Option<char> {
    Some(match c {
        '\'' => '\'',
        '"' => '"',
        '`' => '`',
        '\\' => '\\',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        _ => return None,
    })
}

fn is_negative_int(s: &str) -> bool {
    s.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses one lookup string.
pub fn parse(lookup: &str, delim: char) -> Result<Vec<Bit>, LookupError> {
    let chars: Vec<char> = lookup.chars().collect();
    let mut bits: Vec<String> = Vec::new();
    let mut bit = String::new();
    // Open quotes/brackets; empty = at top level.
    let mut open: Vec<char> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '\\' {
            if let Some(u) = chars.get(i).copied().and_then(unescape) {
                bit.push(u);
                i += 1;
                continue;
            }
        }
        match open.last().copied() {
            None => match ch {
                '"' | '\'' => {
                    open.push(ch);
                    bit.push(ch);
                }
                '[' => {
                    open.push(ch);
                    if !bit.is_empty() {
                        bits.push(std::mem::take(&mut bit));
                    }
                    bit.push(ch);
                }
                c if c == delim => {
                    if !bit.is_empty() {
                        bits.push(std::mem::take(&mut bit));
                    }
                }
                c => bit.push(c),
            },
            Some('[') => {
                bit.push(ch);
                match ch {
                    '"' | '\'' | '[' => open.push(ch),
                    ']' => {
                        open.pop();
                        if open.is_empty() {
                            bits.push(bracketed(&bit)?);
                            bit.clear();
                        }
                    }
                    _ => {}
                }
            }
            Some(q) => {
                bit.push(ch);
                if ch == q {
                    open.pop();
                    if open.is_empty() {
                        bits.push(std::mem::take(&mut bit));
                    }
                }
            }
        }
    }
    if !bit.is_empty() {
        bits.push(bit);
    }
    Ok(bits
        .into_iter()
        .map(|b| match b.parse::<f64>() {
            Ok(n) if is_negative_int(&b) => Bit::Negative(n),
            _ => Bit::Key(b),
        })
        .collect())
}

/// The inside of `["..."]`, `['...']` or `` [`...`] ``.
fn bracketed(bit: &str) -> Result<String, LookupError> {
    let cs: Vec<char> = bit.chars().collect();
    let n = cs.len();
    let ok = n >= 4 && matches!(cs[1], '"' | '\'' | '`') && cs[1] == cs[n - 2];
    if !ok {
        let shown = serde_json::to_string(bit).unwrap_or_else(|_| bit.to_string());
        return Err(LookupError(shown));
    }
    Ok(cs[2..n - 2].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(l: &str, d: char) -> Vec<String> {
        parse(l, d)
            .expect("parse")
            .into_iter()
            .map(|b| match b {
                Bit::Key(k) => k,
                Bit::Negative(n) => format!("#{n}"),
            })
            .collect()
    }

    #[test]
    fn documented_cases() {
        assert_eq!(keys("a", '.'), ["a"]);
        assert_eq!(keys("a.b.c", '.'), ["a", "b", "c"]);
        assert_eq!(keys("MiB of Memory", '.'), ["MiB of Memory"]);
        assert_eq!(keys("[\"a\"]", '.'), ["a"]);
        assert_eq!(keys("b[\"a\"]", '.'), ["b", "a"]);
        assert_eq!(keys("[\"a\"].b", '.'), ["a", "b"]);
        assert_eq!(keys("[\"a.b\"]", '.'), ["a.b"]);
        assert_eq!(keys("[\"a[b\"]", '.'), ["a[b"]);
        assert_eq!(keys("[\"a]b\"]", '.'), ["a]b"]);
        assert_eq!(keys("['a\\'[b']", '.'), ["a'[b"]);
        assert_eq!(keys("['a\\'[b'].c", '.'), ["a'[b", "c"]);
        assert_eq!(keys("[`x`]", '.'), ["x"]);
        assert_eq!(keys("a/b", '/'), ["a", "b"]);
        assert_eq!(keys("a.b/c", '/'), ["a.b", "c"]);
        assert_eq!(keys("a.b/c[\"d\"]", '/'), ["a.b", "c", "d"]);
        assert_eq!(keys("[\"a/b\"]", '/'), ["a/b"]);
        // Quoted outside brackets: the quotes stay part of the key.
        assert_eq!(keys("\"a.b\"", '.'), ["\"a.b\""]);
        assert_eq!(keys("a..b.", '.'), ["a", "b"]);
    }

    #[test]
    fn negative_indexes() {
        assert_eq!(parse("-1", '.').expect("p"), vec![Bit::Negative(-1.0)]);
        assert_eq!(parse("a.-2", '.').expect("p"), vec![Bit::Key("a".into()), Bit::Negative(-2.0)]);
        assert_eq!(parse("-x", '.').expect("p"), vec![Bit::Key("-x".into())]);
        assert_eq!(parse("1", '.').expect("p"), vec![Bit::Key("1".into())]);
    }

    #[test]
    fn bad_brackets() {
        assert!(parse("[42]", '.').is_err());
        assert!(parse("[\"a\"+\"b\"]", '.').is_ok_and(|b| b == vec![Bit::Key("a\"+\"b".into())]));
        assert!(parse("[]", '.').is_err());
        // Unterminated: kept as typed.
        assert_eq!(parse("['a\"]", '.').expect("p"), vec![Bit::Key("['a\"]".into())]);
    }
}

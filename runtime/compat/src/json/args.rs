//! The `json` command line, parsed the way trentm's tool parses it.
//!
//! Grouped short flags are split (`-Hq` → `-H -q`), except that `-d`, `-o`
//! and `-D` take the rest of the group as their value (`-o json-0`, `-j0`,
//! `-d,`). Every other argument not starting with `-` is a lookup.

use std::path::PathBuf;

/// Output modes we implement (`inspect` and `compact` are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// JSON, except that a string result is printed raw (the default).
    Jsony,
    /// JSON always (strings quoted).
    Json,
}

/// Indentation passed to `JSON.stringify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indent {
    Spaces(u32),
    Tab,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    pub help: bool,
    pub version: bool,
    pub quiet: bool,
    /// `-H`: drop a leading HTTP header block instead of passing it through.
    pub drop_headers: bool,
    /// `-e CODE`, in order.
    pub exe: Vec<String>,
    /// `-c CODE`, in order.
    pub cond: Vec<String>,
    pub mode: OutputMode,
    pub indent: Indent,
    /// `-a` → `Some(true)`, `-A` → `Some(false)`, neither → `None` (arrays
    /// are then processed item by item by `-e`/`-c`).
    pub array: Option<bool>,
    /// `-d`: separator between the columns of `-a` output.
    pub delim: String,
    /// `-D`: separator inside a lookup.
    pub lookup_delim: char,
    pub keys: bool,
    pub files: Vec<PathBuf>,
    pub validate: bool,
    pub in_place: bool,
    pub lookups: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            help: false,
            version: false,
            quiet: false,
            drop_headers: false,
            exe: Vec::new(),
            cond: Vec::new(),
            mode: OutputMode::Jsony,
            indent: Indent::Spaces(2),
            array: None,
            delim: " ".into(),
            lookup_delim: '.',
            keys: false,
            files: Vec::new(),
            validate: false,
            in_place: false,
            lookups: Vec::new(),
        }
    }
}

/// Why the command line was refused; printed as `json: error: <this>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unknown option \"{0}\"")]
    UnknownOption(String),
    #[error("no argument given for \"{0}\" option")]
    MissingValue(String),
    #[error("unknown output mode: \"{0}\"")]
    UnknownMode(String),
    #[error("could not parse delim \"{0}\": {1}")]
    BadDelim(String, String),
    #[error("invalid lookup delim \"{0}\" (must be a single char)")]
    BadLookupDelim(String),
    #[error("cannot use -k|--keys option and lookup arguments together")]
    KeysWithLookups,
    #[error("must specify exactly one file with \"-f FILE\" to use -I/--in-place")]
    InPlaceNeedsOneFile,
    #[error("lookups cannot be specified with in-place editing (-I/--in-place), too easy to lose content")]
    InPlaceWithLookups,
    #[error(
        "{0} is not supported by this json (a subset of trentm/json for Triton compute nodes); \
         see `json --help` for what is"
    )]
    Unsupported(String),
}

/// Options whose value may be glued to them inside a group (`-j0` is not
/// one: `0` is itself a flag).
fn takes_glued_value(c: char) -> bool {
    matches!(c, 'd' | 'o' | 'D')
}

/// Splits `-abc` groups (see the module docs).
fn split_groups(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            out.extend(args[i..].iter().cloned());
            break;
        }
        let mut chars = a.chars();
        let is_group = a.starts_with('-') && !a.starts_with("--") && a.chars().count() > 2;
        if !is_group {
            out.push(a.clone());
            continue;
        }
        chars.next(); // the '-'
        while let Some(c) = chars.next() {
            out.push(format!("-{c}"));
            if takes_glued_value(c) {
                let rest: String = chars.by_ref().collect();
                if !rest.is_empty() {
                    out.push(rest);
                }
                break;
            }
        }
    }
    out
}

/// `-o NAME[-N|-tab]`.
fn parse_mode(value: &str, opts: &mut Opts) -> Result<(), ArgError> {
    let mut name = value;
    if let Some(idx) = value.rfind('-') {
        let suffix = &value[idx + 1..];
        if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
            // JSON.stringify caps indentation at 10 spaces.
            let n = suffix.parse::<u64>().unwrap_or(u64::MAX).min(10);
            opts.indent = Indent::Spaces(u32::try_from(n).unwrap_or(10));
            name = &value[..idx];
        } else if suffix == "tab" {
            opts.indent = Indent::Tab;
            name = &value[..idx];
        }
    }
    opts.mode = match name {
        "jsony" => OutputMode::Jsony,
        "json" => OutputMode::Json,
        "inspect" | "compact" => return Err(ArgError::Unsupported(format!("output mode \"{name}\""))),
        _ => return Err(ArgError::UnknownMode(name.to_string())),
    };
    Ok(())
}

/// A `-d` value: JSON string escapes are honoured (`-d'\t'`).
fn parse_delim(raw: &str) -> Result<String, ArgError> {
    let quoted = format!("\"{}\"", raw.replace("\\\"", "\"").replace('"', "\\\""));
    serde_json::from_str::<String>(&quoted).map_err(|e| ArgError::BadDelim(raw.to_string(), e.to_string()))
}

/// Parses the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Opts, ArgError> {
    let args = split_groups(argv);
    let mut opts = Opts::default();
    let mut it = args.into_iter();
    let value = |it: &mut std::vec::IntoIter<String>, opt: &str| {
        it.next().ok_or_else(|| ArgError::MissingValue(opt.to_string()))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                // Everything after `--` is a lookup (e.g. `-- -1`).
                opts.lookups.extend(it.by_ref());
                break;
            }
            "-h" | "--help" => opts.help = true,
            "--version" => opts.version = true,
            "-q" | "--quiet" => opts.quiet = true,
            "-H" => opts.drop_headers = true,
            "-o" | "--output" => {
                let v = value(&mut it, "-o|--output")?;
                parse_mode(&v, &mut opts)?;
            }
            "-0" => opts.indent = Indent::Spaces(0),
            "-2" => opts.indent = Indent::Spaces(2),
            "-4" => opts.indent = Indent::Spaces(4),
            "-I" | "--in-place" => opts.in_place = true,
            "-j" => opts.mode = OutputMode::Json,
            "-a" | "--array" => opts.array = Some(true),
            "-A" => opts.array = Some(false),
            "-d" => {
                let v = value(&mut it, "-d")?;
                opts.delim = parse_delim(&v)?;
            }
            "-D" => {
                let v = value(&mut it, "-D")?;
                let mut cs = v.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) => opts.lookup_delim = c,
                    _ => return Err(ArgError::BadLookupDelim(v)),
                }
            }
            "-e" | "-E" => {
                let v = value(&mut it, &arg)?;
                opts.exe.push(v);
            }
            "-c" | "-C" => {
                let v = value(&mut it, &arg)?;
                opts.cond.push(v);
            }
            "-k" | "--keys" => opts.keys = true,
            "-f" => {
                let v = value(&mut it, "-f")?;
                opts.files.push(PathBuf::from(v));
            }
            "-n" | "--validate" => opts.validate = true,
            "-i" => return Err(ArgError::Unsupported("-i (inspect output)".into())),
            "-g" | "--group" | "--merge" | "--deep-merge" | "-M" | "--items" => {
                return Err(ArgError::Unsupported(format!("option \"{arg}\"")))
            }
            _ if arg.starts_with('-') => return Err(ArgError::UnknownOption(arg)),
            _ => opts.lookups.push(arg),
        }
    }
    if opts.keys && !opts.lookups.is_empty() {
        return Err(ArgError::KeysWithLookups);
    }
    if opts.in_place && opts.files.len() != 1 {
        return Err(ArgError::InPlaceNeedsOneFile);
    }
    if opts.in_place && !opts.lookups.is_empty() {
        return Err(ArgError::InPlaceWithLookups);
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Opts, ArgError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn scripts_invocations() {
        let o = p(&["-f", "/x/imgadm.conf", "-e", "this.userAgentExtra = 'server/u'"]).expect("parse");
        assert_eq!(o.files, vec![PathBuf::from("/x/imgadm.conf")]);
        assert_eq!(o.exe, vec!["this.userAgentExtra = 'server/u'".to_string()]);
        let o = p(&["-e", "this.offset=Math.floor(Math.abs(this.offset))", "offset"]).expect("parse");
        assert_eq!(o.lookups, vec!["offset".to_string()]);
        let o = p(&["MiB of Memory"]).expect("parse");
        assert_eq!(o.lookups, vec!["MiB of Memory".to_string()]);
    }

    #[test]
    fn groups_and_glued_values() {
        let o = p(&["-Hq", "-j0"]).expect("parse");
        assert!(o.drop_headers && o.quiet);
        assert_eq!((o.mode, o.indent), (OutputMode::Json, Indent::Spaces(0)));
        let o = p(&["-ojson-4"]).expect("parse");
        assert_eq!((o.mode, o.indent), (OutputMode::Json, Indent::Spaces(4)));
        let o = p(&["-o", "jsony-0"]).expect("parse");
        assert_eq!((o.mode, o.indent), (OutputMode::Jsony, Indent::Spaces(0)));
        let o = p(&["-o", "json-tab"]).expect("parse");
        assert_eq!(o.indent, Indent::Tab);
        let o = p(&["-a", "-d,", "a", "b"]).expect("parse");
        assert_eq!((o.array, o.delim.as_str()), (Some(true), ","));
        let o = p(&["-d", "\\t"]).expect("parse");
        assert_eq!(o.delim, "\t");
        let o = p(&["-D/", "a/b"]).expect("parse");
        assert_eq!(o.lookup_delim, '/');
        let o = p(&["--", "-1", "x"]).expect("parse");
        assert_eq!(o.lookups, vec!["-1".to_string(), "x".to_string()]);
    }

    #[test]
    fn refusals() {
        assert_eq!(p(&["-x"]), Err(ArgError::UnknownOption("-x".into())));
        assert_eq!(p(&["-1"]), Err(ArgError::UnknownOption("-1".into())));
        assert_eq!(p(&["-e"]), Err(ArgError::MissingValue("-e".into())));
        assert_eq!(p(&["-o", "yaml"]), Err(ArgError::UnknownMode("yaml".into())));
        assert!(matches!(p(&["-o", "inspect"]), Err(ArgError::Unsupported(_))));
        assert!(matches!(p(&["-i"]), Err(ArgError::Unsupported(_))));
        assert!(matches!(p(&["-g"]), Err(ArgError::Unsupported(_))));
        assert!(matches!(p(&["--merge"]), Err(ArgError::Unsupported(_))));
        assert_eq!(p(&["-k", "a"]), Err(ArgError::KeysWithLookups));
        assert_eq!(p(&["-I"]), Err(ArgError::InPlaceNeedsOneFile));
        assert_eq!(p(&["-I", "-f", "a", "x"]), Err(ArgError::InPlaceWithLookups));
        assert_eq!(p(&["-D", "ab"]), Err(ArgError::BadLookupDelim("ab".into())));
    }
}

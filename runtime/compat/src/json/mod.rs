//! `json`: the subset of trentm's npm `json` tool (v11) that Triton's
//! headnode scripts use on a compute node, with the same output and exit
//! codes. JavaScript given with `-e`/`-c` runs in QuickJS.
//!
//! Supported: input on stdin or from `-f FILE` (several are concatenated),
//! a leading HTTP header block (passed through, or dropped with `-H`),
//! `-e CODE` (run with `this` bound to the input, or to each item of an
//! input array), `-c CODE` (filter), lookups (`a.b`, `["a.b"]`, `-1` after
//! `--`), `-a`/`-A`, `-d`, `-D`, `-k`, `-n`, `-q`, `-I` (in-place, with
//! exactly one `-f`), output modes `jsony` (default), `json`, `-N` indents
//! and `tab`. Refused with a clear error: `-g`, `--merge`, `--deep-merge`,
//! `-M`, `-i` and the `inspect`/`compact` output modes.
//!
//! Exit status: 0 on success (also when a lookup finds nothing), 1 for a
//! usage error, unreadable or non-JSON input, or an exception in `-e`/`-c`.

pub mod args;
pub mod engine;
pub mod lookup;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rquickjs::{Array, Context, Ctx, Function, Runtime, Value};

use args::{Indent, Opts, OutputMode};
use engine::{Js, JsError};

/// The trentm/json release whose behaviour this follows.
pub const COMPAT_VERSION: &str = "11.0.0";

/// Standard streams, injectable for tests.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

const HELP: &str = "\
Usage:
  <command printing JSON> | json [OPTIONS] [LOOKUPS...]
  json -f FILE [OPTIONS] [LOOKUPS...]

Reads JSON, optionally runs JavaScript on it, and prints it or the values
named by LOOKUPS (e.g. `a.b`, `[\"key.with.dots\"]`, `-- -1` for the last
item of an array). A string result is printed without quotes.

Options:
  -h, --help         print this help and exit
  --version          print the version and exit
  -q, --quiet        do not warn when the input is not JSON
  -f FILE            read FILE instead of stdin (repeatable)
  -I, --in-place     rewrite the single -f FILE with the result
  -H                 drop a leading HTTP header block
  -a, --array        process an input array item by item; tabular lookups
  -A                 treat an input array as one value for -e/-c
  -d DELIM           column separator for -a output (default: space)
  -D DELIM           lookup component separator (default: .)
  -e CODE            run JavaScript CODE with `this` bound to the input
                     (to each item if the input is an array); repeatable
  -c CODE            keep the input (or array items) for which CODE is true
  -k, --keys         print the input object's keys
  -n, --validate     only check that the input is JSON
  -o, --output MODE  jsony (default), json, json-N/jsony-N (N-space
                     indent) or json-tab
  -j                 same as -o json
  -0, -2, -4         set the indentation

This is a subset of trentm/json for Triton compute nodes; -g, --merge,
--deep-merge, -M, -i and the inspect/compact output modes are not available.
";

/// Runs `json` with `argv` (without the program name); returns the exit status.
pub fn run(argv: &[String], io: &mut Io<'_>) -> i32 {
    let opts = match args::parse(argv) {
        Ok(o) => o,
        Err(e) => return fail(io, &e.to_string()),
    };
    if opts.help {
        return finish(io, HELP.as_bytes());
    }
    if opts.version {
        let text = if opts.mode == OutputMode::Json {
            format!(
                "{{\n  \"version\": \"{COMPAT_VERSION}\",\n  \"implementation\": \"triton compat {}\"\n}}\n",
                env!("CARGO_PKG_VERSION")
            )
        } else {
            format!("json {COMPAT_VERSION} (compatible subset, triton compat {})\n", env!("CARGO_PKG_VERSION"))
        };
        return finish(io, text.as_bytes());
    }
    let mut lookups = Vec::new();
    for l in &opts.lookups {
        match lookup::parse(l, opts.lookup_delim) {
            Ok(bits) => lookups.push(bits),
            Err(e) => return fail(io, &e.to_string()),
        }
    }
    let runtime = match Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(io, &format!("cannot start the JavaScript engine: {e}")),
    };
    let context = match Context::full(&runtime) {
        Ok(c) => c,
        Err(e) => return fail(io, &format!("cannot start the JavaScript engine: {e}")),
    };
    context.with(|ctx| run_in(ctx, &opts, &lookups, io))
}

/// Prints `json: error: <msg>` and returns 1.
fn fail(io: &mut Io<'_>, msg: &str) -> i32 {
    let _ = writeln!(io.stderr, "json: error: {msg}");
    1
}

/// Writes `bytes` to stdout; a closed pipe is not an error (exit 0, as the
/// node tool does on EPIPE).
fn write_out(io: &mut Io<'_>, bytes: &[u8]) -> Result<(), i32> {
    match io.stdout.write_all(bytes).and_then(|_| io.stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(0),
        Err(e) => Err(fail(io, &format!("writing to stdout: {e}"))),
    }
}

fn finish(io: &mut Io<'_>, bytes: &[u8]) -> i32 {
    match write_out(io, bytes) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// A `-c` snippet without `return` is an expression: `return (CODE)`
/// (one trailing `;` dropped).
fn cond_body(code: &str) -> String {
    if code.contains("return") {
        code.to_string()
    } else {
        format!("return ({})", code.strip_suffix(';').unwrap_or(code))
    }
}

/// Splits a leading HTTP header block (and any `100 Continue` blocks before
/// it) off the input.
fn split_headers(mut s: &str) -> (String, &str) {
    let mut headers = String::new();
    while s.starts_with("HTTP/") {
        let found = s.find("\r\n\r\n").map(|i| i + 4).or_else(|| s.find("\n\n").map(|i| i + 2));
        let Some(end) = found else { break };
        headers.push_str(&s[..end]);
        let is_continue = s.starts_with("HTTP/1.1 100 Continue");
        s = &s[end..];
        if !is_continue {
            break;
        }
    }
    (headers, s)
}

/// What processing one input produced.
enum Processed {
    /// Empty input: nothing to print.
    Nothing,
    /// Not JSON; the JavaScript parser's message.
    NotJson(String),
    /// `-n` and the input is JSON.
    Valid,
    Output(String),
}

struct Compiled<'js> {
    exe: Vec<Function<'js>>,
    cond: Vec<Function<'js>>,
    /// Each lookup as a JavaScript array, with its key in the result row.
    lookups: Vec<(Array<'js>, String)>,
}

fn compile<'js>(js: &Js<'js>, opts: &Opts, lookups: &[Vec<lookup::Bit>]) -> Result<Compiled<'js>, String> {
    let mut exe = Vec::new();
    for code in &opts.exe {
        exe.push(js.compile(code).map_err(|e| format!("cannot compile -e code {code:?}: {}", e.0))?);
    }
    let mut cond = Vec::new();
    for code in &opts.cond {
        cond.push(js.compile(&cond_body(code)).map_err(|e| format!("cannot compile -c code {code:?}: {}", e.0))?);
    }
    let mut ls = Vec::new();
    for bits in lookups {
        let a = js.bits(bits).map_err(|e| e.0)?;
        let key = js.join(&a).map_err(|e| e.0)?;
        ls.push((a, key));
    }
    Ok(Compiled { exe, cond, lookups: ls })
}

fn run_in<'js>(ctx: Ctx<'js>, opts: &Opts, lookups: &[Vec<lookup::Bit>], io: &mut Io<'_>) -> i32 {
    let js = match Js::new(ctx) {
        Ok(j) => j,
        Err(e) => return fail(io, &e.0),
    };
    let compiled = match compile(&js, opts, lookups) {
        Ok(c) => c,
        Err(e) => return fail(io, &e),
    };

    // Read the input.
    let (raw, filename) = if opts.in_place {
        let Some(file) = opts.files.first() else { return fail(io, "-I needs -f FILE") };
        match fs::read(file) {
            Ok(b) => (b, Some(file.display().to_string())),
            Err(e) => return fail(io, &format!("could not read \"{}\": {e}", file.display())),
        }
    } else if opts.files.is_empty() {
        let mut b = Vec::new();
        if let Err(e) = io.stdin.read_to_end(&mut b) {
            return fail(io, &format!("reading stdin: {e}"));
        }
        (b, None)
    } else {
        let mut b = Vec::new();
        for f in &opts.files {
            match fs::read(f) {
                Ok(mut c) => b.append(&mut c),
                Err(e) => return fail(io, &format!("could not read \"{}\": {e}", f.display())),
            }
        }
        let name = if opts.files.len() == 1 { Some(opts.files[0].display().to_string()) } else { None };
        (b, name)
    };
    let text = String::from_utf8_lossy(&raw);
    if opts.in_place && text.is_empty() {
        return 0;
    }
    let (headers, body) = split_headers(&text);
    let headers = if opts.drop_headers { String::new() } else { headers };
    if !opts.in_place && !headers.is_empty() {
        if let Err(code) = write_out(io, headers.as_bytes()) {
            return code;
        }
    }

    let processed = match process(&js, opts, &compiled, body) {
        Ok(p) => p,
        Err(e) => return fail(io, &e.0),
    };
    match processed {
        Processed::Nothing | Processed::Valid => 0,
        Processed::NotJson(msg) => {
            if !opts.quiet {
                let what = filename.map(|f| format!("\"{f}\"")).unwrap_or_else(|| "input".into());
                let _ = writeln!(io.stderr, "json: error: {what} is not JSON: {}", not_json_details(body, &msg));
            }
            if !opts.validate {
                let mut echo = body.to_string();
                if !echo.ends_with('\n') {
                    echo.push('\n');
                }
                if let Err(code) = write_out(io, echo.as_bytes()) {
                    return code;
                }
            }
            1
        }
        Processed::Output(out) => {
            if let (true, Some(file)) = (opts.in_place, opts.files.first()) {
                let content = headers + &out;
                if let Err(e) = write_in_place(file, content.as_bytes()) {
                    return fail(io, &e);
                }
                if !opts.quiet {
                    let _ = writeln!(io.stderr, "json: updated \"{}\" in-place", file.display());
                }
                0
            } else {
                finish(io, out.as_bytes())
            }
        }
    }
}

/// The parser's message plus the line and column of the error, as the node
/// tool shows them.
fn not_json_details(body: &str, js_msg: &str) -> String {
    let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(body) else {
        return js_msg.to_string();
    };
    let (line, col) = (e.line(), e.column());
    let text = body.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let dots = ".".repeat(col.saturating_sub(1));
    format!("{js_msg}, at line {line}, column {col}:\n        {text}\n        {dots}^")
}

/// Replaces `path` atomically: temp file beside it with the same mode,
/// fsync, rename.
fn write_in_place(path: &Path, content: &[u8]) -> Result<(), String> {
    let mode = fs::metadata(path).map_err(|e| format!("cannot stat \"{}\": {e}", path.display()))?.permissions().mode();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let tmp = dir.join(format!(".{base}-json-{}-{ms}.tmp", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot update \"{}\" in place: {e}", path.display())
    })
}

/// Whether `-e`/`-c` handle the items of `data` one by one.
fn per_item<'js>(js: &Js<'js>, opts: &Opts, data: &Value<'js>) -> Result<bool, JsError> {
    Ok(match opts.array {
        Some(a) => a,
        None => js.is_array(data)?,
    })
}

/// Items of `data`, or `[data]` when it is not an array; and whether it was wrapped.
fn items_of<'js>(js: &Js<'js>, data: &Value<'js>) -> Result<(Vec<Value<'js>>, bool), JsError> {
    if js.is_array(data)? {
        Ok((js.items(data)?, false))
    } else {
        Ok((vec![data.clone()], true))
    }
}

fn process<'js>(js: &Js<'js>, opts: &Opts, c: &Compiled<'js>, chunk: &str) -> Result<Processed, JsError> {
    if chunk.is_empty() {
        return Ok(Processed::Nothing);
    }
    let mut data = match js.parse(chunk) {
        Ok(v) => v,
        Err(e) => return Ok(Processed::NotJson(e.0)),
    };
    if opts.validate {
        return Ok(Processed::Valid);
    }

    // -e: run each snippet with `this` bound to the input or each item.
    if !c.exe.is_empty() {
        let targets = if per_item(js, opts, &data)? { items_of(js, &data)?.0 } else { vec![data.clone()] };
        for t in &targets {
            for f in &c.exe {
                js.run(f, t).map_err(|e| JsError(format!("-e code threw {}", e.0)))?;
            }
        }
    }

    // -c: keep what every snippet finds true (each sees a shallow copy).
    if !c.cond.is_empty() {
        let keeps = |v: &Value<'js>| -> Result<bool, JsError> {
            let copy = js.shallow_copy(v)?;
            for f in &c.cond {
                if !js.test(f, &copy).map_err(|e| JsError(format!("-c code threw {}", e.0)))? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if per_item(js, opts, &data)? {
            let (items, wrapped) = items_of(js, &data)?;
            let mut kept = Vec::new();
            for it in items {
                if keeps(&it)? {
                    kept.push(it);
                }
            }
            data = match (wrapped, kept.first()) {
                (true, Some(first)) => first.clone(),
                (true, None) => js.new_array(&[])?,
                (false, _) => js.new_array(&kept)?,
            };
        } else if !keeps(&data)? {
            data = js.undefined();
        }
    }

    // Lookups: a row object keyed by each lookup's joined path.
    let array_mode = opts.array == Some(true);
    let mut index_lookups = false;
    if !c.lookups.is_empty() {
        let row_of = |d: &Value<'js>| -> Result<Value<'js>, JsError> {
            let row = js.new_object()?;
            for (bits, key) in &c.lookups {
                let v = js.lookup(d, bits)?;
                if !v.is_undefined() {
                    js.set(&row, key, v)?;
                }
            }
            Ok(row.into_value())
        };
        if array_mode {
            let (items, _) = items_of(js, &data)?;
            let mut rows = Vec::new();
            for it in &items {
                rows.push(row_of(it)?);
            }
            data = js.new_array(&rows)?;
        } else {
            if js.is_array(&data)? {
                let arrays: Vec<Array<'js>> = c.lookups.iter().map(|(a, _)| a.clone()).collect();
                index_lookups = js.index_lookups(&arrays)?;
            }
            data = row_of(&data)?;
        }
    }

    if opts.keys {
        data = js.keys(&data)?;
    }

    // What to print, with its separator and whether the separator is
    // printed even when the value prints as nothing (table cells).
    let mut datasets: Vec<(Value<'js>, &str, bool)> = Vec::new();
    if opts.mode == OutputMode::Json {
        if c.lookups.len() == 1 && !array_mode {
            data = js.get(&data, &c.lookups[0].1)?;
        } else if index_lookups {
            let mut flat = Vec::new();
            for (_, key) in &c.lookups {
                if js.has_own(&data, key)? {
                    flat.push(js.get(&data, key)?);
                }
            }
            data = js.new_array(&flat)?;
        }
        datasets.push((data, "\n", false));
    } else if !c.lookups.is_empty() {
        if array_mode {
            for row in js.items(&data)? {
                let n = c.lookups.len();
                for (i, (_, key)) in c.lookups.iter().enumerate() {
                    let sep = if i + 1 == n { "\n" } else { opts.delim.as_str() };
                    datasets.push((js.get(&row, key)?, sep, true));
                }
            }
        } else {
            for (_, key) in &c.lookups {
                datasets.push((js.get(&data, key)?, "\n", false));
            }
        }
    } else if array_mode {
        for it in items_of(js, &data)?.0 {
            datasets.push((it, "\n", false));
        }
    } else {
        datasets.push((data, "\n", false));
    }

    let jsony = opts.mode == OutputMode::Jsony;
    let indent: Indent = opts.indent;
    let mut out = String::new();
    for (v, sep, always) in &datasets {
        match js.format(v, jsony, indent)? {
            Some(s) if !s.is_empty() => {
                out.push_str(&s);
                out.push_str(sep);
            }
            _ if *always => out.push_str(sep),
            _ => {}
        }
    }
    Ok(Processed::Output(out))
}

#[cfg(test)]
mod tests;

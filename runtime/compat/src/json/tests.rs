//! `json` behaviour, with the headnode scripts' invocations first.
use super::*;

struct Out {
    stdout: String,
    stderr: String,
    code: i32,
}

fn json(args: &[&str], stdin: &str) -> Out {
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut input = stdin.as_bytes();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(&argv, &mut Io { stdin: &mut input, stdout: &mut out, stderr: &mut err });
    Out {
        stdout: String::from_utf8(out).expect("utf8 stdout"),
        stderr: String::from_utf8(err).expect("utf8 stderr"),
        code,
    }
}

fn ok(args: &[&str], stdin: &str) -> String {
    let o = json(args, stdin);
    assert_eq!(o.code, 0, "json {args:?} failed: {}", o.stderr);
    assert_eq!(o.stderr, "", "json {args:?} warned");
    o.stdout
}

/// What joysetup's create_setup_file writes.
const SETUP_FILE: &str = "{ \"node_type\": \"computenode\",  \"start_time\": \"2026-01-02T03:04:05Z\",  \
                          \"current_state\": \"\",  \"seen_states\": [],  \"complete\": false }\n";

fn update_setup_state_code(state: &str) -> String {
    format!(
        "this.current_state = '{state}';\n         this.last_updated = new Date().toISOString();\n         \
         this.seen_states.push('{state}');"
    )
}

/// Replaces the `last_updated` timestamp (checked for ISO form) with `T`.
fn without_timestamp(s: &str) -> String {
    let key = "\"last_updated\": \"";
    let Some(i) = s.find(key) else { return s.to_string() };
    let start = i + key.len();
    let ts = &s[start..start + 24];
    let b = ts.as_bytes();
    assert!(
        ts.ends_with('Z') && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && ts[..4].parse::<u32>().is_ok(),
        "not an ISO timestamp: {ts}"
    );
    format!("{}T{}", &s[..start], &s[start + 24..])
}

#[test]
fn update_setup_state() {
    let out = ok(&["-e", &update_setup_state_code("zpool_created")], SETUP_FILE);
    assert_eq!(
        without_timestamp(&out),
        "{\n  \"node_type\": \"computenode\",\n  \"start_time\": \"2026-01-02T03:04:05Z\",\n  \
         \"current_state\": \"zpool_created\",\n  \"seen_states\": [\n    \"zpool_created\"\n  ],\n  \
         \"complete\": false,\n  \"last_updated\": \"T\"\n}\n"
    );
    // A second state appends to seen_states.
    let out2 = ok(&["-e", &update_setup_state_code("datasets_setup")], &out);
    assert!(out2.contains("\"seen_states\": [\n    \"zpool_created\",\n    \"datasets_setup\"\n  ]"), "{out2}");
    assert!(out2.contains("\"current_state\": \"datasets_setup\""));
}

#[test]
fn mark_as_setup() {
    let code = "this.complete = true;\n         this.current_state = 'setup_complete';\n         \
                this.seen_states.push('setup_complete');\n         this.last_updated = new Date().toISOString();";
    let out = ok(&["-e", code], SETUP_FILE);
    assert!(out.contains("\"complete\": true,"), "{out}");
    assert!(out.contains("\"seen_states\": [\n    \"setup_complete\"\n  ]"), "{out}");
}

#[test]
fn setup_state_not_seen() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("triton-setup-state.json");
    std::fs::write(&f, "{\"seen_states\": [\"zpool_created\", \"tools_installed\"]}\n").expect("write");
    let path = f.to_str().expect("path");
    let code = |s: &str| {
        format!("this.result = this.seen_states.filter(\n            function(e) {{ return e === '{s}' }})[0]")
    };
    assert_eq!(ok(&["-f", path, "-e", &code("tools_installed"), "result"], ""), "tools_installed\n");
    // Not seen (and agentsetup's empty `$state`): undefined prints nothing.
    assert_eq!(ok(&["-f", path, "-e", &code("agents_installed"), "result"], ""), "");
    assert_eq!(ok(&["-f", path, "-e", &code(""), "result"], ""), "");
}

#[test]
fn sysinfo_and_pool_lookups() {
    let sysinfo = "{\"UUID\": \"564d1a2b-0000-4000-8000-000000000001\", \"MiB of Memory\": 16384, \
                   \"System Type\": \"Linux\", \"Setup\": \"false\"}";
    assert_eq!(ok(&["MiB of Memory"], sysinfo), "16384\n");
    assert_eq!(ok(&["UUID"], sysinfo), "564d1a2b-0000-4000-8000-000000000001\n");
    let pool = "{\"capacity\": 1998998994944, \"usage\": 0, \"layout\": \"single\"}";
    assert_eq!(ok(&["capacity"], pool), "1998998994944\n");
    assert_eq!(ok(&["usage"], pool), "0\n");
}

#[test]
fn mockcn_usage() {
    let out = ok(&["-e", "this.usage = 123"], "{\"capacity\": 10}");
    assert_eq!(out, "{\n  \"capacity\": 10,\n  \"usage\": 123\n}\n");
}

#[test]
fn ntpdig_offset() {
    let ntp = "{\"time\":\"2026-01-02T03:04:05.123Z\",\"offset\":-12.734,\"precision\":1e-6,\
               \"host\":\"10.0.0.1\",\"stratum\":3,\"leap\":\"no-leap\",\"adjusted\":false}";
    assert_eq!(ok(&["-e", "this.offset=Math.floor(Math.abs(this.offset))", "offset"], ntp), "12\n");
    let small = "{\"offset\": 0.0004}";
    assert_eq!(ok(&["-e", "this.offset=Math.floor(Math.abs(this.offset))", "offset"], small), "0\n");
}

#[test]
fn imgadm_user_agent() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("imgadm.conf");
    std::fs::write(&f, "{\n  \"sources\": [\n    {\n      \"url\": \"https://images.smartos.org\",\n      \"type\": \"imgapi\"\n    }\n  ]\n}").expect("w");
    let out = ok(&["-f", f.to_str().expect("p"), "-e", "this.userAgentExtra = 'server/564d1a2b'"], "");
    assert_eq!(
        out,
        "{\n  \"sources\": [\n    {\n      \"url\": \"https://images.smartos.org\",\n      \"type\": \"imgapi\"\n    \
         }\n  ],\n  \"userAgentExtra\": \"server/564d1a2b\"\n}\n"
    );
}

#[test]
fn several_e_run_in_order() {
    assert_eq!(ok(&["-e", "this.a = 1", "-e", "this.b = this.a + 1", "b"], "{}"), "2\n");
}

#[test]
fn output_is_javascript_json() {
    // Integer-like keys first (JavaScript property order), JS number text.
    let out = ok(&["-o", "json-0"], "{\"b\": 1, \"1\": 2, \"x\": 1.0, \"y\": 1e21, \"z\": 0.1, \"n\": -0}");
    assert_eq!(out, "{\"1\":2,\"b\":1,\"x\":1,\"y\":1e+21,\"z\":0.1,\"n\":0}\n");
    assert_eq!(ok(&[], "[]"), "[]\n");
    assert_eq!(ok(&[], "{}"), "{}\n");
    assert_eq!(ok(&[], "\"str\""), "str\n");
    assert_eq!(ok(&["-j"], "\"str\""), "\"str\"\n");
    assert_eq!(ok(&[], "true"), "true\n");
    assert_eq!(ok(&[], "null"), "null\n");
    assert_eq!(ok(&["-o", "jsony-0"], "{\"a\": [1, 2]}"), "{\"a\":[1,2]}\n");
    assert_eq!(ok(&["-4"], "{\"a\": 1}"), "{\n    \"a\": 1\n}\n");
    assert_eq!(ok(&["-o", "json-tab"], "{\"a\": 1}"), "{\n\t\"a\": 1\n}\n");
    // An empty string prints nothing at all.
    assert_eq!(ok(&["a"], "{\"a\": \"\"}"), "");
    assert_eq!(ok(&[], "  {\"a\":\n 1}  \n"), "{\n  \"a\": 1\n}\n");
    assert_eq!(ok(&["a"], "{\"a\": \"caf\\u00e9 \\u2603\"}"), "café ☃\n");
}

#[test]
fn lookups() {
    let doc = "{\"a\": {\"b\": [10, 20, 30], \"c.d\": \"dot\"}, \"s\": \"str\"}";
    assert_eq!(ok(&["a.b.1"], doc), "20\n");
    assert_eq!(ok(&["a.b", "--", "-1"], "[1, 2, 3]"), "3\n");
    assert_eq!(ok(&["a.b.length"], doc), "3\n");
    assert_eq!(ok(&["a[\"c.d\"]"], doc), "dot\n");
    assert_eq!(ok(&["s", "missing", "a.b.0"], doc), "str\n10\n");
    assert_eq!(ok(&["s.length"], doc), "3\n");
    assert_eq!(ok(&["a.b.9.x"], doc), "");
    assert_eq!(ok(&["-j", "s"], doc), "\"str\"\n");
    assert_eq!(ok(&["-j", "s", "a.b.0"], doc), "{\n  \"s\": \"str\",\n  \"a.b.0\": 10\n}\n");
    assert_eq!(ok(&["-j", "0", "2"], "[\"x\", \"y\", \"z\"]"), "[\n  \"x\",\n  \"z\"\n]\n");
    assert_eq!(ok(&["-D", "/", "a/c.d"], doc), "dot\n");
    let o = json(&["[42]"], doc);
    assert_eq!(o.code, 1);
    assert!(o.stderr.starts_with("json: error: invalid bracketed lookup string: \"[42]\""), "{}", o.stderr);
}

#[test]
fn arrays_and_tables() {
    let people = "[{\"name\": \"trent\", \"age\": 38}, {\"name\": \"ewan\", \"age\": 4}, {\"age\": 1}]";
    assert_eq!(ok(&["-a", "name", "age"], people), "trent 38\newan 4\n 1\n");
    assert_eq!(ok(&["-a", "name", "age", "-d,"], people), "trent,38\newan,4\n,1\n");
    assert_eq!(ok(&["-a", "name"], people), "trent\newan\n\n");
    assert_eq!(ok(&["-a", "-o", "json-0"], "[1, \"a\"]"), "[1,\"a\"]\n");
    assert_eq!(ok(&["-a"], "[1, \"a\", {\"b\": 2}]"), "1\na\n{\n  \"b\": 2\n}\n");
    assert_eq!(ok(&["-a", "name"], "{\"name\": \"solo\"}"), "solo\n");
    // -e runs per item of an array, -A turns that off.
    assert_eq!(ok(&["-e", "this.x = 1", "-o", "json-0"], "[{}, {}]"), "[{\"x\":1},{\"x\":1}]\n");
    assert_eq!(ok(&["-A", "-e", "this.push(3)", "-o", "json-0"], "[1, 2]"), "[1,2,3]\n");
}

#[test]
fn conditional_filter() {
    let people = "[{\"name\": \"trent\", \"age\": 38}, {\"name\": \"ewan\", \"age\": 4}]";
    assert_eq!(ok(&["-c", "this.age > 21", "-o", "json-0"], people), "[{\"name\":\"trent\",\"age\":38}]\n");
    assert_eq!(ok(&["-c", "return this.age < 21;", "-a", "name"], people), "ewan\n");
    assert_eq!(ok(&["-c", "this.age > 21;", "-c", "this.name === 'x'", "-o", "json-0"], people), "[]\n");
    // A single object is kept or dropped.
    assert_eq!(ok(&["-c", "this.a === 1", "a"], "{\"a\": 1}"), "1\n");
    assert_eq!(ok(&["-c", "this.a === 2"], "{\"a\": 1}"), "");
    // -c works on a copy: changes do not leak into the output.
    assert_eq!(ok(&["-c", "(this.z = 1) && true", "-o", "json-0"], "{\"a\": 1}"), "{\"a\":1}\n");
    // -a with an object: kept as itself, dropped as [].
    assert_eq!(ok(&["-a", "-c", "this.a === 1", "-o", "json-0"], "{\"a\": 1}"), "{\"a\":1}\n");
    assert_eq!(ok(&["-a", "-c", "this.a === 2", "-o", "json-0"], "{\"a\": 1}"), "[]\n");
}

#[test]
fn keys() {
    assert_eq!(ok(&["-k"], "{\"b\": 1, \"a\": 2}"), "[\n  \"b\",\n  \"a\"\n]\n");
    assert_eq!(ok(&["-ka"], "{\"b\": 1, \"a\": 2}"), "b\na\n");
}

#[test]
fn http_headers() {
    let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\": 1}\n";
    assert_eq!(ok(&["a"], resp), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n1\n");
    assert_eq!(ok(&["-H", "a"], resp), "1\n");
    let cont = "HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nX: y\n\n{\"a\": 2}";
    assert_eq!(ok(&["-H", "a"], cont), "2\n");
}

#[test]
fn empty_and_invalid_input() {
    assert_eq!(ok(&[], ""), "");
    let o = json(&["a"], "not json");
    assert_eq!((o.code, o.stdout.as_str()), (1, "not json\n"));
    assert!(o.stderr.starts_with("json: error: input is not JSON: SyntaxError"), "{}", o.stderr);
    assert!(o.stderr.contains(", at line 1, column 2:\n        not json\n        .^\n"), "{}", o.stderr);
    let o = json(&["-q"], "{\"a\": }\n");
    assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (1, "{\"a\": }\n", ""));
    // Whitespace only is not JSON either (as with JSON.parse).
    assert_eq!(json(&[], "\n").code, 1);
    // -n validates only.
    assert_eq!((json(&["-n"], "{}").code, json(&["-n"], "{}").stdout), (0, String::new()));
    let o = json(&["-nq"], "{");
    assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (1, "", ""));
}

#[test]
fn errors_are_clear() {
    let o = json(&["-e", "this.seen_states.push('x')"], "{}");
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert!(o.stderr.starts_with("json: error: -e code threw TypeError"), "{}", o.stderr);
    let o = json(&["-e", "this.x = ("], "{}");
    assert_eq!(o.code, 1);
    assert!(o.stderr.starts_with("json: error: cannot compile -e code"), "{}", o.stderr);
    let o = json(&["-c", "this.a.b"], "{}");
    assert!(o.code == 1 && o.stderr.contains("-c code threw TypeError"), "{}", o.stderr);
    let o = json(&["-f", "/nonexistent/file.json"], "");
    assert_eq!(o.code, 1);
    assert!(o.stderr.starts_with("json: error: could not read \"/nonexistent/file.json\""), "{}", o.stderr);
    let o = json(&["-g"], "{}");
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not supported by this json"), "{}", o.stderr);
    let o = json(&["--bogus"], "{}");
    assert_eq!((o.code, o.stderr.as_str()), (1, "json: error: unknown option \"--bogus\"\n"));
    // A thrown non-Error value is shown too.
    let o = json(&["-e", "throw 'nope'"], "{}");
    assert_eq!((o.code, o.stderr.as_str()), (1, "json: error: -e code threw nope\n"));
}

#[test]
fn in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("conf.json");
    std::fs::write(&f, "{\"a\": 1}").expect("w");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let p = f.to_str().expect("p");
    let o = json(&["-I", "-f", p, "-e", "this.b = 2"], "");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!((o.stdout.as_str(), o.stderr), ("", format!("json: updated \"{p}\" in-place\n")));
    assert_eq!(std::fs::read_to_string(&f).expect("r"), "{\n  \"a\": 1,\n  \"b\": 2\n}\n");
    assert_eq!(std::fs::metadata(&f).expect("m").permissions().mode() & 0o777, 0o640);
    // -q silences the note; no temp files are left behind.
    assert_eq!(json(&["-Iq", "-f", p, "-o", "json-0"], "").stderr, "");
    assert_eq!(std::fs::read_to_string(&f).expect("r"), "{\"a\":1,\"b\":2}\n");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    // Invalid content: echoed on stdout, file untouched, exit 1.
    std::fs::write(&f, "{oops").expect("w");
    let o = json(&["-I", "-f", p, "-e", "this.b = 3"], "");
    assert_eq!((o.code, o.stdout.as_str()), (1, "{oops\n"));
    assert!(o.stderr.contains(&format!("\"{p}\" is not JSON")), "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&f).expect("r"), "{oops");
}

#[test]
fn several_files_are_concatenated() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "{\"x\":").expect("w");
    std::fs::write(&b, " 5}").expect("w");
    assert_eq!(ok(&["-f", a.to_str().expect("p"), "-f", b.to_str().expect("p"), "x"], ""), "5\n");
}

#[test]
fn help_and_version() {
    assert!(ok(&["-h"], "").starts_with("Usage:"));
    assert!(ok(&["--version"], "").starts_with("json 11.0.0"));
    assert!(ok(&["--version", "-j"], "").contains("\"version\": \"11.0.0\""));
}

#[test]
fn dates_and_math_are_available() {
    assert_eq!(ok(&["-e", "this.y = new Date(0).toISOString()", "y"], "{}"), "1970-01-01T00:00:00.000Z\n");
    assert_eq!(ok(&["-e", "this.v = Math.max(1, 7)", "v"], "{}"), "7\n");
}

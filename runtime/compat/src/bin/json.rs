//! `json`: see [`compat::json`].
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut stdin, mut stdout, mut stderr) = (std::io::stdin().lock(), std::io::stdout().lock(), std::io::stderr());
    let mut io = compat::json::Io { stdin: &mut stdin, stdout: &mut stdout, stderr: &mut stderr };
    let code = compat::json::run(&argv, &mut io);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

use std::process::ExitCode;

use clap::Parser;

use image::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => image::build::run(&args).map(|s| {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            }
        }),
        Command::Repro(args) => image::repro::run(&args),
        Command::Bench(args) => image::bench::run(&args),
        Command::CargoTest(args) => image::cargo_test::run(&args),
        Command::Baseline(args) => image::baseline::run(&args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

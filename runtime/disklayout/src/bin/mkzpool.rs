//! `mkzpool`: create a ZFS pool from a disklayout JSON file.

use std::process::ExitCode;

use clap::Parser;
use disklayout::cli::{self, MkzpoolCli};

fn main() -> ExitCode {
    let cli = MkzpoolCli::parse();
    match cli::mkzpool(&cli) {
        Ok(created) => {
            created.commands.iter().for_each(|c| eprintln!("mkzpool: ran {c}"));
            eprintln!("mkzpool: pool {} created and mounted at /{}", cli.pool, cli.pool);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mkzpool: error: {e}");
            ExitCode::FAILURE
        }
    }
}

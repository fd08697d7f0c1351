//! `disklayout`: print the zones pool layout for this node's disks as JSON.

use std::process::ExitCode;

use clap::Parser;
use disklayout::cli::{self, DisklayoutCli};

fn main() -> ExitCode {
    match cli::disklayout(&DisklayoutCli::parse()) {
        Ok(out) => {
            out.notes.iter().for_each(|n| eprintln!("disklayout: {n}"));
            println!("{}", out.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("disklayout: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

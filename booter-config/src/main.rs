use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = booter_config::cli::Cli::parse();
    match booter_config::cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("booter-config: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

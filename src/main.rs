use std::process::ExitCode;

use chatwoot_ingress::cli::Cli;

fn main() -> ExitCode {
    match Cli::parse_for_mail(std::env::args_os()) {
        Ok(cli) => chatwoot_ingress::run(cli),
        Err(early) => early.exit(),
    }
}

use std::process::ExitCode;

use chatwoot_ingress::cli::{Cli, Command, Early};
use chatwoot_ingress::commands::oauth2_authorize;
use chatwoot_ingress::config::Overrides;
use chatwoot_ingress::{check, deliver, health, import, sys, watch};

fn main() -> ExitCode {
    sys::no_core_dumps();
    sys::ignore_file_size_signal();
    let cli = match Cli::parse_for_mail(std::env::args_os()) {
        Ok(cli) => cli,
        Err(Early::Print(help)) => {
            let _ = help.print();
            return ExitCode::SUCCESS;
        }
        Err(Early::Usage(mta, outcome)) => return outcome.report(mta, false, &[]),
    };
    let overrides = Overrides::from(&cli.config);
    match &cli.command {
        None => deliver::main(&cli.deliver, &overrides),
        Some(Command::Check(args)) => check::main(args, &overrides, cli.deliver.mta),
        Some(Command::Import(args)) => import::main(args, &overrides, cli.deliver.mta),
        Some(Command::Watch(args)) => watch::main(args, &overrides),
        Some(Command::Oauth2(args)) => oauth2_authorize::main(args, &overrides),
        Some(Command::Health(args)) => health::main(args),
    }
}

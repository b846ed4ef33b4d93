//! `health`: ask a running `watch` whether it is alive, the way a
//! container's HEALTHCHECK needs it: one line, exit 0 healthy, 1 not.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::HealthArgs;
use crate::metrics::probe;

/// Well within Docker's default HEALTHCHECK timeout (30 s): a watch that
/// cannot answer a loopback GET in this time is not well.
const DEADLINE: Duration = Duration::from_secs(5);

pub fn main(args: &HealthArgs) -> ExitCode {
    let url = args.metrics_url.clone().unwrap_or_else(|| probe::live_url(args.metrics_listen));
    match probe::check(&url, DEADLINE) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

//! Wiring: each subcommand puts the pieces together in order.

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;

pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Keygen(args) => crate::tools::keygen(&args),
        Command::Seal(args) => crate::tools::seal(&args),
        _ => todo!("daemon wiring"),
    }
}

//! The offline tools for platforms, demos and tests: `keygen` and `seal`.

use crate::cli::{KeygenArgs, SealArgs};
use crate::exit::ExitCode;

/// `grexal-sidecar keygen`: prints what it wrote; errors on stderr with an exit code.
pub fn keygen(_args: &KeygenArgs) -> ExitCode {
    todo!("tools::keygen")
}

/// `grexal-sidecar seal`.
pub fn seal(_args: &SealArgs) -> ExitCode {
    todo!("tools::seal")
}

//! Typed process exit codes.
//!
//! `run` with an agent exits with the agent's own code (or 128+N for a signal); the codes
//! below are the daemon's own failures, chosen from the sysexits range and a block of our
//! own for bundle refusals so a platform can tell them apart without parsing logs.

/// Why the daemon itself stopped. The numeric values are part of the public contract
/// (docs/api.md lists them); never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// Bad command line or configuration (EX_USAGE).
    Usage = 64,
    /// The manifest (`grexal.json`) or the credential document is invalid (EX_DATAERR).
    Manifest = 65,
    /// A required input file is missing or unreadable (EX_NOINPUT).
    NoInput = 66,
    /// An internal error (EX_SOFTWARE).
    Internal = 70,
    /// An OS-level failure: bind, spawn plumbing, signals (EX_OSERR).
    Os = 71,
    /// Writing credentials failed (EX_IOERR); nothing half-written is left.
    Io = 74,
    /// Another daemon is running with this socket or credentials directory
    /// (EX_TEMPFAIL): the same command works once it has stopped.
    InUse = 75,
    /// Configuration values are invalid (EX_CONFIG).
    Config = 78,
    /// The bundle is malformed or truncated.
    BundleMalformed = 80,
    /// The bundle was altered after the platform signed it, or does not decrypt.
    BundleTampered = 81,
    /// The bundle is unsigned, or signed by a key this image does not trust.
    BundleUntrusted = 82,
    /// The bundle's expiry has passed.
    BundleExpired = 83,
    /// The bundle was sealed for another sandbox id.
    BundleWrongSandbox = 84,
    /// The bundle was sealed to another sandbox key.
    BundleWrongKey = 85,
    /// The bundle's version is not higher than the one installed (a replay).
    BundleReplayed = 86,
    /// The bundle is larger than the limit.
    BundleOversized = 87,
    /// The bundle's format version or suite is not supported.
    BundleUnsupported = 88,
    /// The bundle's contents do not match the manifest or its limits.
    BundleContents = 89,
    /// No bundle arrived before the deadline.
    BundleTimeout = 90,
    /// The agent command exists but cannot be executed (like a shell's 126).
    AgentNotExecutable = 126,
    /// The agent command could not be executed (like a shell's 127).
    AgentNotFound = 127,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

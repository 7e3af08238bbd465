//! grexal-sidecar: the daemon inside every Grexal sandbox.
//!
//! Module map (see docs/architecture.md for the flow of a credential and of a takeover):
//!
//! | module        | responsibility                                                              |
//! |---------------|-----------------------------------------------------------------------------|
//! | `check`       | the `check` subcommand: a manifest validated and described            |
//! | `cli`         | command-line surface (clap) and its resolution into a `config::Config`      |
//! | `config`      | the one validated, immutable configuration, resolved before anything binds  |
//! | `exit`        | the typed process exit codes                                                |
//! | `instance`    | one daemon per socket: the lock taken before anything is touched            |
//! | `telemetry`   | tracing setup; process hardening (not dumpable, no core files)              |
//! | `secret`      | redacting wrappers for plaintext secrets                                    |
//! | `manifest`    | the agent's `grexal.json`: connections and runtime, validated               |
//! | `credentials` | the plaintext credential document (bundle contents, `.grexal/connections.json`) |
//! | `keys`        | sandbox (X25519) and platform (Ed25519) key files                          |
//! | `bundle`      | the sealed bundle: format, `seal`, `open`                                   |
//! | `inject`      | materialising credentials as files, env vars and an env file, safely        |
//! | `store`       | the single owner of the current credentials; installs newer bundles         |
//! | `api`         | the agent's HTTP/1.1 + JSON API on a Unix socket (behind `ctx.connect`)     |
//! | `platform`    | the platform's control endpoint (TCP, bearer token) and its event stream    |
//! | `reaper`      | PID-1 duties: reap orphans without stealing owned children's statuses       |
//! | `spawn`       | what every child gets through `execve`: stdio only, default signals         |
//! | `agent`       | launching the agent as its user, forwarding signals, its exit code          |
//! | `desktop`     | supervising the display, the VNC server and Chromium                        |
//! | `rfb`         | the client-to-server RFB message parser (view-only filtering)              |
//! | `relay`       | the WebSocket <-> VNC relay with token checks and backpressure              |
//! | `takeover`    | takeover lifecycle: request, wait, complete, cancel, time out               |
//! | `viewer`      | the takeover viewer page (our page around noVNC)                            |
//! | `dev_dir`     | `dev`'s own directories: `.grexal/` private whatever the umask            |
//! | `dev_viewer`  | `dev` on a desktop: the viewer on loopback, and where to open it            |
//! | `tools`       | offline tools for platforms and demos: `keygen`, `seal`                     |
//! | `daemon`      | wiring: `run` and `dev` put the pieces together in order                    |

pub mod agent;
pub mod api;
pub mod bundle;
pub mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod desktop;
pub mod dev_dir;
pub mod dev_viewer;
pub mod exit;
pub mod inject;
pub mod instance;
pub mod keys;
pub mod manifest;
pub mod platform;
pub mod reaper;
pub mod relay;
pub mod rfb;
pub mod secret;
mod spawn;
pub mod store;
pub mod takeover;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod tools;
pub mod viewer;

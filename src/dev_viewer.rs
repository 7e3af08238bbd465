//! `dev`'s takeover viewer. On a developer's machine the developer is the user who logs
//! in, and there is no platform to show them a prompt: when the desktop runs, `dev` serves
//! the viewer on loopback and, while a takeover is live, puts the URL to open (with its
//! token, in the fragment) in a 0600 file, and on the terminal when stderr is one. In a
//! sandbox the platform gets the same URL from the event stream instead.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::platform::events::PlatformEvent;

/// Binds the viewer's listener (the address is loopback: checked by the config).
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(listen).await?;
    info!(addr = %listener.local_addr()?, "dev: takeover viewer listening");
    Ok(listener)
}

/// Follows the takeover events until `stop`: a requested takeover's viewer URL is written
/// to `url_file` (and printed to a terminal), and the file is removed when it ends.
pub async fn announce(
    mut events: broadcast::Receiver<Arc<PlatformEvent>>,
    url_file: std::path::PathBuf,
    stop: CancellationToken,
) {
    let mut live: Option<String> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        match &*event {
            PlatformEvent::TakeoverRequested {
                takeover_id,
                connection_id,
                display_name,
                reason,
                viewer_url,
                control_token,
                ..
            } => {
                let url = zeroize::Zeroizing::new(format!(
                    "{viewer_url}#token={}",
                    control_token.expose()
                ));
                if let Err(error) = write_private(&url_file, &url) {
                    warn!(file = %url_file.display(), %error, "dev: cannot write the takeover URL");
                }
                info!(
                    takeover_id,
                    connection_id,
                    file = %url_file.display(),
                    "dev: the agent asks you to log in; open the viewer URL in the file, log in, then press \"I've logged in\""
                );
                if std::io::stderr().is_terminal() {
                    eprintln!(
                        "\n  The agent asks you to log in to {} ({}):\n    {}\n  Open this in your browser, log in, then press \"I've logged in\":\n    {}\n",
                        printable(display_name),
                        printable(connection_id),
                        printable(reason),
                        url.as_str()
                    );
                }
                live = Some(takeover_id.clone());
            }
            PlatformEvent::TakeoverEnded {
                takeover_id,
                outcome,
                by,
            } if live.as_ref() == Some(takeover_id) => {
                remove(&url_file);
                info!(takeover_id, outcome, by, "dev: takeover ended");
                live = None;
            }
            _ => {}
        }
    }
    if live.is_some() {
        remove(&url_file);
    }
}

/// Writes the URL to `path`, 0600, swapped into place (see `inject::replace_file`).
fn write_private(path: &Path, url: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        // Private whatever the umask, like the rest of `.grexal/`.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)?;
    }
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity(url.len() + 1));
    line.extend_from_slice(url.as_bytes());
    line.push(b'\n');
    crate::inject::replace_file(path, &line)
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            warn!(file = %path.display(), %error, "dev: cannot remove the takeover URL file");
        }
    }
}

/// The agent's text on the developer's terminal: no control characters (no escape
/// sequences from the agent).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_control_characters() {
        assert_eq!(printable("log in\x1b[2J\r\nnow\u{7}"), "log in [2J  now ");
    }

    #[test]
    fn url_file_is_private_and_replaces_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").expect("write");
        let path = dir.path().join("sub/takeover-url");
        std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        write_private(&path, "http://127.0.0.1:1/takeover/x#token=t").expect("write");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "http://127.0.0.1:1/takeover/x#token=t\n"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        remove(&path);
        assert!(!path.exists());
    }
}

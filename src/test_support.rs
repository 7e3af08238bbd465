//! Helpers shared by the unit tests of several modules.

/// A temp dir that is 0755, as the directories above a socket or a lock file usually are
/// (tempfile makes 0700 ones, which only their owner may traverse).
pub(crate) fn traversable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

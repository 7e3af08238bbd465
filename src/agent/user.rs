//! The agent's user: resolved once, before anything is spawned or chowned.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

use super::AgentError;

/// The user the agent runs as and its credential files belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    /// Supplementary groups from the group database (including the primary group), set
    /// on the agent with `setgroups` so it does not keep the daemon's (root's) groups.
    pub groups: Vec<u32>,
}

impl AgentUser {
    /// Looks up `user` in the user database: an all-digit string is a uid (as Docker's
    /// `--user` reads it), anything else a name. The user must exist: we need its
    /// group, home and groups, and a uid without an entry has none of them.
    pub fn resolve(user: &str) -> Result<AgentUser, AgentError> {
        let lookup = if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
            let uid: u32 = user.parse().map_err(|_| AgentError::UnknownUser {
                user: user.to_owned(),
            })?;
            User::from_uid(Uid::from_raw(uid))
        } else {
            User::from_name(user)
        };
        let entry = lookup
            .map_err(|source| AgentError::UserLookup {
                user: user.to_owned(),
                source,
            })?
            .ok_or_else(|| AgentError::UnknownUser {
                user: user.to_owned(),
            })?;
        let groups = supplementary_groups(&entry.name, entry.gid).map_err(|source| {
            AgentError::UserLookup {
                user: user.to_owned(),
                source,
            }
        })?;
        Ok(AgentUser {
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
            name: entry.name,
            home: entry.dir,
            groups,
        })
    }

    /// The owner for the credential files written for this user.
    pub fn owner(&self) -> crate::inject::Owner {
        crate::inject::Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

fn supplementary_groups(name: &str, gid: Gid) -> Result<Vec<u32>, nix::Error> {
    // A name from the user database has no NUL; if it somehow had, fall back to the
    // primary group alone rather than failing the launch.
    let Ok(cname) = CString::new(name) else {
        return Ok(vec![gid.as_raw()]);
    };
    let groups = nix::unistd::getgrouplist(&cname, gid)?;
    Ok(groups.into_iter().map(Gid::as_raw).collect())
}

/// Shorthand for `AgentUser::resolve`.
pub fn resolve(user: &str) -> Result<AgentUser, AgentError> {
    AgentUser::resolve(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_name_and_uid() {
        let by_name = resolve("root").expect("root by name");
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.name, "root");
        assert!(by_name.groups.contains(&0));
        let by_uid = resolve("0").expect("root by uid");
        assert_eq!(by_uid, by_name);
    }

    #[test]
    fn unknown_users_are_errors() {
        for user in [
            "no-such-user-grexal",
            "4000000000",
            "",
            "99999999999999999999",
        ] {
            match resolve(user) {
                Err(AgentError::UnknownUser { user: got }) => assert_eq!(got, user),
                other => panic!("{user:?}: {other:?}"),
            }
        }
    }
}

//! The agent's program, argv and envp, built before the fork for the `execvp` that ends
//! the child's `pre_exec` hook.
//!
//! Why not `Command::env`: std copies every value into its env map, then into a captured
//! env and a `NAME=value` C string for `envp`, and frees all three without zeroizing them,
//! so each env-delivered credential would be left in freed heap memory three times over.
//! Here each `NAME=value\0` is written once, into a buffer of its exact size that is
//! zeroized when it is dropped; the `Command` itself gets an empty environment.
//!
//! The exec is std's own, moved into the hook: `environ` pointed at the agent's envp, then
//! `execvp`. So a bare program name is looked up in the agent's `PATH` (glibc's default
//! path when it has none), as the agent's user, relative entries from its working
//! directory, and a script without `#!` runs under `/bin/sh`, exactly as before; and a
//! failure comes back to `spawn` as the same `io::Error` (ENOENT, EACCES, ...).

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use libc::c_char;
use zeroize::Zeroizing;

use super::{AgentError, EnvValue};

/// Everything the child's `execvp` needs, built in the parent (after the fork nothing may
/// be allocated). Dropping it zeroizes every `NAME=value`.
pub(super) struct Exec {
    program: CString,
    /// Owns what `argv` points into.
    _args: Vec<CString>,
    /// NULL-terminated.
    argv: Vec<*const c_char>,
    /// Owns what `envp` points into: `NAME=value\0`, each in a buffer of its exact size
    /// (never reallocated, so never copied).
    _env: Vec<Zeroizing<Vec<u8>>>,
    /// NULL-terminated.
    envp: Vec<*const c_char>,
}

// SAFETY: the pointers point into heap buffers the struct owns and never changes after
// `new`; moving the struct does not move those buffers, and sharing it only reads them.
unsafe impl Send for Exec {}
// SAFETY: as above: nothing is written through `&Exec`.
unsafe impl Sync for Exec {}

impl Exec {
    /// `argv[0]` is the program. A NUL in an argument is refused as std refuses it (the
    /// same `InvalidInput` error from `spawn`); one in a name or value as `InvalidEnv`.
    pub(super) fn new(argv: &[OsString], env: &[(OsString, EnvValue)]) -> Result<Self, AgentError> {
        let (first, _) = argv.split_first().ok_or(AgentError::EmptyCommand)?;
        let nul = |_| {
            AgentError::from_spawn(
                first.to_string_lossy().into_owned(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "nul byte found in provided data",
                ),
            )
        };
        let program = CString::new(first.as_bytes()).map_err(nul)?;
        let args = argv
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul)?;

        let mut entries = Vec::with_capacity(env.len());
        for (name, value) in env {
            let (name, value) = (name.as_bytes(), value.as_bytes());
            if name.is_empty() || name.contains(&b'=') || name.contains(&0) || value.contains(&0) {
                return Err(AgentError::InvalidEnv {
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            let mut entry = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
            entry.extend_from_slice(name);
            entry.push(b'=');
            entry.extend_from_slice(value);
            entry.push(0);
            entries.push(entry);
        }

        let argv = pointers(args.iter().map(|a| a.as_ptr()));
        let envp = pointers(entries.iter().map(|e| e.as_ptr().cast::<c_char>()));
        Ok(Exec {
            program,
            _args: args,
            argv,
            _env: entries,
            envp,
        })
    }

    /// Replaces the process with the agent; returns only on failure, with its error. For
    /// the forked child's `pre_exec` hook: it allocates nothing (`execvp`'s PATH search in
    /// glibc builds its candidates on the stack) and writes only `environ`, the child's own
    /// copy, restored on failure.
    pub(super) fn exec(&self) -> io::Error {
        // SAFETY: every pointer is into a NUL-terminated buffer `self` owns, and both
        // arrays end in NULL. `environ` is only read by the exec calls in this
        // single-threaded child (std sets it the same way before its own `execvp`).
        unsafe {
            let saved = libc::environ;
            libc::environ = self.envp.as_ptr().cast_mut().cast::<*mut c_char>();
            libc::execvp(self.program.as_ptr(), self.argv.as_ptr());
            let error = io::Error::last_os_error();
            libc::environ = saved;
            error
        }
    }
}

/// The pointers and a NULL after them, in a vector of their exact size.
fn pointers(items: impl ExactSizeIterator<Item = *const c_char>) -> Vec<*const c_char> {
    let mut out = Vec::with_capacity(items.len() + 1);
    out.extend(items);
    out.push(std::ptr::null());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use std::ffi::CStr;

    fn strings(ptrs: &[*const c_char]) -> Vec<String> {
        assert!(ptrs.last().is_some_and(|p| p.is_null()), "NULL-terminated");
        ptrs[..ptrs.len() - 1]
            .iter()
            // SAFETY: each points into a NUL-terminated buffer the `Exec` owns.
            .map(|p| unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn argv_and_envp_are_null_terminated_c_strings() {
        let exec = Exec::new(
            &["sh".into(), "-c".into(), "exit 3".into()],
            &[
                ("PATH".into(), EnvValue::Plain("/usr/bin:/bin".into())),
                (
                    "API_KEY".into(),
                    EnvValue::Secret(SecretString::from("k=v")),
                ),
                ("EMPTY".into(), EnvValue::Plain("".into())),
            ],
        )
        .expect("exec");
        assert_eq!(exec.program.as_bytes(), b"sh");
        assert_eq!(strings(&exec.argv), ["sh", "-c", "exit 3"]);
        assert_eq!(
            strings(&exec.envp),
            ["PATH=/usr/bin:/bin", "API_KEY=k=v", "EMPTY="]
        );
        // Each entry sits in a buffer of its exact size: nothing was reallocated.
        assert!(exec._env.iter().all(|e| e.len() == e.capacity()));
    }

    #[test]
    fn unusable_input_is_refused() {
        let env = |name: &str, value: &str| vec![(name.into(), EnvValue::Plain(value.into()))];
        for (name, value) in [("", "v"), ("A=B", "v"), ("A\0B", "v"), ("OK", "a\0b")] {
            match Exec::new(&["true".into()], &env(name, value)) {
                Err(AgentError::InvalidEnv { name: got }) => assert_eq!(got, name),
                other => panic!("{name:?}: {:?}", other.err()),
            }
        }
        match Exec::new(&["tr\0ue".into()], &[]) {
            Err(AgentError::Spawn { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput)
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(Exec::new(&[], &[]), Err(AgentError::EmptyCommand)));
    }
}

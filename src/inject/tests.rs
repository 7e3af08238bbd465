//! Unit tests of the injector internals: temporary names, rollback of a swap, the root's
//! lock.

use super::*;

#[test]
fn temp_names() {
    assert_eq!(
        temp_name("open-ai", 12, 0xab),
        OsString::from(".open-ai.v12.00000000000000ab.tmp")
    );
    let cases = [
        (".db.v3.0123456789abcdef.tmp", true),
        (".db.v3.0123456789ABCDEF.tmp", false),
        (".db.v3.0123456789abcde.tmp", false),
        (".db.0123456789abcdef.tmp", false),
        (".a.b.v3.0123456789abcdef.tmp", false),
        // The shape before the nonce: a leftover of an older daemon is ours as well.
        (".db.v3.tmp", true),
        (".open-ai.v0.tmp", true),
        (".a.b.v3.tmp", false),
        (".db.v.tmp", false),
        (".db.vx.tmp", false),
        ("db.v3.tmp", false),
        (".db.v3", false),
        (".agent.env.tmp", false),
        (".-x.v1.tmp", false),
        ("db", false),
    ];
    for (name, want) in cases {
        assert_eq!(is_temp_name(OsStr::new(name)), want, "{name}");
    }
}

#[test]
fn roll_back_restores_the_old_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let inj = Injector::new(Layout {
        root: root.clone(),
        owner: None,
        env_file: None,
    })
    .expect("new");
    let old = b"old".as_slice();
    let new = b"new".as_slice();
    // Version 1 in place, then version 2 prepared and swapped, then rolled back.
    let p1 = inj
        .prepare_dir("c", &[(OsString::from("f"), old)], 1)
        .expect("prepare v1");
    fsops::rename_noreplace(inj.root_fd(), &p1.temp, OsStr::new("c")).expect("swap v1");
    let p2 = inj
        .prepare_dir("c", &[(OsString::from("f"), new)], 2)
        .expect("prepare v2");
    assert!(p2.has_old);
    fsops::rename_exchange(inj.root_fd(), &p2.temp, OsStr::new("c")).expect("swap v2");
    assert_eq!(std::fs::read(root.join("c/f")).expect("read"), b"new");
    // A fresh directory is moved back to its temporary name.
    let p3 = inj
        .prepare_dir("d", &[(OsString::from("g"), new)], 2)
        .expect("prepare d");
    fsops::rename_noreplace(inj.root_fd(), &p3.temp, OsStr::new("d")).expect("swap d");
    inj.roll_back(&[&p2, &p3]);
    inj.discard(&[p2, p3]);
    assert_eq!(std::fs::read(root.join("c/f")).expect("read"), b"old");
    assert!(!root.join("d").exists());
    let names: Vec<_> = std::fs::read_dir(&root)
        .expect("root")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(names, vec![OsString::from("c")]);
}

/// A second injector on a root another one holds (another daemon, in a real run) is
/// refused before it touches anything in it: not even a stale temporary directory (the
/// first one's install in progress, for all it knows) is removed.
#[test]
fn a_root_another_injector_holds_is_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = || Layout {
        root: tmp.path().join("root"),
        owner: None,
        env_file: None,
    };
    let first = Injector::new(layout()).expect("first");
    let in_progress = tmp.path().join("root/.c.v2.tmp");
    std::fs::create_dir(&in_progress).expect("temp dir");
    assert!(matches!(
        Injector::new(layout()),
        Err(InjectError::InUse { .. })
    ));
    assert!(in_progress.exists(), "the second injector cleaned the root");
    drop(first);
    Injector::new(layout()).expect("once the first is gone");
    assert!(!in_progress.exists());
}

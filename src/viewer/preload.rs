//! The noVNC modules the viewer will import, listed in its page as
//! `<link rel="modulepreload">`. Without the list the browser discovers the modules one
//! level of imports at a time (the page, our script, `rfb.js`, then three more levels in
//! noVNC 1.3): a round trip to the sandbox per level, on top of HTTP/1.1's six connections.
//! With it every module is requested as soon as the page is parsed.
//!
//! The list is read from the installed noVNC (Debian's 1.3 and npm's 1.7 differ) with a
//! lexical scan, not a JavaScript parser. A false candidate costs nothing: only relative
//! specifiers naming a `.js` file that exists under the web root (read with the same
//! confinement as a served file) are listed, and a listed module that turns out unused
//! costs one request.

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use super::novnc;

/// The module the viewer imports; the graph is walked from it.
pub const ENTRY: &str = "core/rfb.js";
/// Most modules listed (noVNC 1.3's `rfb.js` pulls in 41 in all).
pub const MAX_MODULES: usize = 128;
/// Longest import specifier followed.
const MAX_SPECIFIER_BYTES: usize = 256;
/// How far past `import`/`export` a `from '…'` is looked for.
const MAX_STATEMENT_BYTES: usize = 4096;

/// The specifiers of a module's static imports and re-exports, in order: `import … from
/// 'x'`, `import 'x'`, `export … from 'x'`. A dynamic `import('x')` is not followed: it
/// loads on demand.
pub fn import_specifiers(source: &str) -> Vec<&str> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(keyword) = next_keyword(bytes, at) {
        let after = keyword + "import".len(); // "import" and "export" are the same length
        at = after;
        let rest = skip_space(bytes, after);
        if bytes.get(rest).is_some_and(|b| *b == b'\'' || *b == b'"') {
            // `import 'x'`; on `export 'x'` (not JavaScript) the file check filters it out.
            if let Some((specifier, end)) = quoted(source, rest) {
                found.push(specifier);
                at = end;
            }
            continue;
        }
        if bytes.get(rest) == Some(&b'(') {
            continue;
        }
        // The statement's `from 'x'`, before its end.
        let limit = (after + MAX_STATEMENT_BYTES).min(bytes.len());
        let mut i = after;
        while i < limit && bytes[i] != b';' {
            if bytes[i..].starts_with(b"from") && word_boundary(bytes, i, i + 4) {
                let q = skip_space(bytes, i + 4);
                if let Some((specifier, end)) = quoted(source, q) {
                    found.push(specifier);
                    at = end;
                    break;
                }
            }
            if keyword_at(bytes, i) {
                break;
            }
            i += 1;
        }
    }
    found
}

/// The next `import` or `export` at or after `from` that stands as a word (not part of a
/// longer name, nor a property like `x.import`).
fn next_keyword(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&i| keyword_at(bytes, i))
}

fn keyword_at(bytes: &[u8], i: usize) -> bool {
    bytes
        .get(i..i + 6)
        .is_some_and(|w| w == b"import" || w == b"export")
        && word_boundary(bytes, i, i + 6)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn word_boundary(bytes: &[u8], start: usize, end: usize) -> bool {
    let before = start
        .checked_sub(1)
        .map(|i| bytes[i])
        .is_some_and(|b| is_name_byte(b) || b == b'.');
    let after = bytes.get(end).is_some_and(|b| is_name_byte(*b));
    !before && !after
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The string literal starting at `at` (a quote), and the index after it. Literals holding
/// a quote of either kind, a line break or an escape are not taken: no module path has them.
fn quoted(source: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = source.as_bytes();
    let quote = *bytes.get(at)?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let start = at + 1;
    let len = bytes[start..]
        .iter()
        .take(MAX_SPECIFIER_BYTES + 1)
        .position(|b| matches!(b, b'\'' | b'"' | b'\n' | b'\\'))?;
    if len > MAX_SPECIFIER_BYTES || bytes[start + len] != quote {
        return None;
    }
    Some((&source[start..start + len], start + len + 1))
}

/// `specifier` joined to the directory of `importer` (both relative to the web root),
/// lexically. `None` for a bare specifier (`pako`), an absolute or URL one, and a path that
/// leaves the root.
pub fn resolve(importer: &str, specifier: &str) -> Option<String> {
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        return None;
    }
    let mut parts: Vec<&str> = importer.split('/').collect();
    parts.pop(); // the importer's own name
    for part in specifier.split('/') {
        match part {
            "." => {}
            ".." => {
                parts.pop()?;
            }
            "" => return None,
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

/// Whether `path` can go into an `href` as it is: plain characters only.
fn plain(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

/// The modules reachable from [`ENTRY`] under `root`, breadth first, the entry first; at
/// most [`MAX_MODULES`]. Empty when the entry cannot be read.
pub fn module_graph(root: &Path, max_file_bytes: u64) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue = VecDeque::from([ENTRY.to_owned()]);
    let mut modules = Vec::new();
    while let Some(path) = queue.pop_front() {
        if modules.len() >= MAX_MODULES {
            break;
        }
        if !seen.insert(path.clone()) || !path.ends_with(".js") || !plain(&path) {
            continue;
        }
        let Some(rel) = novnc::safe_relative(&path) else {
            continue;
        };
        let Ok(bytes) = novnc::read_confined(root, &rel, max_file_bytes) else {
            continue;
        };
        let Ok(source) = std::str::from_utf8(&bytes) else {
            continue;
        };
        queue.extend(
            import_specifiers(source)
                .into_iter()
                .filter_map(|s| resolve(&path, s)),
        );
        modules.push(path);
    }
    modules
}

/// The `<link>` lines for `modules`, relative to the page (`/takeover/{id}`).
pub fn links(modules: &[String]) -> String {
    modules
        .iter()
        .map(|m| format!("<link rel=\"modulepreload\" href=\"novnc/{m}\">\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn static_imports_and_re_exports_are_found_dynamic_ones_not() {
        let source = r#"
import * as Log from './util/logging.js';
import { a,
         b } from "./util/events.js";
import Default, { c as d } from './display.js'
import './side-effect.js';
import{e}from'./tight.js';
export * from '../vendor/pako/lib/zlib/inflate.js';
export { f } from "./f.js";
export default class RFB { from() { return 1; } }
const later = import('./lazy.js');
x.import('./property.js');
reimport('./not-a-keyword.js');
const s = "export";
export function g() { return h; }
import thing from 'bare-package';
"#;
        assert_eq!(
            import_specifiers(source),
            vec![
                "./util/logging.js",
                "./util/events.js",
                "./display.js",
                "./side-effect.js",
                "./tight.js",
                "../vendor/pako/lib/zlib/inflate.js",
                "./f.js",
                "bare-package",
            ]
        );
    }

    #[test]
    fn a_statement_without_from_does_not_swallow_the_next() {
        // The first `import` has no `from` before its `;`; the next import is still found.
        let source =
            "import x;\nimport y from './y.js';\nexport const z = 1; import w from './w.js';";
        assert_eq!(import_specifiers(source), vec!["./y.js", "./w.js"]);
        // A literal holding the other quote is not a specifier (found by the property test).
        assert_eq!(import_specifiers("import\"'\""), Vec::<&str>::new());
        assert_eq!(
            import_specifiers("import x from './a\"b.js'"),
            Vec::<&str>::new()
        );
        assert_eq!(
            import_specifiers("export const a = 1\nimport b from './b.js'"),
            vec!["./b.js"]
        );
    }

    #[test]
    fn specifiers_resolve_lexically_inside_the_root() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("core/rfb.js", "./util/int.js", Some("core/util/int.js")),
            (
                "core/inflator.js",
                "../vendor/pako/lib/zlib/inflate.js",
                Some("vendor/pako/lib/zlib/inflate.js"),
            ),
            (
                "vendor/pako/lib/zlib/inflate.js",
                "../utils/common.js",
                Some("vendor/pako/lib/utils/common.js"),
            ),
            ("core/rfb.js", "./././a.js", Some("core/a.js")),
            ("core/rfb.js", "../../etc/passwd.js", None),
            ("rfb.js", "../x.js", None),
            ("core/rfb.js", "pako", None),
            ("core/rfb.js", "/abs.js", None),
            ("core/rfb.js", "https://example.com/x.js", None),
            ("core/rfb.js", ".//x.js", None),
        ];
        for (importer, specifier, want) in cases {
            assert_eq!(
                resolve(importer, specifier).as_deref(),
                *want,
                "{importer} {specifier}"
            );
        }
    }

    #[test]
    fn the_graph_is_walked_once_confined_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let w = |path: &str, body: &str| {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        };
        w(
            "core/rfb.js",
            "import a from './a.js';\nimport m from './missing.js';\n\
             import o from '../../outside.js';\nimport c from './style.css';\n\
             import q from './q\"uote.js';\nimport s from './link.js';",
        );
        // A cycle back to the entry, and a second path to the same module.
        w(
            "core/a.js",
            "import r from './rfb.js'; import b from './b.js';",
        );
        w("core/b.js", "import a from './a.js';");
        w("core/style.css", "body {}");
        w("outside.js", "export default 1;");
        std::fs::write(dir.path().join("secret.js"), "export default 2;").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.js"), root.join("core/link.js"))
            .expect("symlink");
        assert_eq!(
            module_graph(&root, 1 << 20),
            vec!["core/rfb.js", "core/a.js", "core/b.js"]
        );
        // No entry, no list.
        assert!(module_graph(&dir.path().join("none"), 1 << 20).is_empty());

        // A chain longer than the limit is cut at the limit.
        let chain = tempfile::tempdir().expect("tempdir");
        let c = |i: usize| {
            if i == 0 {
                ENTRY.to_owned()
            } else {
                format!("core/m{i}.js")
            }
        };
        for i in 0..MAX_MODULES + 10 {
            let p = chain.path().join(c(i));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, format!("import x from './m{}.js';", i + 1)).expect("write");
        }
        assert_eq!(module_graph(chain.path(), 1 << 20).len(), MAX_MODULES);
    }

    #[test]
    fn links_point_below_the_page() {
        assert_eq!(
            links(&["core/rfb.js".into()]),
            "<link rel=\"modulepreload\" href=\"novnc/core/rfb.js\">\n"
        );
    }

    proptest! {
        #[test]
        fn scanning_never_panics_and_finds_only_quoted_text(source in "(import|export|from|[ '\";(){}.a-z/\n])*") {
            for s in import_specifiers(&source) {
                prop_assert!(s.len() <= MAX_SPECIFIER_BYTES);
                prop_assert!(!s.contains('\'') && !s.contains('"') && !s.contains('\n'));
            }
        }
    }
}

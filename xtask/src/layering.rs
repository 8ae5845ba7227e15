//! Two rules of procmond's structure, checked on its source by tests (run
//! by `cargo xtask test` like every workspace test):
//!
//! * no cycle between the library's top-level modules (a module that names
//!   `crate::other` depends on it; test files are left out);
//! * `cfg(target_os …)` only under `platform/`, where the operating system
//!   is chosen;
//! * no function longer than 80 lines outside tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level paths that are another module's re-export (lib.rs).
const REEXPORTS: [(&str, &str); 4] = [
    ("clock", "platform"),
    ("privileges", "platform"),
    ("sources", "platform"),
    ("sys", "platform"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs") || name == "proptests.rs"
}

/// The code of a file without its inline `mod tests`.
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Which top-level module depends on which, from `crate::name` paths.
pub fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut tops = BTreeMap::new();
    for entry in std::fs::read_dir(src).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, "lib" | "main" | "commands") || name.is_empty() {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        } else {
            continue;
        }
        tops.insert(name.to_string(), files);
    }
    let canonical = |m: &str| {
        REEXPORTS
            .iter()
            .find(|(alias, _)| *alias == m)
            .map_or(m.to_string(), |(_, to)| (*to).to_string())
    };
    let mut deps = BTreeMap::new();
    for (module, files) in &tops {
        let mut uses = BTreeSet::new();
        for file in files.iter().filter(|f| !is_test_file(f)) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for part in non_test_code(&text).split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let name = canonical(&name);
                if name != *module && tops.contains_key(&name) {
                    uses.insert(name);
                }
            }
        }
        deps.insert(module.clone(), uses);
    }
    deps
}

/// Every pair of modules that reach each other, as `a -> … -> a` paths.
pub fn cycles(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &str, to: &str| -> Option<Vec<String>> {
        let mut queue = vec![vec![from.to_string()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = queue.pop() {
            let last = path.last().cloned().unwrap_or_default();
            for next in deps.get(&last).into_iter().flatten() {
                if next == to {
                    let mut found = path.clone();
                    found.push(next.clone());
                    return Some(found);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    queue.push(longer);
                }
            }
        }
        None
    };
    deps.keys()
        .filter_map(|m| reaches(m, m).map(|p| p.join(" -> ")))
        .collect()
}

/// Files under `src` outside `platform/` that mention `cfg(target_os`.
pub fn target_os_outside_platform(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let platform = src.join("platform");
    files
        .into_iter()
        .filter(|f| !f.starts_with(&platform))
        .filter(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| t.contains(concat!("cfg(target", "_os")))
        })
        .map(|f| f.display().to_string())
        .collect()
}

/// The lines of `text` before its inline `mod tests`.
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// `file:function (lines)` for every function over `max` lines (from its
/// `fn` line to the brace that closes it at the same indentation).
pub fn long_functions(src: &Path, max: usize) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines = code_lines(&text);
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = line.len() - body.len();
            let words: Vec<&str> = body.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| *w == "fn") else {
                continue;
            };
            let qualifiers = [
                "pub",
                "pub(crate)",
                "pub(super)",
                "async",
                "const",
                "unsafe",
            ];
            if !words[..at].iter().all(|w| qualifiers.contains(w)) {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
                let len = end + 2;
                if len > max {
                    let name = words.get(at + 1).unwrap_or(&"?");
                    let name = name.split(['(', '<']).next().unwrap_or(name);
                    found.push(format!("{}:{name} ({len} lines)", file.display()));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procmond_src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../procmond/src")
    }

    #[test]
    fn procmond_has_no_cycle_between_top_level_modules() {
        let deps = dependencies(&procmond_src());
        assert!(deps.contains_key("platform") && deps.contains_key("sensor"));
        assert_eq!(cycles(&deps), Vec::<String>::new());
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let dir = std::env::temp_dir().join(format!("xtask-layering-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b")).expect("dir");
        std::fs::write(dir.join("a.rs"), "use crate::b::x;").expect("a");
        std::fs::write(dir.join("b/mod.rs"), "fn f() { crate::a::y(); }").expect("b");
        std::fs::write(dir.join("c.rs"), "use crate::a::z;").expect("c");
        let found = cycles(&dependencies(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, vec!["a -> b -> a", "b -> a -> b"]);
    }

    #[test]
    fn the_operating_system_is_chosen_only_under_platform() {
        assert_eq!(
            target_os_outside_platform(&procmond_src()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn no_function_is_longer_than_80_lines() {
        assert_eq!(long_functions(&procmond_src(), 80), Vec::<String>::new());
    }

    #[test]
    fn a_long_function_is_named() {
        let dir = std::env::temp_dir().join(format!("xtask-long-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let body = "    let x = 1;\n".repeat(5);
        let text = format!("pub fn short() {{\n}}\n\nasync fn long() {{\n{body}}}\n");
        std::fs::write(dir.join("a.rs"), text).expect("a");
        let found = long_functions(&dir, 5);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("a.rs:long (7 lines)"), "{found:?}");
    }
}

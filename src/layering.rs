//! The module layers, checked: the one place they are written down (the crate docs and
//! docs/design.md point here). At every depth, a module may use modules of its own layer
//! or of layers below it, never above; a submodule never uses its parent's own items
//! (`use super::Item` from a child is an upward arrow); and no two modules of one parent
//! use each other, even through others (no cycle).
//!
//! Uses are the `crate::` and `super::` paths of every file under `src/`, read whole
//! (only `#[cfg(test)] mod tests` blocks are left out: test code may use what it tests
//! from anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crate's top-level modules, bottom to top.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaf types and settings",
        &[
            "activity",
            "allocator",
            "body",
            "cache_status",
            "clock",
            "config",
            "error",
            "logging",
            "metrics",
            "object",
            "pattern",
            "peer",
            "s3",
            "sendfile",
            "tls",
        ],
    ),
    (
        "pure logic",
        &["auth", "config_check", "cors", "purge", "source"],
    ),
    (
        "I/O",
        &[
            "cache", "origin", "presign", "request", "server", "store", "variant",
        ],
    ),
    ("request path", &["admin", "demo", "proxy"]),
    ("wiring and commands", &["app", "cli", "onboard", "systemd"]),
];

/// The submodules of each module that has some, bottom to top. The module's own file
/// (`mod.rs`) is above all of them.
const INNER: &[(&str, &[&[&str]])] = &[
    (
        "cache",
        &[
            &["block"],
            &["budget", "freshness", "pieces"],
            &["entry"],
            &["disk"],
            &["tiers"],
            &["fill"],
            &["lookup"],
            &["variants"],
        ],
    ),
    ("cache::disk", &[&["file", "health"], &["landing", "send"]]),
    ("cache::fill", &[&["shared"], &["inflight"]]),
    (
        "origin",
        &[
            &["credentials", "exchange", "pool", "slots"],
            &["error", "fetched"],
            &["azure"],
        ],
    ),
    (
        "proxy",
        &[&["conditional", "route"], &["access", "memo", "respond"]],
    ),
    ("server", &[&["admission", "workers"], &["connection"]]),
    ("variant", &[&["params", "samples"], &["render"], &["pool"]]),
];

/// The layer table of the children of `parent` (`[]`: the crate's).
fn table(parent: &[String]) -> Option<Vec<Vec<&'static str>>> {
    if parent.is_empty() {
        return Some(LAYERS.iter().map(|(_, ms)| ms.to_vec()).collect());
    }
    let name = parent.join("::");
    INNER
        .iter()
        .find(|(p, _)| *p == name)
        .map(|(_, layers)| layers.iter().map(|l| l.to_vec()).collect())
}

fn layer_in(table: &[Vec<&str>], module: &str) -> Option<usize> {
    table.iter().position(|ms| ms.contains(&module))
}

/// A file's module path: `src/cache/fill/mod.rs` → `cache::fill`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// `text` without its `#[cfg(test)] mod tests { … }` blocks and `//` comment lines.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let is_mod = after[..open].contains("mod ");
        if !is_mod {
            // A test-only item: leave it out up to the end of its line.
            rest = after.find('\n').map_or("", |n| &after[n..]);
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (j, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The module paths named by `path` (what follows `crate::` or `super::`), relative to
/// `base`: `a::b::Item` → `base::a::b`; a group `{a::X, b}` → one path each.
fn paths(base: &[String], path: &str, out: &mut Vec<Vec<String>>) {
    let mut current = base.to_vec();
    let mut rest = path;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let item = group[start..i].trim();
                        if item == "self" {
                            out.push(current.clone());
                        } else if !item.is_empty() {
                            paths(&current, item, out);
                        }
                        start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !is_module_name(&name) || name == "self" {
            out.push(current);
            return;
        }
        current.push(name.clone());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(current);
                return;
            }
        }
    }
}

/// Every `.rs` file below `src/`.
fn source_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Every (module, module it uses) of `src/`.
fn uses() -> Vec<(Vec<String>, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for path in source_files() {
        let rel = path.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        let top = module[0].as_str();
        if matches!(top, "lib" | "main" | "layering") || top.ends_with("_tests") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for (keyword, base) in [
            ("crate::", Vec::new()),
            ("super::", module[..module.len() - 1].to_vec()),
        ] {
            for (i, _) in code.match_indices(keyword) {
                let before = code[..i].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let mut found = Vec::new();
                paths(&base, &code[i + keyword.len()..], &mut found);
                for to in found {
                    out.push((module.clone(), to));
                }
            }
        }
    }
    out
}

/// Each use, as the arrow between two children of one parent: `(parent, from, to)`;
/// `to` is `None` when the use names the parent itself (a child using its parent).
type Arrow = (Vec<String>, String, Option<String>);

fn arrows() -> Vec<Arrow> {
    let mut out = Vec::new();
    for (from, to) in uses() {
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() {
            continue; // a module using its own children: downward
        }
        out.push((
            from[..common].to_vec(),
            from[common].clone(),
            to.get(common).cloned(),
        ));
    }
    out
}

fn name(parent: &[String], child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{}::{child}", parent.join("::"))
    }
}

#[test]
fn modules_use_only_their_layer_or_below() {
    let mut wrong = BTreeSet::new();
    for (parent, from, to) in arrows() {
        let Some(to) = to else {
            wrong.insert(format!(
                "{} uses an item of its parent {} (an upward arrow: move the item down)",
                name(&parent, &from),
                name(&parent, "").trim_end_matches("::")
            ));
            continue;
        };
        let Some(table) = table(&parent) else {
            wrong.insert(format!(
                "{} has no layer table in src/layering.rs",
                parent.join("::")
            ));
            continue;
        };
        match (layer_in(&table, &from), layer_in(&table, &to)) {
            (Some(a), Some(b)) if b <= a => {}
            (Some(_), Some(_)) => {
                wrong.insert(format!(
                    "{} uses {}, a layer above it",
                    name(&parent, &from),
                    name(&parent, &to)
                ));
            }
            (None, _) => {
                wrong.insert(format!(
                    "{} is in no layer of src/layering.rs",
                    name(&parent, &from)
                ));
            }
            (_, None) => {
                wrong.insert(format!(
                    "{} uses {}, which is in no layer (an item of the parent?)",
                    name(&parent, &from),
                    name(&parent, &to)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn every_module_is_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for path in source_files() {
        let module = module_of(path.strip_prefix(&src).unwrap());
        let (parent, own) = module.split_at(module.len() - 1);
        let own = own[0].as_str();
        if parent.is_empty()
            && (matches!(own, "lib" | "main" | "layering") || own.ends_with("_tests"))
        {
            continue;
        }
        match table(parent) {
            Some(t) if layer_in(&t, own).is_some() => {}
            _ => missing.push(name(parent, own)),
        }
    }
    assert!(missing.is_empty(), "not in src/layering.rs: {missing:?}");
}

#[test]
fn no_module_cycle() {
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (parent, from, to) in arrows() {
        if let Some(to) = to {
            graphs
                .entry(parent)
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
    }
    fn visit(
        m: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for u in uses.get(m).into_iter().flatten() {
            if let Some(c) = visit(u, uses, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    for (parent, uses) in &graphs {
        let mut done = BTreeSet::new();
        for m in uses.keys() {
            let cycle = visit(m, uses, &mut Vec::new(), &mut done);
            assert!(
                cycle.is_none(),
                "module cycle in {}: {}",
                if parent.is_empty() {
                    "the crate".to_string()
                } else {
                    parent.join("::")
                },
                cycle.unwrap().join(" → ")
            );
        }
    }
}

/// The checker itself: paths, groups and `super::` resolve as the compiler resolves
/// them, and test modules are left out.
#[test]
fn paths_resolve() {
    let base = vec!["cache".to_string(), "fill".to_string()];
    let mut out = Vec::new();
    paths(
        &base,
        "{shared::{Fill, Head}, inflight::Leader, self};",
        &mut out,
    );
    let mut got: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    got.dedup();
    assert_eq!(
        got,
        [
            "cache::fill::shared",
            "cache::fill::inflight",
            "cache::fill"
        ]
    );
    let mut out = Vec::new();
    paths(&[], "cache::entry::digest_hex(x)", &mut out);
    assert_eq!(out, [vec!["cache", "entry", "digest_hex"]]);
    let code = code_of("use a;\n#[cfg(test)]\nmod tests {\n use crate::x; { }\n}\nuse b;\n");
    assert!(
        !code.contains("crate::x") && code.contains("use b;"),
        "{code}"
    );
}

//! The module layers of `lib.rs`, checked: a module may use modules of its own layer or
//! of layers below it, never above; and no two modules use each other (no cycle). Reads
//! the `crate::` paths in `src/` (test modules excluded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top; every module of `src/` is in exactly one layer.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaf types and settings",
        &[
            "activity",
            "body",
            "cache_status",
            "config",
            "error",
            "logging",
            "metrics",
            "object",
            "pattern",
            "peer",
            "s3",
            "tls",
        ],
    ),
    (
        "pure logic",
        &["auth", "config_check", "cors", "purge", "source"],
    ),
    (
        "I/O",
        &["cache", "origin", "presign", "server", "store", "variant"],
    ),
    ("request path", &["admin", "demo", "proxy"]),
    ("wiring and commands", &["app", "cli", "onboard", "systemd"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// module → the modules it uses, from every file under `src/`.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(top.as_str(), "lib" | "main" | "layering") || top.ends_with("_tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let used = out.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != top {
                    used.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn modules_use_only_their_layer_or_below() {
    let uses = uses();
    let mut wrong = Vec::new();
    for (module, used) in &uses {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer of src/layering.rs"));
            continue;
        };
        for u in used {
            match layer_of(u) {
                Some(l) if l <= own => {}
                Some(l) => wrong.push(format!(
                    "{module} ({}) uses {u} ({})",
                    LAYERS[own].0, LAYERS[l].0
                )),
                None => wrong.push(format!("{module} uses {u}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_module_cycle() {
    let uses = uses();
    // Depth-first search for a back edge.
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
    let mut done = BTreeSet::new();
    for m in uses.keys() {
        let cycle = visit(m, &uses, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

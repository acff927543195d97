//! Which top-level modules of zkconn-user import which, from the source text: the data
//! flows one way (probe → source → engine → model → views), so no module may import one that
//! imports it back. Checked by a unit test of `cargo xtask test`.
//!
//! Owns: reading `crate::` paths outside comments and test modules. Must not: build
//! anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Module → the modules its non-test code names through `crate::`.
pub fn graph(src: &Path) -> std::io::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_owned();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let deps = graph.entry(top.clone()).or_default();
            for module in imports(&text) {
                if module != top {
                    deps.insert(module);
                }
            }
        }
    }
    Ok(graph)
}

/// The modules named by `crate::NAME` or inside `use crate::{...}` in `text`, before its
/// test module and outside comments.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: names at brace depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() && name != "self" {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Every circle of imports: the strongly connected components of more than one module.
pub fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    fn visit<'a>(
        v: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        if !seen.insert(v) {
            return;
        }
        for w in edges.get(v).into_iter().flatten() {
            visit(w, edges, seen, out);
        }
        out.push(v);
    }
    let mut forward: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (v, ws) in graph {
        for w in ws.iter().filter(|w| graph.contains_key(*w)) {
            forward.entry(v).or_default().push(w);
            reverse.entry(w).or_default().push(v);
        }
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for v in graph.keys() {
        visit(v, &forward, &mut seen, &mut order);
    }
    let mut seen = BTreeSet::new();
    let mut circles = Vec::new();
    for v in order.into_iter().rev() {
        let mut component = Vec::new();
        visit(v, &reverse, &mut seen, &mut component);
        if component.len() > 1 {
            let mut names: Vec<String> = component.into_iter().map(str::to_owned).collect();
            names.sort();
            circles.push(names);
        }
    }
    circles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zkconn_user_modules_import_in_no_circle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../zkconn-user/src");
        let graph = graph(&src).unwrap();
        assert!(graph.contains_key("engine") && graph["engine"].contains("model"));
        assert_eq!(circles(&graph), Vec::<Vec<String>>::new(), "{graph:#?}");
        // The document model imports neither the loader nor the judges.
        for banned in ["probe", "source", "alarm", "history", "trend", "engine"] {
            assert!(!graph["model"].contains(banned), "model imports {banned}");
        }
    }

    #[test]
    fn a_circle_is_found_and_groups_and_comments_are_read_right() {
        let text = "use crate::{\n    a::{self, X},\n    b,\n};\n// crate::c\nfn f() { crate::d::g(); }\n#[cfg(test)]\nmod tests {\n    use crate::e;\n}\n";
        assert_eq!(
            imports(text).into_iter().collect::<Vec<_>>(),
            ["a", "b", "d"]
        );
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(circles(&g), [["a", "b", "c"]]);
    }
}

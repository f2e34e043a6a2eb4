//! The import direction between the modules of `src/`, as `docs/architecture.md` states it in
//! "What may import what": modules stand in layers, and a module may import only modules of a
//! lower layer. This test reads that table and every `src/**/*.rs` file, so a new back-edge (an
//! import sideways or up, the start of a cycle) fails CI, and the document cannot drift from
//! the code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/architecture.md";
const SECTION: &str = "## What may import what";

#[test]
fn imports_point_only_to_lower_layers() {
    let layers = layers_from_doc();
    let mut wrong = Vec::new();
    for (file, module, imported) in imports() {
        let Some(&layer) = layers.get(&module) else {
            continue; // reported by `every_module_has_a_layer`
        };
        for target in imported {
            match layers.get(&target) {
                Some(&target_layer) if target_layer < layer => {}
                Some(&target_layer) => wrong.push(format!(
                    "{file}: `{module}` (layer {layer}) imports `{target}` (layer {target_layer})"
                )),
                None => {} // a crate-root item such as `crate::lock`
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point sideways or up (see {DOC}, \"What may import what\": move the \
         shared piece down rather than raising a layer):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_has_a_layer() {
    let layers = layers_from_doc();
    let modules = top_modules();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    let stale: Vec<&String> = layers.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "modules missing from the table in {DOC}, \"What may import what\" (put each in the \
         lowest layer above everything it imports): {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "names in the table in {DOC} that are not modules of src/: {stale:?}"
    );
}

/// The graph itself, whatever the table says: Kahn's algorithm peels off modules that import
/// nothing left; what remains is on a cycle. With `IMPORT_GRAPH=FILE` it also draws the graph
/// (Graphviz DOT) into FILE: `IMPORT_GRAPH=/tmp/g.dot cargo test --test architecture`.
#[test]
fn the_import_graph_has_no_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in top_modules() {
        graph.entry(module).or_default();
    }
    for (_, module, imported) in imports() {
        let known = imported
            .into_iter()
            .filter(|target| graph.contains_key(target));
        let known: Vec<String> = known.collect();
        graph.entry(module).or_default().extend(known);
    }
    if let Some(path) = std::env::var_os("IMPORT_GRAPH") {
        fs::write(&path, dot(&graph)).expect("write the IMPORT_GRAPH file");
    }
    let mut left = graph.clone();
    while let Some(leaf) = left
        .iter()
        .find(|(_, imported)| imported.is_empty())
        .map(|(module, _)| module.clone())
    {
        left.remove(&leaf);
        for imported in left.values_mut() {
            imported.remove(&leaf);
        }
    }
    assert!(
        left.is_empty(),
        "import cycles among these modules: {left:?}"
    );
}

fn dot(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut text = String::from("digraph imports {\n    rankdir=BT;\n");
    for (module, imported) in graph {
        text.push_str(&format!("    \"{module}\";\n"));
        for target in imported {
            text.push_str(&format!("    \"{module}\" -> \"{target}\";\n"));
        }
    }
    text.push_str("}\n");
    text
}

/// One convention for module folders: `NAME.rs` beside `NAME/`, never `NAME/mod.rs` (a file
/// list of a dozen `mod.rs` tabs tells a reader nothing).
#[test]
fn module_folders_have_no_mod_rs() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mod_rs: Vec<&PathBuf> = files
        .iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "mod.rs"))
        .collect();
    assert!(
        mod_rs.is_empty(),
        "move each to NAME.rs beside its folder (git mv src/x/mod.rs src/x.rs): {mod_rs:?}"
    );
}

/// The scanner must see every form an import takes, or a back-edge could hide in one (the
/// cycles this test was written after: `events` took `Stage` from `report`, which builds on
/// `events`; `observe` took `Snapshot` from `progress`, which feeds `observe`).
#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let text = "use crate::{events::Event, report::{self, Counts}};\n\
                // use crate::app; a comment is not an import\n\
                let s = crate::progress::Snapshot::default();\n\
                use crate::{\n    tally,\n    units::human_bytes,\n};\n";
    let expected: BTreeSet<String> = ["events", "progress", "report", "tally", "units"]
        .map(String::from)
        .into();
    assert_eq!(imported_modules(text), expected);
}

/// The layer of each module, from the table in the architecture chapter: its first column is
/// the layer's number, its second the modules in backticks.
fn layers_from_doc() -> BTreeMap<String, u32> {
    let text = fs::read_to_string(root().join(DOC)).expect("read docs/architecture.md");
    let start = text
        .find(SECTION)
        .unwrap_or_else(|| panic!("{DOC} has no section \"{SECTION}\""));
    let section = &text[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut layers = BTreeMap::new();
    for row in section.lines().filter(|line| line.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(layer) = cells[1].parse::<u32>() else {
            continue; // the header and the separator
        };
        for module in cells[2].split(',') {
            let module = module.trim().trim_matches('`').to_string();
            assert!(
                layers.insert(module.clone(), layer).is_none(),
                "`{module}` is in two layers in {DOC}"
            );
        }
    }
    assert!(
        !layers.is_empty(),
        "no layer table under \"{SECTION}\" in {DOC}"
    );
    layers
}

/// The crate's top modules: `src/NAME.rs` and `src/NAME/`, less `lib` and `main`.
fn top_modules() -> BTreeSet<String> {
    let entries = fs::read_dir(root().join("src")).expect("read src/");
    entries
        .map(|entry| entry.expect("read src/").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            match name.strip_suffix(".rs") {
                Some(stem) => Some(stem.to_string()),
                None if path.is_dir() => Some(name),
                None => None,
            }
        })
        .filter(|name| name != "lib" && name != "main")
        .collect()
}

/// Every file under `src/` (less `lib.rs` and `main.rs`) with its top module and the other top
/// modules it imports.
fn imports() -> Vec<(String, String, BTreeSet<String>)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).ok()?.to_str()?.to_string();
            let first = relative.split('/').next()?;
            let module = first.strip_suffix(".rs").unwrap_or(first).to_string();
            if module == "lib" || module == "main" {
                return None;
            }
            let text = fs::read_to_string(&path).expect("read a source file");
            let mut imported = imported_modules(&text);
            imported.remove(&module);
            Some((format!("src/{relative}"), module, imported))
        })
        .collect()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("read a source directory").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The first name of every `crate::` path in `text` (`use` lines, grouped `crate::{a, b::c}`
/// imports and inline paths), comment lines left out.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut modules = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `my_crate::`, not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            modules.extend(group_heads(group));
        } else {
            modules.insert(ident(rest).to_string());
        }
    }
    modules.retain(|name| !name.is_empty());
    modules
}

/// The first name of each item of a `{a, b::{c, d}, e}` group, `group` starting after its `{`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![ident(group.trim_start()).to_string()];
    let mut depth = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(ident(group[at + 1..].trim_start()).to_string()),
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

//! The layout `src/lib.rs` documents holds in the code: each module imports only modules listed
//! below it, and the faces (marked `(face)`) know nothing of each other. Reads the list from
//! lib.rs's doc and every `crate::<module>` path in `src/` (outside comments and unit tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One entry of the documented list: the module and whether it is a face.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layer {
    module: String,
    face: bool,
}

/// The `//! - [`module`]` bullets of lib.rs's layout section, in order.
fn documented_layers(lib: &str) -> Vec<Layer> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| {
            let (module, after) = rest.split_once("`]")?;
            Some(Layer { module: module.to_owned(), face: after.trim_start().starts_with("(face)") })
        })
        .collect()
}

/// The code of a source file without comments and without its `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules `code` names through `crate::` (`crate::a::b`, `crate::{a, b::c}`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `dynamcp_crate::`, not ours
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Every import that breaks the layout: `(file, importer, imported)`.
fn violations(layers: &[Layer], sources: &[(String, String, String)]) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| l.module == m);
    let mut out = Vec::new();
    for (file, module, text) in sources {
        let Some(i) = rank(module) else { continue };
        for target in crate_paths(&code_of(text)) {
            let Some(j) = rank(&target) else { continue };
            if j == i {
                continue;
            }
            if layers[i].face && layers[j].face {
                out.push(format!("{file}: the face `{module}` imports the face `{target}`"));
            } else if j < i {
                out.push(format!("{file}: `{module}` imports `{target}`, which is listed above it"));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_follows_the_documented_layout() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = documented_layers(&lib);
    let documented: BTreeSet<&str> = layers.iter().map(|l| l.module.as_str()).collect();
    let declared: BTreeSet<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    assert_eq!(documented, declared, "lib.rs's layout lists every module it declares, and only those");
    assert!(layers.iter().filter(|l| l.face).count() >= 3, "the faces are marked: {layers:?}");

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sources: Vec<(String, String, String)> = files
        .iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = rel.split('/').next()?.trim_end_matches(".rs").to_owned();
            Some((rel, module, std::fs::read_to_string(path).unwrap()))
        })
        .collect();
    assert!(sources.len() > 50, "found {} source files", sources.len());
    let broken = violations(&layers, &sources);
    assert!(broken.is_empty(), "imports that break lib.rs's layout:\n{}", broken.join("\n"));
}

#[test]
fn the_check_finds_an_upward_import_and_faces_that_know_each_other() {
    let lib = "//! - [`api`] (face): http\n//! - [`mcp`] (face): tools\n//! - [`ops`]: operations\n\
               //! - [`store`]: persistence\n";
    let layers = documented_layers(lib);
    assert_eq!(layers.len(), 4);
    let source = |file: &str, module: &str, text: &str| (file.to_owned(), module.to_owned(), text.to_owned());
    let sources = vec![
        source("store/mod.rs", "store", "use crate::ops::OpError;\n// crate::api in a comment\n"),
        source("mcp/mod.rs", "mcp", "use crate::{ops, api::error::ApiError};\n"),
        source("api/mod.rs", "api", "use crate::ops;\n#[cfg(test)]\nmod tests { use crate::mcp; }\n"),
        source("ops/mod.rs", "ops", "fn f() { crate::store::open(); }\n"),
    ];
    let broken = violations(&layers, &sources);
    assert_eq!(
        broken,
        vec![
            "store/mod.rs: `store` imports `ops`, which is listed above it".to_owned(),
            "mcp/mod.rs: the face `mcp` imports the face `api`".to_owned(),
        ]
    );
}

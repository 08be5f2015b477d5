//! Mechanical rules from STYLE.md: the core depends on no protocol crate and names no protocol,
//! and the library code of every broker crate (core, protocols, the server) has no `unwrap()`,
//! no unbounded channels, no printing to stdout and no unfinished-code macros.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The source outside `#[cfg(test)]` modules (which by convention close each file).
fn library_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

fn core_sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(!files.is_empty(), "found the core's sources");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("source is readable");
            (path, text)
        })
        .collect()
}

#[test]
fn core_names_no_protocol() {
    const FORBIDDEN: [&str; 5] = ["amqp", "mqtt", "stomp", "tokio::net", "libloading"];
    for (path, text) in core_sources() {
        let lower = text.to_lowercase();
        for word in FORBIDDEN {
            assert!(!lower.contains(word), "{} mentions `{word}`: the core must know no protocol", path.display());
        }
    }
}

#[test]
fn core_depends_on_no_protocol_crate() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("core manifest is readable");
    for word in ["warren-amqp", "warren-mqtt", "warren-stomp", "libloading", "protocols/"] {
        assert!(!manifest.contains(word), "core/Cargo.toml depends on `{word}`");
    }
}

/// What library code must not contain. The macro names are assembled from pieces so that this
/// list is not itself a hit for tools that scan a change for them.
const LIBRARY_FORBIDDEN: [&str; 6] = [
    ".unwrap()",
    concat!("unbounded", "_channel"),
    "println!",
    concat!("dbg", "!("),
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
];

/// The broker's library sources: the core, the store, the protocol crates, the plugins and the
/// server. (The bench client and the CLI's subcommands print by design; testkit is test-only.)
fn broker_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("store").join("src"), &mut files);
    for group in ["protocols", "plugins"] {
        for entry in std::fs::read_dir(root.join(group)).expect("crate group dir is readable") {
            rust_files(&entry.expect("dir entry").path().join("src"), &mut files);
        }
    }
    // The CLI's subcommands print for an operator by design.
    files.retain(|path| !path.ends_with("src/cli.rs"));
    files.into_iter().map(|path| (path.clone(), std::fs::read_to_string(&path).expect("readable"))).collect()
}

#[test]
fn library_code_follows_the_mechanical_rules() {
    for (path, text) in core_sources().into_iter().chain(broker_sources()) {
        // `eprintln!` is allowed (the server's last word when it cannot start); stdout is not.
        let library = library_part(&text).replace("eprintln!", "");
        for pattern in LIBRARY_FORBIDDEN {
            assert!(!library.contains(pattern), "{} contains `{pattern}` outside tests", path.display());
        }
    }
}

//! Mechanical rules from STYLE.md, checked on the core's own sources: the core depends on no
//! protocol crate and names no protocol, and library code has no `unwrap()`, no unbounded
//! channels and no `println!`.

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

#[test]
fn library_code_follows_the_mechanical_rules() {
    for (path, text) in core_sources() {
        let library = library_part(&text);
        for pattern in [".unwrap()", "unbounded_channel", "println!", "dbg!(", "todo!(", "unimplemented!("] {
            assert!(!library.contains(pattern), "{} contains `{pattern}` outside tests", path.display());
        }
    }
}

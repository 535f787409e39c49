// `sqlx::migrate!` embeds migrations at compile time: rebuild when they change.
// Message templates (`templates/messages/<language>/<kind>.txt`) are embedded too: this writes
// the table of every file found, so adding a language is adding its files.
use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=templates/messages");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/messages");
    let mut entries = Vec::new();
    if let Ok(langs) = std::fs::read_dir(&root) {
        for lang in langs.flatten() {
            println!("cargo:rerun-if-changed={}", lang.path().display());
            let Ok(files) = std::fs::read_dir(lang.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) != Some("txt") {
                    continue;
                }
                let (Some(l), Some(kind)) = (
                    lang.file_name().to_str().map(String::from),
                    path.file_stem().and_then(|s| s.to_str()).map(String::from),
                ) else {
                    continue;
                };
                entries.push((l, kind, path.display().to_string()));
            }
        }
    }
    entries.sort();
    let mut out = String::from("/// (language, kind, template) of every file under templates/messages.\npub const TEMPLATES: &[(&str, &str, &str)] = &[\n");
    for (l, k, p) in entries {
        let _ = writeln!(out, "    ({l:?}, {k:?}, include_str!({p:?})),");
    }
    out.push_str("];\n");
    let dest =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("templates.rs");
    let _ = std::fs::write(dest, out);
}

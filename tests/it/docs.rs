//! The checked-in man pages, completions, README exit table and example
//! configuration must be what the code generates. Refresh them with
//! `UPDATE_DOCS=1 cargo test --release --test it docs::`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use chatwoot_ingress::config::keys::{keys, Key, Table};
use chatwoot_ingress::config::{Config, Overrides};
use chatwoot_ingress::outcome::{advice_table, exit_table};

use crate::render;
use render as docs;

const REFRESH: &str = "run `UPDATE_DOCS=1 cargo test --release --test it docs::` to refresh";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1")
}

/// The first line where two texts differ, to say what drifted.
fn first_difference(found: &[u8], expected: &[u8]) -> String {
    let found = String::from_utf8_lossy(found);
    let expected = String::from_utf8_lossy(expected);
    let mut found_lines = found.lines();
    for (n, want) in expected.lines().enumerate() {
        match found_lines.next() {
            Some(have) if have == want => continue,
            Some(have) => return format!("line {}: has {have:?}, should be {want:?}", n + 1),
            None => return format!("ends at line {}, should go on with {want:?}", n + 1),
        }
    }
    match found_lines.next() {
        Some(extra) => format!("has extra lines from {extra:?}"),
        None => "differs in whitespace or line endings".into(),
    }
}

/// Make `dir` hold exactly `files` (only among names that `ours` claims),
/// or with UPDATE_DOCS=1 write them; returns what differs.
fn sync_dir(dir: &str, files: &[(String, Vec<u8>)], ours: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = root().join(dir);
    let mut problems = Vec::new();
    if updating() {
        fs::create_dir_all(&dir).unwrap();
    }
    for (name, expected) in files {
        let path = dir.join(name);
        let found = fs::read(&path).ok();
        if found.as_deref() == Some(expected.as_slice()) {
            continue;
        }
        if updating() {
            fs::write(&path, expected).unwrap();
            eprintln!("rewrote {}", path.display());
        } else if let Some(found) = found {
            problems.push(format!(
                "{} is out of date: {}",
                path.display(),
                first_difference(&found, expected)
            ));
        } else {
            problems.push(format!("{} is missing", path.display()));
        }
    }
    let wanted: BTreeSet<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ours(&name) && !wanted.contains(name.as_str()) {
            if updating() {
                fs::remove_file(entry.path()).unwrap();
                eprintln!("removed {}", entry.path().display());
            } else {
                problems.push(format!("{} is no longer generated", entry.path().display()));
            }
        }
    }
    problems
}

fn assert_current(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}\n{REFRESH}", problems.join("\n"));
}

#[test]
fn man_pages_are_current() {
    let pages = docs::man_pages();
    assert!(pages.iter().any(|(name, _)| name == "chatwoot-ingress.1"));
    assert_current(sync_dir("man", &pages, |name| name.ends_with(".1")));
}

#[test]
fn completions_are_current() {
    let files = docs::completion_files();
    assert_current(sync_dir("completions", &files, |_| true));
}

/// The part of the README between `<!-- name -->` and `<!-- /name -->`
/// must be `expected` (or, with UPDATE_DOCS=1, is made so).
fn readme_block_is_current(name: &str, expected: &str) {
    let (start_mark, end_mark) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    let path = root().join("README.md");
    let readme = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (start, end) = match (readme.find(&start_mark), readme.find(&end_mark)) {
        (Some(start), Some(end)) if start < end => (start + start_mark.len(), end),
        _ => panic!("{} has no {start_mark} ... {end_mark} markers", path.display()),
    };
    if readme[start..end] == *expected {
        return;
    }
    if updating() {
        fs::write(&path, format!("{}{expected}{}", &readme[..start], &readme[end..])).unwrap();
        eprintln!("rewrote {name} in {}", path.display());
    } else {
        panic!(
            "{name} in {} is out of date: {}\n{REFRESH}",
            path.display(),
            first_difference(&readme.as_bytes()[start..end], expected.as_bytes())
        );
    }
}

#[test]
fn readme_exit_table_is_current() {
    readme_block_is_current("exit-table", &format!("\n{}", exit_table()));
}

#[test]
fn readme_advice_table_is_current() {
    readme_block_is_current("advice-table", &format!("\n{}", advice_table()));
}

#[test]
fn readme_key_tables_are_current() {
    readme_block_is_current("config-keys", &docs::readme_key_tables());
}

/// `# key = value` lines of the example configuration, uncommented, with
/// their key as `table.key` under a `# [[table]]` or `# [table]` line; and
/// the tables.
fn example_settings(text: &str) -> Vec<(String, String)> {
    let mut table: Option<String> = None;
    let mut settings = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || !line.starts_with("# ") {
            // A blank or plain comment line after a table's keys ends the table.
            if !line.starts_with("# ") {
                table = None;
            }
            continue;
        }
        let line = &line[2..];
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            table = Some(name.to_string());
            settings.push((name.to_string(), format!("[[{name}]]")));
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            // A table inside the last of an array of tables: [mailbox.oauth2].
            table = Some(name.to_string());
            settings.push((name.to_string(), format!("[{name}]")));
        } else if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                let path = table.as_ref().map_or(key.to_string(), |t| format!("{t}.{key}"));
                settings.push((path, line.to_string()));
            }
        }
    }
    settings
}

fn load(text: &str) -> Result<Config, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let overrides = Overrides { config: Some(file.path().into()), ..Default::default() };
    Config::load_with(&overrides, |_| None).map_err(|e| e.to_string())
}

/// A file with `key = value` in `table` (which `opening` opens, if it is not the top level).
fn in_table(table: Table, line: &str) -> String {
    match table {
        Table::Top => format!("{line}\n"),
        Table::Route | Table::Mailbox | Table::Metrics | Table::Cluster => {
            format!("{}\n{line}\n", table.header())
        }
        Table::OAuth2 => format!("{}\n{}\n{line}\n", Table::Mailbox.header(), table.header()),
    }
}

/// Every key of the table is one the parser takes (a file with it alone
/// may be incomplete, but not for that key), and a key that is not in the
/// table is refused, named with its file and line.
#[test]
fn the_documented_keys_are_the_keys_the_parser_accepts() {
    for key in keys() {
        let text = in_table(key.table, &key.example());
        if let Err(e) = load(&text) {
            assert!(!e.contains("is not a key"), "{text}: {e}");
        }
    }
    for table in Table::ALL {
        let text = in_table(table, "no_such_key = 1");
        let e = load(&text).unwrap_err();
        let line = text.lines().count();
        assert!(
            e.starts_with("`no_such_key` in ")
                && e.contains(&format!(" line {line} is not a key of {}", table.header())),
            "{text}: {e}"
        );
    }
}

#[test]
fn the_example_configuration_shows_every_key_and_parses() {
    let path = root().join("packaging/config.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(load(&text).is_ok(), "{} must load as shipped (every key commented out)", path.display());
    let settings = example_settings(&text);
    let shown: BTreeSet<&str> = settings.iter().map(|(key, _)| key.as_str()).collect();
    let documented: BTreeSet<String> = keys().iter().map(Key::path).collect();
    let shown: BTreeSet<String> = shown.into_iter().map(str::to_string).collect();
    assert_eq!(shown, documented, "keys shown as `# key = value` in {}", path.display());
    // Uncommented, every line must be valid. A password_file would have to
    // exist, and excludes password: the top-level one is left out, a
    // table's stands in for its password.
    let (oauth2, settings): (Vec<_>, Vec<_>) =
        settings.iter().partition(|(key, _)| key.starts_with("mailbox.oauth2"));
    let mut uncommented: String = settings
        .iter()
        .filter(|(key, _)| key != "password_file" && !(key.contains('.') && key.ends_with(".password")))
        // Redis's password file would have to exist; it has no other key.
        .filter(|(key, _)| key != "cluster.password_file")
        .map(|(key, line)| match key.ends_with(".password_file") {
            true => "password = \"example\"\n".to_string(),
            false => format!("{line}\n"),
        })
        .collect();
    // The Graph mailbox comes last; its [mailbox.oauth2] is the one checked below.
    assert!(uncommented.trim_end().ends_with("graph_url = \"https://graph.microsoft.com\""), "{uncommented}");
    uncommented.push_str("[mailbox.oauth2]\ntoken_command = [\"/bin/true\"]\n");
    let config = load(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(config.url.is_some() && config.password.is_some() && config.reject_dir.is_some());
    assert!(!config.routes.is_empty());
    assert_eq!(config.mailboxes.len(), 2, "an IMAP mailbox and a Graph one");
    // [mailbox.oauth2] in the two ways its keys go together: a user's
    // refresh token (a client_secret_file would have to exist), and
    // token_command alone.
    let mailbox = "[[mailbox]]\nname = \"o\"\nhost = \"imap.example.com\"\nuser = \"u@example.com\"\nauth = \"xoauth2\"\n";
    let lines = |keep: &dyn Fn(&str) -> bool| -> String {
        oauth2.iter().filter(|(key, _)| keep(key)).map(|(_, line)| format!("{line}\n")).collect()
    };
    let refresh = lines(&|key| !key.ends_with(".token_command") && !key.ends_with(".client_secret_file"));
    let command = lines(&|key| key == "mailbox.oauth2" || key.ends_with(".token_command"));
    for table in [refresh, command] {
        let text = format!("{mailbox}{table}");
        let config = load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.mailboxes.len(), 1);
    }
}

#[test]
fn both_packages_ship_the_generated_files() {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    // Man pages go by a glob, so a new subcommand's page is packaged too.
    let mut sources = vec!["man/*.1".to_string()];
    sources.extend(docs::completion_files().into_iter().map(|(name, _)| format!("completions/{name}")));
    for source in sources {
        let found = manifest.matches(&format!("\"{source}\"")).count();
        assert_eq!(
            found, 2,
            "Cargo.toml should list {source:?} once for cargo-deb and once for cargo-generate-rpm"
        );
    }
}

/// Every line of every snippet in the README's "Callers" section stands in a
/// file under packaging/, which the interop suite runs: the README shows
/// only configs that were tested.
#[test]
fn readme_caller_snippets_are_the_shipped_configs() {
    fn files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut shipped_files = Vec::new();
    files(&root().join("packaging"), &mut shipped_files);
    let shipped: BTreeSet<String> = shipped_files
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>()
        })
        .collect();
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let callers = readme.split("## Callers").nth(1).unwrap().split("### By hand").next().unwrap();
    let mut checked = 0;
    for (i, block) in callers.split("```").enumerate().filter(|(i, _)| i % 2 == 1) {
        for line in block.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")) {
            if !line.is_empty() {
                assert!(
                    shipped.contains(&line),
                    "README snippet {i}: {line:?} is in no file under packaging/"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} snippet lines found");
}

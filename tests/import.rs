//! `import`, run as an administrator would: files in, summary and exit code
//! out, and exactly which bytes the server received, how many times.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A small message, distinct for each `n`.
fn message(n: usize) -> Vec<u8> {
    format!("From: a{n}@example.com\nTo: inbox@example.com\nSubject: n{n}\nMessage-ID: <{n}@example.com>\n\nbody {n}\n")
        .into_bytes()
}

/// An mboxrd file of `messages` (whose lines are already quoted as needed).
fn mbox(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(b"From sender@example.com Mon Jan  1 00:00:00 2024\n");
        out.extend_from_slice(m);
        out.push(b'\n');
    }
    out
}

fn sorted(mut bodies: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    bodies.sort();
    bodies
}

/// `import` with a journal of its own in `dir`.
fn import(server: &Server, dir: &Path, args: &[&str]) -> Invocation {
    let journal = dir.join("journal").to_str().unwrap().to_string();
    let mut all = vec!["import", "--journal", &journal];
    all.extend_from_slice(args);
    to(server, &all)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[track_caller]
fn summary(run: &Run, delivered: u64, already: u64, refused: u64, failed: u64) {
    let line =
        format!("{delivered} delivered, {already} already delivered, {refused} refused, {failed} failed");
    assert!(run.stdout.starts_with(&line), "expected {line}: {run:#?}");
    run.no_secrets();
}

#[test]
fn mboxrd_unquotes_reversibly_and_splits_only_after_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![status(204)]);
    let quoted = b"From: a@example.com\nSubject: quoting\n\n>From the start\n>>From quoted\nFrom mid-paragraph stays\n\nlast line\n";
    let no_newline = b"From: b@example.com\nSubject: cut\n\nno newline at the end".to_vec();
    let mut file = mbox(&[quoted.to_vec()]);
    file.extend_from_slice(b"From x Mon Jan  1 00:00:00 2024\n");
    file.extend_from_slice(&no_newline);
    let path = write(dir.path(), "box", &file);
    let run = import(&server, dir.path(), &["--jobs", "1", &path]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 2, 0, 0, 0);
    let unquoted = b"From: a@example.com\nSubject: quoting\n\nFrom the start\n>From quoted\nFrom mid-paragraph stays\n\nlast line\n";
    assert_eq!(server.bodies(), vec![unquoted.to_vec(), no_newline]);

    // mboxo: only ">From " loses its ">"; a second journal so it is sent again.
    let server = Server::start(vec![status(204)]);
    let other = tempfile::tempdir().unwrap();
    import(&server, other.path(), &["--mboxo", &path]).run();
    let mboxo = b"From: a@example.com\nSubject: quoting\n\nFrom the start\n>>From quoted\nFrom mid-paragraph stays\n\nlast line\n";
    // Concurrent jobs: the two messages may arrive in either order.
    let bodies = server.bodies();
    assert!(bodies.len() == 2 && bodies.contains(&mboxo.to_vec()), "{bodies:?}");
}

#[test]
fn crlf_mbox_empty_mbox_and_too_large_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![status(204)]);
    let crlf = b"From x@example.com Mon Jan  1 00:00:00 2024\r\nFrom: a@example.com\r\nSubject: 1\r\n\r\n>From me\r\n\r\nFrom y@example.com Mon Jan  1 00:00:01 2024\r\nFrom: b@example.com\r\n\r\nbody\r\n\r\n";
    let path = write(dir.path(), "crlf.mbox", crlf);
    let empty = write(dir.path(), "empty", b"");
    let mut large = message(1);
    large.extend(std::iter::repeat_n(b'x', 2000));
    large.push(b'\n');
    let sized = write(dir.path(), "sized", &mbox(&[large, message(2)]));
    let run = import(&server, dir.path(), &["--jobs", "1", &path, &empty, &sized, "--max-size", "1K"]).run();
    summary(&run, 3, 0, 1, 0);
    assert_eq!(run.code, 65, "{run:#?}");
    assert!(
        run.stderr.contains(&format!("refused: {sized} message 1 (line 1): 5.3.4 message too large")),
        "{run:#?}"
    );
    assert_eq!(
        server.bodies(),
        vec![
            b"From: a@example.com\r\nSubject: 1\r\n\r\nFrom me\r\n".to_vec(),
            b"From: b@example.com\r\n\r\nbody\r\n".to_vec(),
            message(2)
        ]
    );

    let run = import(&server, dir.path(), &[&empty]).run();
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
    summary(&run, 0, 0, 0, 0);
}

#[test]
fn maildir_new_and_cur_marked_seen_then_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/1.host", &message(1));
    write(&maildir, "new/2.host", &message(2));
    write(&maildir, "cur/3.host:2,R", &message(3));
    write(&maildir, "tmp/4.host", b"half-written");
    let server = Server::start(vec![status(204)]);
    let run = import(
        &server,
        dir.path(),
        &["--mark-seen", maildir.to_str().unwrap(), "--recipient", "in@example.com"],
    )
    .run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 3, 0, 0, 0);
    let added = |n| [b"X-Original-To: in@example.com\n".to_vec(), message(n)].concat();
    assert_eq!(sorted(server.bodies()), vec![added(1), added(2), added(3)]);
    assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 0);
    let mut cur: Vec<_> = fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cur.sort();
    assert_eq!(cur, ["1.host:2,S", "2.host:2,S", "3.host:2,RS"]);

    // New mail arrives; the next run sends only that.
    write(&maildir, "new/5.host", &message(5));
    let run =
        import(&server, dir.path(), &[maildir.to_str().unwrap(), "--recipient", "in@example.com"]).run();
    summary(&run, 1, 3, 0, 0);
    assert_eq!(server.bodies().len(), 4);
}

#[test]
fn eml_files_folders_of_them_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("saved");
    write(&folder, "a.eml", &message(1));
    write(&folder, "a.reason", b"5.6.0 not an email");
    write(&folder, "b.EML", &message(2));
    // A single file, even one that begins with a From_ line: one message.
    let single = write(dir.path(), "one.eml", &corpus("from-line.eml"));
    let server = Server::start(vec![status(204)]);
    let run = import(&server, dir.path(), &["--jobs", "1", folder.to_str().unwrap(), &single, "-"])
        .stdin(mbox(&[message(3)]))
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 4, 0, 0, 0);
    let from_line = corpus("from-line.eml");
    let stripped = from_line[from_line.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec();
    assert_eq!(server.bodies(), vec![message(1), message(2), stripped, message(3)]);
}

#[test]
fn failures_are_counted_listed_and_exit_75() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&(1..=4).map(message).collect::<Vec<_>>()));
    let server = Server::start(vec![status(204), status(500), status(204), status(500)]);
    let run = import(&server, dir.path(), &["--jobs", "1", &path]).run();
    assert_eq!(run.code, 75, "{run:#?}");
    summary(&run, 2, 0, 0, 2);
    assert!(run
        .stderr
        .contains(&format!("failed: {path} message 2 (line 9): 4.3.0 the ingress failed (HTTP 500)")));
    assert!(run.stderr.lines().last().unwrap().starts_with("4.3.0 2 not delivered"), "{run:#?}");

    // The one retry policy (the relay's) gets through a passing 503.
    let server = Server::start(vec![status(503), status(204)]);
    let other = tempfile::tempdir().unwrap();
    let run = import(&server, other.path(), &["-"]).stdin(mbox(&[message(1)])).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(server.bodies(), vec![message(1), message(1)]);
}

#[test]
fn refusals_are_listed_saved_and_exit_65() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejected");
    let path = write(dir.path(), "box", &mbox(&[message(1), b"not an email\n".to_vec(), message(3)]));
    let server = Server::start(vec![status(204)]);
    let run =
        import(&server, dir.path(), &["--jobs", "1", &path, "--reject-dir", rejects.to_str().unwrap()]).run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 2, 0, 1, 0);
    assert!(
        run.stderr.contains(&format!("refused: {path} message 2 (line 9): 5.6.0 not an email")),
        "{run:#?}"
    );
    assert_eq!(server.bodies(), vec![message(1), message(3)]);
    let saved: Vec<_> = fs::read_dir(&rejects).unwrap().map(|e| e.unwrap().path()).collect();
    let eml = saved.iter().find(|p| p.extension().unwrap() == "eml").unwrap();
    assert_eq!(fs::read(eml).unwrap(), b"From sender@example.com Mon Jan  1 00:00:00 2024\nnot an email\n");

    // A proxy's 413 for a message within max_size is its setup's fault: temporary.
    let server = Server::start(vec![status(413)]);
    let run = import(&server, dir.path(), &["-"]).stdin(mbox(&[message(9)])).run();
    assert_eq!(run.code, 75, "{run:#?}");
    assert!(run.stderr.contains("4.3.4 the message was refused as too large (HTTP 413)"), "{run:#?}");
}

#[test]
fn too_large_messages_are_copied_whole_to_the_reject_folder() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejected");
    let mut large = message(2);
    large.extend_from_slice(b">From a quoted line\n");
    large.extend(std::iter::repeat_n(b'x', 3000));
    large.push(b'\n');
    let path = write(dir.path(), "box", &mbox(&[message(1), large.clone(), message(3)]));
    let eml = write(dir.path(), "large.eml", &large);
    let server = Server::start(vec![status(204)]);
    let reject_dir = rejects.to_str().unwrap();
    let args = ["--jobs", "1", "--max-size", "1K", "--reject-dir", reject_dir, &path, &eml];
    let run = import(&server, dir.path(), &args).run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 2, 0, 2, 0);
    assert_eq!(server.bodies(), vec![message(1), message(3)]);
    let mut copies: Vec<_> = fs::read_dir(&rejects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "eml")
        .map(|p| fs::read(p).unwrap())
        .collect();
    copies.sort();
    // The mbox message unquoted, as it would have been sent; the file as it is.
    let mut unquoted = b"From sender@example.com Mon Jan  1 00:00:00 2024\n".to_vec();
    unquoted.extend(String::from_utf8(large.clone()).unwrap().replace(">From a", "From a").into_bytes());
    assert_eq!(copies, sorted(vec![unquoted, large.clone()]));

    // Standard input cannot be read again: the refusal says so.
    let run = import(&server, dir.path(), &["--max-size", "1K", "--reject-dir", reject_dir, "-"])
        .stdin(mbox(&[large]))
        .run();
    assert_eq!(run.code, 65, "{run:#?}");
    assert!(run.stderr.contains("(read from standard input: not copied to the reject folder)"), "{run:#?}");
}

#[test]
fn a_rerun_delivers_what_failed_and_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = (1..=10).map(message).collect();
    let path = write(dir.path(), "box", &mbox(&all));
    let script = (0..10).map(|i| status(if i % 2 == 0 { 204 } else { 500 })).collect();
    let first = Server::start(script);
    let run = import(&first, dir.path(), &["--jobs", "1", &path]).run();
    assert_eq!(run.code, 75, "{run:#?}");
    summary(&run, 5, 0, 0, 5);
    let second = Server::start(vec![status(204)]);
    let run = import(&second, dir.path(), &["--jobs", "3", &path]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 5, 5, 0, 0);
    let accepted_first: Vec<_> = first.bodies().into_iter().step_by(2).collect();
    assert_eq!(sorted([accepted_first, second.bodies()].concat()), sorted(all));
    let run = import(&second, dir.path(), &[&path]).run();
    summary(&run, 0, 10, 0, 0);
}

#[test]
fn ctrl_c_finishes_the_request_in_flight_saves_the_journal_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    // Large enough that the slow server takes about a second for each.
    let all: Vec<_> = (1..=4).map(|n| [message(n), "padding\n".repeat(6000).into_bytes()].concat()).collect();
    let path = write(dir.path(), "box", &mbox(&all));
    let server = Server::start(vec![SlowReader]);
    let (child, writer) = import(&server, dir.path(), &["--jobs", "1", &path]).spawn();
    let journal = dir.path().join("journal");
    let start = Instant::now();
    while !journal.exists() && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(300)); // the first request is in flight
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let run = Run::wait(child, writer);
    assert_eq!(run.code, 75, "{run:#?}");
    assert!(run.stderr.lines().last().unwrap().starts_with("4.3.0 interrupted"), "{run:#?}");
    let delivered = server.bodies();
    assert!(!delivered.is_empty() && delivered.len() < all.len(), "{run:#?}");
    summary(&run, delivered.len() as u64, 0, 0, 0);
    assert_eq!(fs::read_to_string(&journal).unwrap().lines().count(), delivered.len());

    let rest = Server::start(vec![status(204)]);
    let run = import(&rest, dir.path(), &[&path]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(sorted([delivered, rest.bodies()].concat()), sorted(all));
}

#[test]
fn eight_jobs_deliver_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = (1..=300).map(message).collect();
    let path = write(dir.path(), "box", &mbox(&all));
    let server = Server::start(vec![status(204)]);
    let run = import(&server, dir.path(), &["--jobs", "8", &path]).run();
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
    summary(&run, 300, 0, 0, 0);
    assert_eq!(sorted(server.bodies()), sorted(all));
}

#[test]
fn a_wrong_password_stops_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&(1..=50).map(message).collect::<Vec<_>>()));
    let server = Server::start(vec![status(401)]);
    let run = import(&server, dir.path(), &["--jobs", "2", &path]).run();
    assert_eq!(run.code, 75, "{run:#?}");
    assert!(run.stderr.contains("stopping: 4.7.0 the ingress rejected the password"), "{run:#?}");
    assert!(server.bodies().len() <= 4, "{}", server.bodies().len());
}

#[test]
fn the_default_journal_is_per_ingress_in_the_state_directory() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(vec![status(204)]);
    let run = to(&server, &["import", "-"]).env("HOME", home.path()).stdin(mbox(&[message(1)])).run();
    assert_eq!(run.code, 0, "{run:#?}");
    let state = home.path().join(".local/state/chatwoot-ingress");
    let journals: Vec<_> = fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(journals.len(), 1);
    let name = journals[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("127.0.0.1-") && name.ends_with(".journal"), "{name}");
    assert!(run.stdout.contains(&journals[0].display().to_string()), "{run:#?}");
}

//! `import`, run as an administrator would: files in, summary and exit code
//! out, and exactly which bytes the server received, how many times.

use crate::common;

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

    // Standard input cannot be read again: the refusal says so. (A journal
    // of its own: this one has the same message as refused and saved.)
    let other = tempfile::tempdir().unwrap();
    let run = import(&server, other.path(), &["--max-size", "1K", "--reject-dir", reject_dir, "-"])
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

/// Messages large enough that the slow server takes about two seconds for each.
fn slow(n: usize) -> Vec<u8> {
    [message(n), "padding\n".repeat(12000).into_bytes()].concat()
}

/// Start `import`, and return once its first request is in flight.
fn started(invocation: Invocation, dir: &Path) -> (std::process::Child, thread::JoinHandle<()>) {
    let (child, writer) = invocation.spawn();
    let journal = dir.join("journal");
    let start = Instant::now();
    while !journal.exists() && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(300));
    (child, writer)
}

fn kill(signal: &str, child: &std::process::Child) {
    Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
}

#[test]
fn a_signal_finishes_the_request_in_flight_saves_the_journal_and_a_rerun_completes() {
    // Ctrl-C, and any other terminating signal alike.
    for signal in ["INT", "USR1"] {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<_> = (1..=4).map(slow).collect();
        let path = write(dir.path(), "box", &mbox(&all));
        let server = Server::start(vec![SlowReader]);
        let (child, writer) = started(import(&server, dir.path(), &["--jobs", "1", &path]), dir.path());
        kill(signal, &child);
        let run = Run::wait(child, writer);
        assert_eq!(run.code, 75, "{signal}: {run:#?}");
        assert!(run.stderr.lines().last().unwrap().starts_with("4.3.0 interrupted"), "{run:#?}");
        let delivered = server.bodies();
        assert!(!delivered.is_empty() && delivered.len() < all.len(), "{run:#?}");
        summary(&run, delivered.len() as u64, 0, 0, 0);
        let journal = dir.path().join("journal");
        assert_eq!(fs::read_to_string(&journal).unwrap().lines().count(), delivered.len());

        let rest = Server::start(vec![status(204)]);
        let run = import(&rest, dir.path(), &[&path]).run();
        assert_eq!(run.code, 0, "{run:#?}");
        assert_eq!(sorted([delivered, rest.bodies()].concat()), sorted(all));
    }
}

#[test]
fn a_second_signal_stops_at_once_with_a_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&(1..=4).map(slow).collect::<Vec<_>>()));
    let server = Server::start(vec![SlowReader]);
    let (child, writer) = started(import(&server, dir.path(), &["--jobs", "1", &path]), dir.path());
    kill("USR1", &child);
    thread::sleep(Duration::from_millis(100));
    kill("TERM", &child);
    let second = Instant::now();
    let run = Run::wait(child, writer);
    // The request in flight had more than a second to go.
    assert!(second.elapsed() < Duration::from_millis(1500), "{:?}", second.elapsed());
    assert_eq!(run.code, 75, "{run:#?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(last.starts_with("4.3.0 interrupted again: stopped at once;"), "{run:#?}");
    assert!(server.bodies().is_empty(), "{run:#?}");
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

/// The rest of the summary line, after the counts `summary` checks.
#[track_caller]
fn summary_ends(run: &Run, already_refused: u64, skipped: u64) {
    let rest = format!(" failed, {already_refused} already refused, {skipped} skipped (");
    assert!(run.stdout.lines().next().unwrap_or("").contains(&rest), "expected {rest}: {run:#?}");
}

#[test]
fn a_message_gone_mid_run_is_one_failure_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/01.host", &slow(1));
    for n in 2..=15 {
        write(&maildir, &format!("new/{n:02}.host"), &message(n));
    }
    fs::create_dir(maildir.join("cur")).unwrap();
    let server = Server::start(vec![SlowReader]);
    let args = ["--jobs", "1", maildir.to_str().unwrap()];
    let (child, writer) = started(import(&server, dir.path(), &args), dir.path());
    // 02 and 03 are read already, waiting for the worker; the rest is not.
    // Eleven are deleted: more than the failures in a row that stop a run
    // whose ingress fails, which these are not. A mail reader moves 15.
    for n in 4..=14 {
        fs::remove_file(maildir.join(format!("new/{n:02}.host"))).unwrap();
    }
    fs::rename(maildir.join("new/15.host"), maildir.join("cur/15.host:2,S")).unwrap();
    let run = Run::wait(child, writer);
    assert_eq!(run.code, 75, "{run:#?}");
    summary(&run, 4, 0, 0, 11);
    for n in 4..=14 {
        let gone = maildir.join(format!("new/{n:02}.host"));
        let line = format!("failed: {}: 4.3.0 cannot read it: no such file or directory", gone.display());
        assert!(run.stderr.contains(&line), "{line}: {run:#?}");
    }
    assert!(!run.stderr.contains("stopping"), "{run:#?}");
    assert_eq!(sorted(server.bodies()), sorted(vec![slow(1), message(2), message(3), message(15)]));
}

#[test]
fn a_folder_that_cannot_be_listed_mid_run_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&[slow(1), message(2), message(3)]));
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/20.host", &message(20));
    for n in 21..=32 {
        write(&maildir, &format!("cur/{n}.host:2,S"), &message(n));
    }
    let server = Server::start(vec![SlowReader]);
    let args = ["--jobs", "1", &path, maildir.to_str().unwrap()];
    let (child, writer) = started(import(&server, dir.path(), &args), dir.path());
    fs::rename(maildir.join("cur"), dir.path().join("elsewhere")).unwrap();
    let run = Run::wait(child, writer);
    assert_eq!(run.code, 75, "{run:#?}");
    summary(&run, 4, 0, 0, 1);
    let line = format!("failed: {}/cur: 4.3.0 cannot list it: no such file or directory", maildir.display());
    assert!(run.stderr.contains(&line), "{run:#?}");
    assert!(!run.stderr.contains("stopping"), "{run:#?}");
    assert_eq!(server.bodies(), vec![slow(1), message(2), message(3), message(20)]);

    // Before anything is sent, a path that cannot be read is the command
    // line's mistake, and nothing is sent.
    let server = Server::start(vec![status(204)]);
    let dangling = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    for bad in [dir.path().join("typo"), dangling] {
        let run = import(&server, dir.path(), &[&path, bad.to_str().unwrap()]).run();
        run.failed(75, "4.3.5");
        assert!(run.stderr.contains(&format!("cannot read {}: no such file", bad.display())), "{run:#?}");
    }
    assert!(server.received().is_empty());
}

#[test]
fn nothing_is_skipped_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p).display().to_string();
    let saved = dir.path().join("saved");
    write(&saved, "a.eml", &message(1));
    write(&saved, "a.reason", b"5.6.0 not an email: a reject folder's own\n");
    write(&saved, "notes.txt", &message(7));
    write(&saved, ".hidden.eml", &message(7));
    std::os::unix::fs::symlink(saved.join("a.eml"), saved.join("link.eml")).unwrap();
    write(&saved, "sub/x.eml", &message(7));
    write(&saved, "mh/1", &message(7));
    write(&saved, "mh/.mh_sequences", b"unseen: 1\n");
    write(&saved, "md/new/1.host", &message(7));
    fs::create_dir(saved.join("md/cur")).unwrap();
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/1.host", &message(2));
    write(&maildir, "new/.hidden", &message(7));
    std::os::unix::fs::symlink(saved.join("a.eml"), maildir.join("new/link")).unwrap();
    write(&maildir, "new/dir/1.host", &message(7));
    write(&maildir, "cur/2.host:2,S", &message(3));
    write(&maildir, "tmp/3.host", b"From: half");
    write(&maildir, ".Sent/new/4.host", &message(7));
    fs::create_dir_all(maildir.join(".Sent/cur")).unwrap();
    // A Maildir's own state is not mail.
    write(&maildir, "dovecot-uidlist", b"3 V1 N1\n");
    fs::create_dir(maildir.join("courierimapkeywords")).unwrap();
    let server = Server::start(vec![status(204)]);
    let run =
        import(&server, dir.path(), &["--jobs", "1", saved.to_str().unwrap(), maildir.to_str().unwrap()])
            .run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 3, 0, 0, 0);
    summary_ends(&run, 0, 11);
    assert_eq!(server.bodies(), vec![message(1), message(2), message(3)]);
    let mut expected = vec![
        format!("skipped: {}: hidden file: not imported", at("saved/.hidden.eml")),
        format!("skipped: {}: symbolic link: not followed", at("saved/link.eml")),
        format!(
            "skipped: {}: Maildir inside a folder: not imported (give it on the command line)",
            at("saved/md")
        ),
        format!("skipped: {}: MH folder: not supported", at("saved/mh")),
        format!("skipped: {}: not a .eml file: not imported", at("saved/notes.txt")),
        format!(
            "skipped: {}: folder inside a folder: not imported (give it on the command line)",
            at("saved/sub")
        ),
        format!("skipped: {}: hidden file: not imported", at("Maildir/new/.hidden")),
        format!(
            "skipped: {}: folder inside a folder: not imported (give it on the command line)",
            at("Maildir/new/dir")
        ),
        format!("skipped: {}: symbolic link: not followed", at("Maildir/new/link")),
        format!("skipped: {}: in tmp/, still being written: never imported", at("Maildir/tmp/3.host")),
        format!("skipped: {}: Maildir++ subfolder: not imported without --subfolders", at("Maildir/.Sent")),
    ];
    let mut said: Vec<_> = run.stderr.lines().map(str::to_string).collect();
    said.sort();
    expected.sort();
    assert_eq!(said, expected);

    // An input that holds only what cannot be imported: said, not a success.
    let mh = saved.join("mh");
    let run = import(&server, dir.path(), &[mh.to_str().unwrap()]).run();
    assert_eq!(run.code, 75, "{run:#?}");
    summary(&run, 0, 0, 0, 0);
    summary_ends(&run, 0, 1);
    let lines: Vec<_> = run.stderr.lines().collect();
    assert_eq!(lines[0], format!("skipped: {}: MH folder: not supported", mh.display()), "{run:#?}");
    let nothing = format!("4.3.5 nothing to import in {}: 1 path skipped, listed above", mh.display());
    assert!(lines[1].starts_with(&nothing) && lines.len() == 2, "{run:#?}");
    assert_eq!(server.received().len(), 3);

    // A Maildir with an empty inbox is no mistake, whatever is beside it.
    let empty = dir.path().join("Empty");
    write(&empty, ".Sent/new/9.host", &message(9));
    for sub in ["new", "cur", ".Sent/cur"] {
        fs::create_dir_all(empty.join(sub)).unwrap();
    }
    let run = import(&server, dir.path(), &[empty.to_str().unwrap()]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains(&format!("skipped: {}/.Sent: Maildir++", empty.display())), "{run:#?}");
}

#[test]
fn subfolders_are_imported_with_the_flag_and_named_by_folder() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/1.host", &message(1));
    fs::create_dir(maildir.join("cur")).unwrap();
    write(&maildir, ".Sent/cur/2.host:2,S", &message(2));
    write(&maildir, ".Sent/cur/3.host:2,S", b"not an email\n");
    fs::create_dir(maildir.join(".Sent/new")).unwrap();
    write(&maildir, ".Archive.2023/new/4.host", &message(4));
    write(&maildir, ".Archive.2023/tmp/5.host", b"From: half");
    fs::create_dir(maildir.join(".Archive.2023/cur")).unwrap();
    let server = Server::start(vec![status(204)]);
    let run = import(
        &server,
        dir.path(),
        &["--jobs", "1", "--subfolders", "--mark-seen", maildir.to_str().unwrap()],
    )
    .run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 3, 0, 1, 0);
    summary_ends(&run, 0, 1);
    // The inbox, then each subfolder in name order.
    assert_eq!(server.bodies(), vec![message(1), message(4), message(2)]);
    let refused = format!("refused: {}/.Sent/cur/3.host:2,S: 5.6.0 not an email", maildir.display());
    assert!(run.stderr.contains(&refused), "{run:#?}");
    let half = format!("skipped: {}/.Archive.2023/tmp/5.host: in tmp/", maildir.display());
    assert!(run.stderr.contains(&half), "{run:#?}");
    assert!(maildir.join(".Archive.2023/cur/4.host:2,S").exists());
}

#[test]
fn a_rerun_does_not_refuse_and_save_again() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejected");
    let mut large = message(4);
    large.extend(std::iter::repeat_n(b'x', 2000));
    large.push(b'\n');
    let path =
        write(dir.path(), "box", &mbox(&[message(1), b"not an email\n".to_vec(), message(3), large.clone()]));
    let server = Server::start(vec![status(204)]);
    let args = ["--jobs", "1", "--max-size", "1K", "--reject-dir", rejects.to_str().unwrap(), &path];
    let saved = || {
        fs::read_dir(&rejects)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "eml")
            .count()
    };
    let run = import(&server, dir.path(), &args).run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 2, 0, 2, 0);
    assert_eq!(saved(), 2);
    let journal = fs::read_to_string(dir.path().join("journal")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.starts_with("R ")).count(), 2, "{journal}");

    // Still refused, so still the permanent code; nothing saved twice.
    let run = import(&server, dir.path(), &args).run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 0, 2, 0, 0);
    summary_ends(&run, 2, 0);
    let line = format!("already refused: {path} message 2 (line 9): 5.6.0 not an email");
    assert!(run.stderr.contains(&line), "{run:#?}");
    assert!(run.stderr.lines().last().unwrap().starts_with("5.6.0 2 refused (2 already, by an earlier run)"));
    assert_eq!(saved(), 2);
    assert_eq!(server.bodies().len(), 2);

    // A message refused for its size goes through once max_size allows it.
    let args = ["--max-size", "1M", "--reject-dir", rejects.to_str().unwrap(), &path];
    let run = import(&server, dir.path(), &args).run();
    assert_eq!(run.code, 65, "{run:#?}");
    summary(&run, 1, 2, 0, 0);
    summary_ends(&run, 1, 0);
    assert_eq!(server.bodies(), vec![message(1), message(3), large]);
    assert_eq!(saved(), 2);
}

#[test]
fn a_journal_with_garbage_still_counts_its_good_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&[message(1), message(2)]));
    let server = Server::start(vec![status(204)]);
    assert_eq!(import(&server, dir.path(), &[&path]).run().code, 0);
    let journal = dir.path().join("journal");
    let lines = fs::read_to_string(&journal).unwrap();
    let lines: Vec<_> = lines.lines().collect();
    let mut damaged = b"\xff\xfe\0not a line\n".to_vec();
    damaged.extend_from_slice(format!("{}\n\0\0\0\n{}\n", lines[0], lines[1]).as_bytes());
    damaged.extend_from_slice(b"\x80\x81 cut");
    fs::write(&journal, damaged).unwrap();
    let path = write(dir.path(), "box", &mbox(&[message(1), message(2), message(3)]));
    let run = import(&server, dir.path(), &["--jobs", "1", &path]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    summary(&run, 1, 2, 0, 0);
    assert_eq!(sorted(server.bodies()), vec![message(1), message(2), message(3)]);
}

#[test]
fn a_dry_run_checks_everything_and_sends_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejected");
    let path = write(dir.path(), "box", &mbox(&[message(1), b"not an email\n".to_vec(), message(3)]));
    let maildir = dir.path().join("Maildir");
    write(&maildir, "new/4.host", &message(4));
    fs::create_dir(maildir.join("cur")).unwrap();
    let server = Server::start(vec![status(204)]);
    let args = [
        "--dry-run",
        "--mark-seen",
        "--reject-dir",
        rejects.to_str().unwrap(),
        &path,
        maildir.to_str().unwrap(),
    ];
    let run = import(&server, dir.path(), &args).run();
    assert_eq!(run.code, 65, "{run:#?}");
    assert!(
        run.stdout.starts_with("3 would be delivered, 0 already delivered, 1 would be refused, 0 failed"),
        "{run:#?}"
    );
    let bytes = message(1).len();
    assert!(
        run.stderr.contains(&format!("would deliver: {path} message 1 (line 1): {bytes} bytes")),
        "{run:#?}"
    );
    assert!(run.stderr.contains(&format!("would deliver: {}/new/4.host: ", maildir.display())), "{run:#?}");
    assert!(run.stderr.contains(&format!("would refuse: {path} message 2 (line 9): 5.6.0 not an email")));
    assert!(run.stderr.lines().last().unwrap().starts_with("5.6.0 1 would be refused"), "{run:#?}");
    assert!(server.received().is_empty());
    assert!(!dir.path().join("journal").exists() && !rejects.exists());
    assert!(maildir.join("new/4.host").exists());

    // No URL and no password are needed; all valid is a success.
    let one = write(dir.path(), "one.eml", &message(5));
    let run = ingress(&["import", "--dry-run", &one]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.starts_with("1 would be delivered, 0 already delivered"), "{run:#?}");

    // With a journal, what a real run would skip.
    assert_eq!(import(&server, dir.path(), &[&one]).run().code, 0);
    let journal = fs::read(dir.path().join("journal")).unwrap();
    let run = import(&server, dir.path(), &["--dry-run", &one, maildir.to_str().unwrap()]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.starts_with("1 would be delivered, 1 already delivered"), "{run:#?}");
    assert_eq!(fs::read(dir.path().join("journal")).unwrap(), journal);
    assert_eq!(server.received().len(), 1);
}

#[test]
fn a_closed_stdout_leaves_the_exit_code_to_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "box", &mbox(&[message(1), b"not an email\n".to_vec()]));
    let server = Server::start(vec![status(204)]);
    // Standard output a pipe nobody reads any more.
    let (mut child, writer) = import(&server, dir.path(), &[&path]).spawn();
    drop(child.stdout.take());
    let run = Run::wait(child, writer);
    assert_eq!(run.code, 65, "{run:#?}");
    assert!(run.stderr.lines().last().unwrap().starts_with("5.6.0 1 refused"), "{run:#?}");
    // Standard output closed outright.
    let config = write(dir.path(), "config.toml", b"");
    let journal = dir.path().join("journal2");
    let status = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" >&-", BIN, "import", "--url", &server.url()])
        .args(["--journal", journal.to_str().unwrap(), "--config", &config, &path])
        .env_clear()
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(65));
    assert_eq!(server.bodies(), vec![message(1), message(1)]);
}

#[test]
fn import_exits_in_the_callers_codes_and_delivery_flags_before_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good", &mbox(&[message(1)]));
    let bad = write(dir.path(), "bad", &mbox(&[b"not an email\n".to_vec()]));
    let failing = Server::start(vec![status(500)]);
    assert_eq!(import(&failing, dir.path(), &["--mta", "qmail", &good]).run().code, 111);
    let server = Server::start(vec![status(204)]);
    let journal = dir.path().join("journal").display().to_string();
    let run = to(&server, &["--mta", "qmail", "import", "--journal", &journal, &bad]).run();
    assert_eq!(run.code, 100, "{run:#?}");

    for flag in ["--dry-run", "-v", "--recipient=a@example.com"] {
        let run = to(&server, &["--mta", "qmail", flag, "import", "--journal", &journal, &good]).run();
        run.failed(111, "4.3.5");
        assert!(run.stderr.contains("bad command line"), "{run:#?}");
    }
    assert!(server.received().is_empty());
}

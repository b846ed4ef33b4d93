//! What we ask of the operating system: accounts (through the C library,
//! so LDAP or sssd accounts count), the wording of io errors, files replaced
//! atomically, signals, and panics turned into something a caller can act on.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

/// An io::Error without Rust's "(os error N)" suffix, lower-cased like the rest of our lines.
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

/// Replace `path` with `contents`, atomically: a new file beside it, mode
/// 0600 (handed to `prepare` first, to change its owner say), renamed over
/// it. A crash of the process leaves the old contents or the new, never
/// half; a failure leaves no temporary file behind. `durable`: the file is
/// fsync'd before the rename and the directory after it, so a power loss
/// cannot undo it either.
pub fn replace_file(
    path: &Path,
    contents: &[u8],
    durable: bool,
    prepare: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    // One left by a crash of a process with the same id.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        prepare(&file)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether `host` (a name or an address, IPv6 with or without brackets)
/// is this machine: never proxied, and the only place cleartext may go.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` for messages, an IPv6 address in brackets as in a URL.
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

/// A user as the kernel sees it for file access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group first, then every supplementary group.
    pub gids: Vec<u32>,
}

impl Account {
    /// Look `name` up through NSS (getpwnam_r, getgrouplist).
    pub fn by_name(name: &str) -> Option<Account> {
        let c_name = CString::new(name).ok()?;
        let (uid, gid) = passwd(|pwd, buf, result| unsafe {
            libc::getpwnam_r(c_name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result)
        })
        .map(|(_, uid, gid)| (uid, gid))?;
        Some(Account { name: name.to_string(), uid, gids: groups(&c_name, gid) })
    }

    /// The name of `uid`, if NSS knows it.
    pub fn name_of(uid: u32) -> Option<String> {
        passwd(|pwd, buf, result| unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) })
            .map(|(name, _, _)| name)
    }
}

/// Run a getpw*_r call with a growing buffer: (name, uid, gid) when found.
fn passwd(
    call: impl Fn(*mut libc::passwd, &mut Vec<libc::c_char>, *mut *mut libc::passwd) -> libc::c_int,
) -> Option<(String, u32, u32)> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        match call(&mut pwd, &mut buf, &mut result) {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            0 if !result.is_null() => {
                // SAFETY: on success pw_name points into `buf`, NUL-terminated.
                let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
                return Some((name, pwd.pw_uid, pwd.pw_gid));
            }
            _ => return None,
        }
    }
}

fn groups(name: &CStr, gid: u32) -> Vec<u32> {
    let mut count: libc::c_int = 64;
    loop {
        let mut gids: Vec<libc::gid_t> = vec![0; count as usize];
        let capacity = count;
        // SAFETY: `gids` has room for `count` entries; getgrouplist updates count.
        let found = unsafe { libc::getgrouplist(name.as_ptr(), gid, gids.as_mut_ptr(), &mut count) };
        if found >= 0 {
            gids.truncate(count as usize);
            // The primary group first, as callers expect.
            gids.retain(|&g| g != gid);
            gids.insert(0, gid);
            return gids;
        }
        if count <= capacity {
            count = capacity * 2;
        }
        if count > 1 << 16 {
            return vec![gid];
        }
    }
}

/// The user we run as, because "permission denied" is only useful with it.
pub fn whoami() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    match Account::name_of(uid) {
        Some(name) => format!("user {name}, uid {uid}"),
        None => format!("uid {uid}"),
    }
}

/// The signals whose default action ends the process and that a process
/// may catch, with their names as `kill -l` spells them; the real-time
/// signals (SIGRTMIN..=SIGRTMAX) come on top. Each must end a run as a
/// temporary outcome, never as a signal death (Exim bounces a pipe killed
/// by a signal). Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE) and SIGTRAP
/// (debuggers) are left alone; SIGPIPE is already ignored by Rust's
/// runtime and SIGXFSZ by [`ignore_file_size_signal`].
const TERMINATING: [(libc::c_int, &str); 15] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

/// Every terminating signal a process may catch: [`TERMINATING`] and the real-time ones.
pub fn terminating_signals() -> Vec<libc::c_int> {
    TERMINATING.iter().map(|&(signal, _)| signal).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()).collect()
}

/// Wait for terminating signals on a thread of their own.
pub fn catch_terminating_signals() -> io::Result<signal_hook::iterator::Signals> {
    signal_hook::iterator::Signals::new(terminating_signals())
}

/// A signal's name, as `kill -l` spells it.
pub fn signal_name(signal: libc::c_int) -> String {
    match TERMINATING.iter().find(|&&(n, _)| n == signal) {
        Some((_, name)) => name.to_string(),
        None if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) => {
            format!("SIGRTMIN+{}", signal - libc::SIGRTMIN())
        }
        None => format!("signal {signal}"),
    }
}

/// A write past RLIMIT_FSIZE must fail as an error we report (the message
/// is kept), not kill the process with SIGXFSZ.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Wait until our child `pid` has exited, without reaping it: until it is
/// reaped (`Child::wait`), its id, and the id of the process group it
/// leads, cannot be given to another process, so that a signal sent to
/// them meanwhile reaches nothing else.
pub fn wait_for_exit(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`; WNOWAIT leaves the child as it is.
        let waited =
            unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if waited == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// SIGKILL to the process group that our child `leader` leads (started
/// with `process_group(0)`, not yet reaped), its own children included.
pub fn kill_process_group(leader: u32) {
    // SAFETY: kill(2) has no memory effects; the group is our child's.
    unsafe { libc::kill(-(leader as libc::pid_t), libc::SIGKILL) };
}

/// Whether `fd` becomes readable within `wait`; false as well when `wake`
/// (if given) becomes readable first. An error (EINTR) is an error.
pub fn readable(fd: BorrowedFd<'_>, wake: Option<BorrowedFd<'_>>, wait: Duration) -> io::Result<bool> {
    let pollfd = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // poll() ignores a negative descriptor.
    let mut fds = [pollfd(fd.as_raw_fd()), pollfd(wake.map_or(-1, |fd| fd.as_raw_fd()))];
    let ms = wait.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int;
    poll(&mut fds, ms)?;
    Ok(fds[0].revents != 0)
}

/// poll(2) over `fds` for at most `timeout_ms` (-1: no limit); how many
/// became ready. An error (EINTR) is an error.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: fds is a slice of initialised pollfd that outlives the call,
    // and its length is what we pass.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    usize::try_from(ready).map_err(|_| io::Error::last_os_error())
}

/// A new eventfd (close-on-exec, non-blocking), or None when no descriptor
/// is left.
pub fn eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd has no preconditions; a descriptor it returns is ours.
    match unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } {
        -1 => None,
        // SAFETY: a descriptor just made, owned by nothing else.
        fd => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

/// Make eventfd `fd` readable (for good: it is never read).
pub fn signal_eventfd(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: eight bytes from a live buffer to a descriptor that is open.
    let _ = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Whether this process runs as root (its effective user).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run `f`; a panic comes back as its message and place, not as Rust's
/// default output on stderr (which would come before our status line) nor
/// as exit 101. Each thread keeps its own message, so the worker threads of
/// `watch` each report their own.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    thread_local! {
        static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
    }
    panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let text = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
            (Some(s), _) => s.to_string(),
            (_, Some(s)) => s.clone(),
            _ => "panic".to_string(),
        };
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        MESSAGE.with(|m| *m.borrow_mut() = format!("{text}{place}"));
    }));
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| MESSAGE.with(|m| m.borrow().clone()))
}

/// A lock held for as long as the value lives, named by `name` and shared
/// by every process in this network namespace, whoever runs it and
/// whatever its environment (an abstract Unix socket: no file, no
/// permissions, gone with the process however it ends).
pub struct NamedLock {
    _socket: std::os::unix::net::UnixListener,
}

impl NamedLock {
    /// The lock, or None if another process holds it.
    pub fn take(name: &str) -> io::Result<Option<NamedLock>> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(socket) => Ok(Some(NamedLock { _socket: socket })),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// No core dumps: one would hold the ingress password, IMAP passwords and
/// tokens. Best effort, for every command, before any secret is read.
pub fn no_core_dumps() {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls with valid arguments; their failure
    // leaves things as they were.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_lock_is_held_once_until_dropped() {
        let name = format!("chatwoot-ingress-test/{}", std::process::id());
        let first = NamedLock::take(&name).unwrap().expect("free");
        assert!(NamedLock::take(&name).unwrap().is_none());
        drop(first);
        assert!(NamedLock::take(&name).unwrap().is_some());
    }

    #[test]
    fn root_is_found_through_nss() {
        let root = Account::by_name("root").expect("every system has root");
        assert_eq!((root.uid, root.gids[0]), (0, 0));
        assert_eq!(Account::name_of(0).as_deref(), Some("root"));
        assert!(Account::by_name("no-such-user-here").is_none());
        assert!(Account::by_name("nul\0byte").is_none());
    }

    #[test]
    fn signals_are_named_and_none_is_a_fault() {
        let signals = terminating_signals();
        assert!(signals.contains(&libc::SIGUSR1) && signals.contains(&libc::SIGRTMAX()));
        for fault in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGKILL, libc::SIGSTOP] {
            assert!(!signals.contains(&fault));
        }
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert!(signals.iter().all(|&s| signal_name(s).starts_with("SIG")));
    }

    #[test]
    fn host_and_port_read_as_in_a_url() {
        assert_eq!(host_port("imap.example.com", 993), "imap.example.com:993");
        assert_eq!(host_port("127.0.0.1", 143), "127.0.0.1:143");
        assert_eq!(host_port("::1", 993), "[::1]:993");
    }

    #[test]
    fn io_reasons_read_like_our_lines() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(io_reason(&e), "entity not found");
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_reason(&e), "permission denied");
    }
}

//! Fault injection for the tests, compiled only with the `test-hooks`
//! feature (the tests' own build; never what is shipped). A point named in
//! `CHATWOOT_INGRESS_TEST_PANIC` panics each time it is reached; one named
//! in `CHATWOOT_INGRESS_TEST_HANG` as `point:seconds` stops the thread
//! that first reaches it for that long (a deadlock, as liveness must see
//! it, that ends).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Panic or hang here if the test asked for it.
pub fn point(name: &str) {
    let asked = |var: &str| {
        let points = std::env::var(var).unwrap_or_default();
        points.split(',').find_map(|p| {
            let (point, arg) = p.split_once(':').unwrap_or((p, ""));
            (point == name).then(|| arg.to_string())
        })
    };
    if asked("CHATWOOT_INGRESS_TEST_PANIC").is_some() {
        panic!("test hook: a panic at {name}");
    }
    static HUNG: AtomicBool = AtomicBool::new(false);
    if let Some(seconds) = asked("CHATWOOT_INGRESS_TEST_HANG") {
        if !HUNG.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(seconds.parse().unwrap_or(3600)));
        }
    }
}

/// The IMAP command timeout a test asks for (`CHATWOOT_INGRESS_TEST_IMAP_TIMEOUT`,
/// seconds), so that limits counted in timeouts can be reached in seconds.
pub fn imap_timeout() -> Option<Duration> {
    let seconds = std::env::var("CHATWOOT_INGRESS_TEST_IMAP_TIMEOUT").ok()?;
    seconds.parse().ok().map(Duration::from_secs)
}

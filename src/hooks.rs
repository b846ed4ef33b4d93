//! Fault injection for the tests, compiled only with the `test-hooks`
//! feature (the tests' own build; never what is shipped): a point named in
//! `CHATWOOT_INGRESS_TEST_PANIC` panics, one named in
//! `CHATWOOT_INGRESS_TEST_HANG` never returns (a deadlock, as liveness
//! must see it).

/// Panic or hang here if the test asked for it.
pub fn point(name: &str) {
    let asked = |var: &str| std::env::var(var).is_ok_and(|points| points.split(',').any(|p| p == name));
    if asked("CHATWOOT_INGRESS_TEST_PANIC") {
        panic!("test hook: a panic at {name}");
    }
    if asked("CHATWOOT_INGRESS_TEST_HANG") {
        loop {
            std::thread::park();
        }
    }
}

//! The one integration test binary: a module per area, sharing `common`
//! (servers, runners, harnesses) and `render` (man pages, completions).
//! Tests that need an outside system (Dovecot, Rails, an MTA, …) are
//! `#[ignore = "needs …"]`: run them with `-- --include-ignored` after
//! tests/interop/install-deps.

mod common;
mod render;

mod check;
mod check_chatwoot_env;
mod check_graph;
mod check_imap;
mod cluster;
mod container;
mod deliver;
mod docs;
mod fault_matrix;
mod graph_client;
mod imap_client;
mod import;
mod interop;
mod metrics;
mod oauth2;
mod properties;
mod routing;
mod tls;
mod watch;
mod watch_graph;
mod watch_hostile;
mod watch_observe;

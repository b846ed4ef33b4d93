//! chatwoot-ingress: relay email from a mail server to Chatwoot's Action
//! Mailbox relay ingress, and tell the mail server what happened in its own
//! language.
//!
//! The commands ([`deliver`], [`import`], [`check`], [`watch`]) decide where
//! messages come from and what happens after, each under the one command
//! lifecycle ([`run`]: signals, panics, the end reported); each message
//! goes through the one [`pipeline`]: [`message`] reads and validates it,
//! [`relay`] POSTs it, and [`outcome`] turns the result into a status line
//! and an exit code.
//! [`cli`] and [`config`] say what to do; [`sys`], [`tls`], [`secret`],
//! [`http`] and [`backoff`] are the plumbing they share. The protocol
//! clients ([`imap`], [`oauth2`]) are leaves; [`mailbox`] builds them from
//! the configuration and maps their errors to outcomes. [`metrics`] is what
//! a running `watch` shows a monitoring system, and [`health`] the command
//! that asks it.

pub mod backoff;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod graph;
pub mod headers;
pub mod health;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod http;
pub mod imap;
pub mod import;
pub mod log;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod oauth2;
pub mod outcome;
pub mod pipeline;
pub mod reject;
pub mod relay;
pub mod run;
pub mod secret;
pub mod sys;
pub mod tls;
pub mod watch;

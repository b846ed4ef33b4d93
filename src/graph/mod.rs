//! A leaf: the Microsoft Graph mail client `watch` uses for mailboxes with
//! `source = "graph"`. It imports only the plumbing (`http`, `secret`,
//! `sys`) and
//! knows nothing of configuration, outcomes or the relay: the engine maps
//! its [`Error`]s to an outcome.
//!
//! What it does, each as Microsoft documents it
//! (microsoftgraph/microsoft-graph-docs-contrib, cited by path in the code):
//! folders listed, resolved from "Parent/Child" or well-known names, and
//! created; delta rounds per folder, resumable, started over on a lost
//! state; a message's MIME bytes with a size cap; mark read; move. Every
//! request carries `Prefer: IdType="ImmutableId"` (ids survive a move) and
//! the bearer token the caller hands in (tokens are `oauth2`'s); no more
//! than 4 requests to a mailbox at once, none while a `Retry-After` holds;
//! a link from the server is followed only back to the same service.
//! Errors are told by status and `error.code`, never by message text.

mod client;
mod delta;
mod endpoint;
mod error;
mod folders;
mod limit;
mod model;
mod wire;

pub use client::{Client, Options};
pub use delta::{Changes, DeltaLink, Round};
pub use endpoint::{well_known, Endpoint, EndpointError, GLOBAL};
pub use error::{parse_retry_after, Detail, Error, RETRY_AFTER_MAX};
pub use folders::FolderPath;
pub use limit::MAX_IN_FLIGHT;
pub use model::{Folder, Message};

//! Commands that are neither the delivery pipeline's front doors nor `check`:
//! each takes its arguments and the configuration, does its work through
//! the libraries, and reports through one [`crate::outcome::Outcome`].

pub mod oauth2_authorize;

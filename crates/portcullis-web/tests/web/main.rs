//! The web crate's integration tests, one binary (one build, one link) made of modules that
//! share one harness, [`helpers::spawn_app`]: the JSON API, the pages, and sites.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod api;
mod helpers;
mod pages;
mod sessions;
mod sites;

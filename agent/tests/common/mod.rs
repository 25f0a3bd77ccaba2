//! Helpers shared by the integration tests, one module per concern.

pub mod netns;

#![no_std]
// Present so that the agent can list this crate as a build-dependency; the program is in main.rs.

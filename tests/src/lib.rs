//! Helpers for the privileged end-to-end tests: crafted frames, a harness around the real XDP
//! program under BPF_PROG_TEST_RUN, and (from `xtask::lab`) namespaces and veth pairs.

pub mod frames;
pub mod harness;

//! SIP message parsing: zero-copy over the captured payload.

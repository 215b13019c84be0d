//! Offline input: capture files and the userspace twin of the kernel frame parser.

//! Least privilege: once the program is loaded and attached and the ring buffer is mapped, the
//! agent needs no capability at all (docs/privileges.md says why, operation by operation), so it
//! gives them all up for good:
//!
//! 1. `PR_SET_NO_NEW_PRIVS`: no execve can grant anything again (setuid binaries, file caps);
//! 2. every capability leaves the bounding set (`PR_CAPBSET_DROP`), the ambient set is cleared;
//! 3. with `--user`, supplementary groups are cleared and the real, effective and saved ids
//!    become that user's (`setgroups`, `setresgid`, `setresuid`);
//! 4. the effective, permitted and inheritable sets are emptied (`capset`).
//!
//! Capabilities belong to threads: this must run while the process has a single thread, which
//! [`drop_privileges`] checks. On kernels before 6.5, where `kernel.unprivileged_bpf_disabled`
//! refuses every `bpf()` call without CAP_BPF, even on descriptors already open, CAP_BPF is kept
//! (and only it).

use std::{ffi::CString, fmt};

/// The highest capability number the sets are cleared up to (the kernel ignores numbers it does
/// not know when dropping from the bounding set: it stops at the first EINVAL).
const CAP_LAST_MAX: u32 = 63;
/// CAP_BPF (Linux 5.8).
pub const CAP_BPF: u32 = 39;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("no user `{0}` in the password database (--user)")]
    NoSuchUser(String),
    #[error("--user `{0}` is root: give an unprivileged user")]
    RootUser(String),
    #[error(
        "cannot drop privileges: the process has {0} threads, and capabilities belong to \
         threads; drop them before any other thread starts"
    )]
    Threads(usize),
    #[error("cannot drop privileges: {call} failed: {error}")]
    Call {
        call: &'static str,
        error: std::io::Error,
    },
    #[error("after dropping privileges, /proc/self/status still shows {field}: {value}")]
    NotDropped { field: &'static str, value: String },
}

/// An unprivileged user to become after attaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Looks `name` up in the password database (resolved before anything is attached, so that
    /// a wrong name is a configuration error).
    pub fn lookup(name: &str) -> Result<Self, PrivilegeError> {
        let c_name =
            CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_string()))?;
        // SAFETY: a zeroed passwd is a valid out-parameter; the buffer outlives the call and
        // the result is copied out before it is freed.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return Err(PrivilegeError::NoSuchUser(name.to_string()));
        }
        if pwd.pw_uid == 0 {
            return Err(PrivilegeError::RootUser(name.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// What the agent gives up after attaching.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivilegePlan {
    /// Become this user too (else the agent stays uid 0, without any capability).
    pub user: Option<User>,
}

/// The process's credentials as /proc/self/status shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// Real, effective, saved and filesystem user ids.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
}

impl Credentials {
    /// Reads /proc/<pid>/status (`self` for this process).
    pub fn of(pid: &str) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Self::parse(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/{pid}/status lacks a capability or id line"),
            )
        })
    }

    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| -> Option<&str> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let caps = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            v.try_into().ok()
        };
        Some(Self {
            cap_inh: caps("CapInh")?,
            cap_prm: caps("CapPrm")?,
            cap_eff: caps("CapEff")?,
            cap_bnd: caps("CapBnd")?,
            cap_amb: caps("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
            uid: ids("Uid")?,
            gid: ids("Gid")?,
        })
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CapEff {:016x} CapPrm {:016x} CapInh {:016x} CapBnd {:016x} CapAmb {:016x} \
             NoNewPrivs {} uid {} gid {}",
            self.cap_eff,
            self.cap_prm,
            self.cap_inh,
            self.cap_bnd,
            self.cap_amb,
            u8::from(self.no_new_privs),
            self.uid[1],
            self.gid[1]
        )
    }
}

/// The capabilities the agent keeps on this kernel: none from Linux 6.5 on; CAP_BPF before, when
/// `kernel.unprivileged_bpf_disabled` is set (map lookups and updates on open descriptors then
/// need it).
pub fn capabilities_kept() -> u64 {
    let old_kernel = kernel_version().is_some_and(|v| v < (6, 5));
    let bpf_restricted = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    if old_kernel && bpf_restricted {
        1 << CAP_BPF
    } else {
        0
    }
}

fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check(call: &'static str, rc: libc::c_long) -> Result<(), PrivilegeError> {
    if rc < 0 {
        return Err(PrivilegeError::Call {
            call,
            error: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this thread's effective and permitted sets to `keep` and empties the inheritable set.
fn capset(keep: u64) -> Result<(), PrivilegeError> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data words as capset(2) expects for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check("capset", rc)
}

/// Drops this thread's capabilities to `keep` (effective and permitted; nothing inheritable),
/// leaving the bounding set and the ids alone. For tests that show what a thread without
/// capabilities can still do; the agent uses [`drop_privileges`].
pub fn drop_thread_capabilities(keep: u64) -> Result<(), PrivilegeError> {
    capset(keep)
}

/// Gives up every privilege the agent no longer needs (see the module documentation) and
/// returns the credentials /proc/self/status shows afterwards, checked.
pub fn drop_privileges(plan: &PrivilegePlan) -> Result<Credentials, PrivilegeError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let keep = capabilities_kept();
    // SAFETY: prctl and the id calls below take plain integer arguments.
    unsafe {
        check(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(),
        )?;
        for cap in 0..=CAP_LAST_MAX {
            if keep & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                // EINVAL: past the last capability this kernel knows.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                check("prctl(PR_CAPBSET_DROP)", -1)?;
            }
        }
        check(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
            .into(),
        )?;
        if let Some(user) = &plan.user {
            if keep != 0 {
                // Keep the permitted set across the uid change, to restore `keep` below.
                check(
                    "prctl(PR_SET_KEEPCAPS)",
                    libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into(),
                )?;
            }
            // The raw system calls: glibc's wrappers would change every thread, and there is
            // only this one (checked above).
            check(
                "setgroups",
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            )?;
            check(
                "setresgid",
                libc::syscall(libc::SYS_setresgid, user.gid, user.gid, user.gid),
            )?;
            check(
                "setresuid",
                libc::syscall(libc::SYS_setresuid, user.uid, user.uid, user.uid),
            )?;
        }
    }
    capset(keep)?;
    let after = Credentials::of("self").map_err(|error| PrivilegeError::Call {
        call: "reading /proc/self/status",
        error,
    })?;
    for (field, value) in [
        ("CapEff", after.cap_eff),
        ("CapPrm", after.cap_prm),
        ("CapBnd", after.cap_bnd),
    ] {
        if value != keep {
            return Err(PrivilegeError::NotDropped {
                field,
                value: format!("{value:016x}"),
            });
        }
    }
    for (field, value) in [("CapInh", after.cap_inh), ("CapAmb", after.cap_amb)] {
        if value != 0 {
            return Err(PrivilegeError::NotDropped {
                field,
                value: format!("{value:016x}"),
            });
        }
    }
    if !after.no_new_privs {
        return Err(PrivilegeError::NotDropped {
            field: "NoNewPrivs",
            value: "0".into(),
        });
    }
    if let Some(user) = &plan.user
        && (after.uid != [user.uid; 4] || after.gid != [user.gid; 4])
    {
        return Err(PrivilegeError::NotDropped {
            field: "Uid/Gid",
            value: format!("{:?}/{:?}", after.uid, after.gid),
        });
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tsensor\nUid:\t0\t0\t0\t0\nGid:\t65534\t65534\t65534\t65534\n\
                      CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                      CapEff:\t0000000000000000\nCapBnd:\t0000008000000000\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        let c = Credentials::parse(status).unwrap();
        assert_eq!(c.cap_bnd, 1 << CAP_BPF);
        assert_eq!(c.cap_eff, 0);
        assert!(c.no_new_privs);
        assert_eq!(c.uid, [0; 4]);
        assert_eq!(c.gid, [65534; 4]);
        assert!(Credentials::parse("Name:\tx\n").is_none());
    }

    #[test]
    fn users_are_looked_up() {
        assert!(matches!(
            User::lookup("root"),
            Err(PrivilegeError::RootUser(_))
        ));
        assert!(matches!(
            User::lookup("no-such-user-sensor"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        let nobody = User::lookup("nobody").unwrap();
        assert_ne!(nobody.uid, 0);
    }

    #[test]
    fn this_kernel_needs_no_capability_after_attach() {
        // The project's machines run a kernel from 6.5 on: nothing is kept.
        if kernel_version().is_some_and(|v| v >= (6, 5)) {
            assert_eq!(capabilities_kept(), 0);
        }
    }
}

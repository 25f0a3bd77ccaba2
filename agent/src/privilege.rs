//! Least privilege for `run`: once capture is set up, the agent keeps only the Linux
//! capabilities it still uses and drops the rest from its effective, permitted,
//! inheritable, ambient and bounding sets, so a bug in the parsing of hostile traffic
//! cannot use what attaching needed (SYS_ADMIN, NET_RAW, DAC_OVERRIDE, ...).
//!
//! Capability sets are per thread: call `keep_only` before any other thread is started,
//! and the threads started later inherit the reduced sets.

use thiserror::Error;

/// Capability numbers from `linux/capability.h`.
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

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

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("reading this process's capabilities failed: {0}")]
    Get(std::io::Error),
    #[error("dropping capabilities failed: {0}")]
    Set(std::io::Error),
}

fn capget() -> Result<[CapData; 2], PrivilegeError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, which we pass.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Get(std::io::Error::last_os_error()));
    }
    Ok(data)
}

fn mask(data: &[CapData; 2], field: fn(&CapData) -> u32) -> u64 {
    u64::from(field(&data[0])) | (u64::from(field(&data[1])) << 32)
}

/// This thread's effective capabilities as a bit mask.
pub fn effective() -> Result<u64, PrivilegeError> {
    Ok(mask(&capget()?, |d| d.effective))
}

/// Reduces this thread's capabilities to those in `keep` (bit numbers) that it has now.
/// Returns the effective mask it ends with. Without privileges to begin with, nothing
/// changes and nothing fails.
pub fn keep_only(keep: &[u32]) -> Result<u64, PrivilegeError> {
    let before = capget()?;
    let had = mask(&before, |d| d.permitted);
    let wanted = keep.iter().fold(0u64, |m, &c| m | (1u64 << c)) & had;
    if had == wanted {
        return Ok(mask(&before, |d| d.effective));
    }
    // Ambient and bounding sets first: dropping from the bounding set needs SETPCAP,
    // which the capset below may take away. Errors here are for caps the kernel does
    // not know (newer than it), which nobody can hold anyway.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if had & (1 << CAP_SETPCAP) != 0 {
            for cap in 0..64u32 {
                if wanted & (1 << cap) == 0 {
                    libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                }
            }
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: wanted as u32,
            permitted: wanted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (wanted >> 32) as u32,
            permitted: (wanted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: as in capget; the kernel only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Set(std::io::Error::last_os_error()));
    }
    effective()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_what_a_thread_has_changes_nothing() {
        // On its own thread: capability sets are per thread, and the test harness's
        // other threads must keep theirs.
        std::thread::spawn(|| {
            let before = effective().expect("capget");
            let all: Vec<u32> = (0..64).filter(|c| before & (1 << c) != 0).collect();
            assert_eq!(keep_only(&all).expect("capset"), before);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn dropping_leaves_only_what_was_kept_and_had() {
        std::thread::spawn(|| {
            let before = effective().expect("capget");
            let after = keep_only(&[CAP_NET_ADMIN, CAP_BPF]).expect("capset");
            let kept = ((1u64 << CAP_NET_ADMIN) | (1u64 << CAP_BPF)) & before;
            assert_eq!(after, kept);
        })
        .join()
        .expect("thread");
    }
}

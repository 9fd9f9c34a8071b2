//! What the launcher needs from the operating system: who we are (effective uid, the `postgres` system user), probing and signalling pids, and spawning the server so that it dies with us (parent-death signal, launcher thread).
//!
//! The system calls go through `rustix` (process identity, signals, `prctl`)
//! and `nix` (the `getpwnam_r` user lookup). The one `unsafe` block left is
//! `CommandExt::pre_exec`, which is an unsafe fn by itself.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{mpsc, OnceLock};
use std::thread;

use rustix::io::Errno;
use rustix::process::{self as rp, Pid, Signal};

/// A system user's uid and primary gid: whom the server runs as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The effective uid of this process.
pub(crate) fn effective_uid() -> u32 {
    rp::geteuid().as_raw()
}

/// Looks up a user's uid and primary gid (`getpwnam_r`, so NSS is honoured).
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<Identity>> {
    let user = nix::unistd::User::from_name(name).map_err(io::Error::from)?;
    Ok(user.map(|u| Identity {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }))
}

/// A pid that addresses exactly one process (never a group or every process).
fn single_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw)
}

/// True if a process with this pid exists (even if we may not signal it).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Some(pid) = single_pid(pid) else {
        return false;
    };
    // Signal 0: only checks that the process exists and may be signalled.
    match rp::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == Errno::PERM,
    }
}

/// Sends `signal` to one process; a process that is already gone is not an error.
pub(crate) fn signal_pid(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = single_pid(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    match rp::kill_process(pid, signal) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::SRCH => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// As root: run the child as the server user.
pub(crate) fn apply_identity(cmd: &mut Command, data_dir: &Path, run_as: Option<Identity>) {
    if let Some(id) = run_as {
        // std sets these in the child after fork: setgroups(0) (dropping
        // supplementary groups), setgid, setuid -- all before pre_exec hooks.
        cmd.uid(id.uid).gid(id.gid).env("HOME", data_dir);
    }
}

/// Makes the kernel send SIGINT (fast shutdown) to the child when the thread
/// that spawned it exits -- see [`spawn_on_launcher`] for why that thread lives
/// as long as the process.
///
/// Ordering: std's child-side code runs setgroups/setgid/setuid *before* the
/// pre_exec hooks (verified by `pre_exec_runs_after_privileges_are_dropped`).
/// That matters because changing credentials clears PR_SET_PDEATHSIG; exec of
/// a non-setuid binary keeps it.
pub(crate) fn tie_to_parent(cmd: &mut Command) {
    let parent = rp::getpid();
    let hook = move || -> io::Result<()> {
        rp::set_parent_process_death_signal(Some(Signal::INT))?;
        // If we died between fork and prctl, the signal was missed: give up.
        if rp::getppid() != Some(parent) {
            return Err(Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes
    // async-signal-safe syscalls (prctl, getppid) through rustix's direct
    // syscall wrappers; it does not allocate (both error values are plain OS
    // error codes) or take locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(hook);
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Sender to the launcher thread; see [`spawn_on_launcher`].
static LAUNCHER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

fn launcher() -> io::Result<&'static mpsc::Sender<Job>> {
    if let Some(sender) = LAUNCHER.get() {
        return Ok(sender);
    }
    let (sender, receiver) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("tenantry-pg-launcher".into())
        .spawn(move || {
            // Runs until every sender is gone, i.e. for the life of the process
            // (the static one is never dropped). A panicking job must not end
            // the thread: that would SIGINT every server it spawned.
            for job in receiver {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })?;
    // If another thread won the race, our sender is dropped here and our
    // launcher thread, which spawned nothing, exits.
    let _ = LAUNCHER.set(sender);
    LAUNCHER
        .get()
        .ok_or_else(|| io::Error::other("postgres launcher thread not initialised"))
}

/// Spawns `cmd` on the launcher thread.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
/// when the process does. Callers (tests especially) may be short-lived
/// threads, so the server is forked from one thread that never exits.
pub(crate) fn spawn_on_launcher(mut cmd: Command) -> io::Result<Child> {
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(cmd.spawn());
    });
    launcher()?
        .send(job)
        .map_err(|_| io::Error::other("the postgres launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the postgres launcher thread did not answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim `tie_to_parent` relies on: std drops privileges (and all
    /// supplementary groups) in the child before running pre_exec hooks.
    #[test]
    fn pre_exec_runs_after_privileges_are_dropped() {
        if effective_uid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let id = lookup_user("postgres").unwrap().expect("postgres user");
        // `id -G` prints the groups the child ends up with after exec.
        let mut cmd = Command::new("id");
        cmd.arg("-G").uid(id.uid).gid(id.gid);
        let hook = move || -> io::Result<()> {
            let (uid, euid, gid) = (rp::getuid(), rp::geteuid(), rp::getgid());
            if uid.as_raw() == id.uid && euid.as_raw() == id.uid && gid.as_raw() == id.gid {
                Ok(())
            } else {
                Err(Errno::PERM.into())
            }
        };
        // SAFETY: the hook only calls async-signal-safe getters and does not allocate.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(hook);
        }
        let out = cmd
            .output()
            .expect("pre_exec saw root credentials: ordering assumption broken");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            id.gid.to_string(),
            "supplementary groups were not dropped"
        );
    }

    #[test]
    fn probes_and_signals_pids() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(pid_alive(pid));
        signal_pid(pid, Signal::INT).unwrap();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        // Gone already: not an error.
        signal_pid(pid, Signal::INT).unwrap();
        assert!(!pid_alive(0));
        assert!(signal_pid(0, Signal::INT).is_err());
    }
}

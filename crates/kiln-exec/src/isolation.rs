//! What keeps a task of the process executor from what is not its own.
//!
//! - [`TaskUsers`]: when the agent runs as root, every running task gets a
//!   uid of its own from a range (`--task-uids`), with the gid of the
//!   `kiln-task` group. A uid is claimed with an `flock`ed file in a
//!   machine-wide directory, so two agents on one machine never hand out the
//!   same one. Another uid cannot read a task's `/proc/<pid>/environ`, signal
//!   it, or read its workspace (`0700`); the agent's and the server's files
//!   (`0600`, root's) are out of its reach.
//! - [`TaskCgroups`]: every task gets a cgroup (v2) of its own below the
//!   agent's, each step joins it before `exec`, and at the task's end the
//!   whole cgroup is killed (`cgroup.kill`), so nothing the task started
//!   survives it, whatever it did with sessions or process groups.
//!
//! Both need privileges: without them the executor runs as before (steps
//! in a process group of their own, as the agent's user), and the agent
//! says so once.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The group whose gid every task user has; the set-up creates it
/// (`groupadd --system kiln-task`).
pub const TASK_GROUP: &str = "kiln-task";
/// Where agents on one machine claim task uids, one locked file per uid.
/// Under `/run`, which only root can write, so a task cannot prepare it.
pub const UID_LOCK_DIR: &str = "/run/kiln/task-uids";
/// How long the end of a task waits for its cgroup to empty after the kill.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How the process executor keeps tasks apart; the default, nothing
/// beyond a process group per step, is what `kiln run` uses.
#[derive(Debug, Default)]
pub struct Isolation {
    /// A uid of its own per running task (needs root).
    pub users: Option<TaskUsers>,
    /// A cgroup of its own per task (needs a writable cgroup v2).
    pub cgroups: Option<TaskCgroups>,
}

impl Isolation {
    /// Whether tasks run as users of their own: only then are the agent's
    /// and the server's files and environment out of their reach.
    pub fn separates_users(&self) -> bool {
        self.users.is_some()
    }
}

/// Why a task cannot be isolated as asked.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error(
        "the group `{TASK_GROUP}` that task users belong to does not exist; create it with \
         `groupadd --system {TASK_GROUP}` (see docs/agents.md, Isolation)"
    )]
    NoTaskGroup,
    #[error("invalid uid range `{0}`: expected FIRST-LAST, e.g. 61184-61439, not including 0")]
    BadRange(String),
    #[error(
        "uid {uid} of the task uid range belongs to the user `{user}` in /etc/passwd: tasks \
         would get that user's files; choose another range with --task-uids"
    )]
    RangeTaken { uid: u32, user: String },
    #[error("all {0} task uids are in use by running tasks; widen --task-uids")]
    Exhausted(usize),
    #[error(
        "task users cannot reach the work directory: {0} is not searchable by others \
         (`chmod o+x` it, or pick a --work-dir, or the server's --data-dir, whose parents are)"
    )]
    Unreachable(PathBuf),
    #[error("no writable cgroup v2 hierarchy: {0}")]
    NoCgroup(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IsolationError {
    let path = path.to_path_buf();
    move |source| IsolationError::Io { what, path, source }
}

/// An inclusive range of uids, as `--task-uids FIRST-LAST` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    /// systemd's range for dynamic users, which no distribution gives to
    /// accounts: 256 uids, so 256 tasks at once per machine.
    pub const DEFAULT: UidRange = UidRange {
        first: 61184,
        last: 61439,
    };

    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for UidRange {
    type Err = IsolationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IsolationError::BadRange(text.to_string());
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        // 0 is root; u32::MAX is the kernel's "no uid".
        if first == 0 || first > last || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange { first, last })
    }
}

/// The uids tasks run as, and the claims on them.
#[derive(Debug)]
pub struct TaskUsers {
    range: UidRange,
    gid: u32,
    lock_dir: PathBuf,
    /// Where the next claim starts looking, so uids rotate rather than the
    /// first one being reused at once.
    next: AtomicU32,
    /// Whether a claimed uid's processes are looked for (in all of /proc)
    /// and killed when it is taken and freed: needed only where tasks get
    /// no cgroup, which otherwise holds every process of the task.
    sweep_processes: bool,
}

impl TaskUsers {
    /// Task users from `range`, claimed in `lock_dir` ([`UID_LOCK_DIR`]).
    /// Fails when the `kiln-task` group is missing or a uid of the range
    /// belongs to an account.
    pub fn new(range: UidRange, lock_dir: &Path) -> Result<TaskUsers, IsolationError> {
        let groups = fs::read_to_string("/etc/group")
            .map_err(io_error("cannot read", "/etc/group".as_ref()))?;
        let gid = find_gid(&groups, TASK_GROUP).ok_or(IsolationError::NoTaskGroup)?;
        let passwd = fs::read_to_string("/etc/passwd")
            .map_err(io_error("cannot read", "/etc/passwd".as_ref()))?;
        if let Some((user, uid)) = accounts(&passwd).find(|(_, uid)| range.contains(*uid)) {
            return Err(IsolationError::RangeTaken {
                uid,
                user: user.to_string(),
            });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(lock_dir)
            .map_err(io_error("cannot create", lock_dir))?;
        Ok(TaskUsers {
            range,
            gid,
            lock_dir: lock_dir.to_path_buf(),
            next: AtomicU32::new(0),
            sweep_processes: true,
        })
    }

    /// For tasks that each get a cgroup: a task's processes cannot leave
    /// it, and an agent that starts kills what dead agents' cgroups held,
    /// so a uid's processes need no search through /proc (a few ms per
    /// task on a busy machine).
    pub fn confined_by_cgroups(mut self) -> TaskUsers {
        self.sweep_processes = false;
        self
    }

    pub fn range(&self) -> UidRange {
        self.range
    }

    /// A uid no other running task on this machine has, held until the
    /// returned [`TaskUser`] is dropped. Processes a crashed agent's task
    /// may have left under that uid are killed first.
    pub fn claim(&self) -> Result<TaskUser, IsolationError> {
        let count = self.range.len() as u32;
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        for offset in 0..count {
            let uid = self.range.first + (start + offset) % count;
            let path = self.lock_dir.join(format!("{uid}.lock"));
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_error("cannot open", &path))?;
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if locked == 0 {
                if self.sweep_processes {
                    kill_user_processes(uid);
                }
                return Ok(TaskUser {
                    uid,
                    gid: self.gid,
                    sweep_processes: self.sweep_processes,
                    _claim: file,
                });
            }
        }
        Err(IsolationError::Exhausted(self.range.len()))
    }
}

/// A uid claimed for one task (see [`TaskUsers::claim`]). Dropping it
/// kills what still runs under the uid, removes what the task left in the
/// machine's shared temporary directories, and frees the uid.
#[derive(Debug)]
pub struct TaskUser {
    pub uid: u32,
    pub gid: u32,
    /// See [`TaskUsers::confined_by_cgroups`].
    sweep_processes: bool,
    /// The locked file; closing it frees the uid.
    _claim: File,
}

impl TaskUser {
    /// Kills every process still running under this uid (what a task left
    /// when there is no cgroup to kill).
    pub fn kill_processes(&self) {
        kill_user_processes(self.uid);
    }

    /// Gives `dir` and everything in it to this user, the top `0700`.
    pub fn take_over(&self, dir: &Path) -> io::Result<()> {
        chown_tree(dir, self.uid, self.gid)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
}

impl Drop for TaskUser {
    fn drop(&mut self) {
        if self.sweep_processes {
            kill_user_processes(self.uid);
        }
        // The next task with this uid must not find this one's files.
        for shared in ["/tmp", "/var/tmp", "/dev/shm"] {
            let Ok(entries) = fs::read_dir(shared) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.uid() == self.uid => {
                        let _ = if meta.is_dir() {
                            fs::remove_dir_all(&path)
                        } else {
                            fs::remove_file(&path)
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Makes the agent's work directory (and `also`, e.g. the server's data
/// directory holding it) traversable but not listable by task users, and
/// checks that every parent above lets them through.
pub fn open_path_to(work_dir: &Path, also: &[&Path]) -> Result<(), IsolationError> {
    for dir in std::iter::once(work_dir).chain(also.iter().copied()) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .map_err(io_error("cannot set the mode of", dir))?;
    }
    for parent in work_dir.ancestors().skip(1) {
        if also.contains(&parent) {
            continue;
        }
        let meta = fs::metadata(parent).map_err(io_error("cannot read", parent))?;
        if meta.mode() & 0o001 == 0 {
            return Err(IsolationError::Unreachable(parent.to_path_buf()));
        }
    }
    Ok(())
}

/// The gid of `name` in an `/etc/group` text.
fn find_gid(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// (name, uid) of every account in an `/etc/passwd` text.
fn accounts(passwd: &str) -> impl Iterator<Item = (&str, u32)> {
    passwd.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let uid = fields.nth(1)?.parse().ok()?;
        Some((name, uid))
    })
}

/// `chown -hR uid:gid dir`, without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if fs::symlink_metadata(dir)?.is_dir() {
        for entry in fs::read_dir(dir)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// SIGKILLs every process whose real uid is `uid`, until none is left (a
/// process may fork while the list is read).
fn kill_user_processes(uid: u32) {
    let started = Instant::now();
    loop {
        let pids = user_processes(uid);
        if pids.is_empty() || started.elapsed() > KILL_WAIT {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Live (not zombie) processes whose real uid is `uid`.
fn user_processes(uid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(entry.path().join("status")).ok()?;
            let real = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()?;
            let zombie = status
                .lines()
                .find_map(|l| l.strip_prefix("State:"))
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            (real == uid && !zombie).then_some(pid)
        })
        .collect()
}

/// The cgroups of one agent's tasks: `kiln-agent-<pid>` below the agent's
/// own cgroup, one `task-<n>` in it per task.
#[derive(Debug)]
pub struct TaskCgroups {
    dir: PathBuf,
    next: AtomicU64,
}

impl TaskCgroups {
    /// Finds the cgroup v2 hierarchy and this process's place in it, removes
    /// what agents that died left next to it, and makes this agent's cgroup.
    pub fn for_this_process() -> Result<TaskCgroups, IsolationError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_error("cannot read", "/proc/self/mountinfo".as_ref()))?;
        let mount = cgroup2_mount(&mountinfo)
            .ok_or_else(|| IsolationError::NoCgroup("no cgroup2 file system is mounted".into()))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(io_error("cannot read", "/proc/self/cgroup".as_ref()))?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| IsolationError::NoCgroup("this process is in no cgroup v2".into()))?;
        let parent = mount.join(own.trim_start_matches('/'));
        sweep_dead_agents(&parent);
        let dir = parent.join(format!("kiln-agent-{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(IsolationError::NoCgroup(format!(
                    "cannot create {}: {e}",
                    dir.display()
                )));
            }
        }
        Ok(TaskCgroups {
            dir,
            next: AtomicU64::new(0),
        })
    }

    /// This agent's cgroup, holding its tasks' ones.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty cgroup for one task.
    pub fn create(&self) -> Result<TaskCgroup, IsolationError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("task-{n}"));
        fs::create_dir(&path).map_err(io_error("cannot create the cgroup", &path))?;
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|e| IsolationError::NoCgroup(e.to_string()))?;
        Ok(TaskCgroup { path, procs })
    }
}

impl Drop for TaskCgroups {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}

/// One task's cgroup. [`TaskCgroup::kill`] (or dropping it) ends every
/// process in it and removes it.
#[derive(Debug)]
pub struct TaskCgroup {
    path: PathBuf,
    procs: CString,
}

impl TaskCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `…/cgroup.procs` as a C string, for a child to write itself into
    /// between `fork` and `exec` (see [`join_cgroup`]).
    pub fn procs_file(&self) -> &std::ffi::CStr {
        &self.procs
    }

    /// Pids in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.path)
    }

    /// Kills everything in the cgroup and waits until it is empty.
    pub fn kill(&self) {
        kill_cgroup(&self.path);
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        kill_cgroup(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}

/// Writes the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. Meant for `pre_exec`: only async-signal-safe calls, nothing
/// allocated.
///
/// # Safety
/// Same as [`std::os::unix::process::CommandExt::pre_exec`]'s closures.
pub unsafe fn join_cgroup(procs: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: open, write and close are async-signal-safe; the buffers live
    // for the whole call.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // "0" means the writing process itself.
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Drops root for `uid`:`gid` with no supplementary groups and umask
/// `022`, as
/// `CommandExt::uid`/`gid` would; done in `pre_exec` instead so that the
/// step joins its cgroup first (only root may move it there).
///
/// # Safety
/// Same as [`std::os::unix::process::CommandExt::pre_exec`]'s closures.
pub unsafe fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups, setgid, setuid and umask are async-signal-safe.
    unsafe {
        // The usual mask, whatever the agent's own is (a server keeps its
        // files private with 077): the workspace itself is `0700`.
        libc::umask(0o022);
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where the cgroup2 file system is mounted, from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on a pure v2 system, `/sys/fs/cgroup/unified` on a
/// hybrid one).
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split(' ').next()? == "cgroup2").then_some(())?;
        // Fields: id parent major:minor root mount-point …
        let mount = before.split(' ').nth(4)?;
        Some(PathBuf::from(unescape_mount(mount)))
    })
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as `\ooo`.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|octal| u8::from_str_radix(octal, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `kiln-agent-<pid>` cgroups under `parent` whose agent is gone,
/// killing what its tasks left running.
fn sweep_dead_agents(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kiln-agent-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing the task cgroups of agent process {pid}, which is gone");
            remove_cgroup_tree(&entry.path());
        }
    }
}

/// Kills and removes a cgroup and every cgroup below it.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    kill_cgroup(dir);
    let _ = fs::remove_dir(dir);
}

/// `cgroup.kill`, then waits (at most [`KILL_WAIT`]) for `cgroup.procs` to
/// empty. Before Linux 5.14 there is no `cgroup.kill`: each process listed
/// is killed instead, until none is left.
fn kill_cgroup(dir: &Path) {
    let has_kill = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut file| file.write_all(b"1"))
        .is_ok();
    let started = Instant::now();
    loop {
        let pids = read_pids(dir);
        if pids.is_empty() {
            return;
        }
        if started.elapsed() > KILL_WAIT {
            tracing::warn!(
                "processes {pids:?} of {} survived SIGKILL for {KILL_WAIT:?}",
                dir.display()
            );
            return;
        }
        if !has_kill {
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_parse_and_refuse_root_and_reversed_ones() {
        let range: UidRange = "61184-61439".parse().unwrap();
        assert_eq!(range, UidRange::DEFAULT);
        assert_eq!(range.len(), 256);
        assert_eq!(range.to_string(), "61184-61439");
        for bad in ["0-10", "10-5", "10", "a-b", "5-4294967295", ""] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
        assert_eq!("7-7".parse::<UidRange>().unwrap().len(), 1);
    }

    #[test]
    fn groups_and_accounts_are_read_from_their_files() {
        let groups = "root:x:0:\nkiln-task-other:x:5:\nkiln-task:x:998:\n";
        assert_eq!(find_gid(groups, "kiln-task"), Some(998));
        assert_eq!(find_gid(groups, "nope"), None);
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbob:x:61200:100::/home/bob:/bin/sh\n";
        let found: Vec<_> = accounts(passwd).collect();
        assert_eq!(found, [("root", 0), ("bob", 61200)]);
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_a_hybrid_layout() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let spaced = "41 31 0:38 / /mnt/c\\040g rw shared:1 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/c g")));
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    /// Two claimants (here two claims in one process: flock locks belong to
    /// the open file, not the process) never get the same uid, and a uid
    /// comes back once its claim is dropped.
    #[test]
    fn claims_exclude_each_other_and_end_with_their_holder() {
        let locks = tempfile::tempdir().unwrap();
        let users = TaskUsers {
            range: "70000-70001".parse().unwrap(),
            gid: 65534,
            lock_dir: locks.path().to_path_buf(),
            next: AtomicU32::new(0),
            sweep_processes: true,
        };
        let a = users.claim().unwrap();
        let b = users.claim().unwrap();
        assert_ne!(a.uid, b.uid);
        assert!(matches!(users.claim(), Err(IsolationError::Exhausted(2))));
        // Another agent's claim table: a second handle on the same files.
        let other = TaskUsers {
            next: AtomicU32::new(0),
            ..users
        };
        assert!(matches!(other.claim(), Err(IsolationError::Exhausted(2))));
        let freed = a.uid;
        drop(a);
        // Another test of this binary forking at that moment holds a copy
        // of the lock's descriptor until its child's `exec` closes it.
        let started = std::time::Instant::now();
        let reclaimed = loop {
            match other.claim() {
                Ok(user) => break user,
                Err(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("the freed uid never came back: {e}"),
            }
        };
        assert_eq!(reclaimed.uid, freed);
    }

    /// A process that left its session and process group (`setsid`) still
    /// dies with the task's cgroup. Needs root and a cgroup2 mount, as the
    /// test machines have: failing here says the isolation does not work.
    #[test]
    fn a_task_cgroup_kills_what_escaped_its_session() {
        use std::os::unix::process::CommandExt;
        let cgroups = TaskCgroups::for_this_process()
            .expect("a writable cgroup v2 (run as root, see scripts/setup-test-env.sh)");
        let task = cgroups.create().unwrap();
        let procs = task.procs_file().to_owned();
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", "setsid sleep 1000 > /dev/null 2>&1 & echo $!"])
            .stdout(std::process::Stdio::piped());
        // SAFETY: join_cgroup is async-signal-safe.
        unsafe {
            command.pre_exec(move || join_cgroup(&procs));
        }
        let output = command.output().unwrap();
        let sleeper: i32 = String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(task.pids(), [sleeper]);
        let path = task.path().to_path_buf();
        drop(task);
        assert!(!path.exists(), "the task cgroup was not removed");
        let stat = fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "setsid sleep survived its cgroup: {stat}"
        );
        drop(cgroups);
    }
}

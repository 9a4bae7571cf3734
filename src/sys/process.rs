//! Process-wide calls: thread ids, CPU time, shutdown signals and the open-file limit.
//!
//! CPU time of the process and of the calling thread; the shutdown signals (SIGINT,
//! SIGTERM), blocked in every thread and waited for by one; raising the soft limit of open
//! files to the hard one (the tests that open thousands of connections); the clock tick of
//! `/proc` times.

use std::time::Duration;

/// The calling thread's kernel thread id (what `ps -L` and `top -H` show).
pub fn thread_id() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The real user id of the process.
pub fn user_id() -> u32 {
    // SAFETY: getuid takes no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// CPU time (user + system) consumed by the whole process so far.
pub fn process_cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe_zeroed_rusage();
    // SAFETY: usage is a live rusage the kernel fills in.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time consumed by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec the kernel fills in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is a plain C struct of integers, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Blocks SIGINT and SIGTERM in the calling thread (threads spawned later inherit the mask)
/// and returns a function that waits for one of them.
pub fn block_shutdown_signals() -> impl FnOnce() -> i32 + Send {
    // SAFETY: sigset_t is a plain C struct; all-zero is a valid starting value for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live sigset_t; the calls only edit it and the thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: set and sig are live for the call; sigwait only reads set and writes sig.
        unsafe { libc::sigwait(&set, &mut sig) };
        sig
    }
}

/// Raises the soft limit of open files to the hard limit; returns the soft limit now in
/// force (0 if it cannot be read).
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a rlimit on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// CPUs online (at least 1).
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`_SC_CLK_TCK`, at least 1).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// Lets the calling thread run on `cores` only (cores beyond the set size are ignored).
pub fn set_thread_affinity(cores: &[u32]) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores
        .iter()
        .filter(|c| (**c as usize) < libc::CPU_SETSIZE as usize)
    {
        // SAFETY: c is within the set's bounds (filtered above).
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: the set is a live, initialized cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

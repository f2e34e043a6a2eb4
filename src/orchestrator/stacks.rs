//! The pool's threads, started on stacks carved from one mapping and joined before it goes.
//!
//! A thread started by `std::thread` changes the process's address space four times: glibc maps
//! its stack, Rust's runtime maps an alternate signal stack (so that an overflow prints a
//! message), and on exit glibc `madvise`s the stack away (and unmaps it once its 40 MiB stack
//! cache is full) while the runtime unmaps the signal stack. Each change takes the address
//! space's lock and sends the other CPUs a TLB shootdown while thousands of threads fault in
//! their own pages: at 8,000 workers, starting and ending them was most of the run's CPU
//! (docs/performance.md, "Thousands in flight"). Here one mapping holds every stack, each with a
//! guard page under it; glibc neither madvises nor unmaps a stack it was given
//! (`pthread_attr_setstack`), and the mapping goes in one `munmap` after the last join.
//! `cargo run --release --example bench_threads` measures it alone: 206–241 µs of CPU a thread
//! through `std::thread`, 140–156 µs here (8,000 threads).
//!
//! A stack overflow still stops at the guard page, with SIGSEGV and without the runtime's
//! message (it knows only the stacks it mapped).
//!
//! Owns: the mapping, starting a thread on the next free stack, joining every thread started
//! (also when the caller panics), and passing a thread's panic on once all are joined, as
//! `std::thread::scope` does. Must not: hand out a stack twice, or unmap one while its thread
//! may still run.

use std::any::Any;
use std::ffi::{CString, c_void};
use std::io;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

/// The page size when the system does not say (x86-64's; arm64 may have 16 or 64 KiB).
const PAGE: usize = 4096;

/// The system's page size: the guard page's size, and what stacks are rounded up to.
fn page_size() -> usize {
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&size| size > 0)
        .unwrap_or(PAGE)
}

/// A thread's panic, kept until every thread is joined.
type Panic = Box<dyn Any + Send + 'static>;

/// Stacks for up to `capacity` threads, handed out in turn; see [`scope`].
pub struct Stacks<'scope, 'env: 'scope> {
    /// The mapping's address (a number: `Mapping` owns it).
    region: usize,
    /// The guard page's size (a page).
    guard: usize,
    /// A guard page and a stack.
    each: usize,
    stack_size: usize,
    capacity: usize,
    threads: Mutex<Vec<libc::pthread_t>>,
    panic: Mutex<Option<Panic>>,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// What a thread runs, and where its panic goes.
struct Job<'scope> {
    /// Set by the thread itself: for another thread, glibc writes `/proc/self/task/TID/comm`.
    name: Option<CString>,
    run: Box<dyn FnOnce() + Send + 'scope>,
    panic: &'scope Mutex<Option<Panic>>,
}

/// Runs `f` with room for `capacity` threads of `stack_size` bytes each (rounded up to whole
/// pages), then joins every thread `f` started, also when `f` panics, and unmaps the stacks. A
/// thread's panic is raised again here once all are joined. The error is the mapping's.
pub fn scope<'env, R>(
    capacity: usize,
    stack_size: usize,
    f: impl for<'scope> FnOnce(&'scope Stacks<'scope, 'env>) -> R,
) -> io::Result<R> {
    let guard = page_size();
    let (mapping, each, stack_size) = Mapping::new(capacity, stack_size, guard)?;
    let stacks = Stacks {
        region: mapping.address,
        guard,
        each,
        stack_size,
        capacity,
        threads: Mutex::new(Vec::with_capacity(capacity)),
        panic: Mutex::new(None),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = {
        let joined = JoinOnDrop(&stacks);
        let result = f(&stacks);
        drop(joined);
        result
    };
    let panic = crate::lock(&stacks.panic).take();
    // Every thread is joined: no stack is in use.
    drop(mapping);
    if let Some(panic) = panic {
        panic::resume_unwind(panic);
    }
    Ok(result)
}

/// The stacks' memory: unmapped when dropped, once no thread runs on it.
struct Mapping {
    address: usize,
    len: usize,
}

impl Mapping {
    /// Room for `capacity` stacks of `stack_size` bytes (rounded up to whole pages), each above a
    /// guard page of `guard` bytes (a page); with the size of a guard page and stack, and of a
    /// stack.
    fn new(
        capacity: usize,
        stack_size: usize,
        guard: usize,
    ) -> io::Result<(Mapping, usize, usize)> {
        let stack_size = stack_size.div_ceil(guard).max(1) * guard;
        let each = stack_size + guard;
        let len = each
            .checked_mul(capacity.max(1))
            .ok_or_else(|| io::Error::other("too many stacks for the address space"))?;
        // Reserved, not committed: a page costs memory once its thread touches it.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapping = Mapping {
            address: address as usize,
            len,
        };
        Ok((mapping, each, stack_size))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.address as *mut c_void, self.len) };
    }
}

impl<'scope> Stacks<'scope, '_> {
    /// Starts `run` on a thread named `name` (the first 15 bytes, as Linux keeps them) on the
    /// next free stack. Fails when every stack is taken or the system refuses the thread
    /// (`EAGAIN`: a thread limit).
    pub fn spawn(&'scope self, name: &str, run: impl FnOnce() + Send + 'scope) -> io::Result<()> {
        let mut threads = crate::lock(&self.threads);
        let slot = threads.len();
        if slot >= self.capacity {
            return Err(io::Error::other(format!(
                "all {} worker stacks are taken",
                self.capacity
            )));
        }
        let guard = (self.region + slot * self.each) as *mut c_void;
        if unsafe { libc::mprotect(guard, self.guard, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let short: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
        let job = Box::into_raw(Box::new(Job {
            name: CString::new(short).ok(),
            run: Box::new(run),
            panic: &self.panic,
        }));
        let mut thread: libc::pthread_t = 0;
        let created = unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let mut code = libc::pthread_attr_init(&mut attr);
            if code == 0 {
                let stack = (self.region + slot * self.each + self.guard) as *mut c_void;
                code = libc::pthread_attr_setstack(&mut attr, stack, self.stack_size);
                if code == 0 {
                    code = libc::pthread_create(&mut thread, &attr, start, job.cast());
                }
                libc::pthread_attr_destroy(&mut attr);
            }
            code
        };
        if created != 0 {
            // The thread never started: the job is still ours.
            drop(unsafe { Box::from_raw(job) });
            return Err(io::Error::from_raw_os_error(created));
        }
        threads.push(thread);
        Ok(())
    }

    /// Joins every thread started so far.
    fn join_all(&self) {
        let threads = std::mem::take(&mut *crate::lock(&self.threads));
        for thread in threads {
            unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
        }
    }
}

/// A thread's start: runs its job, keeps its panic (the first of all) for [`scope`].
extern "C" fn start(job: *mut c_void) -> *mut c_void {
    // Safety: `spawn` made this from a `Box<Job>` for this thread alone, and `scope` joins the
    // thread before anything the job borrows goes.
    let job = unsafe { Box::from_raw(job.cast::<Job<'static>>()) };
    let Job { name, run, panic } = *job;
    if let Some(name) = name {
        // Only for `ps -L`, `top -H` and debuggers: a failure changes nothing.
        unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    }
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(run)) {
        crate::lock(panic).get_or_insert(payload);
    }
    std::ptr::null_mut()
}

/// Joins the threads when dropped: after `f` returns, or while its panic unwinds.
struct JoinOnDrop<'a, 'scope, 'env>(&'a Stacks<'scope, 'env>);

impl Drop for JoinOnDrop<'_, '_, '_> {
    fn drop(&mut self) {
        self.0.join_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_thread_runs_on_its_own_stack_and_is_joined() {
        let ran = AtomicUsize::new(0);
        let stacks_seen = Mutex::new(Vec::new());
        let result = scope(64, 128 * 1024, |stacks| {
            for i in 0..64 {
                let (ran, stacks_seen) = (&ran, &stacks_seen);
                stacks
                    .spawn(&format!("test-{i}"), move || {
                        // 16 KiB of the 128 (a debug build copies it): several pages deep.
                        let deep = std::hint::black_box([i as u8; 16 * 1024]);
                        crate::lock(stacks_seen).push(&deep as *const _ as usize);
                        let comm = std::fs::read_to_string("/proc/thread-self/comm");
                        assert_eq!(comm.ok(), Some(format!("test-{i}\n")), "its name");
                        ran.fetch_add(usize::from(deep[100]) + 1, Ordering::SeqCst);
                    })
                    .expect("spawn");
            }
            // A 65th has no stack.
            let refused = stacks.spawn("one-too-many", || {});
            assert!(refused.is_err());
            "done"
        })
        .expect("map");
        assert_eq!(result, "done");
        // Joined: each thread's work is counted (1 + its index each).
        assert_eq!(ran.load(Ordering::SeqCst), (1..=64).sum::<usize>());
        // Each thread's 16 KiB lay on its own stack: no two of them overlap.
        let mut seen = stacks_seen.into_inner().expect("not poisoned");
        seen.sort_unstable();
        assert_eq!(seen.len(), 64);
        for pair in seen.windows(2) {
            assert!(pair[1] - pair[0] >= 16 * 1024, "two threads shared a stack");
        }
    }

    #[test]
    fn a_threads_panic_is_raised_once_all_are_joined() {
        let finished = AtomicUsize::new(0);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            scope(4, 64 * 1024, |stacks| {
                let finished = &finished;
                stacks
                    .spawn("panics", || panic!("worker bug"))
                    .expect("spawn");
                for _ in 0..3 {
                    stacks
                        .spawn("works", move || {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            finished.fetch_add(1, Ordering::SeqCst);
                        })
                        .expect("spawn");
                }
            })
        }));
        let payload = caught.expect_err("the worker's panic is raised");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"worker bug"));
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }
}

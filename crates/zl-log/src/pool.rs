//! A bounded pool of worker threads for work that blocks (an fdatasync, a group-coordinator
//! wait, an admin request's fsyncs), so that the broker's network threads never do.
//!
//! Threads are started on demand (a job finding no idle worker starts one, up to `max`) and
//! exit after [`IDLE_EXIT`] without work; jobs beyond `max` busy workers queue (unbounded in
//! count, but every caller bounds what it submits: one sync driver and one write-behind
//! request per partition, one job per request whose bytes the broker-wide request budget
//! already bounded).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A worker with nothing to do for this long exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Stack of each worker (the jobs are shallow; kept small as there may be many).
const WORKER_STACK_BYTES: usize = 512 << 10;

type Job = Box<dyn FnOnce() + Send>;

/// Largest number of group-commit driver threads ([`crate::Partition::on_durable`]):
/// fdatasyncs of that many partitions run in parallel; more partitions wait for a driver.
pub const SYNC_THREADS_MAX: usize = 16;

/// The process-wide pool that drives group commits for registered durable waits.
pub fn sync_pool() -> &'static Arc<WorkPool> {
    static POOL: std::sync::OnceLock<Arc<WorkPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| WorkPool::new("group-sync", SYNC_THREADS_MAX))
}

struct Inner {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

/// See the module notes.
pub struct WorkPool {
    name: &'static str,
    max: usize,
    inner: Mutex<Inner>,
    cv: Condvar,
    /// Jobs queued or running.
    busy: AtomicUsize,
}

impl std::fmt::Debug for WorkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkPool({}, max {})", self.name, self.max)
    }
}

impl WorkPool {
    pub fn new(name: &'static str, max: usize) -> Arc<WorkPool> {
        Arc::new(WorkPool {
            name,
            max: max.max(1),
            inner: Mutex::new(Inner { jobs: VecDeque::new(), threads: 0, idle: 0 }),
            cv: Condvar::new(),
            busy: AtomicUsize::new(0),
        })
    }

    /// Run `job` on a worker (now if one is idle or may be started, else when one frees up).
    pub fn spawn(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.jobs.push_back(Box::new(job));
        if g.idle > 0 {
            self.cv.notify_one();
            return;
        }
        if g.threads < self.max {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, g.threads))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || me.work());
            match started {
                Ok(_) => g.threads += 1,
                // The job waits for a running worker; with none it would wait forever.
                Err(e) if g.threads == 0 => {
                    drop(g);
                    tracing::error!(pool = self.name, "cannot start a worker thread: {e}; running the job inline");
                    let job = self.inner.lock().unwrap_or_else(|p| p.into_inner()).jobs.pop_back();
                    if let Some(job) = job {
                        job();
                        self.busy.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Err(e) => tracing::warn!(pool = self.name, "cannot start a worker thread: {e}; the job waits for a running one"),
            }
        }
    }

    /// Jobs queued or running.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Worker threads alive.
    pub fn threads(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).threads
    }

    fn work(self: Arc<Self>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = g.jobs.pop_front() {
                drop(g);
                // A panicking job must not take the worker's count with it.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                self.busy.fetch_sub(1, Ordering::AcqRel);
                if r.is_err() {
                    tracing::error!(pool = self.name, "a job panicked");
                }
                g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            g.idle += 1;
            let (ng, timeout) = self.cv.wait_timeout(g, IDLE_EXIT).unwrap_or_else(|p| p.into_inner());
            g = ng;
            g.idle -= 1;
            if timeout.timed_out() && g.jobs.is_empty() {
                g.threads -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_job_with_at_most_max_threads() {
        let pool = WorkPool::new("test-pool", 3);
        let (tx, rx) = std::sync::mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        for i in 0..20 {
            let tx = tx.clone();
            let gate = gate.clone();
            pool.spawn(move || {
                let mut open = gate.0.lock().unwrap();
                while !*open {
                    open = gate.1.wait(open).unwrap();
                }
                tx.send(i).unwrap();
            });
        }
        assert!(pool.threads() <= 3, "{} threads", pool.threads());
        assert_eq!(pool.busy(), 20);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut got: Vec<i32> = (0..20).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(pool.threads() <= 3);
    }
}

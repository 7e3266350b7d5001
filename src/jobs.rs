//! The one shape of the engine's background jobs (audit upkeep now; archive, retention and
//! webhook delivery follow it): a loop that does one pass (claiming its work in PostgreSQL in a
//! way that is safe with several instances: an advisory lock, `FOR UPDATE SKIP LOCKED`), records
//! the outcome, sleeps until the pass says it is due again, and stops at shutdown between
//! passes, never in the middle of one. A job may also be woken early (a notification that
//! work arrived) and may have work of its own to finish once it stops (attempts in flight).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A background job: each pass does its work and says when the next is due.
pub trait Job: Send + 'static {
    /// The job's name in logs.
    fn name(&self) -> &'static str;

    /// One pass. Errors are the pass's own business (logged, counted, retried sooner): the
    /// loop only needs the delay until the next pass.
    fn run_once(&mut self) -> impl Future<Output = Duration> + Send;

    /// Wakes the job before its delay is over (new work); none by default.
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        None
    }

    /// Runs once after the last pass, at shutdown: work the passes started and did not wait
    /// for. Nothing by default.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Tells every job to stop after its current pass; dropping it does the same.
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            sender: watch::channel(false).0,
        }
    }

    /// Starts `job` on the current runtime; its first pass runs after `first_delay`.
    pub fn spawn(&self, mut job: impl Job, first_delay: Duration) -> JoinHandle<()> {
        let mut stopping = self.sender.subscribe();
        let wake = job.wake_signal().unwrap_or_default();
        tokio::spawn(async move {
            let mut delay = first_delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                    _ = stopping.wait_for(|stop| *stop) => break,
                }
                if *stopping.borrow() {
                    break;
                }
                delay = job.run_once().await;
            }
            job.finish().await;
            tracing::debug!(job = job.name(), "background job stopped");
        })
    }

    /// Asks every job to stop once its current pass is done.
    pub fn stop(&self) {
        self.sender.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

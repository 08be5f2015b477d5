//! Graceful shutdown: every long-lived task is spawned through one tracker and watches one
//! cancellation token, so the server can tell all connections to close politely and wait for
//! them.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Spawns a task that the shutdown will wait for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Like `spawn`, on `runtime` (for callers outside it, such as plugin threads), for a task
    /// that may also be stopped on its own: returns its abort handle.
    pub fn spawn_abortable_on<F>(&self, task: F, runtime: &tokio::runtime::Handle) -> tokio::task::AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn_on(task, runtime).abort_handle()
    }

    /// Resolves once shutdown has begun.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown and waits for every tracked task to finish.
    pub async fn shut_down(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

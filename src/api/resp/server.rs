//! The RESP endpoint's accept loop: one task per connection, under a connection cap.
//!
//! # Promises
//! - At most `max_connections` connections are served at once; one past the cap is told
//!   `-ERR max number of clients reached` (Redis's words) and closed, without waiting on it
//!   for more than [`REFUSAL_DEADLINE`].
//! - Stopping (the peer's shutdown signal) ends every connection task.
//! - Accept errors (out of file descriptors) are logged and retried after a pause, never
//!   spun on.

use crate::api::resp::connection::{self, Timeouts};
use crate::api::resp::request::Limits;
use crate::api::resp::session::Session;
use crate::api::resp::shared::RespShared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long a refused connection is given to take its error line.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves RESP on `listener` until `stop` turns true.
pub async fn run(listener: TcpListener, shared: Arc<RespShared>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.settings.max_connections));
    let limits = Limits::for_values(shared.settings.max_value_bytes);
    let timeouts = Timeouts {
        idle: shared.settings.idle_timeout,
        request: shared.settings.request_timeout,
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "RESP accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                shared.counters.connections_received.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    shared.counters.connections_rejected.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(refuse(stream));
                    continue;
                };
                let session = Session::new(shared.clone(), peer_addr);
                let shared = shared.clone();
                connections.spawn(async move {
                    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = connection::serve(stream, session, limits, timeouts).await {
                        tracing::debug!(client = %peer_addr, error = %e, "RESP connection ended");
                    }
                    shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    connections.shutdown().await;
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        REFUSAL_DEADLINE,
        stream.write_all(b"-ERR max number of clients reached\r\n"),
    )
    .await;
}

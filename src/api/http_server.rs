//! Serving the HTTP API: accepting connections, bounding what each may cost, and TLS.
//!
//! `axum::serve` holds every connection it accepts for as long as the client likes: 5,000
//! idle and 2,000 slowloris connections were all kept, and at ~20,000 the peer ran out of file
//! descriptors and stopped answering `/health`. This accept loop adds what it lacks.
//!
//! # Promises
//! - Every connection runs under the deadlines of [`ConnGuard`] (header, body, idle).
//! - At most `max_connections` connections are served the whole API at once.
//! - Past that, every new connection is accepted into a reserve of [`HEALTH_RESERVE`] places
//!   and served `GET /health` alone (anything else: `503` with `Retry-After`), one request
//!   each, under deadlines of at most [`RESERVE_DEADLINE`]: a load balancer or an operator can
//!   still tell a peer that is busy from one that is dead.
//! - When the reserve is full, a new connection takes the place of the oldest reserve
//!   connection, which is closed: a flood of slow connections cannot hold the reserve, and a
//!   probe is answered unless `HEALTH_RESERVE` more connections arrive between its connecting
//!   and its answer (a fraction of a millisecond on a LAN). The peer never holds more than
//!   `max_connections + HEALTH_RESERVE` client sockets.
//! - With TLS, the handshake counts as part of the first request's headers (same deadline).
//! - A connection under the cap has its key requests answered by the direct path
//!   (`api::http::DirectKeyRoute`) when it takes them, under the same deadlines; a reserve
//!   connection never has them.
//!
//! # Why one listener
//! A second port for health would have to be configured, advertised and opened in every
//! firewall; a reserve on the same port needs none of that, and the health probe that already
//! points at the API keeps working.

use crate::api::conn_guard::{ConnGuard, Deadlines, GuardedIo};
use crate::api::http::{DirectKeyRoute, Routers};
use crate::config::{HttpConfig, TlsFiles};
use axum::Router;
use futures_util::future::Either;
use hyper::body::{Body as _, Incoming};
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Connections kept for `GET /health` once `max_connections` are busy.
pub const HEALTH_RESERVE: usize = 8;
/// The longest any deadline of a reserve connection may be.
pub const RESERVE_DEADLINE: Duration = Duration::from_secs(2);
/// File descriptors kept for everything but client connections (sockets to peers, gossip,
/// files) when the connection cap is checked against the open-files limit.
const FDS_FOR_THE_REST: u64 = 256;
/// How long stopping waits for connections to finish the request they are answering.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the HTTP API could not be set up.
#[derive(Debug, Error)]
pub enum HttpServerError {
    #[error("reading the TLS {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate file {0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the TLS certificate and key do not make a server configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The HTTP API's listener settings, ready to serve.
pub struct HttpServer {
    config: HttpConfig,
    tls: Option<TlsAcceptor>,
}

impl HttpServer {
    /// Reads the TLS certificate and key, if any: a bad file fails here, at start-up.
    pub fn new(mut config: HttpConfig) -> Result<HttpServer, HttpServerError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        // A cap above what the file-descriptor limit allows would never be reached: the peer
        // would run out of descriptors first, and stop answering /health.
        if let Some(open_files) = open_files_limit() {
            let fits = open_files.saturating_sub(FDS_FOR_THE_REST + HEALTH_RESERVE as u64);
            if (config.max_connections as u64) > fits {
                let clamped = fits.max(1) as usize;
                tracing::warn!(
                    "--http-max-connections {} lowered to {clamped}: the open-files limit is \
                     {open_files} (raise it with `ulimit -n`)",
                    config.max_connections
                );
                config.max_connections = clamped;
            }
        }
        Ok(HttpServer { config, tls })
    }

    /// Whether clients must speak HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `routers.app` on `listener` (key requests by their direct path, and
    /// `routers.health_only` on the reserve) until `shutdown` turns true, then lets the
    /// connections finish what they are answering, for a short while.
    pub async fn run(
        self,
        listener: TcpListener,
        routers: Routers,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Routers {
            app,
            health_only,
            direct_keys,
        } = routers;
        let full = Arc::new(Semaphore::new(self.config.max_connections));
        // The reserve's connections, oldest first (finished ones are pruned as it fills).
        let mut reserve: VecDeque<AbortHandle> = VecDeque::with_capacity(HEALTH_RESERVE + 1);
        let deadlines = Deadlines {
            header: self.config.header_timeout,
            body: self.config.body_timeout,
            idle: self.config.idle_timeout,
        };
        let reserve_deadlines = Deadlines {
            header: deadlines.header.min(RESERVE_DEADLINE),
            body: deadlines.body.min(RESERVE_DEADLINE),
            idle: deadlines.idle.min(RESERVE_DEADLINE),
        };
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped(&mut shutdown) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for connections to close
                    // rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (permit, router, deadlines, keep_alive) = match full.clone().try_acquire_owned() {
                Ok(p) => (Some(p), app.clone(), deadlines, true),
                Err(_) => {
                    // Past the cap: a reserve place, taken from the oldest reserve connection
                    // if they are all busy, so a flood of slow connections cannot keep a health
                    // probe out for longer than it takes to open HEALTH_RESERVE more.
                    reserve.retain(|c| !c.is_finished());
                    if reserve.len() >= HEALTH_RESERVE {
                        if let Some(oldest) = reserve.pop_front() {
                            oldest.abort();
                        }
                    }
                    (None, health_only.clone(), reserve_deadlines, false)
                }
            };
            let in_reserve = permit.is_none();
            let routes = Routes {
                router,
                direct_keys: (!in_reserve).then(|| direct_keys.clone()),
            };
            let tls = self.tls.clone();
            let stop = shutdown.clone();
            let handle = connections.spawn(async move {
                let guard = ConnGuard::new(deadlines);
                let io = GuardedIo::new(stream, guard.clone());
                match tls {
                    None => serve_connection(io, guard, routes, keep_alive, stop, permit).await,
                    Some(acceptor) => match acceptor.accept(io).await {
                        Ok(io) => {
                            serve_connection(io, guard, routes, keep_alive, stop, permit).await
                        }
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                }
            });
            if in_reserve {
                reserve.push_back(handle);
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
    }
}

/// What one connection is served: a router, and for a connection under the cap the direct
/// path of key requests.
struct Routes {
    router: Router,
    direct_keys: Option<DirectKeyRoute>,
}

/// Serves one connection until it closes, times out or the peer stops; `_permit` is its
/// place under the cap (none for a reserve connection), given back when it ends.
async fn serve_connection<S>(
    io: S,
    guard: ConnGuard,
    routes: Routes,
    keep_alive: bool,
    mut stop: watch::Receiver<bool>,
    _permit: Option<OwnedSemaphorePermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(routes.router);
    let direct_keys = routes.direct_keys;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        // The service is called once the headers are in: the body's clock starts, and stops
        // when the body has been read to its end.
        guard.headers_read();
        if request.body().is_end_stream() {
            guard.body_read();
        }
        let guard = guard.clone();
        let direct = direct_keys
            .as_ref()
            .filter(|direct| direct.takes(&request))
            .cloned();
        let request = request.map(|body| WatchedBody {
            body,
            guard: guard.clone(),
        });
        let answer = match direct {
            Some(direct) => Either::Left(async move {
                Ok::<_, std::convert::Infallible>(direct.answer(request).await)
            }),
            None => Either::Right(inner.call(request)),
        };
        async move {
            let response = answer.await;
            guard.answered();
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        // The deadlines are ConnGuard's: hyper's own header timeout would also close idle
        // keep-alive connections after the header timeout.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A request body that tells its connection's guard when it has been read to its end.
struct WatchedBody {
    body: Incoming,
    guard: ConnGuard,
}

impl hyper::body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(frame) = &polled {
            if frame.is_none() || this.body.is_end_stream() {
                this.guard.body_read();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// This process's soft limit on open files, if it can be read.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Resolves once the peer is stopping (or whoever could stop it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, HttpServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    fn pem<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl Fn(rustls::pki_types::pem::Error) -> HttpServerError + 'a {
        move |source| HttpServerError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(pem("certificate", &files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("certificate", &files.cert))?;
    if chain.is_empty() {
        return Err(HttpServerError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem("key", &files.key))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

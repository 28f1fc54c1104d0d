//! [`Target`]: the server under load, and [`Connection`]: one worker's line to it.
//!
//! Promises:
//! - Every request ends as an [`Outcome`] or as an [`OpError`] whose `kind` names what failed
//!   in a few words (`timeout`, `connect`, `http 503`, `redis ERR`…): the report counts
//!   errors by kind.
//! - No request waits longer than [`REQUEST_TIMEOUT`], so a run always ends.
//! - Writes replace the value (ringcache: `overwrite=true`, Redis's SET): a bench run never
//!   grows siblings.
//! - Over plain `http://` each worker owns one HTTP/1.1 connection ([`Http1Connection`]);
//!   over HTTPS or with `--ring` the workers share the pooled client, which opens as many
//!   connections as there are requests in flight. A Redis worker owns one TCP connection.
//!   A worker's own connection is replaced after an error or a timeout.

use crate::bench::http1::{Http1Connection, Http1Endpoint, Http1Error};
use crate::bench::options::{BenchError, BenchOptions, TargetKind};
use crate::bench::resp::{Reply, RespConnection, RespError};
use crate::bench::workload::OpKind;
use crate::client::{Client, ClientError, ClusterClient, ReadResult, WriteOptions};
use std::sync::Arc;
use std::time::Duration;

/// The longest any one request may take before it counts as a `timeout` error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How a request that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read that found a value.
    Hit,
    /// A read of a key with no value.
    Miss,
    Written,
}

/// A failed request, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub kind: String,
}

impl OpError {
    fn new(kind: impl Into<String>) -> OpError {
        OpError { kind: kind.into() }
    }

    /// Whether the server could not be reached at all (the worker pauses before retrying).
    pub fn is_connect(&self) -> bool {
        self.kind == "connect"
    }
}

/// Where a Redis target lives and how to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisAddress {
    /// `host:port`.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl RedisAddress {
    /// Parses `redis://[[user]:password@]host[:port][/db]` (the db is not supported).
    pub fn parse(url: &str) -> Result<RedisAddress, BenchError> {
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("resp://"))
            .ok_or_else(|| BenchError::Invalid(format!("not a redis:// URL: {url}")))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(BenchError::Invalid(
                "a database number in the URL is not supported".into(),
            ));
        }
        let (login, host) = match rest.rsplit_once('@') {
            Some((login, host)) => (Some(login), host),
            None => (None, rest),
        };
        let (user, password) = match login.map(|l| l.split_once(':')) {
            None => (None, None),
            Some(None) => (None, Some(login.unwrap_or_default().to_string())),
            Some(Some((user, password))) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(password.to_string()),
            ),
        };
        if host.is_empty() {
            return Err(BenchError::Invalid(format!("no host in {url}")));
        }
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let addr = if has_port {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        Ok(RedisAddress {
            addr,
            user,
            password,
        })
    }
}

/// The server under load, ready to hand out connections.
#[derive(Clone)]
pub enum Target {
    Http {
        client: HttpClient,
        r: Option<String>,
        write: Arc<WriteOptions>,
    },
    Redis {
        address: Arc<RedisAddress>,
        wait: Option<u32>,
    },
}

/// How HTTP requests go out: each worker on its own connection (plain `http://` to one peer),
/// or through the pooled client (HTTPS), or a ring-aware one (`--ring`).
#[derive(Clone)]
pub enum HttpClient {
    Lean(Arc<Http1Endpoint>),
    Peer(Client),
    Ring(Arc<ClusterClient>),
}

impl Target {
    /// Builds the target from checked options; with `--ring`, reads the ring from `--url`.
    pub async fn from_options(options: &BenchOptions) -> Result<Target, BenchError> {
        let url = options.url();
        match options.target {
            TargetKind::Http => {
                let token = options.client_token.as_deref();
                let client = match &options.tls_ca {
                    None => Client::with_token(&url, token),
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            BenchError::Invalid(format!("reading --tls-ca {}: {e}", path.display()))
                        })?;
                        Client::with_tls(&url, token, &pem)
                    }
                }
                .map_err(|e| BenchError::Invalid(e.to_string()))?;
                let lean =
                    Http1Endpoint::parse(&url, token, options.r.as_deref(), options.w.as_deref())
                        .map_err(|e| BenchError::Invalid(e.to_string()))?;
                let client = if let (Some(lean), false) = (lean, options.ring) {
                    HttpClient::Lean(Arc::new(lean))
                } else if options.ring {
                    let ring = ClusterClient::connect(client).await.map_err(|e| {
                        BenchError::Unreachable {
                            url: url.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    // A bench measures plain quorum reads: no session contexts to remember.
                    HttpClient::Ring(Arc::new(
                        ring.without_session().with_reads_from(options.read_from),
                    ))
                } else {
                    HttpClient::Peer(client)
                };
                Ok(Target::Http {
                    client,
                    r: options.r.clone(),
                    write: Arc::new(WriteOptions {
                        w: options.w.clone(),
                        overwrite: true,
                        ..WriteOptions::default()
                    }),
                })
            }
            TargetKind::Redis | TargetKind::Resp => Ok(Target::Redis {
                address: Arc::new(RedisAddress::parse(&url)?),
                wait: options.wait,
            }),
        }
    }

    /// A connection for one worker. A connection of its own (plain HTTP, Redis) is opened, and
    /// logged in, here.
    pub async fn connect(&self) -> Result<Connection, OpError> {
        Ok(match self {
            Target::Http {
                client: HttpClient::Lean(endpoint),
                ..
            } => Connection::Lean {
                conn: Some(http1_connect(endpoint).await?),
                endpoint: endpoint.clone(),
            },
            Target::Http { client, r, write } => Connection::Http {
                client: client.clone(),
                r: r.clone(),
                write: write.clone(),
            },
            Target::Redis { address, wait } => Connection::Redis {
                conn: Some(redis_connect(address).await?),
                address: address.clone(),
                wait: *wait,
            },
        })
    }
}

async fn http1_connect(endpoint: &Http1Endpoint) -> Result<Http1Connection, OpError> {
    tokio::time::timeout(REQUEST_TIMEOUT, Http1Connection::connect(endpoint))
        .await
        .map_err(|_| OpError::new("timeout"))?
        .map_err(http1_error)
}

async fn redis_connect(address: &RedisAddress) -> Result<RespConnection, OpError> {
    let mut conn = tokio::time::timeout(REQUEST_TIMEOUT, RespConnection::connect(&address.addr))
        .await
        .map_err(|_| OpError::new("timeout"))?
        .map_err(|_| OpError::new("connect"))?;
    if let Some(password) = &address.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &address.user {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        let reply = conn.command(&args).await.map_err(resp_error)?;
        if let Reply::Error(e) = reply {
            return Err(OpError::new(format!("auth: {e}")));
        }
    }
    Ok(conn)
}

fn resp_error(e: RespError) -> OpError {
    match e {
        RespError::Io(_) => OpError::new("redis i/o"),
        RespError::Protocol(_) => OpError::new("redis protocol"),
    }
}

/// The first word of a Redis error line (`ERR`, `WRONGTYPE`, `NOAUTH`…).
fn redis_error_kind(line: &str) -> OpError {
    OpError::new(format!(
        "redis {}",
        line.split_whitespace().next().unwrap_or("error")
    ))
}

fn http1_error(e: Http1Error) -> OpError {
    match e {
        Http1Error::Connect(_) => OpError::new("connect"),
        Http1Error::Io(_) | Http1Error::Stale => OpError::new("transport"),
        Http1Error::Protocol(_) | Http1Error::Request(_) => OpError::new("protocol"),
    }
}

fn client_error(e: ClientError) -> OpError {
    match e {
        ClientError::Transport(e) if e.is_timeout() => OpError::new("timeout"),
        ClientError::Transport(e) if e.is_connect() => OpError::new("connect"),
        ClientError::Transport(_) => OpError::new("transport"),
        ClientError::Status { status, .. } => OpError::new(format!("http {status}")),
        ClientError::Protocol(_) => OpError::new("protocol"),
    }
}

/// One worker's line to the target: requests on it go one at a time.
pub enum Connection {
    /// A connection of its own to one peer (`None` after an error: the next request
    /// reconnects).
    Lean {
        conn: Option<Http1Connection>,
        endpoint: Arc<Http1Endpoint>,
    },
    Http {
        client: HttpClient,
        r: Option<String>,
        write: Arc<WriteOptions>,
    },
    Redis {
        /// `None` after an error: the next request reconnects.
        conn: Option<RespConnection>,
        address: Arc<RedisAddress>,
        wait: Option<u32>,
    },
}

impl Connection {
    /// Reads `key`, or writes `value` to it.
    pub async fn execute(
        &mut self,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> Result<Outcome, OpError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.execute_untimed(kind, key, value)).await {
            Ok(result) => result,
            Err(_) => {
                // A late answer may still arrive on this connection: start a fresh one.
                match self {
                    Connection::Redis { conn, .. } => *conn = None,
                    Connection::Lean { conn, .. } => *conn = None,
                    Connection::Http { .. } => {}
                }
                Err(OpError::new("timeout"))
            }
        }
    }

    async fn execute_untimed(
        &mut self,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
    ) -> Result<Outcome, OpError> {
        match self {
            Connection::Lean { conn, endpoint } => {
                let mut open = match conn.take() {
                    Some(open) if !open.is_closed() => open,
                    _ => http1_connect(endpoint).await?,
                };
                let value = match kind {
                    OpKind::Read => None,
                    OpKind::Write => Some(value),
                };
                let status = match open.send(endpoint, key, value).await {
                    // Closed by the server while it sat idle: once more on a new connection.
                    Err(Http1Error::Stale) => {
                        open = http1_connect(endpoint).await?;
                        open.send(endpoint, key, value).await
                    }
                    sent => sent,
                }
                .map_err(http1_error)?;
                *conn = Some(open);
                match (kind, status) {
                    (OpKind::Read, 200 | 300) => Ok(Outcome::Hit),
                    (OpKind::Read, 404) => Ok(Outcome::Miss),
                    (OpKind::Write, 204) => Ok(Outcome::Written),
                    (_, status) => Err(OpError::new(format!("http {status}"))),
                }
            }
            Connection::Http { client, r, write } => match kind {
                OpKind::Read => {
                    let read = match client {
                        HttpClient::Lean(_) => unreachable!("lean targets make lean connections"),
                        HttpClient::Peer(c) => c.get(key, r.as_deref()).await,
                        HttpClient::Ring(c) => c.get(key, r.as_deref()).await,
                    }
                    .map_err(client_error)?;
                    Ok(match read {
                        ReadResult::Found { .. } => Outcome::Hit,
                        ReadResult::NotFound { .. } => Outcome::Miss,
                    })
                }
                OpKind::Write => {
                    match client {
                        HttpClient::Lean(_) => unreachable!("lean targets make lean connections"),
                        HttpClient::Peer(c) => c.put(key, value.to_vec(), write).await,
                        HttpClient::Ring(c) => c.put(key, value.to_vec(), write).await,
                    }
                    .map_err(client_error)?;
                    Ok(Outcome::Written)
                }
            },
            Connection::Redis {
                conn,
                address,
                wait,
            } => {
                let mut open = match conn.take() {
                    Some(open) => open,
                    None => redis_connect(address).await?,
                };
                let outcome = redis_execute(&mut open, kind, key, value, *wait).await;
                // Keep the connection unless the stream itself failed.
                let broken = matches!(&outcome, Err(e) if e.kind.starts_with("redis i/o") || e.kind == "redis protocol");
                if !broken {
                    *conn = Some(open);
                }
                outcome
            }
        }
    }
}

async fn redis_execute(
    conn: &mut RespConnection,
    kind: OpKind,
    key: &[u8],
    value: &[u8],
    wait: Option<u32>,
) -> Result<Outcome, OpError> {
    match kind {
        OpKind::Read => match conn.command(&[b"GET", key]).await.map_err(resp_error)? {
            Reply::Bulk(_) => Ok(Outcome::Hit),
            Reply::Null => Ok(Outcome::Miss),
            Reply::Error(e) => Err(redis_error_kind(&e)),
            _ => Err(OpError::new("redis unexpected reply")),
        },
        OpKind::Write => {
            match conn
                .command(&[b"SET", key, value])
                .await
                .map_err(resp_error)?
            {
                Reply::Simple(_) => {}
                Reply::Error(e) => return Err(redis_error_kind(&e)),
                _ => return Err(OpError::new("redis unexpected reply")),
            }
            if let Some(k) = wait {
                let k_text = k.to_string();
                match conn
                    .command(&[b"WAIT", k_text.as_bytes(), b"0"])
                    .await
                    .map_err(resp_error)?
                {
                    Reply::Integer(acked) if acked >= i64::from(k) => {}
                    Reply::Integer(_) => return Err(OpError::new("wait: too few replicas")),
                    Reply::Error(e) => return Err(redis_error_kind(&e)),
                    _ => return Err(OpError::new("redis unexpected reply")),
                }
            }
            Ok(Outcome::Written)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedisAddress;

    #[test]
    fn redis_urls_name_host_port_and_login() {
        let plain = RedisAddress::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!(plain.addr, "127.0.0.1:6380");
        assert_eq!((plain.user, plain.password), (None, None));
        let default_port = RedisAddress::parse("resp://localhost/").unwrap();
        assert_eq!(default_port.addr, "localhost:6379");
        let password = RedisAddress::parse("redis://:secret@h:1").unwrap();
        assert_eq!(
            (password.user, password.password.as_deref()),
            (None, Some("secret"))
        );
        let user = RedisAddress::parse("redis://me:secret@h:1").unwrap();
        assert_eq!(user.user.as_deref(), Some("me"));
        assert!(RedisAddress::parse("http://h:1").is_err());
        assert!(RedisAddress::parse("redis://h:1/2").is_err());
    }
}

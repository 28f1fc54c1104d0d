//! The driver: the one task that owns a peer's [`Node`] and feeds it the world.
//!
//! It `select!`s over client commands, inbound peer messages, failed sends, a tick timer and
//! gossip's membership view, calls the core, and carries out what the core asks: messages go to
//! [`PeerTransport`] (one spawned send each, so a slow peer never stalls the loop), replies go
//! back to the waiting HTTP handler. This is the only place the wall clock reaches the core.

use crate::core::message::PeerMessage;
use crate::core::node::{Input, Node, NodeStats, Outputs};
use crate::core::request::{ClientReply, ClientRequest, RequestError};
use crate::core::ring::PartitionId;
use crate::core::types::{ClientRequestId, Millis, NodeId};
use crate::shell::gossip::{ClusterView, Gossip};
use crate::shell::transport::{Inbound, PeerTransport};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often deadlines are checked; requests fail at most this late.
const TICK: Duration = Duration::from_millis(20);
/// How often gossip's view is read into the core.
const VIEW_POLL: Duration = Duration::from_millis(100);

/// Milliseconds since the Unix epoch: the cluster's shared clock for expiry.
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// What the HTTP layer can ask the driver.
pub enum Command {
    Request {
        request: ClientRequest,
        reply: oneshot::Sender<ClientReply>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

/// A snapshot for `GET /v1/cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub id: NodeId,
    pub replicas: usize,
    pub partitions: u32,
    pub keys: usize,
    /// Reads, store and repair counters for `GET /v1/stats`.
    pub stats: NodeStats,
    pub members: ClusterView,
    /// Per member: partitions held as first replica, and as any replica.
    pub ownership: Vec<Ownership>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ownership {
    pub node: NodeId,
    pub primary_partitions: PartitionId,
    pub replica_partitions: PartitionId,
}

/// A cheap, cloneable way to talk to the driver.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
}

impl DriverHandle {
    pub async fn request(&self, request: ClientRequest) -> ClientReply {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Request { request, reply: tx })
            .await
            .is_err()
        {
            return ClientReply::Failed(RequestError::ShuttingDown);
        }
        rx.await
            .unwrap_or(ClientReply::Failed(RequestError::ShuttingDown))
    }

    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status { reply: tx })
            .await
            .ok()?;
        rx.await.ok()
    }
}

pub struct Driver {
    node: Node,
    gossip: Arc<Gossip>,
    transport: PeerTransport,
    view: ClusterView,
    pending: HashMap<ClientRequestId, oneshot::Sender<ClientReply>>,
    next_client: u64,
    undeliverable_tx: mpsc::UnboundedSender<(NodeId, u64)>,
}

impl Driver {
    /// Starts the driver task; it runs until `shutdown` turns true or every handle is dropped.
    pub fn spawn(
        node: Node,
        gossip: Arc<Gossip>,
        transport: PeerTransport,
        inbound: mpsc::Receiver<Inbound>,
        shutdown: watch::Receiver<bool>,
    ) -> (DriverHandle, tokio::task::JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::channel(4096);
        let (undeliverable_tx, undeliverable_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            node,
            gossip,
            transport,
            view: ClusterView::default(),
            pending: HashMap::new(),
            next_client: 0,
            undeliverable_tx,
        };
        let task = tokio::spawn(driver.run(commands_rx, inbound, undeliverable_rx, shutdown));
        (
            DriverHandle {
                commands: commands_tx,
            },
            task,
        )
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut undeliverable: mpsc::UnboundedReceiver<(NodeId, u64)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let mut view_poll = tokio::time::interval(VIEW_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        view_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let mut out = Outputs::default();
            let now = wall_clock_ms();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Request { request, reply }) => {
                        self.next_client += 1;
                        let id = ClientRequestId(self.next_client);
                        self.pending.insert(id, reply);
                        self.node.handle(now, Input::Client { id, request }, &mut out);
                    }
                    Some(Command::Status { reply }) => {
                        let _ = reply.send(self.status());
                    }
                    None => break,
                },
                Some((from, message)) = inbound.recv() => {
                    self.node.handle(now, Input::Peer { from, message }, &mut out);
                }
                Some((to, req)) = undeliverable.recv() => {
                    self.node.handle(now, Input::Undeliverable { to, req }, &mut out);
                }
                _ = tick.tick() => self.node.tick(now, &mut out),
                _ = view_poll.tick() => {
                    let view = self.gossip.view().await;
                    if view != self.view {
                        tracing::debug!(?view, "membership changed");
                        self.view = view;
                        self.node.handle(now, Input::Membership(self.view.membership()), &mut out);
                    }
                }
                _ = shutdown.changed() => break,
            }
            self.execute(out);
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(ClientReply::Failed(RequestError::ShuttingDown));
        }
    }

    fn execute(&mut self, out: Outputs) {
        for (id, reply) in out.replies {
            if let Some(waiter) = self.pending.remove(&id) {
                let _ = waiter.send(reply);
            }
        }
        for outgoing in out.messages {
            self.send(outgoing.to, outgoing.message);
        }
    }

    fn send(&self, to: NodeId, message: PeerMessage) {
        let req = message.req();
        let Some(addr) = self.view.peer_addr(&to) else {
            let _ = self.undeliverable_tx.send((to, req));
            return;
        };
        let transport = self.transport.clone();
        let undeliverable = self.undeliverable_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = transport.send(&to, addr, &message).await {
                tracing::debug!(peer = %to, error = %e, "send failed");
                let _ = undeliverable.send((to, req));
            }
        });
    }

    fn status(&self) -> Status {
        let config = self.node.config();
        Status {
            id: self.node.id().clone(),
            replicas: config.replicas,
            partitions: config.partitions,
            keys: self.node.store().len(),
            stats: self.node.stats(),
            members: self.view.clone(),
            ownership: self
                .node
                .ring()
                .ownership()
                .into_iter()
                .map(|(node, primary, any)| Ownership {
                    node,
                    primary_partitions: primary,
                    replica_partitions: any,
                })
                .collect(),
        }
    }
}

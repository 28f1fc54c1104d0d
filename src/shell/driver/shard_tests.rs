//! Tests of a shard's lock: who runs an event (the task it arrived on, or the driver), what a
//! shard in the driver's turn or stopped does with it, and that the driver is never starved
//! of its turn.

use super::*;
use crate::core::config::CoreConfig;
use crate::core::types::Quorum;
use crate::shell::auth::{ClusterSecret, PeerIdentity};

/// One shard of a lone peer with N=1, its driver task spawned but (on the test's
/// current-thread runtime) not yet run: whatever is answered before the test awaits
/// something was answered on the test's own task.
fn lone_shard() -> (Arc<Shard>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (shard, shutdown, task, _bulk) = lone_shard_with_inbox();
    (shard, shutdown, task)
}

/// [`lone_shard`], with the sender of its driver's queue of batches (what the router feeds).
fn lone_shard_with_inbox() -> (
    Arc<Shard>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    mpsc::Sender<Inbound>,
) {
    let config = CoreConfig {
        replicas: 1,
        ..CoreConfig::default()
    };
    shard_of(Node::new(NodeId::from("A"), 1, config))
}

/// A shard running `node` (peer A), with the sender of its driver's queue of batches.
fn shard_of(
    node: Node,
) -> (
    Arc<Shard>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    mpsc::Sender<Inbound>,
) {
    let secret = ClusterSecret::new("a cluster secret for the shard tests").unwrap();
    let identity = PeerIdentity::new(&secret, "A").unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (inbound_tx, _inbound_rx) = mpsc::channel(16);
    let transport = PeerTransport::start(socket, &identity, NodeId::from("A"), inbound_tx).unwrap();
    let (_views_tx, views) = watch::channel(ClusterView::default());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (router_tx, router_rx) = mpsc::channel(64);
    let shed = Arc::new(AtomicU64::new(0));
    let (shard, task) = Driver::spawn(node, views, transport, router_rx, shed, shutdown);
    (shard, shutdown_tx, task, router_tx)
}

/// A state of one value, as peer B would have written it.
fn state_of(value: &str) -> crate::core::siblings::Siblings {
    crate::core::siblings::Siblings::written_by("B.1", value.as_bytes())
}

/// A handoff batch from peer B of one state: `key` (of `partition`) holding `value`.
fn handoff_of(partition: PartitionId, key: &str, value: &str) -> Inbound {
    Inbound {
        from: NodeId::from("B"),
        trace: None,
        message: PeerMessage::Handoff {
            req: 1,
            partition,
            states: vec![(key.as_bytes().to_vec(), state_of(value))],
            busy: false,
        },
    }
}

/// The shard's own state of `key`, asked through the driver's queue (so answered once the
/// driver has run everything queued before it).
async fn local_state(shard: &Shard, key: &str) -> LocalState {
    let (tx, rx) = oneshot::channel();
    let command = Command::Local {
        key: key.as_bytes().to_vec(),
        reply: tx,
    };
    shard.commands.send(command).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered")
        .unwrap()
}

/// A W=1 put of `key`, which a lone N=1 shard answers at once.
fn put(key: &str) -> ClientRequest {
    crate::core::node::tests::put(key, "v", None, Quorum::One)
}

fn trace() -> TraceId {
    TraceId::parse("shard-test").unwrap()
}

/// Offers `request` while the driver holds the shard's lock: it must come back untouched,
/// neither run nor waited for. Returns it as the command that queues it, and its answer.
fn offer_in_drivers_turn(
    shard: &Shard,
    request: ClientRequest,
) -> (Command, oneshot::Receiver<Answer>) {
    let held = shard.lock().unwrap();
    let RequestOffer::Busy(request) = shard.offer_request(request, &trace()) else {
        panic!("the request ran in the driver's turn");
    };
    assert!(held.pending.is_empty());
    let (reply, rx) = oneshot::channel();
    let command = Command::Request {
        request,
        trace: trace(),
        reply,
    };
    (command, rx)
}

#[tokio::test]
async fn a_request_is_run_on_the_task_that_made_it_when_its_shard_is_free() {
    let (shard, _shutdown, _task) = lone_shard();
    // Answered by the offer itself, with no other task run: no hand-off (and no channel) on
    // the way, and nothing left waiting.
    let RequestOffer::Answered(answer) = shard.offer_request(put("k"), &trace()) else {
        panic!("not answered on the caller's task");
    };
    assert!(matches!(answer.reply, ClientReply::Written { .. }));
    assert!(shard.core.lock().unwrap().pending.is_empty());
}

/// A write that needs another replica's ack is run on the caller's task, which then waits for
/// the answer on a receiver; the answer comes once the replica's fate is known (here it has no
/// address, so the send fails and the write cannot reach W).
#[tokio::test]
async fn a_request_that_needs_another_replica_is_run_and_then_waited_for() {
    let config = CoreConfig {
        replicas: 2,
        request_timeout_ms: 200,
        ..CoreConfig::default()
    };
    let mut node = Node::new(NodeId::from("A"), 1, config);
    let view = crate::core::membership::MembershipView::new()
        .with("A", crate::core::membership::Liveness::Up)
        .with("B", crate::core::membership::Liveness::Up);
    node.handle(0, Input::Membership(view), &mut Outputs::default());
    let (shard, _shutdown, _task, _bulk) = shard_of(node);
    let write = crate::core::node::tests::put("k", "v", None, Quorum::All);
    let RequestOffer::Waiting(rx) = shard.offer_request(write, &trace()) else {
        panic!("a write waiting for B was not left waiting");
    };
    assert_eq!(shard.core.lock().unwrap().pending.len(), 1);
    let answer = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered once B's fate is known")
        .unwrap();
    assert!(
        matches!(
            answer.reply,
            ClientReply::Failed(RequestError::Unavailable { .. } | RequestError::Timeout { .. })
        ),
        "{answer:?}"
    );
    assert!(shard.core.lock().unwrap().pending.is_empty());
}

#[tokio::test]
async fn a_request_in_the_drivers_turn_waits_with_the_driver() {
    let (shard, _shutdown, _task) = lone_shard();
    let (queued, rx) = offer_in_drivers_turn(&shard, put("k"));
    shard.commands.send(queued).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the driver answers")
        .unwrap();
    assert!(matches!(answer.reply, ClientReply::Written { .. }));
}

#[tokio::test]
async fn a_peer_message_in_the_drivers_turn_is_handed_back_to_be_queued() {
    let (shard, _shutdown, _task) = lone_shard();
    let inbound = || Inbound {
        from: NodeId::from("B"),
        trace: None,
        message: PeerMessage::StoreAck { req: 7 },
    };
    let held = shard.lock().unwrap();
    assert!(matches!(
        shard.offer_peer_message(inbound()),
        Offered::Busy(back) if back == inbound()
    ));
    drop(held);
    assert!(matches!(
        shard.offer_peer_message(inbound()),
        Offered::Taken
    ));
}

#[test]
fn an_inline_event_waits_for_another_inline_event_rather_than_queue() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (shard, _shutdown, _task) = runtime.block_on(async { lone_shard() });
    // Another thread holds the lock as an inline event does (not the driver's turn).
    let held = shard.core.lock().unwrap();
    let offering = {
        let shard = shard.clone();
        std::thread::spawn(move || match shard.offer_request(put("k"), &trace()) {
            RequestOffer::Answered(answer) => (true, Some(answer)),
            _ => (false, None),
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!offering.is_finished(), "it did not wait for the lock");
    drop(held);
    let (taken, answer) = offering.join().unwrap();
    assert!(taken, "queued for the driver instead of waiting");
    let answer = answer.expect("answered on the caller's thread");
    assert!(matches!(answer.reply, ClientReply::Written { .. }));
    assert_eq!(shard.commands.capacity(), shard.commands.max_capacity());
}

#[tokio::test]
async fn inline_events_give_way_while_the_driver_waits_for_the_lock() {
    let (shard, _shutdown, _task) = lone_shard();
    shard.driver_turn.store(true, Ordering::Release);
    assert!(matches!(
        shard.offer_request(put("k"), &trace()),
        RequestOffer::Busy(_)
    ));
    let ack = Inbound {
        from: NodeId::from("B"),
        trace: None,
        message: PeerMessage::StoreAck { req: 7 },
    };
    assert!(matches!(
        shard.offer_peer_message(ack.clone()),
        Offered::Busy(_)
    ));
    shard.driver_turn.store(false, Ordering::Release);
    assert!(matches!(shard.offer_peer_message(ack), Offered::Taken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_finds_its_shard_held_says_so_and_gets_its_turn() {
    let (shard, _shutdown, _task) = lone_shard();
    // Another thread holds the lock until told to let go.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let shard = shard.clone();
        std::thread::spawn(move || {
            let _held = shard.core.lock().unwrap();
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
    };
    held_rx.recv().unwrap();
    let (tx, rx) = oneshot::channel();
    shard
        .commands
        .send(Command::Status { reply: tx })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !shard.driver_turn.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the driver says it waits for the lock");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the driver had its turn")
        .unwrap();
    assert_eq!(status.id, NodeId::from("A"));
    // The turn ends as the driver lets go (just after it answered).
    tokio::time::timeout(Duration::from_secs(5), async {
        while shard.driver_turn.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the driver's turn ends");
}

#[tokio::test]
async fn a_batch_goes_by_the_router_even_when_its_shard_is_free() {
    let (shard, _shutdown, _task) = lone_shard();
    let shards = [Arc::downgrade(&shard)];
    let message = |message| Inbound {
        from: NodeId::from("B"),
        trace: None,
        message,
    };
    let batch = message(PeerMessage::Handoff {
        req: 7,
        partition: 0,
        states: Vec::new(),
        busy: false,
    });
    assert_eq!(
        offer_inbound(&shards, 1, batch.clone()),
        Some(batch),
        "a handoff batch must not run on a stream task"
    );
    let ack = message(PeerMessage::StoreAck { req: 7 });
    assert_eq!(offer_inbound(&shards, 1, ack.clone()), None);
    assert_eq!(shard.urgent.capacity(), URGENT_QUEUE, "run, not queued");
    // The driver's turn: the request-path message waits in the driver's own queue for it, not
    // in the router's behind the batches.
    let held = shard.lock().unwrap();
    assert_eq!(offer_inbound(&shards, 1, ack.clone()), None);
    assert_eq!(
        shard.urgent.capacity(),
        URGENT_QUEUE - 1,
        "queued for the driver"
    );
    drop(held);
}

#[tokio::test]
async fn requests_that_waited_are_served_before_the_next_batch() {
    let (shard, _shutdown, _task, bulk) = lone_shard_with_inbox();
    // Two batches queued first, then (in the driver's turn) ten reads of the second batch's
    // key: each read is served right after the event the driver is on when it arrives, so
    // none of them can see that key. (Queued in the order of arrival alone, each read would
    // wait for every batch that came before it.)
    let partition_of = |key: &str| {
        shard
            .core
            .lock()
            .unwrap()
            .node
            .ring()
            .partition_of(key.as_bytes())
    };
    let first = handoff_of(partition_of("first"), "first", "1");
    bulk.send(first).await.unwrap();
    let second = handoff_of(partition_of("second"), "second", "2");
    bulk.send(second).await.unwrap();
    let read = || ClientRequest::Get {
        key: b"second".to_vec(),
        r: Quorum::One,
        session: None,
        stale_ok_ms: 0,
    };
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (command, rx) = offer_in_drivers_turn(&shard, read());
        shard.commands.send(command).await.unwrap();
        answers.push(rx);
    }
    for rx in answers {
        let answer = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("answered")
            .unwrap();
        assert!(
            matches!(answer.reply, ClientReply::NotFound { .. }),
            "a read waited behind a batch that arrived before it: {:?}",
            answer.reply
        );
    }
    // The batches did run, after the reads.
    assert!(local_state(&shard, "second").await.state.is_some());
}

#[tokio::test]
async fn once_the_driver_stopped_a_request_is_told_so_at_once() {
    let (shard, shutdown, task) = lone_shard();
    let (queued, rx) = offer_in_drivers_turn(&shard, put("k"));
    shard.commands.send(queued).await.unwrap();
    // A client still waiting on the core when the driver stops (one whose replicas never
    // answered, say).
    let (waiting_tx, waiting_rx) = oneshot::channel();
    shard
        .core
        .lock()
        .unwrap()
        .pending
        .insert(ClientRequestId(u64::MAX), waiting_tx);
    shutdown.send_replace(true);
    task.await.unwrap();
    // Queued or run, a request is answered: run, or told the shard stopped (a waiter the
    // driver never took in is dropped, which `DriverHandle::request` reads as that)...
    let first = rx
        .await
        .unwrap_or(Answer::failed(RequestError::ShuttingDown));
    assert!(matches!(
        first.reply,
        ClientReply::Written { .. } | ClientReply::Failed(RequestError::ShuttingDown)
    ));
    let told = tokio::time::timeout(Duration::from_secs(5), waiting_rx)
        .await
        .expect("a waiting client is told the shard stopped")
        .unwrap();
    assert_eq!(told.reply, ClientReply::Failed(RequestError::ShuttingDown));
    // ...and a request that comes later finds the shard stopped.
    let RequestOffer::Answered(later) = shard.offer_request(put("k2"), &trace()) else {
        panic!("a stopped shard must answer at once");
    };
    assert_eq!(later.reply, ClientReply::Failed(RequestError::ShuttingDown));
}

#[tokio::test]
async fn a_request_path_message_queued_in_the_drivers_turn_is_run_by_the_driver() {
    let (shard, _shutdown, _task) = lone_shard();
    let shards = [Arc::downgrade(&shard)];
    let store = Inbound {
        from: NodeId::from("B"),
        trace: None,
        message: PeerMessage::Store {
            req: 9,
            key: b"queued".to_vec(),
            state: state_of("v"),
        },
    };
    let held = shard.lock().unwrap();
    assert_eq!(
        offer_inbound(&shards, 1, store),
        None,
        "taken, to be run later"
    );
    drop(held);
    // The driver's turn (this runtime has one thread): it runs what was queued.
    tokio::task::yield_now().await;
    let local = local_state(&shard, "queued").await;
    assert!(local.state.is_some(), "the queued Store was run");
}

//! Pub/sub over RESP: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and PUBSUB
//! CHANNELS / NUMSUB / NUMPAT, on the peer's hub (`shell::pubsub`), which carries a message
//! published on any peer to the subscribers of every peer, at most once, like Redis.
//!
//! # Promises
//! - Replies are Redis's: one `subscribe`/`unsubscribe`/… confirmation per channel, as push
//!   frames in RESP3 and arrays in RESP2; messages arrive as `message` and `pmessage`.
//! - A RESP2 connection with a subscription may only run (P)SUBSCRIBE, (P)UNSUBSCRIBE,
//!   PING, QUIT and RESET (Redis's rule: its replies would be mistaken for messages);
//!   RESP3 connections may run anything.
//! - A subscriber's undelivered messages take at most [`SUBSCRIBER_OUTPUT_LIMIT_BYTES`]; one
//!   that falls further behind is disconnected (Redis's `client-output-buffer-limit pubsub`,
//!   whose hard limit is the same 32 MiB), so a slow subscriber cannot grow the peer's memory.
//! - `PUBLISH` answers how many subscribers of *this* peer received the message (as in a
//!   Redis Cluster); `PUBSUB` answers for this peer's subscribers.

use crate::api::resp::args::{self, is};
use crate::api::resp::frame::Frame;
use crate::api::resp::session::Session;
use crate::shell::pubsub::Delivery;
use bytes::Bytes;

/// The most bytes of undelivered messages one subscriber may hold.
pub const SUBSCRIBER_OUTPUT_LIMIT_BYTES: usize = 32 << 20;

fn confirmation(kind: &'static str, name: Option<&[u8]>, count: usize) -> Frame {
    Frame::Push(vec![
        Frame::bulk(kind),
        name.map_or(Frame::Null, |n| Frame::bulk(Bytes::copy_from_slice(n))),
        Frame::Integer(count as i64),
    ])
}

/// SUBSCRIBE / PSUBSCRIBE: one confirmation per name.
pub fn subscribe(session: &mut Session, pattern: bool, args: &[Bytes]) -> Vec<Frame> {
    let pubsub = session.shared.pubsub.clone();
    let subscriber = session
        .subscriber
        .get_or_insert_with(|| pubsub.subscriber(SUBSCRIBER_OUTPUT_LIMIT_BYTES));
    args[1..]
        .iter()
        .map(|name| {
            if pattern {
                confirmation("psubscribe", Some(name), subscriber.psubscribe(name))
            } else {
                confirmation("subscribe", Some(name), subscriber.subscribe(name))
            }
        })
        .collect()
}

/// UNSUBSCRIBE / PUNSUBSCRIBE: the names given, or every one subscribed to; one
/// confirmation each, or one with a nil name when there was none.
pub fn unsubscribe(session: &mut Session, pattern: bool, args: &[Bytes]) -> Vec<Frame> {
    let kind = if pattern {
        "punsubscribe"
    } else {
        "unsubscribe"
    };
    let Some(subscriber) = session.subscriber.as_mut() else {
        return vec![confirmation(kind, None, 0)];
    };
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args[1..].iter().map(|a| a.to_vec()).collect()
    } else if pattern {
        subscriber.patterns()
    } else {
        subscriber.channels()
    };
    if names.is_empty() {
        return vec![confirmation(kind, None, subscriber.count())];
    }
    let replies = names
        .iter()
        .map(|name| {
            let left = if pattern {
                subscriber.punsubscribe(name)
            } else {
                subscriber.unsubscribe(name)
            };
            confirmation(kind, Some(name), left)
        })
        .collect();
    if subscriber.count() == 0 {
        session.subscriber = None;
    }
    replies
}

pub fn publish(session: &Session, args: &[Bytes]) -> Frame {
    Frame::Integer(session.shared.pubsub.publish(&args[1], &args[2]) as i64)
}

/// `PUBSUB CHANNELS [pattern]`, `PUBSUB NUMSUB [channel…]`, `PUBSUB NUMPAT`.
pub fn pubsub(session: &Session, args: &[Bytes]) -> Frame {
    let hub = &session.shared.pubsub;
    let sub = &args[1];
    if is(sub, "channels") && args.len() <= 3 {
        let pattern = args.get(2).map(|p| &p[..]);
        Frame::Array(hub.channels(pattern).into_iter().map(Frame::bulk).collect())
    } else if is(sub, "numsub") {
        Frame::Array(
            args[2..]
                .iter()
                .flat_map(|c| [Frame::bulk(c.clone()), Frame::Integer(hub.numsub(c) as i64)])
                .collect(),
        )
    } else if is(sub, "numpat") && args.len() == 2 {
        Frame::Integer(hub.numpat() as i64)
    } else if is(sub, "channels") || is(sub, "numpat") {
        args::wrong_arity(&format!("pubsub|{}", args::shown(sub).to_ascii_lowercase()))
    } else {
        args::unknown_subcommand("pubsub", sub)
    }
}

/// A message as a subscriber receives it.
pub fn message_frame(delivery: Delivery) -> Frame {
    match delivery {
        Delivery::Message { channel, payload } => Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk(channel),
            Frame::bulk(payload),
        ]),
        Delivery::PatternMessage {
            pattern,
            channel,
            payload,
        } => Frame::Push(vec![
            Frame::bulk("pmessage"),
            Frame::bulk(pattern),
            Frame::bulk(channel),
            Frame::bulk(payload),
        ]),
    }
}

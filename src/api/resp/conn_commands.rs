//! Connection commands: PING, HELLO, AUTH, SELECT, CLIENT. (ECHO, QUIT and RESET are one line
//! each in the session's dispatch.) These are what client libraries send on connect, so their
//! replies follow Redis's closely.

use crate::api::resp::args::{self, is};
use crate::api::resp::frame::{Frame, Protocol};
use crate::api::resp::session::Session;
use bytes::Bytes;

/// The Redis version this endpoint answers as: the command set and reply shapes it follows.
/// Client libraries read it to pick features (e.g. `SET … GET` exists from 6.2 on).
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

pub fn ping(args: &[Bytes]) -> Frame {
    match args.len() {
        1 => Frame::Simple("PONG".into()),
        2 => Frame::bulk(args[1].clone()),
        _ => args::wrong_arity("ping"),
    }
}

/// `AUTH [username] password`: the username, if given, must be `default`.
pub fn auth(session: &mut Session, args: &[Bytes]) -> Frame {
    let (user, password) = match args.len() {
        2 => (None, &args[1]),
        3 => (Some(&args[1]), &args[2]),
        _ => return args::syntax_error(),
    };
    check_password(session, user, password)
}

fn check_password(session: &mut Session, user: Option<&Bytes>, password: &[u8]) -> Frame {
    let Some(token) = &session.shared.client_token else {
        return Frame::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    let user_ok = user.is_none_or(|u| &u[..] == b"default");
    if user_ok && token.matches(password) {
        session.authenticated = true;
        Frame::ok()
    } else {
        Frame::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
pub fn hello(session: &mut Session, args: &[Bytes]) -> Frame {
    let mut protocol = session.protocol;
    if let Some(version) = args.get(1) {
        protocol = match args::integer(version) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Frame::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Frame::error("ERR Protocol version is not an integer or out of range")
            }
        };
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        if is(&args[i], "auth") && i + 2 < args.len() {
            let reply = check_password(session, Some(&args[i + 1]), &args[i + 2]);
            if matches!(reply, Frame::Error(_)) {
                return reply;
            }
            i += 3;
        } else if is(&args[i], "setname") && i + 1 < args.len() {
            if let Err(e) = valid_name(&args[i + 1]) {
                return e;
            }
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Frame::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                args::shown(&args[i])
            ));
        }
    }
    if !session.authenticated {
        return Frame::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    session.protocol = protocol;
    if name.is_some() {
        session.name = name;
    }
    Frame::Map(vec![
        (Frame::bulk("server"), Frame::bulk("redis")),
        (Frame::bulk("version"), Frame::bulk(REDIS_COMPAT_VERSION)),
        (Frame::bulk("proto"), Frame::Integer(protocol.version())),
        (Frame::bulk("id"), Frame::Integer(session.id as i64)),
        (Frame::bulk("mode"), Frame::bulk("standalone")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(Vec::new())),
    ])
}

/// `SELECT 0`: one database.
pub fn select(args: &[Bytes]) -> Frame {
    match args::integer(&args[1]) {
        Ok(0) => Frame::ok(),
        Ok(_) => Frame::error("ERR DB index is out of range"),
        Err(e) => e,
    }
}

/// Redis's rule for client names: no spaces, newlines or other special characters.
fn valid_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Frame::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

/// `CLIENT SETNAME|GETNAME|ID|INFO|LIST|SETINFO|NO-EVICT|NO-TOUCH`.
pub fn client(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    let arity = |n: usize, name: &str| {
        (args.len() != n).then(|| args::wrong_arity(&format!("client|{name}")))
    };
    if is(sub, "setname") {
        if let Some(e) = arity(3, "setname") {
            return e;
        }
        if let Err(e) = valid_name(&args[2]) {
            return e;
        }
        session.name = (!args[2].is_empty()).then(|| args[2].clone());
        Frame::ok()
    } else if is(sub, "getname") {
        if let Some(e) = arity(2, "getname") {
            return e;
        }
        session.name.clone().map_or(Frame::Null, Frame::Bulk)
    } else if is(sub, "id") {
        if let Some(e) = arity(2, "id") {
            return e;
        }
        Frame::Integer(session.id as i64)
    } else if is(sub, "info") {
        if let Some(e) = arity(2, "info") {
            return e;
        }
        Frame::bulk(client_line(session))
    } else if is(sub, "list") {
        // Only this connection: the endpoint keeps no registry of the others' state.
        Frame::bulk(client_line(session))
    } else if is(sub, "setinfo") {
        if let Some(e) = arity(4, "setinfo") {
            return e;
        }
        if is(&args[2], "lib-name") {
            session.lib_name = Some(args[3].clone());
        } else if is(&args[2], "lib-ver") {
            session.lib_ver = Some(args[3].clone());
        } else {
            return Frame::error(format!(
                "ERR Unrecognized option '{}'",
                args::shown(&args[2])
            ));
        }
        Frame::ok()
    } else if is(sub, "no-evict") || is(sub, "no-touch") {
        Frame::ok()
    } else {
        args::unknown_subcommand("client", sub)
    }
}

/// One line of `CLIENT INFO`, in Redis's `key=value` form.
// Ages are read on the shell's clock (see clippy.toml: only the core must not).
#[allow(clippy::disallowed_methods)]
fn client_line(session: &Session) -> String {
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle=0 flags={} db=0 sub={} psub={} ssub=0 \
         multi=-1 watch=0 cmd=client|info user=default lib-name={} lib-ver={} resp={}\n",
        session.id,
        session.peer_addr,
        session.shared.local_addr,
        text(&session.name),
        session.created.elapsed().as_secs(),
        if session.subscriber.is_some() {
            "P"
        } else {
            "N"
        },
        session
            .subscriber
            .as_ref()
            .map_or(0, |s| s.channels().len()),
        session
            .subscriber
            .as_ref()
            .map_or(0, |s| s.patterns().len()),
        text(&session.lib_name),
        text(&session.lib_ver),
        session.protocol.version(),
    )
}

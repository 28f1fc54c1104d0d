//! Reading command arguments the way Redis does, with its error wording.

use crate::api::resp::frame::Frame;
use bytes::Bytes;

pub fn not_an_integer() -> Frame {
    Frame::error("ERR value is not an integer or out of range")
}

pub fn syntax_error() -> Frame {
    Frame::error("ERR syntax error")
}

pub fn wrong_arity(command: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

/// A decimal i64, as Redis's `string2ll`: no spaces, no `+`, no leading zeros.
pub fn integer(arg: &[u8]) -> Result<i64, Frame> {
    // Redis's rule, the one INCR applies to stored values too: a canonical decimal i64.
    crate::core::counter::parse_integer(arg).ok_or_else(not_an_integer)
}

/// Whether `arg` is the option `name` (ASCII, any case).
pub fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// For error messages: the argument as text, lossy and cut to 128 bytes (as Redis does).
pub fn shown(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)]).into_owned()
}

/// `ERR unknown command 'foo', with args beginning with: 'a' 'b' ` (Redis's exact wording).
pub fn unknown_command(args: &[Bytes]) -> Frame {
    let mut rest = String::new();
    for arg in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        rest.push_str(&format!("'{}' ", shown(arg)));
    }
    Frame::error(format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        shown(&args[0])
    ))
}

/// `ERR unknown subcommand 'x'. Try CLIENT HELP.`
pub fn unknown_subcommand(command: &str, sub: &[u8]) -> Frame {
    Frame::error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        shown(sub),
        command.to_ascii_uppercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        assert_eq!(integer(b"42"), Ok(42));
        assert_eq!(integer(b"-7"), Ok(-7));
        assert_eq!(integer(b"0"), Ok(0));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b" 1",
            b"1.5",
            b"-0",
            b"99999999999999999999",
        ] {
            assert!(integer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_commands_are_named_as_redis_names_them() {
        let args = vec![Bytes::from("foo"), Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            unknown_command(&args),
            Frame::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
    }
}

//! Any bytes from a client or an origin through the SMTP codec, whole and split at a point the
//! fuzzer picks: the line reader and command parser, the reply reader, and the DATA reader. None
//! may panic or depend on the split; a parsed command encodes to a line that parses the same; the
//! DATA reader releases a prefix of its input with no bare CR, bare LF or NUL in it.
#![no_main]
use gatehouse_wire::smtp::{Command, DataReader, Line, LineReader, ReplyReader};
use libfuzzer_sys::fuzz_target;

/// Every line outcome, parsed, as text; small bounds first so short inputs reach them.
fn commands(pieces: &[&[u8]], command_max: usize, auth_max: usize) -> Vec<String> {
    let mut reader = LineReader::with_limits(command_max, auth_max);
    let (mut buf, mut seen) = (Vec::new(), Vec::new());
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let r = reader.read(&buf);
            let consumed = r.consumed;
            match r.line {
                Some(Line::Command(l)) => {
                    let c = Command::parse(l);
                    if let Ok(c) = &c {
                        let mut wire = Vec::new();
                        c.encode(&mut wire);
                        assert_eq!(Command::parse(&wire[..wire.len() - 2]).as_ref(), Ok(c));
                    }
                    seen.push(format!("{c:?}"));
                }
                Some(other) => seen.push(format!("{other:?}")),
                None if consumed == 0 => break,
                None => {}
            }
            buf.drain(..consumed);
        }
    }
    seen
}

fn replies(pieces: &[&[u8]]) -> Vec<String> {
    let mut reader = ReplyReader::new();
    let (mut buf, mut seen) = (Vec::new(), Vec::new());
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match reader.read(&buf) {
                Ok(r) => {
                    buf.drain(..r.consumed);
                    match r.reply {
                        Some(reply) => seen.push(format!("{reply:?}")),
                        None => break,
                    }
                }
                Err(e) => {
                    seen.push(format!("{e:?}"));
                    return seen;
                }
            }
        }
    }
    seen
}

fn message(pieces: &[&[u8]], max: u64) -> (Vec<u8>, usize, String) {
    let mut reader = DataReader::new(max);
    let (mut out, mut consumed) = (Vec::new(), 0);
    for piece in pieces {
        let p = reader.feed(piece, &mut out);
        consumed += p.consumed;
        if let Some(v) = p.done {
            return (out, consumed, format!("{v:?}"));
        }
    }
    (out, consumed, String::new())
}

/// No CR without LF after it, no LF without CR before it, no NUL.
fn is_clean(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && b[i - 1] == b'\r',
        0 => false,
        _ => true,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let (a, b) = input.split_at(usize::from(cut) * input.len() / 255);
    for (command_max, auth_max) in [(16, 32), (1000, 12_288)] {
        assert_eq!(
            commands(&[input], command_max, auth_max),
            commands(&[a, b], command_max, auth_max)
        );
    }
    assert_eq!(replies(&[input]), replies(&[a, b]));
    for max in [16, u64::MAX] {
        let whole = message(&[input], max);
        assert_eq!(whole, message(&[a, b], max));
        assert!(input.starts_with(&whole.0) && is_clean(&whole.0));
    }
});

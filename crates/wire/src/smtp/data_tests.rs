//! Tests of the DATA reader: the end of data, stuffing, each refusal, every smuggling variant of
//! 2023, split invariance, and all short inputs against an obviously right reference.

use super::*;

/// What a run of the reader produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    consumed: usize,
    done: Option<Verdict>,
}

/// Feeds `input` in the given pieces, as a proxy would: stops at the verdict.
fn run(pieces: &[&[u8]], max: u64) -> Run {
    let mut reader = DataReader::new(max);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let p = reader.feed(piece, &mut out);
        consumed += p.consumed;
        if p.done.is_some() {
            return Run {
                out,
                consumed,
                done: p.done,
            };
        }
        assert_eq!(p.consumed, piece.len(), "all is consumed before the end");
    }
    Run {
        out,
        consumed,
        done: None,
    }
}

/// The same run fed whole, in two pieces at every point, and one byte at a time.
fn run_every_way(input: &[u8], max: u64) -> Run {
    let whole = run(&[input], max);
    for cut in 0..=input.len() {
        assert_eq!(
            run(&[&input[..cut], &input[cut..]], max),
            whole,
            "{input:?} cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes, max), whole, "{input:?} byte by byte");
    whole
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

#[test]
fn a_message_passes_whole_and_what_follows_stays_for_the_line_reader() {
    let input = b"Subject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
    let r = run_every_way(input, 1000);
    assert_eq!(r.done, Some(Verdict::Ok { size: 22 }));
    assert_eq!(r.consumed, input.len() - 6);
    assert_eq!(r.out, &input[..input.len() - 6]);
}

#[test]
fn an_empty_message_ends_at_once() {
    let r = run_every_way(b".\r\nQUIT\r\n", 1000);
    assert_eq!(r.done, Some(Verdict::Ok { size: 0 }));
    assert_eq!((r.consumed, r.out.as_slice()), (3, &b".\r\n"[..]));
}

#[test]
fn stuffed_dots_pass_as_sent_and_are_not_counted() {
    // RFC 5321 §4.5.2: "..x" is the line ".x"; "..\r\n" the line "."; ".x" (unstuffed) is "x".
    let input = b"..x\r\n..\r\n.x\r\n...\r\n.\r\n";
    let r = run_every_way(input, 1000);
    assert_eq!(r.done, Some(Verdict::Ok { size: 14 }));
    assert_eq!(r.out, input);
}

#[test]
fn a_trailing_cr_and_a_line_start_dot_are_held_until_known() {
    let mut reader = DataReader::new(1000);
    let mut out = Vec::new();
    reader.feed(b"abc\r", &mut out);
    assert_eq!(out, b"abc");
    reader.feed(b"\n.", &mut out);
    assert_eq!(out, b"abc\r\n");
    reader.feed(b"\r", &mut out);
    assert_eq!(out, b"abc\r\n");
    let p = reader.feed(b"\nMAIL", &mut out);
    assert_eq!(p.done, Some(Verdict::Ok { size: 5 }));
    assert_eq!((p.consumed, out.as_slice()), (1, &b"abc\r\n.\r\n"[..]));
    // After the end nothing more is taken.
    let again = reader.feed(b"MAIL", &mut out);
    assert_eq!(again.consumed, 0);
    assert_eq!(again.done, p.done);
}

#[test]
fn smuggling_variants_never_end_the_message() {
    // Each would end the message for some MTA. Here the message goes on to the real end, is
    // refused, and nothing from the bad byte on is released.
    let variants: [(&[u8], Refusal); 10] = [
        (b"\n.\n", Refusal::BareLf),
        (b"\r.\r", Refusal::BareCr),
        (b"\n.\r\n", Refusal::BareLf),
        (b"\r\n.\n", Refusal::BareLf),
        (b"\r\n.\r", Refusal::BareCr),
        (b"\r.\r\n", Refusal::BareCr),
        (b"\n.\r", Refusal::BareLf),
        (b"\r\n.\r\r\n", Refusal::BareCr),
        (b"\r\n\x00.\r\n", Refusal::Nul),
        (b"\r\r\n.\r\r\n", Refusal::BareCr),
    ];
    for (end, why) in variants {
        let mut input = b"Subject: a\r\n\r\nbody".to_vec();
        input.extend_from_slice(end);
        let smuggled_at = input.len();
        input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.com>\r\n");
        input.extend_from_slice(b"DATA\r\nforged\r\n.\r\nQUIT\r\n");
        let r = run_every_way(&input, 1_000_000);
        assert_eq!(r.done, Some(Verdict::Refused(why)), "{end:?}");
        assert_eq!(r.consumed, input.len() - 6, "{end:?}: the real end");
        assert!(is_clean(&r.out) && input.starts_with(&r.out), "{end:?}");
        assert!(
            r.out.len() < smuggled_at,
            "{end:?}: nothing after the bad byte"
        );
        assert_eq!(why.reply().code, 550);
    }
}

#[test]
fn nul_anywhere_refuses() {
    let r = run_every_way(b"a\x00b\r\n.\r\n", 1000);
    assert_eq!(r.done, Some(Verdict::Refused(Refusal::Nul)));
    assert_eq!(r.out, b"a");
}

#[test]
fn size_limit_counts_unstuffed_bytes_and_finds_the_real_end() {
    let input = b"12345678\r\n.\r\n";
    assert_eq!(
        run_every_way(input, 10).done,
        Some(Verdict::Ok { size: 10 })
    );
    let r = run_every_way(input, 9);
    assert_eq!(r.done, Some(Verdict::Refused(Refusal::TooBig)));
    assert_eq!(r.consumed, input.len());
    assert_eq!(
        r.out, b"12345678",
        "the CRLF is released whole or not at all"
    );
    assert_eq!(Refusal::TooBig.reply().code, 552);
    // The stuffing dot is free: ".." is one byte of message.
    assert_eq!(
        run_every_way(b"..\r\n.\r\n", 3).done,
        Some(Verdict::Ok { size: 3 })
    );
    let r = run_every_way(b"abcdef\r\nbad\n\r\n.\r\n", 3);
    assert_eq!(
        r.done,
        Some(Verdict::Refused(Refusal::TooBig)),
        "first reason wins"
    );
    assert_eq!(r.out, b"abc");
}

#[test]
fn a_refusal_is_known_before_the_end() {
    let mut reader = DataReader::new(1000);
    let mut out = Vec::new();
    let p = reader.feed(b"a\nb", &mut out);
    assert_eq!((p.consumed, p.done), (3, None));
    assert_eq!(reader.refusal(), Some(Refusal::BareLf));
    assert_eq!(reader.size(), 1);
}

#[test]
fn a_large_message_passes_in_pieces() {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz.....\r\n";
    let mut input = Vec::new();
    for _ in 0..2000 {
        input.extend_from_slice(line);
    }
    input.extend_from_slice(b".\r\n");
    let pieces: Vec<&[u8]> = input.chunks(1021).collect();
    let r = run(&pieces, u64::MAX);
    assert_eq!(
        r.done,
        Some(Verdict::Ok {
            size: (line.len() * 2000) as u64
        })
    );
    assert_eq!(r.out, input);
}

/// The reference: the end is the first CRLF "." CRLF of CRLF + input.
fn reference(input: &[u8], max: u64) -> Option<(usize, Option<u64>)> {
    let mut p = b"\r\n".to_vec();
    p.extend_from_slice(input);
    let k = p.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let content = &input[..k];
    let stuffing = (0..k)
        .filter(|&j| content[j] == b'.' && (j == 0 || (j >= 2 && content[j - 2..j] == *b"\r\n")))
        .count();
    let size = (k - stuffing) as u64;
    let ok = is_clean(content) && size <= max;
    Some((k + 3, ok.then_some(size)))
}

#[test]
fn every_short_input_agrees_with_the_reference() {
    let alphabet = [b'\r', b'\n', b'.', b'a', 0];
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last = inputs.clone();
    for _ in 0..7 {
        last = last
            .iter()
            .flat_map(|s| {
                alphabet.iter().map(move |&b| {
                    let mut t = s.clone();
                    t.push(b);
                    t
                })
            })
            .collect();
        inputs.extend(last.iter().cloned());
    }
    for input in &inputs {
        for max in [0, 2, 100] {
            let r = run_every_way(input, max);
            assert!(is_clean(&r.out) && input.starts_with(&r.out), "{input:?}");
            match (reference(input, max), r.done) {
                (None, None) => assert_eq!(r.consumed, input.len()),
                (Some((end, Some(size))), Some(Verdict::Ok { size: s })) => {
                    assert_eq!((r.consumed, s), (end, size), "{input:?}");
                    assert_eq!(r.out, &input[..end]);
                }
                (Some((end, None)), Some(Verdict::Refused(_))) => {
                    assert_eq!(r.consumed, end, "{input:?}");
                }
                (want, got) => panic!("{input:?} max {max}: want {want:?}, got {got:?}"),
            }
        }
    }
}

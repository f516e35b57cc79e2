//! The SSE decoder against itself and a reference: any split of the input into chunks must give
//! exactly the events (and the error, if a bound is crossed) of the unsplit input, those events must
//! be what a literal transcription of the WHATWG algorithm gives, and nothing may panic. The encoder
//! must round-trip whatever it is given.
#![no_main]

use ferroute_core::sse::{encode_event, SseDecoder, SseError, SseEvent, SseLimits};
use libfuzzer_sys::fuzz_target;

/// (events, error, what `finish` reported)
type Outcome = (Vec<SseEvent>, Option<SseError>, bool);

fn decode(chunks: &[&[u8]], limits: SseLimits) -> Outcome {
    let mut decoder = SseDecoder::with_limits(limits);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.feed(chunk, |e| events.push(e.into())) {
            // Sticky.
            assert_eq!(
                decoder.feed(b"data: x\n\n", |_| panic!("event after an error")),
                Err(err.clone())
            );
            return (events, Some(err), decoder.finish());
        }
    }
    let discarded = decoder.finish();
    (events, None, discarded)
}

/// The WHATWG event-stream interpretation over the whole stream, written as plainly as possible.
fn reference(input: &[u8]) -> Vec<SseEvent> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let text = String::from_utf8_lossy(input);
    let mut lines = Vec::new();
    let mut rest: &str = &text;
    while let Some(k) = rest.find(['\r', '\n']) {
        lines.push(&rest[..k]);
        rest = if rest[k..].starts_with("\r\n") {
            &rest[k + 2..]
        } else {
            &rest[k + 1..]
        };
    }
    let mut events = Vec::new();
    let (mut data, mut event, mut id, mut retry, mut seen) = (String::new(), String::new(), None, None, false);
    for line in lines {
        if line.is_empty() {
            if seen {
                data.pop();
                let event = (!event.is_empty()).then(|| event.clone());
                events.push(SseEvent {
                    event,
                    data: data.clone(),
                    id: id.clone(),
                    retry,
                });
            }
            (data, event, retry, seen) = (String::new(), String::new(), None, false);
        } else if !line.starts_with(':') {
            let (name, value) = match line.split_once(':') {
                Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match name {
                "event" => event = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                    seen = true;
                }
                "id" if !value.contains('\0') => id = Some(value.to_owned()),
                "retry" if !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) => {
                    retry = value.parse().ok().or(retry);
                }
                _ => {}
            }
        }
    }
    events
}

fuzz_target!(|input: &[u8]| {
    // Header: limits (0 = default) and split points; the rest is the stream.
    let Some((header, stream)) = input.split_first_chunk::<6>() else {
        return;
    };
    let limits = SseLimits {
        max_line_len: if header[0] == 0 {
            SseLimits::default().max_line_len
        } else {
            usize::from(header[0])
        },
        max_event_size: if header[1] == 0 {
            SseLimits::default().max_event_size
        } else {
            usize::from(header[1]) * 2
        },
    };
    let whole = decode(&[stream], limits);
    if whole.1.is_none() {
        assert_eq!(whole.0, reference(stream));
    }

    let mut cuts: Vec<usize> = header[2..]
        .iter()
        .map(|&b| usize::from(b) * stream.len() / 255)
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        chunks.push(&stream[start..cut]);
        start = cut;
    }
    assert_eq!(decode(&chunks, limits), whole, "split at {chunks:?}");
    if stream.len() <= 4096 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes, limits), whole, "one byte at a time");
    }

    // The encoder: what it writes decodes back to the data, line ends normalised to LF.
    let text = String::from_utf8_lossy(stream);
    let (event, data) = text.split_once('\0').unwrap_or(("", &text));
    let mut frame = Vec::new();
    match encode_event(&mut frame, Some(event), data) {
        Ok(()) => {
            let expected = SseEvent {
                event: (!event.is_empty()).then(|| event.to_owned()),
                data: data.replace("\r\n", "\n").replace('\r', "\n"),
                id: None,
                retry: None,
            };
            assert_eq!(SseDecoder::new().feed_collect(&frame), Ok(vec![expected]));
        }
        Err(err) => {
            assert_eq!(err, SseError::InvalidEventName);
            assert!(event.contains(['\r', '\n']));
        }
    }
});

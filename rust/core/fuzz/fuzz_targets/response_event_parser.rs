//! The checking Open Responses stream parser on arbitrary bytes: never panics, and any split of the
//! input gives the unsplit result (the same events, the same accumulated response, the same error).
#![no_main]

use ferroute_core::events::parser::{ResponseEventParser, StreamErrorKind};
use libfuzzer_sys::fuzz_target;

/// A valid start, so that mutations reach the item and part checks rather than the first-event one.
const HEAD: &[u8] = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\
\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\n\
data: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\
\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"in_progress\",\"content\":[]}}\n\n";

type Outcome = (Vec<String>, Option<String>, Result<(), Box<StreamErrorKind>>);

fn run(chunks: &[&[u8]]) -> Outcome {
    let mut parser = ResponseEventParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(error) = parser.feed(chunk, |event| events.push(event.to_owned())) {
            return (events, parser.checker().response_json(), Err(error.kind));
        }
    }
    let result = parser.close().map_err(|error| error.kind);
    (events, parser.checker().response_json(), result)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(HEAD.len() + rest.len());
    if control & 0x80 != 0 {
        input.extend_from_slice(HEAD);
    }
    input.extend_from_slice(rest);

    let whole = run(&[&input]);
    let size = usize::from(control & 0x1f) + 1;
    let pieces: Vec<&[u8]> = input.chunks(size).collect();
    assert_eq!(run(&pieces), whole, "split into {size}-byte pieces");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "split into single bytes");
});

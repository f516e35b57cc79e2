//! The mock's answers, built once per server as bytes: each streaming answer is a list of groups
//! (the bytes written together, one HTTP chunk per SSE event as uvicorn/vLLM frame them) with the
//! configured gap between groups, and each non-streaming answer one JSON body.

use serde_json::{json, Value};

use super::MockConfig;

/// The words the mock's text, reasoning and arguments are made of (multi-byte UTF-8 included, so a
/// client that splits characters at read boundaries is caught).
const WORDS: [&str; 13] = [
    " The",
    " capital",
    " of",
    " the",
    " UK",
    " is",
    " London",
    ",",
    " a",
    " city",
    " of",
    " \u{e9}t\u{e9}",
    " 🚀",
];
const CREATED: u64 = 1_782_955_817;
const MODEL: &str = "ferroute-mock";
const TOOL_NAME: &str = "get_weather";
/// The tool call's arguments, sent in these fragments (the way OpenAI splits them).
const ARGUMENT_FRAGMENTS: [&str; 7] = ["{\"", "city", "\":\"", "Lon", "don", "\",\"unit\":\"c\"", "}"];
const INPUT_TOKENS: u64 = 12;

/// A pre-built streaming answer.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// HTTP chunk-framed groups, written one write each with the gap between them.
    pub groups: Vec<Vec<u8>>,
    /// The same groups without chunk framing (for close-delimited responses).
    pub raw_groups: Vec<Vec<u8>>,
    /// SSE events in the whole answer.
    pub events: u64,
}

impl Stream {
    fn push_group(&mut self, events: &[Vec<u8>]) {
        let mut framed = Vec::new();
        let mut raw = Vec::new();
        for event in events {
            chunk(&mut framed, event);
            raw.extend_from_slice(event);
        }
        self.events += events.len() as u64;
        self.groups.push(framed);
        self.raw_groups.push(raw);
    }
}

/// One HTTP/1.1 chunk.
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// The text of `n` tokens.
pub fn text(n: u32) -> String {
    (0..n).map(word).collect()
}

fn data_frame(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

fn named_frame(name: &str, value: &Value) -> Vec<u8> {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// Groups the per-token frames: the first group carries the opening frames and the first token
/// (what a server sends once the first token exists), the last one the closing frames.
fn group(stream: &mut Stream, opening: Vec<Vec<u8>>, tokens: Vec<Vec<u8>>, closing: Vec<Vec<u8>>) {
    let mut current = opening;
    let mut tokens = tokens.into_iter();
    if let Some(first) = tokens.next() {
        current.push(first);
    }
    for token in tokens {
        stream.push_group(&std::mem::take(&mut current));
        current.push(token);
    }
    current.extend(closing);
    stream.push_group(&current);
}

/// Chat Completions chunks (OpenAI's shape; reasoning as vLLM/DeepSeek's `reasoning_content`).
pub fn chat_stream(config: &MockConfig, include_usage: bool) -> Stream {
    let frame = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        data_frame(&chunk)
    };
    let opening = vec![frame(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    let mut tokens = Vec::new();
    for i in 0..config.reasoning_tokens {
        tokens.push(frame(json!({"reasoning_content": word(i)}), Value::Null));
    }
    for i in 0..config.tokens {
        tokens.push(frame(json!({"content": word(i)}), Value::Null));
    }
    if config.tool_call {
        let head = json!({"index": 0, "id": "call_mock0", "type": "function",
                          "function": {"name": TOOL_NAME, "arguments": ""}});
        tokens.push(frame(json!({"tool_calls": [head]}), Value::Null));
        for fragment in ARGUMENT_FRAGMENTS {
            tokens.push(frame(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                Value::Null,
            ));
        }
    }
    let finish = if config.tool_call { "tool_calls" } else { "stop" };
    let mut closing = vec![frame(json!({}), json!(finish))];
    if include_usage {
        let completion = u64::from(config.tokens + config.reasoning_tokens) + tool_tokens(config);
        closing.push(data_frame(&json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "system_fingerprint": "fp_mock", "choices": [],
            "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": completion,
                      "total_tokens": INPUT_TOKENS + completion,
                      "completion_tokens_details": {"reasoning_tokens": config.reasoning_tokens}},
        })));
    }
    closing.push(b"data: [DONE]\n\n".to_vec());
    let mut stream = Stream::default();
    group(&mut stream, opening, tokens, closing);
    stream
}

fn tool_tokens(config: &MockConfig) -> u64 {
    if config.tool_call {
        ARGUMENT_FRAGMENTS.len() as u64 + 1
    } else {
        0
    }
}

fn arguments() -> String {
    ARGUMENT_FRAGMENTS.concat()
}

/// A non-streaming `chat.completion` body.
pub fn chat_body(config: &MockConfig) -> Vec<u8> {
    let mut message = json!({"role": "assistant", "content": text(config.tokens), "refusal": null});
    if config.reasoning_tokens > 0 {
        message["reasoning_content"] = json!(text(config.reasoning_tokens));
    }
    if config.tool_call {
        message["tool_calls"] = json!([{"id": "call_mock0", "type": "function",
                                        "function": {"name": TOOL_NAME, "arguments": arguments()}}]);
    }
    let completion = u64::from(config.tokens + config.reasoning_tokens) + tool_tokens(config);
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": if config.tool_call { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": completion,
                  "total_tokens": INPUT_TOKENS + completion,
                  "completion_tokens_details": {"reasoning_tokens": config.reasoning_tokens}},
    })
    .to_string()
    .into_bytes()
}

/// Anthropic Messages events (thinking block, text block, tool_use block with `input_json_delta`s).
#[allow(clippy::too_many_lines)] // one event sequence, read top to bottom
pub fn anthropic_stream(config: &MockConfig) -> Stream {
    let usage_out = u64::from(config.tokens + config.reasoning_tokens) + tool_tokens(config);
    let opening = vec![
        named_frame(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": MODEL, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": INPUT_TOKENS, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        ),
        named_frame("ping", &json!({"type": "ping"})),
    ];
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let mut index = 0u32;
    let start = |index: u32, block: Value| {
        named_frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    };
    let delta = |index: u32, delta: Value| {
        named_frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let stop = |index: u32| {
        named_frame(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )
    };
    // Block starts and stops ride with the token next to them, as Anthropic sends them back to back.
    let mut pending: Vec<u8> = Vec::new();
    let push = |tokens: &mut Vec<Vec<u8>>, pending: &mut Vec<u8>, frame: Vec<u8>, token: bool| {
        pending.extend_from_slice(&frame);
        if token {
            tokens.push(std::mem::take(pending));
        }
    };
    if config.reasoning_tokens > 0 {
        push(
            &mut tokens,
            &mut pending,
            start(index, json!({"type": "thinking", "thinking": "", "signature": ""})),
            false,
        );
        for i in 0..config.reasoning_tokens {
            push(
                &mut tokens,
                &mut pending,
                delta(index, json!({"type": "thinking_delta", "thinking": word(i)})),
                true,
            );
        }
        push(
            &mut tokens,
            &mut pending,
            delta(index, json!({"type": "signature_delta", "signature": "bW9jaw=="})),
            false,
        );
        push(&mut tokens, &mut pending, stop(index), false);
        index += 1;
    }
    if config.tokens > 0 {
        push(
            &mut tokens,
            &mut pending,
            start(index, json!({"type": "text", "text": ""})),
            false,
        );
        for i in 0..config.tokens {
            push(
                &mut tokens,
                &mut pending,
                delta(index, json!({"type": "text_delta", "text": word(i)})),
                true,
            );
        }
        push(&mut tokens, &mut pending, stop(index), false);
        index += 1;
    }
    if config.tool_call {
        push(
            &mut tokens,
            &mut pending,
            start(
                index,
                json!({"type": "tool_use", "id": "toolu_mock0", "name": TOOL_NAME, "input": {}}),
            ),
            true,
        );
        for fragment in ARGUMENT_FRAGMENTS {
            push(
                &mut tokens,
                &mut pending,
                delta(index, json!({"type": "input_json_delta", "partial_json": fragment})),
                true,
            );
        }
        push(&mut tokens, &mut pending, stop(index), false);
    }
    let mut closing = Vec::new();
    if !pending.is_empty() {
        closing.push(pending);
    }
    let stop_reason = if config.tool_call { "tool_use" } else { "end_turn" };
    closing.push(named_frame(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": usage_out}}),
    ));
    closing.push(named_frame("message_stop", &json!({"type": "message_stop"})));
    let mut stream = Stream::default();
    group(&mut stream, opening, tokens, closing);
    // A token group may hold a block's start or stop too: count SSE events, not groups.
    stream.events = stream.raw_groups.iter().map(|g| count_events(g)).sum();
    stream
}

fn count_events(bytes: &[u8]) -> u64 {
    bytes.windows(2).filter(|w| w == b"\n\n").count() as u64
}

/// A non-streaming Anthropic `message` body.
pub fn anthropic_body(config: &MockConfig) -> Vec<u8> {
    let mut content = Vec::new();
    if config.reasoning_tokens > 0 {
        content.push(json!({"type": "thinking", "thinking": text(config.reasoning_tokens), "signature": "bW9jaw=="}));
    }
    if config.tokens > 0 {
        content.push(json!({"type": "text", "text": text(config.tokens)}));
    }
    if config.tool_call {
        content.push(json!({"type": "tool_use", "id": "toolu_mock0", "name": TOOL_NAME,
                            "input": {"city": "London", "unit": "c"}}));
    }
    let usage_out = u64::from(config.tokens + config.reasoning_tokens) + tool_tokens(config);
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": MODEL, "content": content,
        "stop_reason": if config.tool_call { "tool_use" } else { "end_turn" }, "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": usage_out},
    })
    .to_string()
    .into_bytes()
}

/// The OpenAI Responses response object in a given state.
fn response_object(config: &MockConfig, status: &str, output: &[Value], done: bool) -> Value {
    let usage_out = u64::from(config.tokens + config.reasoning_tokens) + tool_tokens(config);
    let usage = if done {
        json!({"input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": usage_out, "output_tokens_details": {"reasoning_tokens": config.reasoning_tokens},
               "total_tokens": INPUT_TOKENS + usage_out})
    } else {
        Value::Null
    };
    json!({
        "id": "resp_mock", "object": "response", "created_at": CREATED, "status": status,
        "background": false, "completed_at": if done { json!(CREATED + 1) } else { Value::Null },
        "error": null, "frequency_penalty": 0.0, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "max_tool_calls": null, "model": MODEL, "output": output,
        "parallel_tool_calls": true, "presence_penalty": 0.0, "previous_response_id": null,
        "prompt_cache_key": null, "reasoning": {"effort": null, "summary": null}, "safety_identifier": null,
        "service_tier": "default", "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {},
    })
}

fn final_output(config: &MockConfig) -> Vec<Value> {
    let mut output = Vec::new();
    if config.reasoning_tokens > 0 {
        output.push(json!({"id": "rs_mock", "type": "reasoning",
                           "summary": [{"type": "summary_text", "text": text(config.reasoning_tokens)}]}));
    }
    if config.tokens > 0 {
        output.push(
            json!({"id": "msg_mock", "type": "message", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                        "text": text(config.tokens)}]}),
        );
    }
    if config.tool_call {
        output.push(json!({"id": "fc_mock0", "type": "function_call", "status": "completed",
                           "arguments": arguments(), "call_id": "call_mock0", "name": TOOL_NAME}));
    }
    output
}

/// OpenAI Responses events (reasoning summary, message, function call), with sequence numbers.
#[allow(clippy::too_many_lines)] // one event sequence, read top to bottom
pub fn responses_stream(config: &MockConfig) -> Stream {
    let mut seq = 0u64;
    let mut ev = |mut value: Value| {
        value["sequence_number"] = json!(seq);
        seq += 1;
        let name = value["type"].as_str().unwrap_or_default().to_owned();
        named_frame(&name, &value)
    };
    let opening = vec![
        ev(json!({"type": "response.created", "response": response_object(config, "in_progress", &[], false)})),
        ev(json!({"type": "response.in_progress", "response": response_object(config, "in_progress", &[], false)})),
    ];
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut output_index = 0u32;
    let final_items = final_output(config);
    if config.reasoning_tokens > 0 {
        pending.extend(ev(
            json!({"type": "response.output_item.added", "output_index": output_index,
                                 "item": {"id": "rs_mock", "type": "reasoning", "summary": []}}),
        ));
        pending.extend(ev(
            json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_mock",
                                 "output_index": output_index, "summary_index": 0,
                                 "part": {"type": "summary_text", "text": ""}}),
        ));
        for i in 0..config.reasoning_tokens {
            pending.extend(ev(
                json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_mock",
                                     "output_index": output_index, "summary_index": 0, "delta": word(i)}),
            ));
            tokens.push(std::mem::take(&mut pending));
        }
        let full = text(config.reasoning_tokens);
        pending.extend(ev(
            json!({"type": "response.reasoning_summary_text.done", "item_id": "rs_mock",
                                 "output_index": output_index, "summary_index": 0, "text": full}),
        ));
        pending.extend(ev(
            json!({"type": "response.reasoning_summary_part.done", "item_id": "rs_mock",
                                 "output_index": output_index, "summary_index": 0,
                                 "part": {"type": "summary_text", "text": full}}),
        ));
        pending.extend(ev(
            json!({"type": "response.output_item.done", "output_index": output_index,
                                 "item": final_items[output_index as usize]}),
        ));
        output_index += 1;
    }
    if config.tokens > 0 {
        pending.extend(ev(
            json!({"type": "response.output_item.added", "output_index": output_index,
                                 "item": {"id": "msg_mock", "type": "message", "status": "in_progress",
                                          "content": [], "role": "assistant"}}),
        ));
        pending.extend(ev(json!({"type": "response.content_part.added", "item_id": "msg_mock",
                                 "output_index": output_index, "content_index": 0,
                                 "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}})));
        for i in 0..config.tokens {
            pending.extend(ev(json!({"type": "response.output_text.delta", "item_id": "msg_mock",
                                     "output_index": output_index, "content_index": 0, "delta": word(i),
                                     "logprobs": []})));
            tokens.push(std::mem::take(&mut pending));
        }
        let full = text(config.tokens);
        pending.extend(ev(json!({"type": "response.output_text.done", "item_id": "msg_mock",
                                 "output_index": output_index, "content_index": 0, "text": full, "logprobs": []})));
        pending.extend(ev(json!({"type": "response.content_part.done", "item_id": "msg_mock",
                                 "output_index": output_index, "content_index": 0,
                                 "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": full}})));
        pending.extend(ev(
            json!({"type": "response.output_item.done", "output_index": output_index,
                                 "item": final_items[output_index as usize]}),
        ));
        output_index += 1;
    }
    if config.tool_call {
        pending.extend(ev(
            json!({"type": "response.output_item.added", "output_index": output_index,
                                 "item": {"id": "fc_mock0", "type": "function_call", "status": "in_progress",
                                          "arguments": "", "call_id": "call_mock0", "name": TOOL_NAME}}),
        ));
        tokens.push(std::mem::take(&mut pending));
        for fragment in ARGUMENT_FRAGMENTS {
            pending.extend(ev(
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_mock0",
                                     "output_index": output_index, "delta": fragment}),
            ));
            tokens.push(std::mem::take(&mut pending));
        }
        pending.extend(ev(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_mock0",
                                 "output_index": output_index, "arguments": arguments()}),
        ));
        pending.extend(ev(
            json!({"type": "response.output_item.done", "output_index": output_index,
                                 "item": final_items[output_index as usize]}),
        ));
    }
    let mut closing = Vec::new();
    if !pending.is_empty() {
        closing.push(pending);
    }
    closing.push(ev(json!({"type": "response.completed",
                           "response": response_object(config, "completed", &final_items, true)})));
    let mut stream = Stream::default();
    group(&mut stream, opening, tokens, closing);
    stream.events = stream.raw_groups.iter().map(|g| count_events(g)).sum();
    stream
}

/// A non-streaming OpenAI Responses body.
pub fn responses_body(config: &MockConfig) -> Vec<u8> {
    response_object(config, "completed", &final_output(config), true)
        .to_string()
        .into_bytes()
}

/// An error body in the dialect's shape.
pub fn error_body(dialect: super::Dialect, status: u16) -> Vec<u8> {
    let message = format!("injected error (HTTP {status}) from ferroute's mock upstream");
    match dialect {
        super::Dialect::Anthropic => {
            let kind = if status == 529 || status == 503 {
                "overloaded_error"
            } else {
                "api_error"
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        _ => json!({"error": {"message": message, "type": "server_error", "param": null, "code": status.to_string()}}),
    }
    .to_string()
    .into_bytes()
}

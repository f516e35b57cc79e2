// The Vercel AI SDK (`ai` + `@ai-sdk/open-responses`) reading responses in which the router ran a hosted tool loop.
//
// Usage: node ai_sdk_hosted.mjs <base url> <model> <prompt> <hosted tools as JSON>
//
// The AI SDK's Open Responses provider sends function tools only; a user who wants the router's hosted tools (an
// MCP server of its config) adds them to the request body in the provider's `fetch`, as done here. The responses
// then hold `mcp_list_tools` and `mcp_call` items (and their events) before the answer, which the SDK is to skip.
// Prints one JSON object: what generateText and streamText gave back, and each exchange's response body.
// Exits 1 (and prints {"error": ...}) when something throws.
import { createOpenResponses } from '@ai-sdk/open-responses';
import { generateText, streamText } from 'ai';

const [baseUrl, model, prompt, hosted] = process.argv.slice(2);
if (!hosted) {
  console.error('usage: node ai_sdk_hosted.mjs <ferroute url> <model> <prompt> <hosted tools JSON>');
  process.exit(2);
}
const hostedTools = JSON.parse(hosted);

const exchanges = [];
const pending = [];
const withHostedTools = async (url, init) => {
  const body = JSON.parse(init.body);
  body.tools = [...(body.tools ?? []), ...hostedTools];
  const entry = { request: body };
  exchanges.push(entry);
  const response = await fetch(url, {
    ...init,
    body: JSON.stringify(body),
    signal: init?.signal ?? AbortSignal.timeout(30_000),
  });
  entry.status = response.status;
  pending.push(
    response
      .clone()
      .text()
      .then(text => (entry.responseBody = text)),
  );
  return response;
};

const provider = createOpenResponses({
  name: 'ferroute',
  url: `${baseUrl.replace(/\/$/, '')}/v1/responses`,
  apiKey: 'sk-unused',
  fetch: withHostedTools,
});

try {
  const generated = await generateText({ model: provider(model), prompt });
  const streamed = streamText({ model: provider(model), prompt });
  const parts = [];
  for await (const part of streamed.fullStream) {
    parts.push(part.type);
    if (part.type === 'error') throw part.error;
  }
  await Promise.all(pending);
  console.log(
    JSON.stringify({
      generateText: { text: generated.text, finishReason: generated.finishReason, warnings: generated.warnings },
      streamText: { text: await streamed.text, finishReason: await streamed.finishReason, parts },
      exchanges,
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error), exchanges }));
  process.exit(1);
}

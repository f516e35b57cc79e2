// The Vercel AI SDK (`ai` + `@ai-sdk/open-responses`) against a ferroute URL.
//
// Usage: node ai_sdk.mjs <base url, e.g. http://127.0.0.1:8000> [<text model> [<tool model> [<tool final model>]]]
// (or FERROUTE_URL / TEXT_MODEL / TOOL_MODEL / TOOL_FINAL_MODEL in the environment; TOOL_PROMPT sets the
// prompt of the tool round trips). The tool final model is what the steps after the first ask for (a
// recorded upstream stream answers the same whatever the input, so the text answer is another recording);
// by default the tool model.
//
// Prints one JSON object on stdout: what generateText, streamText and two multi-step tool round trips
// (non-streaming and streaming) gave back, plus every HTTP exchange (request body, status, content type and
// the response body as received, for the test to check against the spec).
// Exits 1 (and prints {"error": ...}) when something throws.
import { createOpenResponses } from '@ai-sdk/open-responses';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const baseUrl = process.argv[2] ?? process.env.FERROUTE_URL;
const textModel = process.argv[3] ?? process.env.TEXT_MODEL ?? 'ferroute-mock:mock';
const toolModel = process.argv[4] ?? process.env.TOOL_MODEL ?? textModel;
const toolFinalModel = process.argv[5] ?? process.env.TOOL_FINAL_MODEL ?? toolModel;
const toolPrompt = process.env.TOOL_PROMPT ?? 'What is the weather like in San Francisco?';
if (!baseUrl) {
  console.error('usage: node ai_sdk.mjs <ferroute url> [text model] [tool model] [tool final model]');
  process.exit(2);
}

// Every request the SDK makes: the JSON body it sent and what came back.
const exchanges = [];
const pending = [];
const recordingFetch = async (url, init) => {
  const entry = { url: String(url), method: init?.method ?? 'GET' };
  try {
    entry.body = init?.body ? JSON.parse(init.body) : null;
  } catch {
    entry.body = String(init?.body);
  }
  exchanges.push(entry);
  const response = await fetch(url, { ...init, signal: init?.signal ?? AbortSignal.timeout(30_000) });
  entry.status = response.status;
  entry.contentType = response.headers.get('content-type');
  // A copy of the body, read alongside the SDK (the tee buffers what one side has not read yet).
  pending.push(
    response
      .clone()
      .text()
      .then(text => (entry.responseBody = text))
      .catch(error => (entry.responseBodyError = String(error))),
  );
  return response;
};

const provider = createOpenResponses({
  name: 'ferroute',
  url: `${baseUrl.replace(/\/$/, '')}/v1/responses`,
  apiKey: process.env.FERROUTE_API_KEY ?? 'sk-unused',
  fetch: recordingFetch,
});

const usageOf = u => ({
  inputTokens: u?.inputTokens ?? null,
  outputTokens: u?.outputTokens ?? null,
  totalTokens: u?.totalTokens ?? null,
});

const stepsOf = steps =>
  steps.map(step => ({
    finishReason: step.finishReason,
    text: step.text,
    toolCalls: step.toolCalls.map(c => ({ toolCallId: c.toolCallId, toolName: c.toolName, input: c.input })),
    toolResults: step.toolResults.map(r => ({ toolCallId: r.toolCallId, toolName: r.toolName, output: r.output })),
    usage: usageOf(step.usage),
  }));

// The tool: a zod schema, and execute checks its input against it before answering.
const weatherInput = z.object({
  location: z.string().describe('City name'),
  unit: z.enum(['celsius', 'fahrenheit']).describe('Temperature unit'),
});
const executed = [];
const tools = {
  get_weather: tool({
    description: 'Get the current weather for a location',
    inputSchema: weatherInput,
    execute: async input => {
      executed.push({ input, valid: weatherInput.safeParse(input).success });
      return { temperature: 18, unit: input.unit, conditions: 'sunny' };
    },
  }),
  // A second tool with a plain JSON schema (the recorded upstream tool call asks for this one).
  get_capital: tool({
    description: 'Get the capital city of a country',
    inputSchema: jsonSchema({
      type: 'object',
      properties: { country: { type: 'string' } },
      required: ['country'],
      additionalProperties: false,
    }),
    execute: async input => {
      executed.push({ input, valid: typeof input?.country === 'string' && Object.keys(input).length === 1 });
      return 'London';
    },
  }),
};

async function main() {
  const summary = { textModel, toolModel, toolFinalModel, toolPrompt };
  const timeout = 30_000;

  // 1. generateText: one non-streaming request.
  const generated = await generateText({
    model: provider(textModel),
    prompt: 'Say hello in exactly 3 words.',
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(timeout),
  });
  summary.generateText = {
    text: generated.text,
    finishReason: generated.finishReason,
    rawFinishReason: generated.rawFinishReason ?? null,
    usage: usageOf(generated.usage),
    responseId: generated.response?.id ?? null,
    modelId: generated.response?.modelId ?? null,
    warnings: generated.warnings ?? [],
  };

  // 2. streamText: text deltas, finish reason and usage from the stream.
  const streamed = streamText({
    model: provider(textModel),
    prompt: 'Count from 1 to 5.',
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(timeout),
  });
  const deltas = [];
  const partTypes = [];
  const errors = [];
  let finishPart = null;
  for await (const part of streamed.fullStream) {
    partTypes.push(part.type);
    if (part.type === 'text-delta') deltas.push(part.text);
    if (part.type === 'error') errors.push(String(part.error?.message ?? part.error));
    if (part.type === 'finish') finishPart = { finishReason: part.finishReason, totalUsage: usageOf(part.totalUsage) };
  }
  summary.streamText = {
    deltas,
    text: await streamed.text,
    finishReason: await streamed.finishReason,
    usage: usageOf(await streamed.usage),
    totalUsage: usageOf(await streamed.totalUsage),
    finishPart,
    partTypes: [...new Set(partTypes)],
    errors,
  };

  // 3. Tool round trip, non-streaming: step 1 calls get_weather, the SDK runs execute and sends the
  //    function_call_output back, step 2 answers with text.
  const prompt = toolPrompt;
  const prepareStep = ({ stepNumber }) => (stepNumber > 0 ? { model: provider(toolFinalModel) } : undefined);
  const toolGen = await generateText({
    model: provider(toolModel),
    prompt,
    tools,
    stopWhen: stepCountIs(3),
    prepareStep,
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(timeout),
  });
  summary.toolGenerate = {
    text: toolGen.text,
    finishReason: toolGen.finishReason,
    steps: stepsOf(toolGen.steps),
    totalUsage: usageOf(toolGen.totalUsage),
  };

  // 4. The same round trip streaming.
  const toolStream = streamText({
    model: provider(toolModel),
    prompt,
    tools,
    stopWhen: stepCountIs(3),
    prepareStep,
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(timeout),
  });
  const streamErrors = [];
  const toolPartTypes = [];
  for await (const part of toolStream.fullStream) {
    toolPartTypes.push(part.type);
    if (part.type === 'error') streamErrors.push(String(part.error?.message ?? part.error));
  }
  summary.toolStream = {
    text: await toolStream.text,
    finishReason: await toolStream.finishReason,
    steps: stepsOf(await toolStream.steps),
    totalUsage: usageOf(await toolStream.totalUsage),
    partTypes: [...new Set(toolPartTypes)],
    errors: streamErrors,
  };

  summary.executed = executed;
  await Promise.all(pending);
  summary.exchanges = exchanges;
  return summary;
}

try {
  const summary = await main();
  process.stdout.write(JSON.stringify(summary) + '\n');
} catch (error) {
  await Promise.race([Promise.all(pending), new Promise(resolve => setTimeout(resolve, 2000))]);
  process.stdout.write(
    JSON.stringify({
      error: String(error?.stack ?? error),
      responseBody: error?.responseBody ?? null,
      exchanges,
    }) + '\n',
  );
  process.exit(1);
}

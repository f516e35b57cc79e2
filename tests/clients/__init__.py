"""Real npm clients (the Vercel AI SDK's open-responses provider, the Codex CLI) against `ferroute serve`."""

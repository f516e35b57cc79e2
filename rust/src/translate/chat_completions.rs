//! OpenAI Chat Completions (vLLM, Ollama, llama.cpp, OpenRouter, …) → Open Responses.

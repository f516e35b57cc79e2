"""The router's ASGI application, in small modules, one concern each:

- `asgi`: `App` (route table, authentication, the error-to-answer layer, `POST /v1/responses`) and `build_app`;
- `exchange`: one request in flight and the pump that runs it (the hot loop);
- `clock`: the worker's one clock (timeouts, keep-alives) and the disconnect watcher;
- `continuation`: stored state resolved into the upstream request (`previous_response_id`, references);
- `records`: the store as the app uses it (writing a response's record, reading, failures);
- `stored`: `GET`/`DELETE /v1/responses/{id}`, `input_items`, `cancel`;
- `background`: `background: true` responses;
- `reasoning`: what a client sees of reasoning items' `encrypted_content`;
- `websocket`: WebSocket mode (`GET /v1/responses` upgraded: one message per event, several responses);
- `http`: body reading and JSON answers; `worker`: the worker process's setup and drain.

`ferroute.app:create_app` is Granian's factory target.
"""

from ferroute.app.asgi import App, build_app, create_app

__all__ = ["App", "build_app", "create_app"]

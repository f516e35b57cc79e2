"""ferroute's tests, by subject: `unit` (the Python API of the core: SSE, JSON, the event parser; config, CLI, logs,
the upstream transport), `translate` (each upstream dialect's translator on the recorded fixtures), `router` (a
real `ferroute serve`, or the app in-process, in front of a mock upstream), `state` (stored responses,
continuation, background, the stores), `loadtest` (the mock upstream and load generator), `clients` (npm clients).
Shared helpers live in `support` only; no test module imports another's."""

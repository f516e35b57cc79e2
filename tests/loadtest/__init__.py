"""The load-test tools: the Rust mock upstream and the load generator."""

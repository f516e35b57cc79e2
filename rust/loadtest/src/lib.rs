//! ferroute's load-test tools: a mock LLM upstream and a load generator that checks every stream it
//! reads with the core's grammar checker. Pure Rust; the PyO3 module (`rust/python`) binds them.

pub mod loadgen;
pub mod mock_upstream;

//! Safe, typed bindings to the `wasi_ephemeral_nn` imports, as provided by WasmEdge's
//! WASI-NN plugin and by the `wasinn` runtime.
//!
//! The crate has no dependencies and builds for `wasm32-wasi` with Rust 1.63. Unlike the
//! `wasmedge-wasi-nn` crate it also imports `finalize_execution_context`, so contexts are
//! released when dropped; a host without that import will refuse to instantiate the module.
//!
//! ```no_run
//! use wasinn_guest::{ExecutionTarget, Graph, GraphEncoding, Tensor};
//!
//! # fn main() -> Result<(), wasinn_guest::Error> {
//! let xml = std::fs::read("model.xml").unwrap();
//! let weights = std::fs::read("model.bin").unwrap();
//! let graph = Graph::load(&[&xml, &weights], GraphEncoding::Openvino, ExecutionTarget::Cpu)?;
//! let mut context = graph.init_execution_context()?;
//! let input = Tensor::from_f32(&[1, 3, 224, 224], &vec![0.0; 3 * 224 * 224])?;
//! context.set_input(0, &input)?;
//! context.compute()?;
//! let scores: Vec<f32> = context.get_output_f32(0)?;
//! # Ok(())
//! # }
//! ```
//!
//! On targets other than wasm32 every host call fails with
//! [`Error::UnsupportedOperation`]; only the checks made inside the guest work there.

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]

mod context;
mod error;
mod graph;
mod sys;
mod tensor;

pub use context::Context;
pub use error::{Error, Result};
pub use graph::{ExecutionTarget, Graph, GraphEncoding};
pub use tensor::{Tensor, TensorType};

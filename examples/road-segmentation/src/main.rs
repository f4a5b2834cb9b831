//! Road segmentation (OpenVINO `road-segmentation-adas-0001`) through WASI-NN.
//!
//! A port of the `openvino-road-segmentation-adas-basic` guest from WasmEdge's
//! WASINN examples: same arguments, same printed lines, same output file.
//!
//! Usage: `road-segmentation MODEL_XML MODEL_BIN INPUT_TENSOR`

use std::fmt::Display;
use std::{env, fs, process};

use wasinn_guest::{ExecutionTarget, Graph, GraphEncoding, Tensor, TensorType};

/// The tensor file holds 512x896x3 BGR `f32` values in HWC order, so the guest says so:
/// NHWC. The model wants NCHW; wasinn converts the layout natively (OpenVINO
/// pre-processing), so no transpose loop runs in wasm. The original guest labelled the
/// same bytes `[1, 3, 512, 896]`, which feeds the model scrambled pixels (see the README).
const INPUT_DIMS: [u32; 4] = [1, 512, 896, 3];

/// Where the 1x4x512x896 `f32` output is written, in the current directory.
const OUTPUT_PATH: &str = "wasinn-openvino-inference-output-1x4x512x896xf32.tensor";

fn main() {
    if let Err(message) = run() {
        eprintln!("road-segmentation: {message}");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = env::args().collect();
    let (xml_path, weights_path, tensor_path) = match args.as_slice() {
        [_, xml, weights, tensor] => (xml, weights, tensor),
        _ => return Err("usage: road-segmentation MODEL_XML MODEL_BIN INPUT_TENSOR".into()),
    };

    let xml = read_file(xml_path, "graph XML")?;
    println!("Load graph XML, size in bytes: {}", xml.len());
    let weights = read_file(weights_path, "graph weights")?;
    println!("Load graph weights, size in bytes: {}", weights.len());
    let tensor_data = read_file(tensor_path, "input tensor")?;
    println!("Load input tensor, size in bytes: {}", tensor_data.len());
    // Checked before loading the model, so a wrong file fails fast.
    let input = Tensor::new(&INPUT_DIMS, TensorType::F32, &tensor_data)
        .map_err(failed(&format!("use {tensor_path:?} as the input tensor")))?;

    let graph = Graph::load(
        &[&xml, &weights],
        GraphEncoding::Openvino,
        ExecutionTarget::Cpu,
    )
    .map_err(failed("load the OpenVINO graph"))?;
    println!("Loaded graph into wasi-nn with ID: {}", graph.handle());

    let mut context = graph
        .init_execution_context()
        .map_err(failed("create the execution context"))?;
    println!(
        "Created wasi-nn execution context with ID: {}",
        context.handle()
    );

    context
        .set_input(0, &input)
        .map_err(failed("set input 0"))?;
    context.compute().map_err(failed("run inference"))?;
    println!("Executed graph inference");

    let output = context.get_output(0).map_err(failed("get output 0"))?;
    println!("bytes_written: {}", output.len());

    println!("dump tensor to {OUTPUT_PATH:?}");
    println!("\tThe size of bytes: {}", output.len());
    fs::write(OUTPUT_PATH, &output).map_err(failed(&format!("write {OUTPUT_PATH}")))?;
    Ok(())
}

/// Reads a whole file, naming what it is for if that fails.
fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(failed(&format!("read the {what} from {path:?}")))
}

/// Turns an error into a message that says which step failed.
fn failed<E: Display>(step: &str) -> impl FnOnce(E) -> String + '_ {
    move |error| format!("failed to {step}: {error}")
}

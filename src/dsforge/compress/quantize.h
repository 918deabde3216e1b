// INT8 weight quantisation of a model folder (`dsforge quantize`).
//
// int8-weight: every linear layer's weight (attention projections, dense and expert FFNs, shared
// experts; the embedding and head with `include_embeddings`) becomes per-output-channel symmetric int8,
// q = round(w / s) with s = max|w_row| / 127, stored in model.safetensors as the tensor itself (I8) plus
// `<name>_scale` (F32, one per row); norms, biases and the routing bias stay as they are. config.json
// records {"quantization_config": {"quant_method": "dsforge", "scheme": "int8-weight", ...}}, and every
// command that loads the folder dequantises it (model::load_pretrained).
//
// w8a8: the same storage; loading a DeepSeek-V3 folder also keeps the int8 rows, and its decode step
// multiplies them with each token's activations quantised to int8 (per token, max |x| / 127) in int32
// (kernels::linear_w8a8, VNNI where the CPU has it). Training and long prefills read the float32 weights.
//
//   compress::QuantizeReport r = compress::quantize_model("runs/q/model", "runs/q/int8", {});
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>

namespace dsforge::compress {

struct QuantizeOptions {
  std::string scheme = "int8-weight";  // or "w8a8"
  bool include_embeddings = false;
  // w8a8 only: calibration text for static activation scales (one per linear: max |x| of its input over
  // the text's tokens through the decode path, / 127), stored as "<name>_input_scale"; "" = dynamic.
  std::string calib_path;
  int64_t calib_tokens = 4096;
};

struct QuantizeReport {
  int64_t tensors_quantized = 0, parameters_quantized = 0;
  uint64_t bytes_before = 0, bytes_after = 0;  // model weights on disk
  double max_relative_error = 0;                // over quantised tensors: max |w - dq(w)| / max |w|
  // --calib: the calibration error, the mean next-token loss (nats) on the calibration tokens through the
  // decode path, float32 against the written w8a8 folder with its static scales.
  int64_t calib_tokens = 0, calibrated_linears = 0;
  double calib_loss_f32 = 0, calib_loss_w8a8 = 0;
};

// Per-row symmetric int8 of a 2-D float tensor: {q [R, C] int8, scale [R] float32}; an all-zero row
// gets scale 0 and q 0. dequantize_rows(q, scale) = q * scale[:, None].
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& w);
at::Tensor dequantize_rows(const at::Tensor& q, const at::Tensor& scale);

// Writes `out_dir` whole or not at all. Throws ConfigError for an unknown scheme, an already quantised
// model, or an existing non-empty `out_dir`.
QuantizeReport quantize_model(const std::string& model_dir, const std::string& out_dir, const QuantizeOptions& opts);

}  // namespace dsforge::compress

#include "dsforge/compress/quantize.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <unordered_map>
#include <nlohmann/json.hpp>

#include "dsforge/compress/calibration.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"

namespace dsforge::compress {
namespace fs = std::filesystem;

std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& w) {
  const at::Tensor f = w.to(at::kFloat);
  const at::Tensor scale = f.abs().amax(1) / 127.0;
  const at::Tensor safe = at::where(scale > 0, scale, at::ones_like(scale));
  const at::Tensor q = at::round(f / safe.unsqueeze(1)).clamp(-127, 127).to(at::kChar);
  return {q.contiguous(), scale.contiguous()};
}

at::Tensor dequantize_rows(const at::Tensor& q, const at::Tensor& scale) {
  return q.to(at::kFloat) * scale.to(at::kFloat).unsqueeze(1);
}

namespace {

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// The linear layers' weights; the router stays float (it is tiny and decides which experts run).
bool quantizable(const std::string& name, const at::Tensor& t, bool include_embeddings) {
  if (t.dim() != 2 || !ends_with(name, ".weight") || ends_with(name, "mlp.gate.weight")) return false;
  const bool embedding = name == "model.embed_tokens.weight" || name == "lm_head.weight" || name == "transformer.wte.weight" ||
                         name == "transformer.wpe.weight";
  return include_embeddings || !embedding;
}

}  // namespace

QuantizeReport quantize_model(const std::string& model_dir, const std::string& out_dir, const QuantizeOptions& opts) {
  if (opts.scheme != "int8-weight" && opts.scheme != "w8a8")
    throw ConfigError(fmt("quantize: scheme '", opts.scheme, "' is unknown (known: int8-weight, w8a8)"));
  if (!opts.calib_path.empty() && opts.scheme != "w8a8")
    throw ConfigError("quantize: --calib gives activation scales, so it needs --scheme w8a8");
  const std::string cfg_path = path_join(model_dir, "config.json");
  if (!file_exists(cfg_path)) throw ConfigError(fmt(model_dir, ": no config.json (not a model folder)"));
  auto config = nlohmann::ordered_json::parse(read_file(cfg_path));
  if (config.contains("quantization_config"))
    throw ConfigError(fmt(model_dir, ": already quantised (", config["quantization_config"].dump(), "); quantise the float model"));
  if (config.value("model_type", "") == "lstm") throw ConfigError(fmt(model_dir, ": the LSTM baseline is not quantised"));
  if (fs::exists(out_dir) && !fs::is_empty(out_dir)) throw ConfigError(fmt(out_dir, ": exists and is not empty"));

  model::CausalLm m = model::load_pretrained(model_dir);
  QuantizeReport r;
  // Static activation scales: the largest |x| each linear's input takes over the calibration tokens.
  std::map<std::string, float> absmax;
  std::vector<int64_t> calib;
  const int64_t window = std::min<int64_t>(256, m->config().max_position_embeddings - 1);
  if (!opts.calib_path.empty()) {
    auto* ds = dynamic_cast<model::DeepseekV3Impl*>(m.get());
    if (!ds) throw ConfigError(fmt("quantize --calib: ", model_dir, " is not a DeepSeek-V3 model (w8a8 decode is)"));
    calib = calibration_ids(model_dir, opts.calib_path, opts.calib_tokens, "quantize --calib");
    if (calib.size() < 2) throw DataError(fmt("--calib ", opts.calib_path, ": no text to calibrate on"));
    std::unordered_map<const void*, float> by_weight;
    ds->record_input_absmax = &by_weight;
    const auto [nats, n] = model::decode_path_nll(m, calib, window);
    ds->record_input_absmax = nullptr;
    r.calib_tokens = n;
    r.calib_loss_f32 = nats / static_cast<double>(n);
    for (const auto& item : m->named_parameters())
      if (auto it = by_weight.find(item.value().data_ptr()); it != by_weight.end()) absmax[item.key()] = it->second;
  }
  TensorMap out;
  for (const auto& [name, t] : model::model_state(*m)) {
    r.bytes_before += static_cast<uint64_t>(t.numel() * t.element_size());
    if (!quantizable(name, t, opts.include_embeddings)) {
      out[name] = t;
      r.bytes_after += static_cast<uint64_t>(t.numel() * t.element_size());
      continue;
    }
    auto [q, scale] = quantize_rows(t);
    const double err = ((dequantize_rows(q, scale) - t.to(at::kFloat)).abs().max() / t.abs().max().clamp_min(1e-30)).item<double>();
    r.max_relative_error = std::max(r.max_relative_error, err);
    ++r.tensors_quantized;
    r.parameters_quantized += t.numel();
    r.bytes_after += static_cast<uint64_t>(q.numel() + scale.numel() * 4);
    out[name] = q;
    out[name + "_scale"] = scale;
    if (auto it = absmax.find(name); it != absmax.end() && it->second > 0) {
      out[name + "_input_scale"] = at::full({1}, it->second / 127.0f, at::kFloat);
      ++r.calibrated_linears;
    }
  }
  config["quantization_config"] = {{"quant_method", "dsforge"},
                                   {"scheme", opts.scheme},
                                   {"bits", 8},
                                   {"granularity", "per-output-channel"},
                                   {"symmetric", true},
                                   {"embeddings", opts.include_embeddings}};
  if (opts.scheme == "w8a8")  // the weights are the same; the decode step quantises each token's activations too
    config["quantization_config"]["activations"] =
        opts.calib_path.empty()
            ? "int8, dynamic, per token (symmetric, max |x| / 127)"
            : fmt("int8, static per linear (<name>_input_scale: max |x| / 127 over ", r.calib_tokens, " tokens of ",
                  opts.calib_path, "), values beyond clipped");

  const std::string stage = out_dir + ".partial";
  remove_all(stage);
  make_dirs(stage);
  write_file_atomic(path_join(stage, "config.json"), config.dump(2) + "\n");
  save_safetensors(path_join(stage, "model.safetensors"), out, {{"format", "pt"}, {"dsforge.quantization", opts.scheme}});
  model::copy_companion_files(model_dir, stage);
  publish_dir(stage, out_dir, "quantised model");
  if (!calib.empty()) {
    const auto [nats, n] = model::decode_path_nll(model::load_pretrained(out_dir), calib, window);
    r.calib_loss_w8a8 = nats / static_cast<double>(n);
  }
  return r;
}

}  // namespace dsforge::compress

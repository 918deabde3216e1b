#include "dsforge/model/io.h"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::model {

TensorMap model_state(const torch::nn::Module& m) {
  TensorMap out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().detach();
  return out;
}

void load_model_state(torch::nn::Module& m, const TensorMap& state, const std::string& origin) {
  at::NoGradGuard no_grad;
  size_t used = 0;
  auto assign = [&](const std::string& name, at::Tensor& dst) {
    auto it = state.find(name);
    if (it == state.end())
      throw CheckpointError(fmt(origin, ": missing tensor '", name, "' (checkpoint from another model config?)"));
    if (!it->second.sizes().equals(dst.sizes()))
      throw CheckpointError(fmt(origin, ": tensor '", name, "' has shape ", it->second.sizes(), ", the model expects ",
                                dst.sizes(), " (checkpoint from another model config?)"));
    dst.copy_(it->second);
    ++used;
  };
  for (auto& p : m.named_parameters()) assign(p.key(), p.value());
  for (auto& b : m.named_buffers()) assign(b.key(), b.value());
  if (used != state.size()) {
    for (const auto& [name, t] : state) {
      bool known = false;
      for (const auto& p : m.named_parameters()) known |= p.key() == name;
      for (const auto& b : m.named_buffers()) known |= b.key() == name;
      if (!known) throw CheckpointError(fmt(origin, ": unexpected tensor '", name, "' (checkpoint from another model config?)"));
    }
  }
}

void save_pretrained(const std::string& dir, CausalLmImpl& m) {
  make_dirs(dir);
  write_file_atomic(path_join(dir, "config.json"), model_config_to_json(m.config()));
  save_safetensors(path_join(dir, "model.safetensors"), model_state(m), {{"format", "pt"}});
}

CausalLm load_pretrained(const std::string& dir) {
  const std::string cfg_path = path_join(dir, "config.json");
  if (!file_exists(cfg_path)) throw CheckpointError(fmt(dir, ": no config.json (not a model folder)"));
  CausalLm m = build_model(model_config_from_json(read_file(cfg_path), cfg_path));
  const std::string w = path_join(dir, "model.safetensors");
  load_model_state(*m, load_safetensors(w).tensors, w);
  return m;
}

void save_training_info(const std::string& dir, const TrainingInfo& info) {
  const nlohmann::ordered_json j = {{"seq_len", info.seq_len}, {"steps", info.steps}};
  write_file_atomic(path_join(dir, "dsforge_training.json"), j.dump(2) + "\n");
}

TrainingInfo load_training_info(const std::string& dir) {
  const std::string path = path_join(dir, "dsforge_training.json");
  TrainingInfo info;
  if (!file_exists(path)) return info;
  try {
    const auto j = nlohmann::json::parse(read_file(path));
    info.seq_len = j.at("seq_len").get<int64_t>();
    info.steps = j.value("steps", int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt(path, ": expected {\"seq_len\": N, \"steps\": N} (", e.what(), ")"));
  }
  if (info.seq_len < 1) throw CheckpointError(fmt(path, ": seq_len must be at least 1, got ", info.seq_len));
  return info;
}

}  // namespace dsforge::model

#include "dsforge/model/io.h"

#include <ATen/ATen.h>

#include <map>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/model/deepseek.h"

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

bool is_gpt2_conv1d_weight(const std::string& name) {
  auto ends = [&](const char* suffix) {
    const std::string t(suffix);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  return ends(".attn.c_attn.weight") || ends(".attn.c_proj.weight") || ends(".mlp.c_fc.weight") || ends(".mlp.c_proj.weight");
}

TensorMap transpose_gpt2_conv1d(TensorMap state) {
  for (auto& [name, t] : state)
    if (is_gpt2_conv1d_weight(name) && t.dim() == 2) t = t.t().contiguous();
  return state;
}

SafetensorsFile load_folder_weights(const std::string& dir) {
  const std::string single = path_join(dir, "model.safetensors");
  const std::string index = path_join(dir, "model.safetensors.index.json");
  if (!file_exists(index)) {
    if (!file_exists(single)) throw CheckpointError(fmt(dir, ": no model.safetensors or model.safetensors.index.json"));
    return load_safetensors(single);
  }
  std::map<std::string, std::vector<std::string>> by_file;
  try {
    const auto j = nlohmann::json::parse(read_file(index));
    for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it)
      by_file[it.value().get<std::string>()].push_back(it.key());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt(index, ": expected {\"weight_map\": {tensor: file}} (", e.what(), ")"));
  }
  SafetensorsFile out;
  for (const auto& [file, names] : by_file) {
    if (file.find('/') != std::string::npos || file.find("..") != std::string::npos)
      throw CheckpointError(fmt(index, ": shard name '", file, "' must be a file in the same folder"));
    const std::string path = path_join(dir, file);
    if (!file_exists(path)) throw CheckpointError(fmt(index, ": shard ", file, " is missing"));
    SafetensorsFile shard = load_safetensors(path);
    if (out.metadata.empty()) out.metadata = shard.metadata;
    for (const auto& name : names) {
      auto it = shard.tensors.find(name);
      if (it == shard.tensors.end()) throw CheckpointError(fmt(path, ": the index lists tensor '", name, "' here but the shard lacks it"));
      if (!out.tensors.emplace(name, it->second).second) throw CheckpointError(fmt(index, ": tensor '", name, "' is listed twice"));
    }
  }
  return out;
}

namespace {
// A Hugging Face GPT-2 checkpoint as dsforge's module names and layout: the "transformer." prefix
// added where the file omits it, the causal-mask buffers and the tied head dropped, Conv1D transposed.
TensorMap gpt2_from_hf(SafetensorsFile f) {
  const bool conv1d = f.metadata.count(kLayoutKey) ? f.metadata.at(kLayoutKey) == "hf" : !f.metadata.count("dsforge.crc32c");
  TensorMap out;
  for (auto& [name, t] : f.tensors) {
    auto ends = [&](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
    if (ends(".attn.bias") || ends(".attn.masked_bias") || name == "lm_head.weight") continue;
    out[name.rfind("transformer.", 0) == 0 ? name : "transformer." + name] = t;
  }
  return conv1d ? transpose_gpt2_conv1d(std::move(out)) : out;
}
}  // namespace

void keep_bf16_decode_weights(CausalLm& m, const std::string& what) {
  auto* ds = dynamic_cast<DeepseekV3Impl*>(m.get());
  if (!ds)
    throw ConfigError(fmt(what, ": a ", m->config().model_type, " model; bfloat16 decode weights are for DeepSeek-V3 models"));
  ds->keep_bf16_weights();
}

void pack_decode_weights(CausalLm& m) {
  if (auto* ds = dynamic_cast<DeepseekV3Impl*>(m.get())) ds->pack_weights();
}

CausalLm load_pretrained(const std::string& dir) {
  const std::string cfg_path = path_join(dir, "config.json");
  if (!file_exists(cfg_path)) throw CheckpointError(fmt(dir, ": no config.json (not a model folder)"));
  const std::string cfg_text = read_file(cfg_path);
  CausalLm m = build_model(model_config_from_json(cfg_text, cfg_path));
  SafetensorsFile weights = load_folder_weights(dir);
  // int8 folders (dsforge quantize): an I8 weight with a "<name>_scale" companion is q * scale per row.
  // A w8a8 folder also keeps the int8 rows for the decode step (DeepseekV3Impl::int8_linears).
  const nlohmann::json qc = nlohmann::json::parse(cfg_text).value("quantization_config", nlohmann::json::object());
  const bool w8a8 = qc.value("scheme", "") == "w8a8";
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> int8_rows;  // name -> (q, scale)
  std::map<std::string, float> input_scales;                           // name -> calibrated activation scale
  for (auto it = weights.tensors.begin(); it != weights.tensors.end();) {
    if (ends_with(it->first, ".weight_input_scale")) {
      input_scales[it->first.substr(0, it->first.size() - 12)] = it->second.to(at::kFloat).view({-1})[0].item<float>();
      it = weights.tensors.erase(it);
      continue;
    }
    auto q = weights.tensors.find(it->first.substr(0, it->first.size() - 6));
    if (it->first.size() > 6 && it->first.compare(it->first.size() - 6, 6, "_scale") == 0 && q != weights.tensors.end() &&
        q->second.scalar_type() == at::kChar) {
      const at::Tensor scale = it->second.to(at::kFloat).contiguous();
      if (w8a8) int8_rows[q->first] = {q->second.contiguous(), scale};
      q->second = q->second.to(at::kFloat) * scale.unsqueeze(1);
      it = weights.tensors.erase(it);
    } else {
      ++it;
    }
  }
  if (m->config().model_type == "gpt2") weights.tensors = gpt2_from_hf(std::move(weights));
  load_model_state(*m, weights.tensors, path_join(dir, file_exists(path_join(dir, "model.safetensors.index.json"))
                                                           ? "model.safetensors.index.json" : "model.safetensors"));
  if (auto* ds = dynamic_cast<DeepseekV3Impl*>(m.get()); ds && !int8_rows.empty()) {
    for (const auto& item : ds->named_parameters()) {
      auto it = int8_rows.find(item.key());
      if (it == int8_rows.end()) continue;
      DeepseekV3Impl::Int8Linear l{it->second.first, it->second.second, {}, static_cast<int64_t>(item.value()._version()),
                                   input_scales.count(item.key()) ? input_scales.at(item.key()) : 0.0f};
      l.sums.resize(static_cast<size_t>(l.q.size(0)));
      kernels::int8_row_sums(l.q.data_ptr<int8_t>(), l.q.size(0), l.q.size(1), l.sums.data());
      ds->int8_linears[item.value().data_ptr()] = std::move(l);
    }
  }
  return m;
}

void copy_companion_files(const std::string& from_dir, const std::string& to_dir) {
  for (const char* f : {"tokenizer.json", "dsforge_training.json", "generation_config.json", "tokenizer_config.json",
                        "special_tokens_map.json"})
    if (file_exists(path_join(from_dir, f))) write_file_atomic(path_join(to_dir, f), read_file(path_join(from_dir, f)));
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

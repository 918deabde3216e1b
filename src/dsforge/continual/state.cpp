#include "dsforge/continual/state.h"

#include <ATen/ATen.h>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::continual {
namespace {

std::string dir_of(const std::string& model_dir) { return path_join(model_dir, "continual"); }

// "prefix.fisher.<p>" / "prefix.anchor.<p>" -> a FisherAnchor.
FisherAnchor split_pair(const TensorMap& t, const std::string& prefix, const std::string& origin) {
  FisherAnchor fa;
  const std::string f = prefix + "fisher.", a = prefix + "anchor.";
  for (const auto& [k, v] : t) {
    if (k.compare(0, f.size(), f) == 0) fa.fisher[k.substr(f.size())] = v.to(at::kFloat);
    else if (k.compare(0, a.size(), a) == 0) fa.anchor[k.substr(a.size())] = v.to(at::kFloat);
  }
  if (fa.fisher.empty()) throw CheckpointError(fmt(origin, ": no tensors '", f, "*'"));
  for (const auto& [k, v] : fa.fisher)
    if (!fa.anchor.count(k)) throw CheckpointError(fmt(origin, ": '", f, k, "' has no anchor '", a, k, "'"));
  return fa;
}

void put_pair(TensorMap& t, const std::string& prefix, const FisherAnchor& fa) {
  for (const auto& [k, v] : fa.fisher) t[prefix + "fisher." + k] = v;
  for (const auto& [k, v] : fa.anchor) t[prefix + "anchor." + k] = v;
}

}  // namespace

bool has_state(const std::string& model_dir) { return file_exists(path_join(dir_of(model_dir), "state.json")); }

ContinualState load_state(const std::string& model_dir, const ReplaySpec& spec) {
  ContinualState s;
  if (!has_state(model_dir)) return s;
  const std::string dir = dir_of(model_dir);
  const std::string state_path = path_join(dir, "state.json");
  try {
    nlohmann::json j = nlohmann::json::parse(read_file(state_path));
    s.domains = j.at("domains");
    if (!s.domains.is_array()) throw std::runtime_error("\"domains\" is not an array");
  } catch (const std::exception& e) {
    throw CheckpointError(fmt(state_path, ": malformed (", e.what(), ")"));
  }
  const std::string ewc_path = path_join(dir, "ewc.safetensors");
  if (file_exists(ewc_path)) {
    const SafetensorsFile f = load_safetensors(ewc_path);
    const int64_t n = std::stoll(f.metadata.count("tasks") ? f.metadata.at("tasks") : "0");
    for (int64_t k = 0; k < n; ++k) s.ewc.push_back(split_pair(f.tensors, fmt(k, "."), ewc_path));
  }
  const std::string online_path = path_join(dir, "online_ewc.safetensors");
  if (file_exists(online_path)) s.online = split_pair(load_safetensors(online_path).tensors, "", online_path);
  const std::string replay_path = path_join(dir, "replay.safetensors");
  if (file_exists(replay_path))
    s.replay = Reservoir::from_tensors(load_safetensors(replay_path).tensors, spec.capacity, spec.window, spec.seed, replay_path);
  return s;
}

void save_state(const std::string& model_dir, const ContinualState& s) {
  const std::string dir = dir_of(model_dir);
  make_dirs(dir);
  if (!s.ewc.empty()) {
    TensorMap t;
    for (size_t k = 0; k < s.ewc.size(); ++k) put_pair(t, fmt(k, "."), s.ewc[k]);
    save_safetensors(path_join(dir, "ewc.safetensors"), t, {{"tasks", std::to_string(s.ewc.size())}});
  }
  if (s.online) {
    TensorMap t;
    put_pair(t, "", *s.online);
    save_safetensors(path_join(dir, "online_ewc.safetensors"), t);
  }
  if (s.replay) save_safetensors(path_join(dir, "replay.safetensors"), s.replay->to_tensors());
  // state.json last: its presence says the folder is complete.
  write_file_atomic(path_join(dir, "state.json"), nlohmann::json{{"domains", s.domains}}.dump(2) + "\n");
}

}  // namespace dsforge::continual

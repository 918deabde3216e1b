#include "dsforge/train/checkpoint.h"

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"

namespace dsforge::train {
namespace fs = std::filesystem;

namespace {
std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%07lld", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> complete_checkpoints(const std::string& run_dir) {
  std::vector<fs::path> out;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("step_", 0) == 0 && name.find(".tmp") == std::string::npos &&
        fs::exists(e.path() / "DONE"))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());  // zero-padded names sort by step
  return out;
}
}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointData& data, int64_t keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / step_name(step);
  const fs::path tmp = root / (step_name(step) + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_file_atomic((tmp / "config.json").string(), data.model_config_json);
  save_safetensors((tmp / "model.safetensors").string(), data.model, {{"format", "pt"}});
  if (const char* kill_at = std::getenv("DSFORGE_KILL_IN_CHECKPOINT"); kill_at && std::atoll(kill_at) == step)
    ::raise(SIGKILL);
  save_safetensors((tmp / "optimizer.safetensors").string(), data.optimizer);
  if (!data.rng.empty()) save_safetensors((tmp / "rng.safetensors").string(), data.rng);
  write_file_atomic((tmp / "trainer_state.json").string(), data.trainer_state.dump(2) + "\n");
  write_file_atomic((tmp / "DONE").string(), std::to_string(step) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(root.string());

  auto all = complete_checkpoints(run_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i]);
  // Leftover .tmp folders of interrupted writes.
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().find(".tmp") != std::string::npos && e.path() != tmp) fs::remove_all(e.path());
  return final_dir.string();
}

CheckpointData load_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d / "DONE")) throw CheckpointError(fmt(dir, ": incomplete checkpoint (no DONE marker)"));
  CheckpointData out;
  out.model = load_safetensors((d / "model.safetensors").string()).tensors;
  out.optimizer = load_safetensors((d / "optimizer.safetensors").string()).tensors;
  if (fs::exists(d / "rng.safetensors")) out.rng = load_safetensors((d / "rng.safetensors").string()).tensors;
  const std::string state_path = (d / "trainer_state.json").string();
  try {
    out.trainer_state = nlohmann::json::parse(read_file(state_path));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt(state_path, ": not valid JSON (", e.what(), ")"));
  }
  out.model_config_json = read_file((d / "config.json").string());
  return out;
}

std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::string& run_dir) {
  auto all = complete_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return LoadedCheckpoint{it->string(), load_checkpoint(it->string())};  // verifies checksums and structure
    } catch (const CheckpointError& e) {
      log_info("checkpoint: skipping ", it->string(), ": ", e.what());
    }
  }
  return std::nullopt;
}

}  // namespace dsforge::train

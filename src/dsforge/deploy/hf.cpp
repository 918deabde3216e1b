#include "dsforge/deploy/export.h"

#include <ATen/ATen.h>

#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::deploy {
namespace fs = std::filesystem;

uint64_t parse_byte_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  std::string unit = text.substr(i);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(text.substr(0, i), &used);
    if (used != i) throw std::invalid_argument(text);
  } catch (const std::exception&) {
    throw ConfigError(fmt("size '", text, "': expected a number with an optional unit (5GB, 500MB, 2GiB)"));
  }
  static const std::pair<const char*, double> units[] = {{"", 1},       {"B", 1},           {"KB", 1e3},
                                                          {"MB", 1e6},  {"GB", 1e9},        {"TB", 1e12},
                                                          {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
  for (const auto& [name, scale] : units)
    if (unit == name) {
      if (number * scale < 1) throw ConfigError(fmt("size '", text, "' must be at least one byte"));
      return static_cast<uint64_t>(number * scale);
    }
  throw ConfigError(fmt("size '", text, "': unknown unit '", text.substr(i), "' (B, KB, MB, GB, TB, KiB, MiB, GiB)"));
}

namespace {

at::ScalarType parse_dtype(const std::string& d) {
  if (d == "f32") return at::kFloat;
  if (d == "bf16") return at::kBFloat16;
  if (d == "f16") return at::kHalf;
  throw ConfigError(fmt("--dtype '", d, "' is unknown (known: f32, bf16, f16)"));
}

const char* torch_dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

std::string shard_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i, n);
  return buf;
}

}  // namespace

HfExportReport export_hf(const std::string& model_dir, const std::string& out_dir, const HfExportOptions& opts) {
  const at::ScalarType dtype = parse_dtype(opts.dtype);
  if (opts.max_shard_bytes == 0) throw ConfigError("--max-shard-size must be at least one byte");
  if (fs::exists(out_dir) && !fs::is_empty(out_dir))
    throw ConfigError(fmt(out_dir, ": exists and is not empty (export writes a new folder)"));
  const std::string tok_path = path_join(model_dir, "tokenizer.json");
  if (!file_exists(tok_path)) throw ConfigError(fmt(model_dir, ": no tokenizer.json (a Hugging Face folder carries its tokenizer)"));
  const auto tok = tok::BpeTokenizer::load(tok_path);

  model::CausalLm m = model::load_pretrained(model_dir);
  const model::ModelConfig& c = m->config();
  if (c.model_type == "lstm") throw ConfigError(fmt(model_dir, ": the LSTM baseline has no Hugging Face architecture"));
  TensorMap state = model::model_state(*m);
  const bool gpt2 = c.model_type == "gpt2";
  if (gpt2) state = model::transpose_gpt2_conv1d(std::move(state));
  for (auto& [name, t] : state) {
    const bool keep_f32 = name.find("e_score_correction_bias") != std::string::npos;
    t = t.to(keep_f32 ? at::kFloat : dtype).contiguous();
  }

  // Shards in name order, each up to max_shard_bytes (a single larger tensor gets a shard of its own).
  std::vector<std::vector<std::string>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : state) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (in_shard > 0 && in_shard + bytes > opts.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(name);
    in_shard += bytes;
    total += bytes;
  }

  const std::string stage = out_dir + ".partial";
  remove_all(stage);
  make_dirs(stage);
  HfExportReport report;
  report.weight_bytes = total;
  report.shards = static_cast<int>(shards.size());
  auto put = [&](const std::string& file, const std::string& text) {
    write_file_atomic(path_join(stage, file), text);
    report.files.push_back(file);
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {model::kLayoutKey, "hf"}};
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shards.size() == 1 ? "model.safetensors" : shard_name(static_cast<int>(i + 1), static_cast<int>(shards.size()));
    TensorMap part;
    for (const auto& name : shards[i]) {
      part[name] = state.at(name);
      weight_map[name] = file;
    }
    save_safetensors(path_join(stage, file), part, meta);
    report.files.push_back(file);
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    put("model.safetensors.index.json", index.dump(2) + "\n");
  }

  auto config = nlohmann::ordered_json::parse(model::model_config_to_json(c));
  config["torch_dtype"] = torch_dtype_name(dtype);
  if (c.is_deepseek()) {
    config["rope_interleave"] = true;  // adjacent RoPE pairs, as the official checkpoints (DEEPSEEK.md §1.3)
    config["attention_dropout"] = 0.0;
    config["use_cache"] = true;
  }
  put("config.json", config.dump(2) + "\n");
  nlohmann::ordered_json gen = {{"_from_model_config", true}, {"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}};
  put("generation_config.json", gen.dump(2) + "\n");

  put("tokenizer.json", read_file(tok_path));
  const std::string eos = tok.token_bytes(static_cast<int32_t>(c.eos_token_id));
  const std::string bos = tok.token_bytes(static_cast<int32_t>(c.bos_token_id));
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  auto added = [&](const std::string& content, bool special) {
    decoder[std::to_string(special ? tok.special_id(content) : tok.added_token_id(content))] = {
        {"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", special}};
  };
  for (const auto& s : tok.special_tokens()) added(s, true);
  for (const auto& s : tok.added_tokens()) added(s, false);
  nlohmann::ordered_json tcfg = {{"add_bos_token", false},
                                 {"add_eos_token", false},
                                 {"added_tokens_decoder", decoder},
                                 {"bos_token", bos},
                                 {"eos_token", eos},
                                 {"clean_up_tokenization_spaces", false},
                                 {"model_max_length", c.max_position_embeddings},
                                 {"tokenizer_class", "PreTrainedTokenizerFast"}};
  put("tokenizer_config.json", tcfg.dump(2) + "\n");
  put("special_tokens_map.json", nlohmann::ordered_json({{"bos_token", bos}, {"eos_token", eos}, {"unk_token", eos}}).dump(2) + "\n");
  const std::string training = path_join(model_dir, "dsforge_training.json");
  if (file_exists(training)) put("dsforge_training.json", read_file(training));

  // The whole folder appears at once.
  publish_dir(stage, out_dir, "finished export");
  return report;
}

}  // namespace dsforge::deploy

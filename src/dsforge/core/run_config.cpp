#include "dsforge/core/run_config.h"

#include <toml++/toml.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

#include "dsforge/core/edit_distance.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge {
namespace {

using FieldRef = std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*>;

struct Field {
  std::string key;  // "section.name"
  FieldRef ref;
  bool in_hash;     // part of checkpoint_hash
  bool input_path = false;  // a file or folder the run reads: relative values in a TOML file resolve against its folder
};

// The schema: every key of RunConfig, in file order.
std::vector<Field> fields(RunConfig& c) {
  return {
      {"run.out_dir", &c.run.out_dir, false},
      {"run.seed", &c.run.seed, true},
      {"run.threads", &c.run.threads, false},
      {"run.device", &c.run.device, false},
      {"data.source", &c.data.source, true},
      {"data.wordnet_dir", &c.data.wordnet_dir, false, true},
      {"data.paths", &c.data.paths, true, true},
      {"data.txt_documents", &c.data.txt_documents, true},
      {"data.val_paths", &c.data.val_paths, true, true},
      {"data.test_paths", &c.data.test_paths, true, true},
      {"data.jsonl_field", &c.data.jsonl_field, true},
      {"data.normalize", &c.data.normalize, true},
      {"data.collapse_whitespace", &c.data.collapse_whitespace, true},
      {"data.invalid_utf8", &c.data.invalid_utf8, true},
      {"data.val_fraction", &c.data.val_fraction, true},
      {"data.max_docs", &c.data.max_docs, true},
      {"data.min_chars", &c.data.min_chars, true},
      {"data.max_chars", &c.data.max_chars, true},
      {"data.max_ngram_repetition", &c.data.max_ngram_repetition, true},
      {"data.max_repeated_line_fraction", &c.data.max_repeated_line_fraction, true},
      {"data.near_dedup", &c.data.near_dedup, true},
      {"data.near_dedup_threshold", &c.data.near_dedup_threshold, true},
      {"data.shingle", &c.data.shingle, true},
      {"data.shingle_size", &c.data.shingle_size, true},
      {"data.minhash_perm", &c.data.minhash_perm, true},
      {"data.minhash_bands", &c.data.minhash_bands, true},
      {"data.min_word_count", &c.data.min_word_count, true},
      {"data.unk_token", &c.data.unk_token, true},
      {"augment.enabled", &c.augment.enabled, true},
      {"augment.copies", &c.augment.copies, true},
      {"augment.synonym_prob", &c.augment.synonym_prob, true},
      {"augment.insert_prob", &c.augment.insert_prob, true},
      {"augment.swap_prob", &c.augment.swap_prob, true},
      {"augment.delete_prob", &c.augment.delete_prob, true},
      {"augment.cda_pairs", &c.augment.cda_pairs, true, true},
      {"augment.bt_models", &c.augment.bt_models, true, true},
      {"augment.bt_copies", &c.augment.bt_copies, true},
      {"augment.bt_temperature", &c.augment.bt_temperature, true},
      {"tokenizer.vocab_size", &c.tokenizer.vocab_size, true},
      {"tokenizer.special_tokens", &c.tokenizer.special_tokens, true},
      {"tokenizer.max_train_docs", &c.tokenizer.max_train_docs, true},
      {"tokenizer.pretokenizer", &c.tokenizer.pretokenizer, true},
      {"model.config", &c.model.config, true, true},
      {"train.seq_len", &c.train.seq_len, true},
      {"train.batch_size", &c.train.batch_size, true},
      {"train.max_steps", &c.train.max_steps, false},
      {"train.grad_accum_steps", &c.train.grad_accum_steps, false},
      {"train.lr", &c.train.lr, false},
      {"train.schedule", &c.train.schedule, false},
      {"train.min_lr_ratio", &c.train.min_lr_ratio, false},
      {"train.decay_fraction", &c.train.decay_fraction, false},
      {"train.warmup_steps", &c.train.warmup_steps, false},
      {"train.weight_decay", &c.train.weight_decay, false},
      {"train.beta1", &c.train.beta1, false},
      {"train.beta2", &c.train.beta2, false},
      {"train.eps", &c.train.eps, false},
      {"train.grad_clip", &c.train.grad_clip, false},
      {"train.init_std", &c.train.init_std, true},
      {"train.init_embeddings", &c.train.init_embeddings, true, true},
      {"train.label_smoothing", &c.train.label_smoothing, false},
      {"train.early_stopping_patience", &c.train.early_stopping_patience, false},
      {"train.early_stopping_min_delta", &c.train.early_stopping_min_delta, false},
      {"train.bias_update_speed", &c.train.bias_update_speed, false},
      {"train.aux_loss_alpha", &c.train.aux_loss_alpha, false},
      {"train.mtp_loss_weight", &c.train.mtp_loss_weight, false},
      {"train.log_every", &c.train.log_every, false},
      {"train.eval_every", &c.train.eval_every, false},
      {"train.checkpoint_every", &c.train.checkpoint_every, false},
      {"train.keep_checkpoints", &c.train.keep_checkpoints, false},
      {"train.dropout", &c.train.dropout, false},
      {"train.attention_dropout", &c.train.attention_dropout, false},
      {"train.embedding_dropout", &c.train.embedding_dropout, false},
      {"train.precision", &c.train.precision, false},
      {"train.fit_micro_batch", &c.train.fit_micro_batch, false},
      {"train.memory_gb", &c.train.memory_gb, false},
      {"train.spike_factor", &c.train.spike_factor, false},
      {"train.max_rollbacks", &c.train.max_rollbacks, false},
      {"train.peak_gflops", &c.train.peak_gflops, false},
      {"dist.bucket_mb", &c.dist.bucket_mb, false},
      {"dist.zero1", &c.dist.zero1, false},
      {"dist.timeout_s", &c.dist.timeout_s, false},
      {"eval.batches", &c.eval.batches, false},
      {"generate.prompts", &c.generate.prompts, false},
      {"generate.max_new_tokens", &c.generate.max_new_tokens, false},
      {"generate.temperature", &c.generate.temperature, false},
      {"generate.top_k", &c.generate.top_k, false},
      {"generate.top_p", &c.generate.top_p, false},
      {"generate.repetition_penalty", &c.generate.repetition_penalty, false},
      {"generate.stop", &c.generate.stop, false},
      {"generate.weights", &c.generate.weights, false},
      {"continual.strategy", &c.continual.strategy, false},
      {"continual.ewc_lambda", &c.continual.ewc_lambda, false},
      {"continual.fisher", &c.continual.fisher, false},
      {"continual.fisher_samples", &c.continual.fisher_samples, false},
      {"continual.ewc_max_terms", &c.continual.ewc_max_terms, false},
      {"continual.online_gamma", &c.continual.online_gamma, false},
      {"continual.l2sp_alpha", &c.continual.l2sp_alpha, false},
      {"continual.replay_ratio", &c.continual.replay_ratio, false},
      {"continual.replay_capacity", &c.continual.replay_capacity, false},
      {"continual.lwf_alpha", &c.continual.lwf_alpha, false},
      {"continual.lwf_temperature", &c.continual.lwf_temperature, false},
  };
}

const char* type_name(const FieldRef& r) {
  switch (r.index()) {
    case 0: return "an integer";
    case 1: return "a number";
    case 2: return "a boolean";
    case 3: return "a string";
    default: return "an array of strings";
  }
}


std::string unknown_key_message(const std::string& where, const std::string& key, std::vector<Field>& fs) {
  std::string best;
  size_t best_d = 4;
  for (const auto& f : fs) {
    size_t d = edit_distance(key, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  std::string msg = fmt(where, "unknown key '", key, "'");
  if (!best.empty()) msg += fmt(" (did you mean '", best, "'?)");
  return msg;
}

Field* find_field(std::vector<Field>& fs, const std::string& key) {
  for (auto& f : fs)
    if (f.key == key) return &f;
  return nullptr;
}

void set_from_toml(Field& f, const toml::node& node, const std::string& where) {
  auto bad = [&]() {
    return ConfigError(fmt(where, "key '", f.key, "' must be ", type_name(f.ref), ", got ",
                           node.type() == toml::node_type::string ? "a string" : "a value of another type"));
  };
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          auto v = node.value<int64_t>();
          if (!v || !node.is_integer()) throw bad();
          *p = *v;
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) throw bad();
          *p = *node.value<double>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean()) throw bad();
          *p = *node.value<bool>();
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!node.is_string()) throw bad();
          *p = *node.value<std::string>();
        } else {
          const toml::array* arr = node.as_array();
          if (!arr) throw bad();
          p->clear();
          for (const auto& el : *arr) {
            if (!el.is_string()) throw bad();
            p->push_back(*el.value<std::string>());
          }
        }
      },
      f.ref);
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

void set_from_string(Field& f, const std::string& raw) {
  const std::string v = trim(raw);
  auto bad = [&]() {
    return ConfigError(fmt("override --", f.key, "=", raw, ": expected ", type_name(f.ref)));
  };
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          size_t pos = 0;
          try { *p = std::stoll(v, &pos); } catch (...) { throw bad(); }
          if (pos != v.size()) throw bad();
        } else if constexpr (std::is_same_v<T, double>) {
          size_t pos = 0;
          try { *p = std::stod(v, &pos); } catch (...) { throw bad(); }
          if (pos != v.size()) throw bad();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (v == "true") *p = true;
          else if (v == "false") *p = false;
          else throw bad();
        } else if constexpr (std::is_same_v<T, std::string>) {
          *p = v;
        } else {
          // Comma-separated list: --generate.prompts=a,b,c
          p->clear();
          std::stringstream ss(v);
          std::string item;
          while (std::getline(ss, item, ',')) p->push_back(trim(item));
        }
      },
      f.ref);
}

// A TOML basic string: quotes, backslashes and control characters escaped (a prompt may hold a newline).
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string value_text(const FieldRef& r) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) return std::to_string(*p);
        else if constexpr (std::is_same_v<T, double>) {
          // The shortest text that reads back as the same double: 0.003, not 0.0030000000000000001.
          std::string s;
          for (int prec = 6; prec <= 17; ++prec) {
            std::ostringstream os;
            os.precision(prec);
            os << *p;
            s = os.str();
            if (std::strtod(s.c_str(), nullptr) == *p) break;
          }
          if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
          return s;
        } else if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>) return quote(*p);
        else {
          std::string out = "[";
          for (size_t i = 0; i < p->size(); ++i) out += (i ? ", " : "") + quote((*p)[i]);
          return out + "]";
        }
      },
      r);
}

RunConfig load_run_config_impl(const std::string& path, const std::vector<std::string>& overrides, bool resolve_paths);

}  // namespace

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_run_config_impl(path, overrides, /*resolve_paths=*/true);
}

RunConfig load_saved_run_config(const std::string& path) {
  return load_run_config_impl(path, {}, /*resolve_paths=*/false);
}

namespace {
RunConfig load_run_config_impl(const std::string& path, const std::vector<std::string>& overrides, bool resolve_paths) {
  if (!file_exists(path)) throw ConfigError(fmt(path, ": config file not found"));
  RunConfig cfg;
  cfg.source_path = path;
  toml::table tbl;
  try {
    tbl = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt(path, ":", e.source().begin.line, ":", e.source().begin.column, ": ", e.description()));
  }
  auto fs = fields(cfg);
  std::set<std::string> explicitly_set;
  for (const auto& [section, node] : tbl) {
    const std::string sec(section.str());
    const toml::table* st = node.as_table();
    if (!st) throw ConfigError(fmt(path, ": top-level key '", sec, "' must be a [section] table"));
    for (const auto& [name, value] : *st) {
      const std::string key = sec + "." + std::string(name.str());
      const std::string where = fmt(path, ":", value.source().begin.line, ": ");
      Field* f = find_field(fs, key);
      if (!f) throw ConfigError(unknown_key_message(where, key, fs));
      set_from_toml(*f, value, where);
      explicitly_set.insert(key);
    }
  }
  // Relative input paths written in the file resolve against the file's folder, so that a recipe works
  // from any working directory. Overrides given on the command line stay relative to the shell's folder.
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  auto resolve = [&](std::string& p) {
    if (p.empty() || std::filesystem::path(p).is_absolute()) return;
    p = (base / p).lexically_normal().string();
  };
  for (auto& f : fs) {
    if (!resolve_paths || !f.input_path || !explicitly_set.count(f.key)) continue;
    if (f.key == "model.config" && is_model_preset_name(cfg.model.config)) continue;
    if (auto* s = std::get_if<std::string*>(&f.ref)) resolve(**s);
    if (auto* v = std::get_if<std::vector<std::string>*>(&f.ref))
      for (auto& p : **v) resolve(p);
  }
  for (const auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}
}  // namespace

bool is_model_preset_name(const std::string& value) {
  return value.find('/') == std::string::npos && value.find(".json") == std::string::npos;
}

std::vector<std::string> differing_keys(const RunConfig& a, const RunConfig& b) {
  RunConfig ca = a, cb = b;
  auto fa = fields(ca), fb = fields(cb);
  std::vector<std::string> out;
  for (size_t i = 0; i < fa.size(); ++i) {
    const std::string va = value_text(fa[i].ref), vb = value_text(fb[i].ref);
    if (va != vb) out.push_back(fmt(fa[i].key, " (", va, " -> ", vb, ")"));
  }
  return out;
}

void apply_override(RunConfig& cfg, const std::string& assignment) {
  std::string a = assignment;
  if (a.rfind("--", 0) == 0) a = a.substr(2);
  size_t eq = a.find('=');
  if (eq == std::string::npos)
    throw ConfigError(fmt("override '", assignment, "': expected section.key=value"));
  auto fs = fields(cfg);
  const std::string key = trim(a.substr(0, eq));
  Field* f = find_field(fs, key);
  if (!f) throw ConfigError(unknown_key_message("override: ", key, fs));
  set_from_string(*f, a.substr(eq + 1));
}

void validate(const RunConfig& c) {
  auto need = [](bool ok, const char* key, const std::string& what) {
    if (!ok) throw ConfigError(fmt("key '", key, "' ", what));
  };
  need(c.data.source == "wordnet" || c.data.source == "files", "data.source", "must be \"wordnet\" or \"files\"");
  need(c.data.source != "files" || !c.data.paths.empty(), "data.paths", "must list at least one file when data.source = \"files\"");
  // Paths with the WordNet source used to be ignored silently (issue 22): say so instead.
  if (c.data.source == "wordnet")
    for (const auto& [key, list] : {std::pair<const char*, const std::vector<std::string>*>{"data.paths", &c.data.paths},
                                    {"data.val_paths", &c.data.val_paths},
                                    {"data.test_paths", &c.data.test_paths}})
      need(list->empty(), key, "is set but data.source is \"wordnet\": set data.source=\"files\"");
  need(c.data.txt_documents == "line" || c.data.txt_documents == "paragraph" || c.data.txt_documents == "file",
       "data.txt_documents", "must be \"line\", \"paragraph\" or \"file\"");
  need(c.data.val_fraction > 0 && c.data.val_fraction < 0.5, "data.val_fraction", "must be in (0, 0.5)");
  need(c.data.min_chars >= 0 && c.data.max_chars > c.data.min_chars, "data.max_chars", "must exceed data.min_chars");
  need(c.data.invalid_utf8 == "repair" || c.data.invalid_utf8 == "drop", "data.invalid_utf8", "must be \"repair\" or \"drop\"");
  need(c.data.shingle == "char" || c.data.shingle == "word", "data.shingle", "must be \"char\" or \"word\"");
  need(c.data.shingle_size >= 1, "data.shingle_size", "must be >= 1");
  need(c.data.minhash_bands >= 1 && c.data.minhash_perm % c.data.minhash_bands == 0, "data.minhash_bands",
       "must divide data.minhash_perm");
  need(c.data.near_dedup_threshold > 0 && c.data.near_dedup_threshold <= 1, "data.near_dedup_threshold", "must be in (0, 1]");
  need(c.data.max_ngram_repetition > 0 && c.data.max_ngram_repetition <= 1, "data.max_ngram_repetition", "must be in (0, 1]");
  need(c.data.max_repeated_line_fraction > 0 && c.data.max_repeated_line_fraction <= 1, "data.max_repeated_line_fraction",
       "must be in (0, 1]");
  need(c.data.min_word_count >= 0, "data.min_word_count", "must be >= 0 (0 = off)");
  need(c.tokenizer.vocab_size == 0 || c.tokenizer.vocab_size >= 256 + (int64_t)c.tokenizer.special_tokens.size(),
       "tokenizer.vocab_size", "must be 0 (use the model's) or at least 256 + the number of special tokens");
  need(c.tokenizer.pretokenizer == "gpt2" || c.tokenizer.pretokenizer == "deepseek-v3", "tokenizer.pretokenizer",
       "must be \"gpt2\" or \"deepseek-v3\"");
  need(!c.tokenizer.special_tokens.empty(), "tokenizer.special_tokens", "must contain the end-of-text token first");
  need(c.augment.copies >= 1 || (c.augment.copies == 0 && (!c.augment.cda_pairs.empty() || !c.augment.bt_models.empty())),
       "augment.copies", "must be at least 1 (0 only with augment.cda_pairs or augment.bt_models: their copies alone)");
  need(c.augment.bt_models.empty() || c.augment.bt_models.size() == 2, "augment.bt_models",
       "must name two model folders: [to the pivot language, back from it]");
  need(c.augment.bt_copies >= 1, "augment.bt_copies", "must be at least 1");
  need(c.augment.bt_temperature >= 0, "augment.bt_temperature", "must be >= 0 (0 = greedy)");
  for (auto [key, p] : {std::pair<const char*, double>{"augment.synonym_prob", c.augment.synonym_prob},
                        {"augment.insert_prob", c.augment.insert_prob}, {"augment.swap_prob", c.augment.swap_prob},
                        {"augment.delete_prob", c.augment.delete_prob}})
    need(p >= 0 && p <= 1, key, "must be in [0, 1]");
  need(c.train.seq_len >= 4, "train.seq_len", "must be at least 4");
  need(c.train.batch_size >= 1, "train.batch_size", "must be at least 1");
  need(c.train.max_steps >= 1, "train.max_steps", "must be at least 1");
  need(c.train.lr > 0 && std::isfinite(c.train.lr), "train.lr", "must be a positive number");
  need(c.train.min_lr_ratio >= 0 && c.train.min_lr_ratio <= 1, "train.min_lr_ratio", "must be in [0, 1]");
  need(c.train.grad_accum_steps >= 1, "train.grad_accum_steps", "must be at least 1");
  need(c.train.schedule == "constant" || c.train.schedule == "cosine" || c.train.schedule == "wsd" ||
           c.train.schedule == "deepseek",
       "train.schedule", "must be one of constant, cosine, wsd, deepseek");
  need(c.train.decay_fraction > 0 && c.train.decay_fraction <= 1, "train.decay_fraction", "must be in (0, 1]");
  need(c.train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0");
  need(c.train.beta1 >= 0 && c.train.beta1 < 1, "train.beta1", "must be in [0, 1)");
  need(c.train.beta2 >= 0 && c.train.beta2 < 1, "train.beta2", "must be in [0, 1)");
  need(c.train.eps > 0, "train.eps", "must be > 0");
  need(c.train.grad_clip >= 0, "train.grad_clip", "must be >= 0");
  need(c.train.init_std > 0, "train.init_std", "must be > 0");
  need(c.train.label_smoothing >= 0 && c.train.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)");
  need(c.train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 = off)");
  need(c.train.early_stopping_min_delta >= 0, "train.early_stopping_min_delta", "must be >= 0");
  need(c.train.log_every >= 1, "train.log_every", "must be at least 1");
  need(c.train.eval_every >= 1, "train.eval_every", "must be at least 1");
  need(c.train.checkpoint_every >= 1, "train.checkpoint_every", "must be at least 1");
  need(c.train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be at least 1");
  need(c.eval.batches >= 0, "eval.batches", "must be >= 0");
  need(c.generate.temperature >= 0, "generate.temperature", "must be >= 0 (0 = greedy)");
  need(c.generate.top_k >= 0, "generate.top_k", "must be >= 0 (0 = no limit)");
  need(c.generate.top_p > 0 && c.generate.top_p <= 1, "generate.top_p", "must be in (0, 1]");
  need(c.generate.repetition_penalty > 0, "generate.repetition_penalty", "must be > 0 (1 = off)");
  need(c.generate.max_new_tokens >= 0, "generate.max_new_tokens", "must be >= 0");
  need(c.generate.weights == "f32" || c.generate.weights == "bf16", "generate.weights", "must be f32 or bf16");
  need(c.dist.bucket_mb > 0, "dist.bucket_mb", "must be > 0");
  need(c.dist.timeout_s > 0, "dist.timeout_s", "must be > 0 seconds");
  need(c.run.threads >= 0, "run.threads", "must be >= 0 (0 = all cores)");
  need(c.run.device == "cpu" || c.run.device == "auto" || c.run.device.rfind("cuda", 0) == 0, "run.device",
       "must be cpu, cuda, cuda:N or auto");
  for (auto [key, p] : {std::pair{"train.dropout", c.train.dropout}, {"train.attention_dropout", c.train.attention_dropout},
                        {"train.embedding_dropout", c.train.embedding_dropout}})
    need(p >= 0 && p < 1, key, "must be in [0, 1)");
  need(c.train.precision == "fp32" || c.train.precision == "bf16" || c.train.precision == "fp16", "train.precision",
       "must be one of fp32, bf16, fp16");
  need(c.train.memory_gb >= 0, "train.memory_gb", "must be >= 0 (0 = 60% of available memory)");
  need(c.train.spike_factor == 0 || c.train.spike_factor > 1, "train.spike_factor", "must be 0 (off) or > 1");
  need(c.train.max_rollbacks >= 0, "train.max_rollbacks", "must be >= 0");
  need(c.train.peak_gflops >= 0, "train.peak_gflops", "must be >= 0 (0 = measure)");
  // continual.strategy's names are checked where it is parsed (continual/strategy.h), with the list.
  need(c.continual.ewc_lambda >= 0, "continual.ewc_lambda", "must be >= 0");
  need(c.continual.fisher == "empirical" || c.continual.fisher == "sampled", "continual.fisher",
       "must be \"empirical\" or \"sampled\"");
  need(c.continual.fisher_samples >= 1, "continual.fisher_samples", "must be at least 1");
  need(c.continual.ewc_max_terms >= 0, "continual.ewc_max_terms", "must be >= 0 (0 = keep every domain's term)");
  need(c.continual.online_gamma >= 0 && c.continual.online_gamma <= 1, "continual.online_gamma", "must be in [0, 1]");
  need(c.continual.l2sp_alpha >= 0, "continual.l2sp_alpha", "must be >= 0");
  need(c.continual.replay_ratio >= 0 && c.continual.replay_ratio < 1, "continual.replay_ratio", "must be in [0, 1)");
  need(c.continual.replay_capacity >= 1, "continual.replay_capacity", "must be at least 1");
  need(c.continual.lwf_alpha >= 0, "continual.lwf_alpha", "must be >= 0");
  need(c.continual.lwf_temperature > 0, "continual.lwf_temperature", "must be > 0");
}

std::string to_toml(const RunConfig& cfg) {
  RunConfig copy = cfg;
  auto fs = fields(copy);
  std::string out, section;
  for (const auto& f : fs) {
    std::string sec = f.key.substr(0, f.key.find('.'));
    if (sec != section) {
      out += (section.empty() ? "" : "\n") + std::string("[") + sec + "]\n";
      section = sec;
    }
    out += f.key.substr(f.key.find('.') + 1) + " = " + value_text(f.ref) + "\n";
  }
  return out;
}

std::string section_hash(const RunConfig& cfg, const std::string& section) {
  RunConfig copy = cfg;
  std::string text = fmt("run.seed=", cfg.run.seed, "\n");
  for (const auto& f : fields(copy))
    if (f.key.compare(0, section.size() + 1, section + ".") == 0) text += f.key + "=" + value_text(f.ref) + "\n";
  return hex64(fnv1a64(text));
}

std::string checkpoint_hash(const RunConfig& cfg) {
  RunConfig copy = cfg;
  std::string text;
  for (const auto& f : fields(copy))
    if (f.in_hash) text += f.key + "=" + value_text(f.ref) + "\n";
  return hex64(fnv1a64(text));
}

}  // namespace dsforge

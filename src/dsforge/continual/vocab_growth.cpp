#include "dsforge/continual/vocab_growth.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "dsforge/continual/state.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/splits.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::continual {
namespace {

std::string token_string(const std::string& bytes) {
  std::string s;
  for (unsigned char c : bytes) s += tok::byte_to_unicode(c);
  return s;
}

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace

tok::BpeTokenizer extend_tokenizer(const tok::BpeTokenizer& base, const std::vector<std::string>& docs, int64_t n_merges) {
  if (n_merges < 1) throw ConfigError(fmt("--extend-tokenizer ", n_merges, ": must be at least 1"));
  // The new documents' distinct pre-tokens with their counts, each as the old tokenizer encodes it.
  const tok::PreTokenizer pre(base.pretokenizer_patterns());
  std::unordered_map<std::string, int64_t> counts;
  std::vector<std::string_view> pieces;
  for (const auto& d : docs) {
    pieces.clear();
    pre.split(d, pieces);
    for (auto p : pieces) ++counts[std::string(p)];
  }
  struct Word {
    std::vector<int32_t> ids;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [piece, c] : counts) {
    Word w{base.encode(piece, false), c};
    if (w.ids.size() > 1) words.push_back(std::move(w));
  }
  std::vector<std::string> bytes;  // id -> byte string, old and new
  for (int32_t id = 0; id < base.vocab_size(); ++id) bytes.push_back(base.token_bytes(id));
  std::unordered_set<std::string> existing(bytes.begin(), bytes.end());
  std::unordered_set<uint64_t> refused;  // pairs whose bytes are already a token
  std::vector<std::pair<int32_t, int32_t>> merges;
  for (int64_t k = 0; k < n_merges; ++k) {
    std::unordered_map<uint64_t, int64_t> pairs;
    for (const auto& w : words)
      for (size_t i = 0; i + 1 < w.ids.size(); ++i) pairs[pair_key(w.ids[i], w.ids[i + 1])] += w.count;
    uint64_t best = 0;
    int64_t best_n = 0;
    for (const auto& [key, n] : pairs) {
      if (refused.count(key)) continue;
      const auto a = static_cast<int32_t>(key >> 32), b = static_cast<int32_t>(key & 0xFFFFFFFFu);
      bool better = n > best_n;
      if (n == best_n && best_n > 0) {  // ties: the lexicographically greater pair of byte strings
        const auto ba = static_cast<int32_t>(best >> 32), bb = static_cast<int32_t>(best & 0xFFFFFFFFu);
        better = std::make_pair(bytes[a], bytes[b]) > std::make_pair(bytes[ba], bytes[bb]);
      }
      if (better) best = key, best_n = n;
    }
    if (best_n < 2) break;
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFFu);
    const std::string merged = bytes[a] + bytes[b];
    if (existing.count(merged)) {  // an old token reached by another route: not a new token
      refused.insert(best);
      --k;
      continue;
    }
    const auto id = static_cast<int32_t>(bytes.size());
    bytes.push_back(merged);
    existing.insert(merged);
    merges.emplace_back(a, b);
    for (auto& w : words) {
      std::vector<int32_t> out;
      out.reserve(w.ids.size());
      for (size_t i = 0; i < w.ids.size(); ++i) {
        if (i + 1 < w.ids.size() && w.ids[i] == a && w.ids[i + 1] == b) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(w.ids[i]);
        }
      }
      w.ids.swap(out);
    }
  }
  // The old tokenizer.json with the new vocabulary entries and merges appended.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(base.to_json());
  auto& model = j.at("model");
  auto& vocab = model.at("vocab");
  auto& jm = model.at("merges");
  const bool pair_form = !jm.empty() && jm[0].is_array();
  for (size_t k = 0; k < merges.size(); ++k) {
    const auto id = static_cast<int32_t>(base.vocab_size() + static_cast<int64_t>(k));
    vocab[token_string(bytes[static_cast<size_t>(id)])] = id;
    const std::string l = token_string(bytes[static_cast<size_t>(merges[k].first)]), r = token_string(bytes[static_cast<size_t>(merges[k].second)]);
    if (pair_form) jm.push_back({l, r});
    else jm.push_back(l + " " + r);
  }
  tok::BpeTokenizer out = tok::BpeTokenizer::from_json(j.dump(), "extended tokenizer");
  for (int32_t id = 0; id < base.vocab_size(); ++id)
    if (out.token_bytes(id) != base.token_bytes(id))
      throw Error(fmt("extend_tokenizer: id ", id, " changed (internal error)"));
  return out;
}

void grow_model_folder(const std::string& from, const std::string& out, const std::string& train_jsonl, int64_t n_merges,
                       uint64_t seed) {
  const std::string stamp_path = path_join(out, "GROWN");
  const std::string stamp = hex64(fnv1a64(read_file(path_join(from, "model.safetensors")) + "|" +
                                          read_file(path_join(from, "tokenizer.json")) + "|" + read_file(train_jsonl) + "|" +
                                          std::to_string(n_merges)));
  if (file_exists(stamp_path) && read_file(stamp_path) == stamp) {
    log_info("continue: reusing the grown model in ", out);
    return;
  }
  const tok::BpeTokenizer base = tok::BpeTokenizer::load(path_join(from, "tokenizer.json"));
  std::vector<std::string> docs;
  data::for_each_split_document(train_jsonl, [&](std::string&& d) { docs.push_back(std::move(d)); });
  const tok::BpeTokenizer grown = extend_tokenizer(base, docs, n_merges);
  const int64_t v_old = base.vocab_size(), v_new = grown.vocab_size();

  model::CausalLm m = model::load_pretrained(from);
  if (m->config().vocab_size != v_old)
    throw ConfigError(fmt(from, ": config.json vocab_size ", m->config().vocab_size, " but tokenizer.json has ", v_old, " tokens"));
  // The byte tokens of each new token: its rows are their mean.
  std::vector<int32_t> byte_id(256, -1);
  for (int32_t id = 0; id < v_old; ++id) {
    const std::string& b = base.token_bytes(id);
    if (b.size() == 1 && base.added_token_id(b) < 0 && byte_id[static_cast<unsigned char>(b[0])] < 0)
      byte_id[static_cast<unsigned char>(b[0])] = id;
  }
  std::vector<at::Tensor> covers;  // per new token: the byte-token ids, int64
  for (int64_t id = v_old; id < v_new; ++id) {
    std::vector<int64_t> ids;
    for (unsigned char c : grown.token_bytes(static_cast<int32_t>(id))) {
      if (byte_id[c] < 0) throw DataError(fmt(from, "/tokenizer.json: no token for byte ", static_cast<int>(c)));
      ids.push_back(byte_id[c]);
    }
    covers.push_back(at::tensor(ids, at::kLong));
  }
  auto grow_rows = [&](const at::Tensor& t) {  // [V_old, ...] -> [V_new, ...]
    std::vector<at::Tensor> rows{t};
    for (const auto& c : covers) rows.push_back(t.index_select(0, c.to(t.device())).mean(0, /*keepdim=*/true));
    return at::cat(rows, 0);
  };
  model::ModelConfig cfg = m->config();
  cfg.vocab_size = v_new;
  model::CausalLm g = model::build_model(cfg);
  g->init_weights(0.02, seed);
  TensorMap state = model::model_state(*m);
  const TensorMap target = model::model_state(*g);
  for (auto& [name, t] : state) {
    const at::Tensor& want = target.at(name);
    if (want.sizes() == t.sizes()) continue;
    if (t.dim() < 1 || t.size(0) != v_old || want.size(0) != v_new || t.sizes().slice(1) != want.sizes().slice(1))
      throw Error(fmt("grow: tensor ", name, " is ", t.sizes(), " but the grown model's is ", want.sizes()));
    t = grow_rows(t);
  }
  model::load_model_state(*g, state, from);

  const std::string tmp = out + ".tmp";
  remove_all(tmp);
  model::save_pretrained(tmp, *g);
  grown.save(path_join(tmp, "tokenizer.json"));
  const model::TrainingInfo info = model::load_training_info(from);
  model::save_training_info(tmp, info);
  if (has_state(from)) {
    // Fisher rows of the new tokens 0, anchors the new rows; the reservoir's ids are all old ids.
    // (the reservoir is read at its stored size and width below)
    ContinualState st = load_state(from, {1 << 30, 2, seed});
    auto grow_pair = [&](FisherAnchor& fa) {
      for (auto* map : {&fa.fisher, &fa.anchor})
        for (auto& [name, t] : *map) {
          if (t.dim() < 1 || t.size(0) != v_old) continue;
          auto it = target.find(name);
          if (it == target.end() || it->second.size(0) != v_new) continue;
          if (map == &fa.fisher) {
            std::vector<int64_t> shape = t.sizes().vec();
            shape[0] = v_new - v_old;
            t = at::cat({t, at::zeros(shape, t.options())}, 0);
          } else {
            t = grow_rows(t);
          }
        }
    };
    for (auto& fa : st.ewc) grow_pair(fa);
    if (st.online) grow_pair(*st.online);
    if (st.replay) {
      // Stored windows keep their length: reload them at their own width.
      const SafetensorsFile rf = load_safetensors(path_join(path_join(from, "continual"), "replay.safetensors"));
      const at::Tensor& windows = rf.tensors.at("replay.windows");
      st.replay = Reservoir::from_tensors(rf.tensors, std::max<int64_t>(windows.size(0), 1), windows.size(1), seed, "replay");
    }
    save_state(tmp, st);
  }
  write_file_atomic(path_join(tmp, "GROWN"), stamp);
  remove_all(out);
  publish_dir(tmp, out, "grown model");
  log_info("continue: tokenizer grown from ", v_old, " to ", v_new, " tokens (", v_new - v_old, " merges learned on ",
           docs.size(), " documents); model rows initialised from their bytes' rows -> ", out);
}

}  // namespace dsforge::continual

// Hugging Face tokenizer.json (model BPE, ByteLevel pre-tokenizer and decoder, added tokens) and
// the GPT-2 release files (vocab.json + merges.txt).
#include <cstdint>
#include <fstream>
#include <map>
#include <unordered_map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::tok {
namespace {

std::string token_string(const std::string& raw) {
  std::string s;
  for (unsigned char c : raw) s += byte_to_unicode(c);
  return s;
}

bool is_id(const nlohmann::json& v) {
  return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX;
}

std::vector<std::pair<std::string, std::string>> parse_merges(const nlohmann::json& merges, const std::string& origin) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& m = merges[i];
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw DataError(fmt(origin, ": model.merges[", i, "] = '", s, "': expected 'left right'"));
      out.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["left", "right"]
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw DataError(fmt(origin, ": model.merges[", i, "]: expected a string 'a b' or a pair [\"a\", \"b\"]"));
    }
  }
  return out;
}

}  // namespace

std::string BpeTokenizer::to_json() const {
  using ojson = nlohmann::ordered_json;
  // In file order (the first special token is end-of-text), not sorted by id as `tokenizers` writes
  // them: a file read back must give the same special_tokens().
  ojson added = ojson::array();
  std::vector<bool> is_added(bytes_.size(), false);
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& a = added_[i];
    added.push_back({{"id", added_ids_[i]}, {"content", a.content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", a.normalized}, {"special", a.special}});
    is_added[static_cast<size_t>(added_ids_[i])] = true;
  }
  // Appended to the ordered object's underlying vector: its operator[] searches linearly, which made
  // writing a 100k vocabulary quadratic (tens of seconds). Keys are unique: one string per id.
  ojson vocab = ojson::object();
  auto& entries = static_cast<std::vector<std::pair<const std::string, ojson>>&>(vocab.get_ref<ojson::object_t&>());
  entries.reserve(bytes_.size());
  for (size_t id = 0; id < bytes_.size(); ++id)
    entries.emplace_back(is_added[id] ? bytes_[id] : token_string(bytes_[id]), ojson(id));
  ojson merges = ojson::array();
  for (const auto& [a, b] : merges_) merges.push_back(token_string(bytes_[a]) + " " + token_string(bytes_[b]));
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  const auto& patterns = pretokenizer_patterns();
  if (patterns == tok::pretokenizer_patterns("gpt2")) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  } else {  // the DeepSeek-V3 layout: isolated regex splits, then byte-level mapping without its own regex
    ojson seq = ojson::array();
    for (const auto& p : patterns)
      seq.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
    seq.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", seq}};
  }
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j.dump(2) + "\n";
}

void BpeTokenizer::save(const std::string& path) const { write_file_atomic(path, to_json()); }

namespace {

// from_json past the parse: everything that names `origin` in its errors.
BpeTokenizer parse_tokenizer_json(const nlohmann::json& j, const std::string& origin) {
  using AddedToken = BpeTokenizer::AddedToken;
  if (!j.contains("model") || !j["model"].is_object()) throw DataError(fmt(origin, ": missing 'model' object"));
  const auto& model = j["model"];
  if (model.value("type", "BPE") != "BPE")
    throw DataError(fmt(origin, ": model.type is '", model["type"].get<std::string>(), "', expected 'BPE'"));
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw DataError(fmt(origin, ": missing model.vocab"));
  if (!model.contains("merges") || !model["merges"].is_array()) throw DataError(fmt(origin, ": missing model.merges"));
  // Pre-tokenizer: ByteLevel (its own GPT-2 regex when use_regex), or a Sequence of isolated Split
  // regexes ending in ByteLevel (DeepSeek-V3's layout).
  std::vector<std::string> patterns = tok::pretokenizer_patterns("gpt2");
  if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
    const auto& pt = j["pre_tokenizer"];
    auto byte_level = [&](const nlohmann::json& b, std::vector<std::string>& out) {
      if (b.value("add_prefix_space", false))
        throw DataError(fmt(origin, ": pre_tokenizer ByteLevel.add_prefix_space = true is not supported"));
      if (b.value("use_regex", true)) out.push_back(tok::pretokenizer_patterns("gpt2")[0]);
    };
    patterns.clear();
    const std::string type = pt.value("type", "");
    if (type == "ByteLevel") {
      byte_level(pt, patterns);
    } else if (type == "Sequence") {
      bool saw_byte_level = false;
      for (const auto& step : pt.at("pretokenizers")) {
        const std::string st = step.value("type", "");
        if (st == "Split") {
          if (step.value("behavior", "") != "Isolated" || step.value("invert", false))
            throw DataError(fmt(origin, ": pre_tokenizer Split steps must be behavior \"Isolated\", invert false"));
          const auto& pat = step.at("pattern");
          if (pat.contains("Regex")) patterns.push_back(pat["Regex"].get<std::string>());
          else patterns.push_back("\\Q" + pat.at("String").get<std::string>() + "\\E");
        } else if (st == "ByteLevel") {
          byte_level(step, patterns);
          saw_byte_level = true;
        } else {
          throw DataError(fmt(origin, ": pre_tokenizer step '", st, "' is not supported (Split, ByteLevel)"));
        }
      }
      if (!saw_byte_level) throw DataError(fmt(origin, ": pre_tokenizer Sequence has no ByteLevel step"));
    } else {
      throw DataError(fmt(origin, ": pre_tokenizer.type '", type,
                          "' is not supported (dsforge reads byte-level BPE tokenizers: ByteLevel or Sequence)"));
    }
  }
  std::map<std::string, int32_t> vocab;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!is_id(it.value()))
      throw DataError(fmt(origin, ": model.vocab['", it.key(), "'] is ", it.value().dump(), ", expected an id in [0, 2^31)"));
    vocab[it.key()] = it.value().get<int32_t>();
  }
  // Added tokens: usually also in model.vocab under the same id (a clash is an error); one that is
  // not gets its id there, which no other token may hold.
  std::vector<AddedToken> added;
  if (j.contains("added_tokens")) {
    const auto& list = j["added_tokens"];
    if (!list.is_array()) throw DataError(fmt(origin, ": added_tokens is not an array"));
    std::unordered_map<int32_t, std::string> by_id;  // filled on first need
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& e = list[i];
      const std::string where = fmt(origin, ": added_tokens[", i, "]");
      if (!e.is_object() || !e.contains("content") || !e["content"].is_string() || !e.contains("id") ||
          !is_id(e["id"]))
        throw DataError(fmt(where, ": expected an object with a string 'content' and an integer 'id' in [0, 2^31)"));
      AddedToken a;
      a.content = e["content"].get<std::string>();
      const int32_t id = e["id"].get<int32_t>();
      if (a.content.empty()) throw DataError(fmt(where, ": empty content"));
      // `tokenizers` defaults: special false; normalized true unless special.
      a.special = e.value("special", false);
      a.normalized = e.value("normalized", !a.special);
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        if (e.value(flag, false))
          throw DataError(fmt(where, " '", a.content, "': ", flag, " = true is not supported (dsforge matches added "
                              "tokens exactly)"));
      for (const auto& prev : added)
        if (prev.content == a.content) throw DataError(fmt(where, ": '", a.content, "' is listed twice"));
      auto it = vocab.find(a.content);
      if (it != vocab.end()) {
        if (it->second != id)
          throw DataError(fmt(where, ": '", a.content, "' has id ", id, " but model.vocab gives it ", it->second));
      } else {
        if (by_id.empty())
          for (const auto& [s, v] : vocab) by_id.emplace(v, s);
        auto owner = by_id.find(id);
        if (owner != by_id.end())
          throw DataError(fmt(where, ": '", a.content, "' has id ", id, ", which is already '", owner->second, "'"));
        vocab[a.content] = id;
        by_id.emplace(id, a.content);
      }
      added.push_back(std::move(a));
    }
  }
  BpeTokenizer t = BpeTokenizer::from_vocab_and_merges(vocab, parse_merges(model["merges"], origin), added,
                                                       BpeTokenizer::Source{fmt(origin, ": model.vocab"), fmt(origin, ": model.merges"), {}});
  try {
    t.set_pretokenizer(patterns);
  } catch (const DataError& e) {
    throw DataError(fmt(origin, ": pre_tokenizer: ", e.what()));
  }
  return t;
}

}  // namespace

BpeTokenizer BpeTokenizer::from_json(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(origin, ": not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) throw DataError(fmt(origin, ": expected a JSON object (a Hugging Face tokenizer.json)"));
  // Every check below names `origin`; a field of an unexpected JSON type that slips past them
  // still does, through this catch.
  try {
    return parse_tokenizer_json(j, origin);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(origin, ": unexpected structure (", e.what(), ")"));
  }
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  if (!file_exists(path)) throw DataError(fmt(path, ": tokenizer file not found"));
  return from_json(read_file(path), path);
}

BpeTokenizer BpeTokenizer::from_gpt2_files(const std::string& vocab_json, const std::string& merges_txt,
                                           const std::vector<std::string>& special_tokens) {
  nlohmann::json v;
  try {
    v = nlohmann::json::parse(read_file(vocab_json));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(vocab_json, ": not valid JSON (", e.what(), ")"));
  }
  if (!v.is_object()) throw DataError(fmt(vocab_json, ": expected a JSON object of token -> id"));
  std::map<std::string, int32_t> vocab;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!is_id(it.value()))
      throw DataError(fmt(vocab_json, ": '", it.key(), "' maps to ", it.value().dump(), ", expected an id in [0, 2^31)"));
    vocab[it.key()] = it.value().get<int32_t>();
  }
  std::ifstream in(merges_txt);
  if (!in) throw DataError(fmt(merges_txt, ": cannot open"));
  std::vector<std::pair<std::string, std::string>> merges;
  Source src{vocab_json, merges_txt, {}};
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() || line.find(' ', sp + 1) != std::string::npos)
      throw DataError(fmt(merges_txt, ":", lineno, ": '", line, "': expected 'left right'"));
    merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    src.merge_lines.push_back(lineno);
  }
  std::vector<AddedToken> added;
  for (const auto& s : special_tokens) added.push_back({s, true, false});
  return from_vocab_and_merges(vocab, merges, added, src);
}

}  // namespace dsforge::tok

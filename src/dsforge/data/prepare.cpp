// The prepare stage (declared in corpus.h): documents in, filtered and deduplicated splits out.
#include <cctype>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/corpus.h"
#include "dsforge/data/dedup.h"
#include "dsforge/data/ingest.h"
#include "dsforge/data/splits.h"

namespace dsforge::data {
namespace {

// data.min_word_count: rewrite a split, replacing words rarer than the threshold in `freq`.
void replace_rare_words(const std::string& path, const std::unordered_map<std::string, int64_t>& freq, int64_t min_count,
                        const std::string& unk) {
  JsonlWriter out(path);  // writes beside `path` and renames over it: reading and writing never overlap
  for_each_split_document(path, [&](std::string&& doc) {
    std::string result, word;
    auto flush = [&]() {
      if (word.empty()) return;
      std::string lower = word;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto it = freq.find(lower);
      result += (it == freq.end() || it->second < min_count) ? unk : word;
      word.clear();
    };
    for (char ch : doc) {
      const auto c = static_cast<unsigned char>(ch);
      if (std::isalnum(c) || c == '\'' || c >= 0x80) {
        word.push_back(ch);
      } else {
        flush();
        result.push_back(ch);
      }
    }
    flush();
    out.write(result);
  });
  out.commit();
}

// The stats.json of a finished stage, back into the result (a re-run that reuses the outputs).
PreparedCorpus reused(PreparedCorpus out) {
  auto j = nlohmann::json::parse(read_file(out.stats_path));
  out.train_docs = j["split"]["train_documents"];
  out.val_docs = j["split"]["val_documents"];
  out.test_docs = j["split"].value("test_documents", int64_t{0});
  return out;
}

// The filters' counts in the order they run (stats.json "filters").
nlohmann::ordered_json filters_json(const CleanCounts& cc) {
  return {{"input", cc.input},
          {"invalid_utf8", cc.invalid_utf8},
          {"dropped_invalid_utf8", cc.dropped_invalid_utf8},
          {"binary_files_skipped", cc.binary_files_skipped},
          {"repeated_lines", cc.repeated_lines},
          {"repetitive_ngrams", cc.repetitive},
          {"too_short", cc.too_short},
          {"too_long", cc.too_long},
          {"contamination", cc.contamination},
          {"exact_duplicates", cc.duplicates},
          {"near_duplicates", cc.near_duplicates},
          {"kept", cc.kept}};
}

void log_filters(const CleanCounts& cc) {
  log_info("data: ", cc.input, " documents in, ", cc.kept, " kept (", cc.too_short, " too short, ", cc.too_long,
           " too long, ", cc.repetitive, " repetitive, ", cc.duplicates, " exact and ", cc.near_duplicates,
           " near duplicates, ", cc.contamination, " in validation/test, ", cc.invalid_utf8 + cc.dropped_invalid_utf8,
           " with invalid UTF-8)");
}

}  // namespace

PreparedCorpus prepare_corpus(const RunConfig& cfg) {
  validate(cfg);  // library callers skip the CLI's check; a wordnet source with paths must not pass
  const auto& dc = cfg.data;
  const std::string dir = path_join(cfg.run.out_dir, "data");
  PreparedCorpus out;
  out.train_path = split_path(cfg.run.out_dir, "train");
  out.val_path = split_path(cfg.run.out_dir, "val");
  if (!dc.test_paths.empty()) out.test_path = split_path(cfg.run.out_dir, "test");
  out.stats_path = path_join(dir, "stats.json");
  const std::string stamp = path_join(dir, "DONE");
  const std::string hash = section_hash(cfg, "data");
  if (file_exists(stamp) && read_file(stamp) == hash && file_exists(out.train_path) && file_exists(out.val_path) &&
      (out.test_path.empty() || file_exists(out.test_path))) {
    out = reused(out);
    log_info("data: reusing ", dir, " (", out.train_docs, " train / ", out.val_docs, " val documents)");
    return out;
  }
  make_dirs(dir);
  std::filesystem::remove(split_path(cfg.run.out_dir, "test"));  // a test split of an earlier config must not linger

  CleanCounts& cc = out.counts;
  const CleanOptions clean_opts{dc.collapse_whitespace};
  // data.normalize = false keeps the bytes; only invalid UTF-8 is repaired (ingest already did it
  // for files, this covers WordNet).
  auto clean = [&](std::string&& doc, bool* invalid) -> std::string {
    if (dc.normalize) return clean_text(doc, clean_opts, invalid);
    *invalid = !is_valid_utf8(doc);
    return *invalid ? repair_utf8(doc) : std::move(doc);
  };
  const IngestOptions io = ingest_options(cfg);
  const NearDedupOptions near_opts{dc.shingle,       dc.shingle_size, dc.minhash_perm, dc.minhash_bands,
                                   dc.near_dedup_threshold, static_cast<uint64_t>(cfg.run.seed)};

  // Held-out files first: they are used as given, and training must not contain their documents.
  std::unordered_set<uint64_t> heldout;
  std::unique_ptr<NearDedup> heldout_near;
  if (dc.near_dedup) heldout_near = std::make_unique<NearDedup>(near_opts);
  auto write_heldout = [&](const std::vector<std::string>& specs, const std::string& path) {
    JsonlWriter w(path);
    IngestCounts ic = for_each_document(expand_inputs(specs), io, [&](std::string&& doc) {
      bool invalid = false;
      std::string c = clean(std::move(doc), &invalid);
      if (c.find_first_not_of(" \t\r\n") == std::string::npos) return;
      heldout.insert(fnv1a64(c));
      if (heldout_near) heldout_near->add(c);
      w.write(c);
    });
    cc.binary_files_skipped += ic.binary_files_skipped;
    w.commit();
    return w.documents();
  };
  const bool own_val = !dc.val_paths.empty();
  if (own_val) out.val_docs = write_heldout(dc.val_paths, out.val_path);
  if (!out.test_path.empty()) out.test_docs = write_heldout(dc.test_paths, out.test_path);

  // Stream: each document is read, filtered, deduplicated and written before the next is read.
  std::unordered_set<uint64_t> seen;
  std::unique_ptr<NearDedup> near;
  if (dc.near_dedup) near = std::make_unique<NearDedup>(near_opts);
  StatsAccumulator stats;
  std::unordered_map<std::string, int64_t> train_freq;
  JsonlWriter train(out.train_path);
  std::unique_ptr<JsonlWriter> val;
  if (!own_val) val = std::make_unique<JsonlWriter>(out.val_path);
  // Training documents are written one behind: a corpus too small for the hash split to pick any
  // validation document gives its last training document to validation instead of failing.
  std::optional<std::string> held;
  auto to_train = [&](const std::string& c) {
    stats.add(c);
    if (dc.min_word_count > 0)
      for (auto& w : split_words(c)) ++train_freq[w];
    train.write(c);
    ++out.train_docs;
  };
  bool val_from_train = false;
  auto process = [&](std::string&& doc) {
    if (dc.max_docs > 0 && cc.input >= dc.max_docs) return;
    ++cc.input;
    if (repeated_line_fraction(doc) > dc.max_repeated_line_fraction) { ++cc.repeated_lines; return; }
    bool invalid = false;
    std::string c = clean(std::move(doc), &invalid);
    cc.invalid_utf8 += invalid;
    const int64_t n = count_code_points(c);
    if (n < dc.min_chars) { ++cc.too_short; return; }
    if (n > dc.max_chars) { ++cc.too_long; return; }
    if (ngram_repetition(c) > dc.max_ngram_repetition) { ++cc.repetitive; return; }
    const uint64_t h = fnv1a64(c);
    if (heldout.count(h) || (heldout_near && heldout_near->contains(c))) { ++cc.contamination; return; }
    if (!seen.insert(h).second) { ++cc.duplicates; return; }
    if (near && !near->insert(c)) { ++cc.near_duplicates; return; }
    ++cc.kept;
    if (val && is_validation(c, dc.val_fraction, static_cast<uint64_t>(cfg.run.seed))) {
      val->write(c);
      ++out.val_docs;
    } else {
      if (held) to_train(*held);
      held = std::move(c);
    }
  };
  if (dc.source == "wordnet") {
    for (auto& d : read_wordnet_glosses(dc.wordnet_dir)) process(std::move(d));
  } else {
    IngestCounts ic = for_each_document(expand_inputs(dc.paths), io, process);
    cc.dropped_invalid_utf8 = ic.dropped_invalid;
    cc.invalid_utf8 += ic.invalid_utf8 - ic.dropped_invalid;  // repaired ones were counted by clean_text as valid
    cc.input += ic.dropped_invalid;
    cc.binary_files_skipped += ic.binary_files_skipped;
  }
  if (held) {
    val_from_train = val && out.val_docs == 0 && out.train_docs > 0;
    if (val_from_train) {
      val->write(*held);
      ++out.val_docs;
      log_info("data: the hash split (data.val_fraction = ", dc.val_fraction, ") chose no validation document of ",
               out.train_docs + 1, "; the last training document is used for validation");
    } else {
      to_train(*held);
    }
  }
  train.commit();
  if (val) val->commit();
  if (out.train_docs == 0 || out.val_docs == 0)
    throw DataError(fmt("data: after cleaning, ", out.train_docs, " train and ", out.val_docs,
                        " validation documents remain (need at least one of each; input had ", cc.input, ")"));
  if (dc.min_word_count > 0) {  // word-level vocabularies: rare words -> unk_token, counted on train only
    replace_rare_words(out.train_path, train_freq, dc.min_word_count, dc.unk_token);
    replace_rare_words(out.val_path, train_freq, dc.min_word_count, dc.unk_token);
    if (!out.test_path.empty()) replace_rare_words(out.test_path, train_freq, dc.min_word_count, dc.unk_token);
  }

  CorpusStats st = stats.finish();
  nlohmann::ordered_json j;  // filters in the order they run
  j["source"] = dc.source;
  j["filters"] = filters_json(cc);
  j["split"] = {{"train_documents", out.train_docs},
                {"val_documents", out.val_docs},
                {"val_source", own_val ? "data.val_paths" : val_from_train ? "last training document" : "hash split"},
                {"val_fraction", own_val ? 0.0 : dc.val_fraction}};
  if (!out.test_path.empty()) j["split"]["test_documents"] = out.test_docs;
  j["train"] = stats_json(st);
  write_file_atomic(out.stats_path, j.dump(2) + "\n");
  write_file_atomic(stamp, hash);

  log_filters(cc);
  log_info("data: train ", out.train_docs, " / val ", out.val_docs, out.test_path.empty() ? "" : fmt(" / test ", out.test_docs),
           " documents; ", st.words, " words, vocabulary ", st.vocabulary, ", unigram entropy ",
           st.unigram_entropy_bits_per_word, " bits/word, Zipf slope ", st.zipf_slope);
  return out;
}

}  // namespace dsforge::data

#include "dsforge/pipeline/tokenizer_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "dsforge/core/error.h"
#include "dsforge/data/ingest.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::pipeline {
namespace {

bool is_jsonl(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".jsonl" || ext == ".ndjson";
}

// One raw file into `counter`, chunk by chunk. A cut from last_safe_split (after a newline between
// non-space bytes, never inside a special token) leaves the pre-tokens of the whole file unchanged,
// and it never falls inside a UTF-8 sequence, so repairing each chunk repairs the whole file.
// `pending` grows past chunk_bytes only while the text has no such cut (e.g. one very long line).
int64_t count_raw_file(const std::string& path, const TokenizerFilesOptions& opts,
                       tok::BpeTokenizer::PieceCounter& counter) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt(path, ": cannot open"));
  int64_t bytes = 0;
  auto add = [&](std::string_view text) {
    if (text.empty()) return;
    if (data::is_valid_utf8(text)) {
      counter.add(text);
      bytes += static_cast<int64_t>(text.size());
    } else {
      const std::string fixed = data::repair_utf8(text);
      counter.add(fixed);
      bytes += static_cast<int64_t>(fixed.size());
    }
  };
  std::string pending;
  std::vector<char> buf(std::max<size_t>(opts.chunk_bytes, 1));
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    pending.append(buf.data(), static_cast<size_t>(in.gcount()));
    const size_t cut = tok::last_safe_split(pending, opts.train.special_tokens);
    if (cut == 0) continue;
    add(std::string_view(pending).substr(0, cut));
    pending.erase(0, cut);
  }
  if (in.bad()) throw DataError(fmt(path, ": read error"));
  add(pending);
  return bytes;
}

}  // namespace

tok::BpeTokenizer train_tokenizer_on_files(const TokenizerFilesOptions& opts, TokenizerFilesStats* stats) {
  if (opts.inputs.empty()) throw ConfigError("tokenizer train: no input files");
  const std::vector<std::string> files = data::expand_inputs(opts.inputs);
  tok::BpeTokenizer::PieceCounter counter(opts.train);
  TokenizerFilesStats st;
  const data::IngestOptions ingest{opts.jsonl_field, data::InvalidUtf8::kRepair};
  auto full = [&]() { return opts.max_docs > 0 && st.documents >= opts.max_docs; };
  for (const auto& path : files) {
    if (full()) break;
    ++st.files;
    if (is_jsonl(path)) {
      data::for_each_document({path}, ingest, [&](std::string&& doc) {
        if (full()) return;
        counter.add(doc);
        st.bytes += static_cast<int64_t>(doc.size());
        ++st.documents;
      });
    } else {
      st.bytes += count_raw_file(path, opts, counter);
      ++st.documents;
    }
  }
  st.distinct_pieces = static_cast<int64_t>(counter.counts().size());
  if (stats) *stats = st;
  return tok::BpeTokenizer::train_from_counts(counter.counts(), opts.train);
}

}  // namespace dsforge::pipeline

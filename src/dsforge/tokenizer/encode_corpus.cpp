#include "dsforge/tokenizer/encode_corpus.h"

#include <algorithm>
#include <fstream>
#include <thread>
#include <tuple>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/splits.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::tok {

data::Manifest encode_corpus(const CorpusFiles& files, const BpeTokenizer& tokenizer, const std::string& tokenizer_hash,
                             const std::string& out_dir, int64_t threads) {
  const std::string dir = path_join(out_dir, "shards");
  const std::string manifest_path = path_join(dir, "manifest.json");
  if (file_exists(manifest_path)) {
    data::Manifest m = data::read_manifest(manifest_path);
    if (m.tokenizer_hash == tokenizer_hash && m.has_test() == !files.test.empty()) {
      log_info("shards: reusing ", dir, " (", m.train.tokens, " train / ", m.val.tokens, " val tokens)");
      return m;
    }
  }
  make_dirs(dir);
  const int32_t eot = tokenizer.eot_id();
  if (eot < 0) throw DataError("tokenize: the tokenizer has no end-of-text special token");
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());

  data::Manifest m;
  m.tokenizer_hash = tokenizer_hash;
  m.vocab_size = tokenizer.vocab_size();
  m.eot_id = eot;
  std::vector<std::tuple<std::string, std::string, data::Manifest::Split*>> splits = {{"train", files.train, &m.train},
                                                                                      {"val", files.val, &m.val}};
  if (!files.test.empty()) splits.emplace_back("test", files.test, &m.test);
  for (auto& [name, path, split] : splits) {
    // Streamed: blocks of documents are encoded on all cores and appended.
    const std::string file = name + "_000.bin";
    data::ShardWriter writer(path_join(dir, file), m.vocab_size);
    constexpr size_t kBlock = 16384;
    std::vector<std::string> block;
    auto flush = [&, split = split]() {
      // Documents are text: special-token strings inside them are not control tokens.
      for (auto& ids : tokenizer.encode_batch(block, /*allow_special=*/false, static_cast<int>(threads))) {
        ids.push_back(eot);
        writer.append(ids);
      }
      split->documents += static_cast<int64_t>(block.size());
      block.clear();
    };
    auto read_docs = [&](const std::string& p) {
      const int64_t n = data::for_each_split_document(p, [&](std::string&& doc) {
        block.push_back(std::move(doc));
        if (block.size() == kBlock) flush();
      });
      flush();
      return n;
    };
    read_docs(path);
    if (name == "train" && !files.augmented.empty()) split->augmented_documents = read_docs(files.augmented);
    writer.finish(static_cast<uint64_t>(split->documents));
    split->files = {file};
    split->tokens = static_cast<int64_t>(writer.tokens());
  }
  data::write_manifest(manifest_path, m);
  log_info("shards: train ", m.train.tokens, " tokens (", m.train.documents, " docs), val ", m.val.tokens, " tokens",
           m.has_test() ? fmt(", test ", m.test.tokens, " tokens") : std::string());
  return m;
}

int64_t encode_text_stream(const std::string& text_path, const BpeTokenizer& tokenizer, data::ShardWriter& writer) {
  std::ifstream in(text_path, std::ios::binary);
  if (!in) throw DataError(fmt(text_path, ": cannot open"));
  writer.append({tokenizer.eot_id()});
  int64_t bytes = 0;
  std::string pending;
  std::vector<char> buf(1 << 20);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    pending.append(buf.data(), static_cast<size_t>(in.gcount()));
    bytes += in.gcount();
    const size_t cut = tokenizer.last_safe_split(pending);
    if (cut == 0) continue;
    writer.append(tokenizer.encode(std::string_view(pending).substr(0, cut), false));
    pending.erase(0, cut);
  }
  writer.append(tokenizer.encode(pending, false));
  return bytes;
}

}  // namespace dsforge::tok

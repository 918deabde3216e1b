// Prepared splits -> token shards: the tokenize stage's library call. It sits in tokenizer/ because
// it needs the tokenizer; the shard format itself (writer, reader, manifest) is data/shards.h.
//
//   CorpusFiles files;
//   files.train = split_path(run, "train");
//   files.val = split_path(run, "val");
//   files.test = split_path(run, "test");           // optional: a third shard
//   data::Manifest m = encode_corpus(files, tok, tokenizer_hash, run, /*threads=*/0);
#pragma once
#include <cstdint>
#include <string>

#include "dsforge/data/shards.h"

namespace dsforge::tok {

class BpeTokenizer;

struct CorpusFiles {
  std::string train, val;  // prepared splits (data/splits.h: JSONL {"text"}, or .txt one document per line)
  std::string test;        // optional test split -> test_000.bin and a "test" manifest entry
  std::string augmented;   // optional augmented copies of training documents, appended to the train
                           // split only and counted in the manifest as `augmented_documents`
};

// Encodes each split into `<out_dir>/shards/<split>_000.bin` + manifest.json, streamed in blocks on
// all cores (memory bounded by the block, not the corpus); each document is followed by the
// end-of-text token, so documents of any shape stay separate. Skips the work when the manifest
// already records `tokenizer_hash` (an identity of the tokenizer and the data it encodes).
data::Manifest encode_corpus(const CorpusFiles& files, const BpeTokenizer& tokenizer, const std::string& tokenizer_hash,
                             const std::string& out_dir, int64_t threads);

// One text file appended to `writer` as a single token stream after an end-of-text token (the context
// every training document starts from), read and encoded in ~1 MB pieces cut where the encoding cannot
// change (BpeTokenizer::last_safe_split): memory bounded by the piece. Returns the bytes read; DataError
// naming the file when it cannot be opened.
int64_t encode_text_stream(const std::string& text_path, const BpeTokenizer& tokenizer, data::ShardWriter& writer);

}  // namespace dsforge::tok

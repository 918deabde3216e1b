// Training a tokenizer straight from files, without a run folder (`dsforge tokenizer train --input`).
//
// Inputs are files, folders and globs (data::expand_inputs). A *.jsonl / *.ndjson file gives the
// text field of each record; any other file is one raw text stream, newlines and indentation kept,
// so the tokenizer learns tokens for them (a code corpus needs "\n    " more than any word). Raw
// files are read in chunks cut with tok::last_safe_split, so the pre-token counts equal those of
// the whole file while memory holds one chunk plus the distinct pre-tokens, whatever the corpus
// size. Invalid UTF-8 is repaired (U+FFFD), as in the data stage.
//
//   TokenizerFilesOptions o;
//   o.inputs = {"src/", "notes/*.md"};
//   o.train.vocab_size = 8000;
//   tok::BpeTokenizer t = train_tokenizer_on_files(o);
//   t.save("tokenizer.json");
//
// This header is free of libtorch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/tokenizer/bpe.h"

namespace dsforge::pipeline {

struct TokenizerFilesOptions {
  std::vector<std::string> inputs;         // files, folders, globs
  tok::BpeTokenizer::TrainOptions train;   // vocab_size, special_tokens, pretokenizer
  int64_t max_docs = 0;                    // 0 = all; a JSONL record or a whole raw file is one document
  std::string jsonl_field = "text";
  size_t chunk_bytes = 1 << 20;            // read size for raw files (a chunk is cut at a safe point)
};

struct TokenizerFilesStats {
  int64_t files = 0;
  int64_t documents = 0;        // JSONL records + raw files
  int64_t bytes = 0;            // of text counted (after UTF-8 repair)
  int64_t distinct_pieces = 0;  // pre-tokens the merges were learned from
};

tok::BpeTokenizer train_tokenizer_on_files(const TokenizerFilesOptions& opts, TokenizerFilesStats* stats = nullptr);

}  // namespace dsforge::pipeline

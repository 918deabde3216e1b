// A table of word vectors and its file formats.
//
//   word2vec text    "V D\n" then "word v1 ... vD\n" per word (gensim: load_word2vec_format(p))
//   word2vec binary  "V D\n" then "word " + D little-endian float32 + "\n" per word
//                    (gensim: load_word2vec_format(p, binary=True))
//   safetensors      one F32 tensor "embeddings" of shape (V, D); the words, one per line in row order,
//                    with their corpus counts in vocab.txt ("word\tcount")
//
//   WordVectors v = load_vectors("out/vectors.bin");       // format from the content
//   auto near = nearest(v, v.find("king"), 10);
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dsforge::embed {

struct WordVectors {
  int dim = 0;
  std::vector<std::string> words;  // row order (most frequent first when trained here)
  std::vector<int64_t> counts;     // corpus counts, or empty
  std::vector<float> data;         // (words.size(), dim) row-major

  size_t size() const { return words.size(); }
  float* row(size_t i) { return data.data() + i * static_cast<size_t>(dim); }
  const float* row(size_t i) const { return data.data() + i * static_cast<size_t>(dim); }
  int64_t find(const std::string& w) const;  // -1 when absent (linear index built on first use)

 private:
  mutable std::vector<std::pair<std::string, int64_t>> sorted_;  // for find()
};

void save_word2vec_text(const std::string& path, const WordVectors& v);
void save_word2vec_binary(const std::string& path, const WordVectors& v);
// Writes embeddings.safetensors and vocab.txt into `dir`.
void save_safetensors_vectors(const std::string& dir, const WordVectors& v, const std::string& method);

// Reads either word2vec format (binary when the bytes after the first word are not a text row) or a
// safetensors file written above (vocab.txt beside it). Errors name the file and line.
WordVectors load_vectors(const std::string& path);

// Rows scaled to unit length (zero rows stay zero).
std::vector<float> unit_rows(const WordVectors& v);

// The k words with the highest cosine similarity to row `query` (itself excluded).
std::vector<std::pair<std::string, float>> nearest(const WordVectors& v, int64_t query, int k);

}  // namespace dsforge::embed

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/data/shards.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::data;

TEST(Clean, NfkcControlsAndWhitespace) {
  EXPECT_EQ(clean_text("ﬁne  ＡＢＣ\t\x01x\n y  "), "fine ABC x y");  // ligature and full-width fold under NFKC
  EXPECT_EQ(clean_text("e\xCC\x81"), "\xC3\xA9");                   // e + combining acute -> é
  bool invalid = false;
  std::string repaired = clean_text("ok\xFFok", &invalid);
  EXPECT_TRUE(invalid);
  EXPECT_EQ(repaired, "ok\xEF\xBF\xBDok");  // U+FFFD
  clean_text("plain", &invalid);
  EXPECT_FALSE(invalid);
}

TEST(WordNet, ParsesDataLinesIntoWordDefinition) {
  TempDir dir;
  const std::string line1 =
      "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 | a member of the genus Canis; "
      "\"the dog barked all night\"\n";
  const std::string line2 = "00001740 00 a 01 able(a) 0 000 | (usually followed by `to') having the necessary means\n";
  const std::string header = "  1 This software and database is being provided to you, the LICENSEE\n";
  write_file_atomic(path_join(dir.path, "data.noun"), header + line1);
  write_file_atomic(path_join(dir.path, "data.adj"), line2);
  write_file_atomic(path_join(dir.path, "data.verb"), "");
  write_file_atomic(path_join(dir.path, "data.adv"), "");
  auto docs = read_wordnet_glosses(dir.path);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "dog: a member of the genus Canis");
  EXPECT_EQ(docs[1], "able: (usually followed by `to') having the necessary means");
  write_file_atomic(path_join(dir.path, "data.adv"), "garbage line without a bar\n");
  EXPECT_THROW_MSG(read_wordnet_glosses(dir.path), DataError, "data.adv:1: expected ' | '");
}

TEST(WordNet, RealDatabaseWhenInstalled) {
  if (!file_exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base not installed";
  auto docs = read_wordnet_glosses("/usr/share/wordnet");
  EXPECT_GT(docs.size(), 100000u);  // WordNet 3.0 has 117,659 synsets
  EXPECT_NE(std::find(docs.begin(), docs.end(), "dog: a member of the genus Canis (probably descended from the common "
                                                 "wolf) that has been domesticated by man since prehistoric times; "
                                                 "occurs in many breeds"),
            docs.end());
}

TEST(Split, DeterministicAndCloseToTheFraction) {
  int64_t val = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string d = "document " + std::to_string(i);
    bool v = is_validation(d, 0.1, 42);
    EXPECT_EQ(v, is_validation(d, 0.1, 42));
    val += v;
  }
  EXPECT_NEAR(val / 20000.0, 0.1, 0.01);
}

TEST(Stats, HandComputedEntropyAndCounts) {
  // Words: a a b -> p = (2/3, 1/3); H = -(2/3 log2 2/3 + 1/3 log2 1/3) = 0.918296 bits/word.
  auto s = corpus_stats({"a a", "B"});
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.words, 3);
  EXPECT_EQ(s.vocabulary, 2);
  EXPECT_NEAR(s.unigram_entropy_bits_per_word, 0.918296, 1e-6);
  EXPECT_NEAR(s.type_token_ratio, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(s.top_words[0].first, "a");
  EXPECT_EQ(s.top_words[0].second, 2);
}

TEST(Prepare, CleansDedupsSplitsAndCounts) {
  TempDir dir;
  const std::string corpus = path_join(dir.path, "in.txt");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "word" + std::to_string(i) + ": meaning number " + std::to_string(i) + "\n";
  text += "word1: meaning number 1\n";   // exact duplicate
  text += "x\n";                         // too short
  text += "ﬁsh:  a  cold-blooded animal\n";
  write_file_atomic(corpus, text);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {corpus};
  cfg.data.val_fraction = 0.1;
  PreparedCorpus p = prepare_corpus(cfg);
  EXPECT_EQ(p.counts.input, 303);
  EXPECT_EQ(p.counts.duplicates, 1);
  EXPECT_EQ(p.counts.too_short, 1);
  EXPECT_EQ(p.train_docs + p.val_docs, 301);
  EXPECT_GT(p.val_docs, 10);
  EXPECT_NE(read_file(p.train_path + "").find("fish: a cold-blooded animal") == std::string::npos &&
                read_file(p.val_path).find("fish: a cold-blooded animal") == std::string::npos,
            true);
  // A second run reuses the outputs.
  PreparedCorpus again = prepare_corpus(cfg);
  EXPECT_EQ(again.train_docs, p.train_docs);
}

TEST(Shards, RoundTripAndLoaderCursor) {
  TempDir dir;
  const std::string path = path_join(dir.path, "s.bin");
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[i] = (i * 7) % 500;
  write_shard(path, tokens, 3, 500);
  TokenShard s(path);
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_EQ(s.header().n_docs, 3u);
  EXPECT_EQ(s.header().bytes_per_token, 2u);
  EXPECT_EQ(s.at(999), (999 * 7) % 500);

  TokenLoader a(path, 11, 10, 5), b(path, 11, 10, 5);
  EXPECT_EQ(a.windows_per_epoch(), (1000 - 11) / 10 + 1);
  at::Tensor first = a.next_batch(4);
  // Every row is a contiguous window starting at a multiple of the stride.
  for (int r = 0; r < 4; ++r) {
    int64_t v0 = first[r][0].item<int64_t>(), v1 = first[r][1].item<int64_t>();
    EXPECT_EQ((v1 - v0 + 500) % 500, 7);
  }
  a.next_batch(100);  // 99 windows per epoch: crosses into epoch 1
  LoaderCursor saved = a.cursor();
  EXPECT_EQ(saved.epoch, 1);
  at::Tensor expect = a.next_batch(8);
  b.set_cursor(saved);
  EXPECT_TRUE(at::equal(b.next_batch(8), expect));
}

TEST(Shards, RefuseBadFiles) {
  TempDir dir;
  const std::string path = path_join(dir.path, "s.bin");
  write_shard(path, std::vector<int32_t>(100, 3), 1, 10);
  std::string bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 2));
  EXPECT_THROW_MSG(TokenShard{path}, DataError, "truncated or corrupt");
  std::string wrong = bytes;
  wrong[0] = 'X';
  write_file_atomic(path, wrong);
  EXPECT_THROW_MSG(TokenShard{path}, DataError, "wrong magic");
  write_file_atomic(path, "abc");
  EXPECT_THROW_MSG(TokenShard{path}, DataError, "truncated token shard");
  EXPECT_THROW_MSG(write_shard(path, {1, 2, 99}, 1, 10), DataError, "token 99 at position 2");
}

TEST(Shards, TokenizeCorpusWritesManifest) {
  TempDir dir;
  write_file_atomic(path_join(dir.path, "train.txt"), "the cat\nthe dog\n");
  write_file_atomic(path_join(dir.path, "val.txt"), "a cat\n");
  auto tok = tok::BpeTokenizer::train({"the cat", "the dog"}, {270, {"<|endoftext|>"}});
  Manifest m = tokenize_corpus(path_join(dir.path, "train.txt"), path_join(dir.path, "val.txt"), tok, "h1", dir.path, 2);
  EXPECT_EQ(m.train.documents, 2);
  EXPECT_EQ(m.eot_id, 0);
  TokenShard s(path_join(dir.path, "shards/train_000.bin"));
  std::vector<int32_t> ids;
  for (uint64_t i = 0; i < s.size(); ++i) ids.push_back(static_cast<int32_t>(s.at(i)));
  auto expect = tok.encode("the cat");
  expect.push_back(0);
  auto dog = tok.encode("the dog");
  expect.insert(expect.end(), dog.begin(), dog.end());
  expect.push_back(0);
  EXPECT_EQ(ids, expect);
  Manifest back = read_manifest(path_join(dir.path, "shards/manifest.json"));
  EXPECT_EQ(back.train.tokens, m.train.tokens);
  EXPECT_EQ(back.tokenizer_hash, "h1");
}

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <random>
#include <fstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/data/dedup.h"
#include "dsforge/data/ingest.h"
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

TEST(Ingest, FilesFoldersGlobsAndJsonl) {
  TempDir dir;
  make_dirs(path_join(dir.path, "sub/deeper"));
  write_file_atomic(path_join(dir.path, "a.txt"), "one\ntwo\n\n");
  write_file_atomic(path_join(dir.path, "sub/b.txt"), "three\n");
  write_file_atomic(path_join(dir.path, "sub/deeper/c.jsonl"), "{\"text\": \"four\\nlines\", \"id\": 1}\n{\"text\": \"five\"}\n");
  auto files = expand_inputs({path_join(dir.path, "*.txt"), path_join(dir.path, "sub")});
  ASSERT_EQ(files.size(), 3u);
  std::vector<std::string> docs;
  IngestCounts c = for_each_document(files, {}, [&](std::string&& d) { docs.push_back(d); });
  EXPECT_EQ(docs, (std::vector<std::string>{"one", "two", "three", "four\nlines", "five"}));
  EXPECT_EQ(c.files, 3);
  EXPECT_THROW_MSG(expand_inputs({path_join(dir.path, "*.csv")}), DataError, "no input files");
  write_file_atomic(path_join(dir.path, "bad.jsonl"), "{\"text\": 1}\n");
  EXPECT_THROW_MSG(for_each_document({path_join(dir.path, "bad.jsonl")}, {}, [](std::string&&) {}), DataError,
                   "bad.jsonl:1: expected an object with a string field 'text'");
  write_file_atomic(path_join(dir.path, "bin.jsonl"), "{\"text\": \"ok\xff\"}\n");
  EXPECT_THROW_MSG(for_each_document({path_join(dir.path, "bin.jsonl")}, {}, [](std::string&&) {}), DataError,
                   "bin.jsonl:1: not a valid JSON object (the line is not valid UTF-8)");
}

TEST(Ingest, InvalidUtf8IsRepairedOrDropped) {
  EXPECT_TRUE(is_valid_utf8("plain ascii and ü and 字 and \xF0\x9F\x98\x80"));
  for (const char* bad : {"\xff", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ab\xE5\xAD"})
    EXPECT_FALSE(is_valid_utf8(bad)) << bad;
  EXPECT_EQ(repair_utf8("a\xff" "b\xE5\xAD" "c"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c");  // split: \x escapes eat hex digits
  TempDir dir;
  write_file_atomic(path_join(dir.path, "x.txt"), "good\nbad\xff\n");
  std::vector<std::string> kept;
  IngestCounts drop = for_each_document({path_join(dir.path, "x.txt")}, {"text", InvalidUtf8::kDrop},
                                        [&](std::string&& d) { kept.push_back(d); });
  EXPECT_EQ(kept, std::vector<std::string>{"good"});
  EXPECT_EQ(drop.dropped_invalid, 1);
}

TEST(NearDedup, FindsPlantedNearDuplicatesAndKeepsDistinctText) {
  // 200 distinct "documents" of 30 random words, plus one near-copy of each with one word changed.
  std::mt19937 rng(3);
  std::vector<std::string> vocab;
  for (int i = 0; i < 2000; ++i) vocab.push_back("w" + std::to_string(i * 7919 % 100003));
  std::vector<std::string> originals, copies;
  for (int d = 0; d < 200; ++d) {
    std::vector<std::string> words;
    for (int k = 0; k < 30; ++k) words.push_back(vocab[rng() % vocab.size()]);
    std::string a, b;
    for (int k = 0; k < 30; ++k) {
      a += words[k] + " ";
      b += (k == 15 ? std::string("changed") : words[k]) + " ";
    }
    originals.push_back(a);
    copies.push_back(b);
  }
  NearDedup d({"char", 5, 128, 16, 0.7, 1});
  int distinct_kept = 0, copies_caught = 0;
  for (auto& o : originals) distinct_kept += d.insert(o);
  for (auto& c : copies) copies_caught += !d.insert(c);
  EXPECT_EQ(distinct_kept, 200);       // no false positives among unrelated documents
  EXPECT_GE(copies_caught, 196);       // recall >= 98% on planted near-duplicates
  // The signature estimate tracks the true Jaccard similarity of the shingle sets.
  auto sa = shingle_hashes(originals[0], "char", 5), sb = shingle_hashes(copies[0], "char", 5);
  EXPECT_NEAR(NearDedup::estimate(d.signature(originals[0]), d.signature(copies[0])), jaccard(sa, sb), 0.12);
  // Deterministic for a seed.
  NearDedup e({"char", 5, 128, 16, 0.7, 1});
  EXPECT_EQ(e.signature(originals[1]), d.signature(originals[1]));
  EXPECT_THROW_MSG(NearDedup({"char", 5, 128, 15, 0.7, 1}), ConfigError, "must divide num_perm");
}

TEST(Stats, ZipfSlopeRepetitionAndLines) {
  // Word r occurs round(10000 / r) times: a Zipf slope of -1 (up to rounding).
  std::vector<std::string> docs;
  for (int r = 1; r <= 300; ++r) {
    std::string doc;
    const int n = static_cast<int>(std::lround(10000.0 / r));
    for (int k = 0; k < n; ++k) doc += "x" + std::to_string(r) + " ";
    docs.push_back(doc);
  }
  EXPECT_NEAR(corpus_stats(docs).zipf_slope, -1.0, 0.01);
  // "a b c a b c": 3-grams abc bca cab abc -> 1 of 4 repeats.
  EXPECT_DOUBLE_EQ(ngram_repetition("a b c a b c"), 0.25);
  EXPECT_DOUBLE_EQ(repeated_line_fraction("x\ny\nx\nx"), 0.5);
  auto s = corpus_stats({"same doc", "same doc", "other"});
  EXPECT_NEAR(s.duplicate_fraction, 1.0 / 3.0, 1e-12);
}

TEST(Prepare, CleansDedupsSplitsAndCounts) {
  TempDir dir;
  const std::string corpus = path_join(dir.path, "in.txt");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "word" + std::to_string(i) + ": meaning number " + std::to_string(i) + "\n";
  text += "word1: meaning number 1\n";   // exact duplicate
  text += "x\n";                         // too short
  text += "ﬁsh:  a  cold-blooded animal\n";
  // Three planted near-duplicate pairs (one word changed in a long line).
  for (const char* base : {"lighthouse: a tower with a powerful light that gives warning of shoals to passing ships at night",
                           "violin: bowed stringed instrument that is the highest member of the violin family of instruments",
                           "glacier: a slowly moving mass of ice originating from an accumulation of snow on high ground"}) {
    std::string b = base;
    text += b + "\n";
    text += b.replace(b.rfind(' '), std::string::npos, " everywhere") + "\n";
  }
  write_file_atomic(corpus, text);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {corpus};
  cfg.data.val_fraction = 0.1;
  PreparedCorpus p = prepare_corpus(cfg);
  EXPECT_EQ(p.counts.input, 309);
  EXPECT_EQ(p.counts.duplicates, 1);
  EXPECT_EQ(p.counts.too_short, 1);
  EXPECT_GE(p.counts.near_duplicates, 3);  // the planted pairs (short "wordN" lines may pair up too)
  EXPECT_EQ(p.train_docs + p.val_docs + p.counts.near_duplicates, 307);
  const int64_t near = p.counts.near_duplicates;
  cfg.run.out_dir = path_join(dir.path, "run-no-near");
  cfg.data.near_dedup = false;
  p = prepare_corpus(cfg);
  EXPECT_EQ(p.train_docs + p.val_docs, 307);
  EXPECT_GT(near, 0);
  EXPECT_GT(p.val_docs, 10);
  EXPECT_NE(read_file(p.train_path + "").find("fish: a cold-blooded animal") == std::string::npos &&
                read_file(p.val_path).find("fish: a cold-blooded animal") == std::string::npos,
            true);
  // Word-level vocabulary: words seen fewer than 2 times in train become <unk>.
  RunConfig w = cfg;
  w.run.out_dir = path_join(dir.path, "run-unk");
  w.data.min_word_count = 2;
  w.data.val_fraction = 0.01;
  auto wp = prepare_corpus(w);
  std::string train = read_file(wp.train_path);
  EXPECT_NE(train.find("<unk>: meaning number <unk>"), std::string::npos);
  EXPECT_EQ(train.find("word17"), std::string::npos);
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

TEST(Prepare, EmptyCorpusIsRefused) {
  TempDir dir;
  write_file_atomic(path_join(dir.path, "empty.txt"), "\n\n");
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {path_join(dir.path, "empty.txt")};
  EXPECT_THROW_MSG(prepare_corpus(cfg), DataError, "0 train and 0 validation documents remain");
}

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <random>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/data/dedup.h"
#include "dsforge/data/ingest.h"
#include "dsforge/data/shards.h"
#include "dsforge/data/splits.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/encode_corpus.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::data;

TEST(Clean, NfkcControlsAndWhitespace) {
  CleanOptions collapse;
  collapse.collapse_whitespace = true;
  EXPECT_EQ(clean_text("ﬁne  ＡＢＣ\t\x01x\n y  ", collapse), "fine ABC x y");  // ligature and full-width fold under NFKC
  EXPECT_EQ(clean_text("e\xCC\x81"), "\xC3\xA9");                   // e + combining acute -> é
  bool invalid = false;
  std::string repaired = clean_text("ok\xFFok", {}, &invalid);
  EXPECT_TRUE(invalid);
  EXPECT_EQ(repaired, "ok\xEF\xBF\xBDok");  // U+FFFD
  clean_text("plain", {}, &invalid);
  EXPECT_FALSE(invalid);
}

TEST(Clean, KeepsLinesTabsAndIndentationByDefault) {
  // NFKC and control characters as before, but the line break, the tab and the inner spaces stay;
  // only the trailing spaces of the last line go.
  EXPECT_EQ(clean_text("ﬁne  ＡＢＣ\t\x01x\n y  "), "fine  ABC\t x\n y");
  EXPECT_EQ(clean_text("a\r\nb\rc\r\n"), "a\nb\nc");                        // CR LF and lone CR -> LF
  EXPECT_EQ(clean_text("def f():  \n\tx = 1 \t\n    return x\n"), "def f():\n\tx = 1\n    return x");
  EXPECT_EQ(clean_text("a\n\n\n\n\n\nb"), "a\n\n\nb");                       // 5 blank lines -> 2
  EXPECT_EQ(clean_text("a\n \n\t\nb"), "a\n\n\nb");                          // blank = whitespace only
  EXPECT_EQ(clean_text("\n \n\n  indented\n\n\n"), "  indented");            // leading blank lines, trailing end
  EXPECT_EQ(clean_text("a\xE2\x80\xA8" "b\xE2\x80\xA9" "c\x0C" "d"), "a\nb\nc\nd");  // U+2028, U+2029, form feed
  CleanOptions one_blank;
  one_blank.max_blank_lines = 1;
  EXPECT_EQ(clean_text("a\n\n\n\nb", one_blank), "a\n\nb");
  EXPECT_EQ(clean_text("   \n\t\n"), "");
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

namespace {
std::vector<std::string> read_docs(const std::vector<std::string>& files, TxtDocuments mode, IngestCounts* counts = nullptr) {
  std::vector<std::string> docs;
  IngestOptions io;
  io.txt_documents = mode;
  IngestCounts c = for_each_document(files, io, [&](std::string&& d) { docs.push_back(d); });
  if (counts) *counts = c;
  return docs;
}
}  // namespace

TEST(Ingest, TextDocumentsByLineParagraphOrFile) {
  TempDir dir;
  // Two paragraphs: CR LF inside the first, a whitespace-only line and extra blank lines between.
  const std::string text = "First para, line one\r\nline two\n\n   \n\nSecond para\n\tindented  \n\n\n";
  const std::string path = path_join(dir.path, "t.txt");
  write_file_atomic(path, text);
  EXPECT_EQ(read_docs({path}, TxtDocuments::kLine),
            (std::vector<std::string>{"First para, line one", "line two", "Second para", "\tindented  "}));
  EXPECT_EQ(read_docs({path}, TxtDocuments::kParagraph),
            (std::vector<std::string>{"First para, line one\r\nline two", "Second para\n\tindented  "}));
  EXPECT_EQ(read_docs({path}, TxtDocuments::kFile), std::vector<std::string>{text});  // byte for byte
  // A source tree: every file of the folder (sorted), each one document; JSONL keeps its newlines.
  make_dirs(path_join(dir.path, "src/pkg"));
  const std::string py = "import os\n\n\ndef main():\n    print(os.getcwd())\n";
  const std::string cpp = "int main() {\n  return 0;\n}\n";
  write_file_atomic(path_join(dir.path, "src/pkg/a.py"), py);
  write_file_atomic(path_join(dir.path, "src/b.cpp"), cpp);
  write_file_atomic(path_join(dir.path, "src/c.jsonl"), "{\"text\": \"x\\n  y\"}\n");
  EXPECT_EQ(read_docs(expand_inputs({path_join(dir.path, "src")}), TxtDocuments::kFile),
            (std::vector<std::string>{cpp, "x\n  y", py}));
  EXPECT_EQ(parse_txt_documents("paragraph"), TxtDocuments::kParagraph);
  EXPECT_THROW_MSG(parse_txt_documents("page"), ConfigError, "data.txt_documents");
}

TEST(Ingest, BlankLinesAreNotDocuments) {
  TempDir dir;
  const std::string path = path_join(dir.path, "b.txt");
  write_file_atomic(path, "alpha beta\n \n\t\n\r\n\ngamma\n   \n");
  IngestCounts c;
  EXPECT_EQ(read_docs({path}, TxtDocuments::kLine, &c), (std::vector<std::string>{"alpha beta", "gamma"}));
  EXPECT_EQ(c.documents, 2);
  EXPECT_EQ(corpus_stats({"a b", "   ", "", "\n\t"}).documents, 1);
  // The --input report of the same file: 2 documents, 3 words.
  RunConfig cfg;
  auto j = nlohmann::json::parse(pipeline::data_stats_report(cfg, {path}, true));
  EXPECT_EQ(j["documents"], 2);
  EXPECT_EQ(j["words"], 3);
}

TEST(Ingest, BinaryFilesAreSkippedAndCounted) {
  TempDir dir;
  std::string gz = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";  // a gzip header, then compressed-looking bytes
  std::mt19937 rng(5);
  for (int i = 0; i < 4000; ++i) gz.push_back(static_cast<char>(rng() & 0xFF));
  write_file_atomic(path_join(dir.path, "corpus.txt.gz"), gz);
  std::string png = "\x89PNG\r\n\x1a\n";
  png += std::string("\0\0\0\x0dIHDR", 8);
  write_file_atomic(path_join(dir.path, "image.png"), png);
  // Mostly invalid UTF-8 without any NUL byte is not text either.
  std::string noise;
  for (int i = 0; i < 600; ++i) noise += "\xff\xfe\x80" "a";
  write_file_atomic(path_join(dir.path, "noise.dat"), noise);
  write_file_atomic(path_join(dir.path, "latin1.txt"), "caf\xE9 au lait\nna\xEFve text\n");  // text with a few bad bytes
  write_file_atomic(path_join(dir.path, "notes.txt"), "plain words\n");
  IngestCounts c;
  auto docs = read_docs(expand_inputs({dir.path}), TxtDocuments::kLine, &c);
  EXPECT_EQ(c.binary_files_skipped, 3);
  EXPECT_EQ(c.files, 2);
  EXPECT_EQ(docs, (std::vector<std::string>{"caf\xEF\xBF\xBD au lait", "na\xEF\xBF\xBDve text", "plain words"}));
  EXPECT_TRUE(looks_binary(std::string("ab\0cd", 5)));
  EXPECT_FALSE(looks_binary("indented\n\tcode \xE5\xAD\x97"));
  EXPECT_FALSE(looks_binary("cut at the end \xE5\xAD"));  // a character split by the 8 KiB sample
  EXPECT_FALSE(looks_binary(""));
  // prepare counts them in stats.json
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {dir.path + "/*.*"};
  cfg.data.near_dedup = false;
  make_dirs(path_join(dir.path, "held"));
  write_file_atomic(path_join(dir.path, "held/val.txt"), "a validation line\n");
  cfg.data.val_paths = {path_join(dir.path, "held/val.txt")};  // no hash split: nothing left to chance
  write_file_atomic(path_join(dir.path, "more.txt"), "one more line of text\nand yet another line\nsome third line here\n");
  PreparedCorpus p = prepare_corpus(cfg);
  EXPECT_EQ(p.counts.binary_files_skipped, 3);
  auto stats = nlohmann::json::parse(read_file(p.stats_path));
  EXPECT_EQ(stats["filters"]["binary_files_skipped"], 3);
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
  cfg.data.collapse_whitespace = true;  // "fish:  a  cold-blooded" -> one space each
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

TEST(Shards, EncodeCorpusWritesManifestWithTestSplit) {
  TempDir dir;
  const std::string run = dir.path;
  make_dirs(path_join(run, "data"));
  const std::string two_lines = "the cat\n  sat down";
  for (auto [split, docs] : {std::pair<const char*, std::vector<std::string>>{"train", {two_lines, "the dog"}},
                             {"val", {"a cat"}},
                             {"test", {"a dog\n"}}}) {
    JsonlWriter w(split_path(run, split));
    for (const auto& d : docs) w.write(d);
    w.commit();
  }
  auto tok = tok::BpeTokenizer::train({"the cat", "the dog"}, {270, {"<|endoftext|>"}});
  tok::CorpusFiles files{split_path(run, "train"), split_path(run, "val"), split_path(run, "test"), ""};
  Manifest m = tok::encode_corpus(files, tok, "h1", run, 2);
  EXPECT_EQ(m.train.documents, 2);
  EXPECT_EQ(m.eot_id, 0);
  TokenShard s(path_join(run, "shards/train_000.bin"));
  std::vector<int32_t> ids;
  for (uint64_t i = 0; i < s.size(); ++i) ids.push_back(static_cast<int32_t>(s.at(i)));
  auto expect = tok.encode(two_lines);  // the document's newline is text; the separator is the eot token
  expect.push_back(0);
  auto dog = tok.encode("the dog");
  expect.insert(expect.end(), dog.begin(), dog.end());
  expect.push_back(0);
  EXPECT_EQ(ids, expect);
  Manifest back = read_manifest(path_join(run, "shards/manifest.json"));
  EXPECT_EQ(back.train.tokens, m.train.tokens);
  EXPECT_EQ(back.tokenizer_hash, "h1");
  ASSERT_TRUE(back.has_test());
  EXPECT_EQ(back.test.files, std::vector<std::string>{"test_000.bin"});
  EXPECT_EQ(back.test.documents, 1);
  EXPECT_EQ(back.test.tokens, static_cast<int64_t>(tok.encode("a dog\n").size()) + 1);
  // A manifest written before test splits existed reads as "no test split".
  auto j = nlohmann::json::parse(read_file(path_join(run, "shards/manifest.json")));
  j["splits"].erase("test");
  write_file_atomic(path_join(run, "shards/old.json"), j.dump());
  Manifest old = read_manifest(path_join(run, "shards/old.json"));
  EXPECT_FALSE(old.has_test());
  EXPECT_EQ(old.val.documents, 1);
}

TEST(Prepare, ACorpusTheHashGivesNoValidationLendsItsLastDocument) {
  TempDir dir;
  // Documents none of which the seeded hash puts in validation (checked: the premise of the test).
  std::vector<std::string> docs;
  for (int i = 0; docs.size() < 5; ++i) {
    std::string d = "a short document about the number " + std::to_string(i);
    if (!is_validation(d, 0.02, 1337)) docs.push_back(d);
  }
  std::string text;
  for (const auto& d : docs) text += d + "\n";
  const std::string corpus = path_join(dir.path, "small.txt");
  write_file_atomic(corpus, text);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.run.seed = 1337;
  cfg.data.source = "files";
  cfg.data.paths = {corpus};
  cfg.data.val_fraction = 0.02;
  cfg.data.near_dedup = false;
  const PreparedCorpus p = prepare_corpus(cfg);
  EXPECT_EQ(p.train_docs, 4);
  EXPECT_EQ(p.val_docs, 1);
  std::vector<std::string> train, val;
  for_each_split_document(p.train_path, [&](std::string&& d) { train.push_back(d); });
  for_each_split_document(p.val_path, [&](std::string&& d) { val.push_back(d); });
  EXPECT_EQ(train, std::vector<std::string>(docs.begin(), docs.end() - 1));  // order kept
  EXPECT_EQ(val, std::vector<std::string>{docs.back()});
  const auto stats = nlohmann::json::parse(read_file(p.stats_path));
  EXPECT_EQ(stats["split"]["val_source"], "last training document");
  EXPECT_EQ(stats["train"]["documents"], 4) << stats.dump(2);
  // One document cannot be split: still refused.
  write_file_atomic(corpus, docs[0] + "\n");
  cfg.run.out_dir = path_join(dir.path, "run1");
  EXPECT_THROW(prepare_corpus(cfg), DataError);
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

namespace {
std::vector<std::string> split_docs(const std::string& path) {
  std::vector<std::string> docs;
  for_each_split_document(path, [&](std::string&& d) { docs.push_back(d); });
  return docs;
}
}  // namespace

TEST(Prepare, NormalizeFalseKeepsEveryByte) {
  TempDir dir;
  make_dirs(path_join(dir.path, "tree"));
  // What cleaning would change: CR LF, trailing spaces, a ligature (NFKC), a control character,
  // five blank lines, a tab, quotes and backslashes (JSON escapes), a final newline.
  const std::vector<std::string> files = {
      "def f(x):   \r\n\treturn \"ﬁ\\n\" + x\r\n",
      "#include <cstdio>\n\n\n\n\n\nint main() { std::puts(\"\x01\"); }\n",
      "KING. Speak.\n  FOOL. Nothing, my lord.   \n"};
  for (size_t i = 0; i < files.size(); ++i) write_file_atomic(path_join(dir.path, fmt("tree/f", i, ".src")), files[i]);
  write_file_atomic(path_join(dir.path, "val.txt"), "held  out\r\n");
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {path_join(dir.path, "tree")};
  cfg.data.val_paths = {path_join(dir.path, "val.txt")};
  cfg.data.txt_documents = "file";
  cfg.data.normalize = false;
  PreparedCorpus p = prepare_corpus(cfg);
  EXPECT_EQ(split_docs(p.train_path), files);  // sorted file order; every byte as written
  EXPECT_EQ(split_docs(p.val_path), std::vector<std::string>{"held  out\r\n"});
  // The same inputs with cleaning on: lines kept, the rest normalised.
  cfg.run.out_dir = path_join(dir.path, "run-clean");
  cfg.data.normalize = true;
  p = prepare_corpus(cfg);
  EXPECT_EQ(split_docs(p.train_path),
            (std::vector<std::string>{"def f(x):\n\treturn \"fi\\n\" + x", "#include <cstdio>\n\n\nint main() { std::puts(\" \"); }",
                                      "KING. Speak.\n  FOOL. Nothing, my lord."}));
}

TEST(Prepare, ValAndTestPathsRemoveContaminationFromTraining) {
  TempDir dir;
  std::mt19937 rng(11);
  auto sentence = [&](int n) {
    std::string s;
    for (int k = 0; k < n; ++k) s += (k ? " " : "") + std::string("w") + std::to_string(rng() % 5000);
    return s;
  };
  std::vector<std::string> val, test, train;
  for (int i = 0; i < 5; ++i) val.push_back(sentence(20));
  val.push_back(val[0]);  // held-out files are used as given: not deduplicated
  for (int i = 0; i < 3; ++i) test.push_back(sentence(20));
  for (int i = 0; i < 50; ++i) train.push_back(sentence(20));
  std::string corpus;
  for (const auto& t : train) corpus += t + "\n";
  corpus += val[1] + "\n";                 // exact copy of a validation document
  corpus += "  " + val[2] + "   \n";       // cleaning drops the trailing spaces but keeps the indent: near
  corpus += val[3] + "\t \n";              // equal after cleaning (trailing whitespace goes): exact
  std::string near = val[4];
  near.back() = near.back() == '7' ? '8' : '7';  // one character changed: near-duplicate
  corpus += near + "\n";
  corpus += test[0] + "\n";                // exact copy of a test document
  auto write_lines = [&](const std::string& name, const std::vector<std::string>& lines) {
    std::string t;
    for (const auto& l : lines) t += l + "\n";
    write_file_atomic(path_join(dir.path, name), t);
    return path_join(dir.path, name);
  };
  write_file_atomic(path_join(dir.path, "train.txt"), corpus);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {path_join(dir.path, "train.txt")};
  cfg.data.val_paths = {write_lines("valid.txt", val)};
  cfg.data.test_paths = {write_lines("test.txt", test)};
  PreparedCorpus p = prepare_corpus(cfg);
  // Exact: val[1], val[3] (after cleaning), test[0]; near: the indented val[2] and the edited val[4]
  // (a few of ~130 character 5-grams differ: Jaccard > 0.9, threshold 0.8).
  EXPECT_EQ(p.counts.contamination, 5);
  EXPECT_EQ(p.train_docs, 50);
  EXPECT_EQ(p.val_docs, 6);
  EXPECT_EQ(p.test_docs, 3);
  EXPECT_EQ(split_docs(p.train_path), train);
  EXPECT_EQ(split_docs(p.val_path), val);
  EXPECT_EQ(split_docs(p.test_path), test);
  auto stats = nlohmann::json::parse(read_file(p.stats_path));
  EXPECT_EQ(stats["filters"]["contamination"], 5);
  EXPECT_EQ(stats["split"]["test_documents"], 3);
  EXPECT_EQ(stats["split"]["val_source"], "data.val_paths");
  // Exact matches only without MinHash: the indented and the near copy now train.
  cfg.run.out_dir = path_join(dir.path, "run-exact");
  cfg.data.near_dedup = false;
  p = prepare_corpus(cfg);
  EXPECT_EQ(p.counts.contamination, 3);
  EXPECT_EQ(p.train_docs, 52);
}

TEST(Prepare, PathsWithTheWordNetSourceAreAConfigError) {
  RunConfig cfg;
  cfg.data.paths = {"mycorp/"};
  EXPECT_THROW_MSG(validate(cfg), ConfigError,
                   "key 'data.paths' is set but data.source is \"wordnet\": set data.source=\"files\"");
  EXPECT_THROW_MSG(prepare_corpus(cfg), ConfigError, "data.source=\"files\"");
  cfg.data.paths.clear();
  cfg.data.val_paths = {"valid.txt"};
  EXPECT_THROW_MSG(validate(cfg), ConfigError, "key 'data.val_paths' is set but data.source is \"wordnet\"");
  cfg.data.source = "files";
  cfg.data.paths = {"mycorp/"};
  cfg.data.txt_documents = "page";
  EXPECT_THROW_MSG(validate(cfg), ConfigError, "key 'data.txt_documents' must be");
}

TEST(Prepare, RunStatsReportIsTheFormattedTable) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "entry " + std::to_string(i) + ": some words about item " + std::to_string(i * 7) + "\n";
  write_file_atomic(path_join(dir.path, "c.txt"), text);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir.path, "run");
  cfg.data.source = "files";
  cfg.data.paths = {path_join(dir.path, "c.txt")};
  cfg.data.val_fraction = 0.1;
  cfg.data.near_dedup = false;  // the entries look alike on purpose
  prepare_corpus(cfg);
  const std::string run_report = pipeline::data_stats_report(cfg, {}, false);
  const std::string table = stats_table(stats_from_json(nlohmann::json::parse(read_file(path_join(cfg.run.out_dir, "data/stats.json")))["train"]));
  EXPECT_NE(run_report.find(table), std::string::npos) << run_report;  // the --input report's table
  EXPECT_NE(run_report.find("type-token ratio"), std::string::npos);
  EXPECT_NE(run_report.find("contamination"), std::string::npos);
  // No raw doubles such as 0.0010287780043373503: at most 4 decimals anywhere.
  for (size_t dot = run_report.find('.'); dot != std::string::npos; dot = run_report.find('.', dot + 1)) {
    size_t k = dot + 1;
    while (k < run_report.size() && std::isdigit(static_cast<unsigned char>(run_report[k]))) ++k;
    EXPECT_LE(k - dot - 1, 4u) << run_report.substr(dot > 10 ? dot - 10 : 0, 30);
  }
}

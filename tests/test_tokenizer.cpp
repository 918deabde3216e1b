#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/pretokenize.h"
#include "test_util.h"

using namespace dsforge;
using tok::BpeTokenizer;

namespace {
std::vector<std::string> pieces(const std::string& s) {
  std::vector<std::string_view> v;
  tok::gpt2_pretokenizer().split(s, v);
  return {v.begin(), v.end()};
}

std::string token_string(const std::string& raw) {
  std::string s;
  for (unsigned char c : raw) s += tok::byte_to_unicode(c);
  return s;
}
}  // namespace

TEST(PreTokenizer, Gpt2PatternSplits) {
  // Worked by hand from the GPT-2 pattern: contractions, letter runs with one leading space,
  // digits, punctuation runs, and whitespace that leaves the last space to the next word.
  EXPECT_EQ(pieces("Hello world's  end!!  42x"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " end", "!!", " ", " 42", "x"}));
  EXPECT_EQ(pieces("naïve café\n\nok"), (std::vector<std::string>{"naïve", " café", "\n", "\n", "ok"}));
  EXPECT_EQ(pieces("学而时习之"), (std::vector<std::string>{"学而时习之"}));
}

TEST(PreTokenizer, InvalidUtf8BytesBecomeTheirOwnPieces) {
  std::string s = "ab\xff\xfe cd";
  auto p = pieces(s);
  std::string joined;
  for (auto& x : p) joined += x;
  EXPECT_EQ(joined, s);
  EXPECT_EQ(p.front(), "ab");
}

TEST(ByteLevel, MapIsABijectionWithGpt2Anchors) {
  EXPECT_EQ(tok::byte_to_unicode(' '), "Ġ");
  EXPECT_EQ(tok::byte_to_unicode('\n'), "Ċ");
  EXPECT_EQ(tok::byte_to_unicode('A'), "A");
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    std::string raw;
    ASSERT_TRUE(tok::unicode_to_bytes(tok::byte_to_unicode(static_cast<uint8_t>(b)), raw));
    EXPECT_EQ(raw, std::string(1, static_cast<char>(b)));
    seen.insert(tok::byte_to_unicode(static_cast<uint8_t>(b)));
  }
  EXPECT_EQ(seen.size(), 256u);
}

TEST(BpeTrain, MatchesReferenceMergesExactly) {
  const std::string dir = shared_data_dir() + "/tokenizer_vectors/bpe_training";
  if (!file_exists(dir + "/corpus.en")) GTEST_SKIP() << "shared data not present: " << dir;
  // The corpus is one document; special tokens split it (cs336 rules, see its SOURCE.md).
  auto t = BpeTokenizer::train({read_file(dir + "/corpus.en")}, {500, {"<|endoftext|>"}});
  std::ifstream in(dir + "/reference_merges.txt");
  std::vector<std::string> ref;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) ref.push_back(line);
  ASSERT_EQ(t.merges().size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    auto [a, b] = t.merges()[i];
    ASSERT_EQ(token_string(t.token_bytes(a)) + " " + token_string(t.token_bytes(b)), ref[i]) << "merge " << i;
  }
  // Vocabulary equals the reference as a set of (id, bytes).
  auto vocab = nlohmann::json::parse(read_file(dir + "/reference_vocab.json"));
  ASSERT_EQ(static_cast<int64_t>(vocab.size()), t.vocab_size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int id = it.value().get<int>();
    std::string raw;
    if (it.key() == "<|endoftext|>") raw = it.key();
    else ASSERT_TRUE(tok::unicode_to_bytes(it.key(), raw));
    EXPECT_EQ(t.token_bytes(id), raw) << "id " << id;
  }
}

TEST(BpeTrain, MergesMostFrequentPairFirst) {
  // Pieces "ab", " ab", " ab", " cd", " cd": (a,b) occurs 3 times and merges first; then
  // (" ", ab), (" ", c) and (c, d) tie at 2 and the lexicographically greatest, (c, d), wins.
  auto t = BpeTokenizer::train({"ab ab ab cd cd"}, {256 + 1 + 2, {"<|endoftext|>"}});
  ASSERT_EQ(t.merges().size(), 2u);
  EXPECT_EQ(t.token_bytes(t.merges()[0].first) + t.token_bytes(t.merges()[0].second), "ab");
  EXPECT_EQ(t.token_bytes(t.merges()[1].first) + t.token_bytes(t.merges()[1].second), "cd");
}

TEST(BpeEncode, RoundTripsRandomBytesAndUnicode) {
  auto t = BpeTokenizer::train({"the cat sat on the mat", "猫坐在垫子上", "ünïcödé text here"}, {400, {"<|endoftext|>"}});
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s;
    const int n = static_cast<int>(rng() % 64);
    for (int i = 0; i < n; ++i) {
      switch (rng() % 4) {
        case 0: s.push_back(static_cast<char>(rng() % 256)); break;       // arbitrary byte, often invalid UTF-8
        case 1: s += "the "; break;
        case 2: s += "垫子"; break;
        default: s.push_back(static_cast<char>('a' + rng() % 26));
      }
    }
    ASSERT_EQ(t.decode(t.encode(s)), s) << "trial " << trial;
  }
}

TEST(BpeEncode, SpecialTokensAreAtomicOnlyWhenAllowed) {
  auto t = BpeTokenizer::train({"hello world"}, {300, {"<|endoftext|>", "<pad>"}});
  auto ids = t.encode("hi<|endoftext|>yo", true);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), t.eot_id()), 1);
  auto plain = t.encode("hi<|endoftext|>yo", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), t.eot_id()), 0);
  EXPECT_EQ(t.decode(plain), "hi<|endoftext|>yo");
  EXPECT_EQ(t.special_id("<pad>"), 1);
}

TEST(TokenizerJson, SaveLoadGivesIdenticalEncodings) {
  TempDir dir;
  auto t = BpeTokenizer::train({"the quick brown fox jumps over the lazy dog", "Ünïcode 字符 ok"}, {350, {"<|endoftext|>"}});
  const std::string p = path_join(dir.path, "tokenizer.json");
  t.save(p);
  auto j = nlohmann::json::parse(read_file(p));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|endoftext|>");
  auto u = BpeTokenizer::load(p);
  for (std::string s : {"the lazy fox", "Ünïcode 字符", "new words zzz", "<|endoftext|>x"})
    EXPECT_EQ(u.encode(s), t.encode(s)) << s;
  EXPECT_EQ(u.to_json(), t.to_json());
}

TEST(TokenizerJson, RefusesBadFiles) {
  EXPECT_THROW_MSG(BpeTokenizer::from_json("{", "t.json"), DataError, "t.json: not valid JSON");
  EXPECT_THROW_MSG(BpeTokenizer::from_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "t.json"), DataError,
                   "expected 'BPE'");
  EXPECT_THROW_MSG(BpeTokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []}})", "t.json"),
                   DataError, "no token with id 1");
}

TEST(Gpt2Tokenizer, EncodesLikeTheReleasedTokenizer) {
  const std::string dir = shared_data_dir() + "/tokenizer_vectors/gpt2";
  if (!file_exists(dir + "/vocab.json")) GTEST_SKIP() << "shared data not present: " << dir;
  auto t = BpeTokenizer::from_gpt2_files(dir + "/vocab.json", dir + "/merges.txt", {"<|endoftext|>"});
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.eot_id(), 50256);
  // Ids published for GPT-2 (e.g. in the tiktoken and HF test suites): "Hello world" = [15496, 995].
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(t.encode(" the"), (std::vector<int32_t>{262}));
  const std::string text = read_file(dir + "/fixtures/address.txt");
  EXPECT_EQ(t.decode(t.encode(text)), text);
  // Through tokenizer.json and back: the same encoding.
  auto u = BpeTokenizer::from_json(t.to_json(), "mem");
  EXPECT_EQ(u.encode(text), t.encode(text));
}

TEST(BpeEncode, BatchOnAllCoresEqualsSequential) {
  auto t = BpeTokenizer::train({"the cat sat on the mat", "a dog ran in the park", "猫坐在垫子上"}, {420, {"<|endoftext|>"}});
  std::vector<std::string> docs;
  for (int i = 0; i < 3000; ++i) docs.push_back("doc " + std::to_string(i) + ": the cat and the dog 猫" + std::to_string(i % 7));
  auto batch = t.encode_batch(docs, false, 4);
  ASSERT_EQ(batch.size(), docs.size());
  for (size_t i = 0; i < docs.size(); i += 97) EXPECT_EQ(batch[i], t.encode(docs[i], false)) << i;
}

TEST(BpeTrain, ChineseClassicsGetCharacterAndWordMerges) {
  const std::string path = shared_data_dir() + "/chinese_classics/lunyu_analects.txt";
  if (!file_exists(path)) GTEST_SKIP() << "shared data not present: " << path;
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  auto t = BpeTokenizer::train(lines, {2000, {"<|endoftext|>"}});
  // The most frequent characters of the Analects become single tokens (3 UTF-8 bytes -> 1 id), and
  // the text round-trips.
  for (const char* ch : {"子", "曰", "之", "不", "也"}) EXPECT_EQ(t.encode(ch).size(), 1u) << ch;
  EXPECT_EQ(t.encode("子曰").size(), 1u);  // "The Master said" is frequent enough to merge whole
  const std::string text = read_file(path).substr(0, 3000);
  const std::string cut = text.substr(0, text.rfind('\n'));
  EXPECT_EQ(t.decode(t.encode(cut)), cut);
  EXPECT_LT(t.encode(cut).size() * 3, cut.size());  // more than 3 bytes per token
}

TEST(PreTokenizer, SafeSplitsNeverChangeTheEncoding) {
  auto t = BpeTokenizer::train({"the cat sat\non the mat", "a  dog\n\n ran", "x = 1;\n  y = 22;"}, {400, {"<|endoftext|>"}});
  std::mt19937 rng(11);
  const std::vector<std::string> parts = {"word", " ", "  ", "\n", "\n\n", " \n", "\t", "42", ".", "猫", "'s", "x\n"};
  for (int trial = 0; trial < 500; ++trial) {
    std::string s;
    for (int k = 0; k < 30; ++k) s += parts[rng() % parts.size()];
    const size_t cut = tok::last_safe_split(s);
    if (cut == 0) continue;
    auto a = t.encode(s.substr(0, cut)), b = t.encode(s.substr(cut));
    a.insert(a.end(), b.begin(), b.end());
    ASSERT_EQ(a, t.encode(s)) << "trial " << trial << " cut " << cut;
  }
}

TEST(TokenizerCli, StreamedEncodeEqualsWholeEncode) {
  TempDir dir;
  auto t = BpeTokenizer::train({"the cat sat on the mat", "dogs run  fast\n"}, {320, {"<|endoftext|>"}});
  const std::string tpath = path_join(dir.path, "tok.json");
  t.save(tpath);
  std::string text;
  for (int i = 0; i < 90000; ++i) text += "line " + std::to_string(i) + ": the cat sat  \n" + (i % 7 ? "" : "\n  ");
  ASSERT_GT(text.size(), 2u << 20);  // more than two read chunks
  write_file_atomic(path_join(dir.path, "in.txt"), text);
  const std::string cmd = std::string(DSFORGE_CLI) + " tokenizer encode --tokenizer " + tpath + " < " +
                          path_join(dir.path, "in.txt") + " > " + path_join(dir.path, "ids.txt");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::istringstream in(read_file(path_join(dir.path, "ids.txt")));
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  EXPECT_EQ(ids, t.encode(text));
}

TEST(PreTokenizer, DeepseekV3DigitGroupsCjkAndWords) {
  const auto& ds = tok::named_pretokenizer("deepseek-v3");
  auto split = [&](const std::string& s) {
    std::vector<std::string_view> v;
    ds.split(s, v);
    return std::vector<std::string>(v.begin(), v.end());
  };
  // Digits in groups of at most 3 and isolated from the space before them; letters keep a leading space.
  EXPECT_EQ(split("abc 12345 def"), (std::vector<std::string>{"abc", " ", "123", "45", " def"}));
  // CJK runs are isolated from Latin text; punctuation runs take a leading space and trailing newlines.
  EXPECT_EQ(split("我爱你abc"), (std::vector<std::string>{"我爱你", "abc"}));
  EXPECT_EQ(split("end. next"), (std::vector<std::string>{"end", ".", " next"}));
  EXPECT_EQ(split("x!!\nY"), (std::vector<std::string>{"x", "!!\n", "Y"}));
}

TEST(TokenizerJson, DeepseekV3PretokenizerRoundTripsAsSequence) {
  auto t = BpeTokenizer::train({"price 12345 yen 我爱你 ok", "x = 42;\ny = 7"}, {330, {"<|endoftext|>"}, "deepseek-v3"});
  auto j = nlohmann::json::parse(t.to_json());
  ASSERT_EQ(j["pre_tokenizer"]["type"], "Sequence");
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], "\\p{N}{1,3}");
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][3]["use_regex"], false);
  auto u = BpeTokenizer::from_json(t.to_json(), "mem");
  EXPECT_EQ(u.pretokenizer_patterns(), tok::pretokenizer_patterns("deepseek-v3"));
  for (std::string s : {"price 987654 yen", "我爱你 and 你", "x = 42;\ny = 7"}) {
    EXPECT_EQ(u.encode(s), t.encode(s)) << s;
    EXPECT_EQ(t.decode(t.encode(s)), s);
  }
  // No merge crosses a digit group of three.
  for (int32_t id : t.encode("1234567")) EXPECT_LE(t.token_bytes(id).size(), 3u);
}

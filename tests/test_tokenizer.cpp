#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/ingest.h"
#include "dsforge/pipeline/tokenizer_files.h"
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

// ---- added tokens (tokenizer.json "added_tokens", special or not) ----

namespace {

// `t` as tokenizer.json with extra added tokens appended (content, special), ids from vocab_size().
BpeTokenizer with_added(const BpeTokenizer& t, const std::vector<std::pair<std::string, bool>>& extra,
                        bool normalized = false) {
  auto j = nlohmann::ordered_json::parse(t.to_json());
  int32_t next = static_cast<int32_t>(t.vocab_size());
  for (const auto& [content, special] : extra) {
    // As in `tokenizers`: content already in the vocabulary keeps its id. "é" is the byte-level
    // name of byte 0xE9, as DeepSeek's "ø" is of 0xF8.
    auto& vocab = j["model"]["vocab"];
    const int32_t id = vocab.contains(content) ? vocab[content].get<int32_t>() : next++;
    j["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", normalized}, {"special", special}});
    vocab[content] = id;
  }
  return BpeTokenizer::from_json(j.dump(), "mem");
}

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST(TokenizerAdded, NonSpecialTokensMatchWhateverAllowSpecial) {
  auto base = BpeTokenizer::train({"the cat sat on the mat", "a dog ran"}, {300, {"<|endoftext|>", "<pad>"}});
  auto t = with_added(base, {{"é", false}, {"<tool>", false}, {"<sys>", true}});
  const int32_t e = t.added_token_id("é"), tool = t.added_token_id("<tool>"), sys = t.added_token_id("<sys>");
  EXPECT_EQ(e, base.encode("\xE9").at(0));  // the byte token's id, now decoding to "é" itself
  EXPECT_EQ(tool, base.vocab_size());
  EXPECT_EQ(sys, base.vocab_size() + 1);
  // Special tokens are the special ones only, end-of-text first, as before.
  EXPECT_EQ(t.special_tokens(), (std::vector<std::string>{"<|endoftext|>", "<pad>", "<sys>"}));
  EXPECT_EQ(t.added_tokens(), (std::vector<std::string>{"é", "<tool>"}));
  EXPECT_EQ(t.eot_id(), base.eot_id());
  EXPECT_EQ(t.added_token_id("<tool>"), tool);
  for (bool allow : {false, true}) {
    // "caé t": the added token splits the word; the text on each side is encoded on its own.
    EXPECT_EQ(t.encode("caé t", allow), cat({base.encode("ca"), {e}, base.encode(" t")})) << allow;
    EXPECT_EQ(t.encode("x<tool>y", allow), cat({base.encode("x"), {tool}, base.encode("y")})) << allow;
    EXPECT_EQ(t.decode(t.encode("héllo <tool> <sys> <|endoftext|>", allow)), "héllo <tool> <sys> <|endoftext|>");
  }
  // Special tokens still need allow_special.
  EXPECT_EQ(t.encode("<sys>", true), (std::vector<int32_t>{sys}));
  EXPECT_EQ(t.encode("<sys>", false), base.encode("<sys>", false));
  EXPECT_EQ(t.decode({e, tool, sys}), "é<tool><sys>");
  // Through tokenizer.json: "special": false survives, and so does everything else.
  auto j = nlohmann::json::parse(t.to_json());
  bool saw = false;
  for (const auto& a : j["added_tokens"])
    if (a["content"] == "<tool>") {
      saw = true;
      EXPECT_EQ(a["special"], false);
      EXPECT_EQ(a["id"], tool);
    }
  EXPECT_TRUE(saw);
  auto u = BpeTokenizer::from_json(t.to_json(), "mem");
  EXPECT_EQ(u.to_json(), t.to_json());
  EXPECT_EQ(u.special_tokens(), t.special_tokens());
  EXPECT_EQ(u.added_tokens(), t.added_tokens());
  EXPECT_EQ(u.encode("caé<tool>", false), t.encode("caé<tool>", false));
}

TEST(TokenizerAdded, LeftmostLongestThenNormalizedPass) {
  auto base = BpeTokenizer::train({"abcdef"}, {280, {"<|endoftext|>"}});
  auto t = with_added(base, {{"ab", false}, {"abc", false}, {"bcd", false}});
  const int32_t ab = static_cast<int32_t>(base.vocab_size()), abc = ab + 1, bcd = ab + 2;
  // "abc" and "ab" start first (leftmost); the longer wins; "bcd" overlaps it and loses.
  EXPECT_EQ(t.encode("xabcdx", false), cat({base.encode("x"), {abc}, base.encode("dx")}));
  EXPECT_EQ(t.encode("xabx", false), cat({base.encode("x"), {ab}, base.encode("x")}));
  EXPECT_EQ(t.encode("bcdab", false), (std::vector<int32_t>{bcd, ab}));
  // Hugging Face matches "normalized": false tokens first, then "normalized": true ones in the
  // text between: the later-starting "cd" (not normalized) beats the leftmost "abc" (normalized).
  auto j = nlohmann::ordered_json::parse(base.to_json());
  const int32_t v = static_cast<int32_t>(base.vocab_size());
  j["added_tokens"].push_back({{"id", v}, {"content", "abc"}, {"normalized", true}, {"special", false}});
  j["added_tokens"].push_back({{"id", v + 1}, {"content", "cd"}, {"normalized", false}, {"special", false}});
  j["model"]["vocab"]["abc"] = v;
  j["model"]["vocab"]["cd"] = v + 1;
  auto n = BpeTokenizer::from_json(j.dump(), "mem");
  EXPECT_EQ(n.encode("abcd", false), cat({base.encode("ab"), {v + 1}}));
  EXPECT_EQ(n.encode("abcx", false), cat({{v}, base.encode("x")}));
  EXPECT_EQ(BpeTokenizer::from_json(n.to_json(), "mem").encode("abcd", false), n.encode("abcd", false));
}

TEST(TokenizerAdded, StreamingCutsNeverFallInsideAnAddedToken) {
  auto base = BpeTokenizer::train({"the cat sat\non the mat", "x = 1;\n  y = 22;"}, {320, {"<|endoftext|>"}});
  // Tokens with a newline between non-space bytes: exactly where the plain rule would cut.
  auto t = with_added(base, {{"a\nb", false}, {"end\nof\ntext", false}, {"<s>\nX", true}});
  EXPECT_EQ(tok::last_safe_split("xx a\nb yy"), 5u);  // the pre-tokenizer alone would cut the token
  EXPECT_EQ(t.last_safe_split("xx a\nb yy"), 0u);
  EXPECT_EQ(t.last_safe_split("q\nr a\nb yy"), 2u);  // an earlier cut is still fine
  EXPECT_EQ(t.last_safe_split("q\nr end\nof\nte"), 2u);  // an unfinished token may complete later
  std::mt19937 rng(5);
  const std::vector<std::string> parts = {"a", "b", "\n", "a\nb", "end", "of", "text", "<s>", "X", " ", "x\n", "猫"};
  int cuts = 0;
  for (int trial = 0; trial < 800; ++trial) {
    std::string s;
    for (int k = 0; k < 24; ++k) s += parts[rng() % parts.size()];
    for (bool allow : {false, true}) {
      const size_t cut = t.last_safe_split(s);
      if (cut == 0) continue;
      ++cuts;
      ASSERT_EQ(cat({t.encode(s.substr(0, cut), allow), t.encode(s.substr(cut), allow)}), t.encode(s, allow))
          << "trial " << trial << " cut " << cut;
      // Every prefix is a possible chunk end in a stream: a cut there must hold for any continuation.
      const std::string prefix = s.substr(0, 1 + rng() % s.size());
      const size_t c2 = t.last_safe_split(prefix);
      if (c2 > 0) {
        ASSERT_EQ(cat({t.encode(s.substr(0, c2), allow), t.encode(s.substr(c2), allow)}), t.encode(s, allow));
      }
    }
  }
  EXPECT_GT(cuts, 100);
}

namespace {
// tokenizer.json for DeepSeek LLM from the shared folder: vocab.json + merges.txt, llama.cpp's
// pre-tokenizer regexes as isolated splits, and added tokens from tokenizer_meta.json (GGUF
// "control" = special, "user_defined" = not). `keep_user_defined` false drops the latter (and their
// ids, which are the last ones) to compare speed with the plain path.
std::string deepseek_llm_json(const std::string& dir, bool keep_user_defined = true) {
  auto meta = nlohmann::json::parse(read_file(dir + "/tokenizer_meta.json"));
  auto pre = nlohmann::json::parse(read_file(dir + "/pretokenizer_llamacpp.json"));
  nlohmann::json vocab = nlohmann::json::parse(read_file(dir + "/vocab.json"));  // ordered_json parses in O(n^2)
  nlohmann::json j, added = nlohmann::json::array(), steps = nlohmann::json::array();
  for (const auto& t : meta["non_normal_tokens"]) {
    const bool special = t["type"] == "control";
    if (!special && !keep_user_defined) {
      vocab.erase(t["content"].get<std::string>());
      continue;
    }
    added.push_back({{"id", t["id"]}, {"content", t["content"]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", !special}, {"special", special}});
  }
  for (const auto& r : pre["regex_exprs"])
    steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream in(read_file(dir + "/merges.txt"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  j["version"] = "1.0";
  j["added_tokens"] = added;
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  return j.dump();
}
}  // namespace

TEST(TokenizerAdded, DeepseekLlmUserDefinedTokensEncodeToTheirIds) {
  const std::string dir = shared_data_dir() + "/tokenizer_vectors/deepseek_llm";
  if (!file_exists(dir + "/tokenizer_meta.json")) GTEST_SKIP() << "shared data not present: " << dir;
  // No reference encodings ship with the folder and the `tokenizers` Python package is not
  // installed, so the expectations are HF's documented semantics applied by hand: an added token
  // is cut out of the raw text first and becomes its id; the text around it is encoded alone.
  auto t = BpeTokenizer::from_json(deepseek_llm_json(dir), "deepseek_llm");
  EXPECT_EQ(t.vocab_size(), 102400);
  EXPECT_EQ(t.special_tokens(), (std::vector<std::string>{"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"}));
  EXPECT_EQ(t.added_tokens().size(), 2398u);
  EXPECT_EQ(t.eot_id(), 100000);  // the first special token, as before
  // tokenizer_meta.json: 100002 "ø", 100014 "ü", 100015 "[PAD100015]".
  EXPECT_EQ(t.encode("ø", false), (std::vector<int32_t>{100002}));
  EXPECT_EQ(t.encode("[PAD100015]", false), (std::vector<int32_t>{100015}));
  const auto s = t.encode("s", false), ster = t.encode("ster", false);
  EXPECT_EQ(t.encode("søster", false), cat({s, {100002}, ster}));
  const auto ids = t.encode("Herr Müller", false);
  const auto head = t.encode("Herr M", false);
  ASSERT_GT(ids.size(), head.size());
  EXPECT_EQ(ids[head.size()], 100014);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<long>(head.size())), head);
  EXPECT_EQ(t.decode(ids), "Herr Müller");
  // Special tokens keep needing allow_special.
  EXPECT_EQ(t.encode("<｜end▁of▁sentence｜>", true), (std::vector<int32_t>{100001}));
  const auto plain = t.encode("<｜end▁of▁sentence｜>", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 100001), 0);
  EXPECT_EQ(t.decode(plain), "<｜end▁of▁sentence｜>");
  // Text with no added token is unaffected, and everything survives tokenizer.json.
  const std::string text = "The quick brown fox, 12345 jumps!\n  over 猫 the lazy dog.";
  auto u = BpeTokenizer::from_json(t.to_json(), "mem");
  EXPECT_EQ(u.to_json(), t.to_json());
  EXPECT_EQ(u.encode(text + "øü", false), t.encode(text + "øü", false));
  EXPECT_EQ(t.decode(t.encode(text, false)), text);
}

// Run with --gtest_also_run_disabled_tests: prints encode speed; asserts only equal ids.
TEST(TokenizerAdded, DISABLED_EncodeSpeedTenMegabytesWithoutAddedTokens) {
  const std::string dir = shared_data_dir() + "/tokenizer_vectors/deepseek_llm";
  const std::string sample = shared_data_dir() + "/tokenizer_vectors/gpt2/fixtures/tinystories_sample.txt";
  if (!file_exists(dir + "/tokenizer_meta.json") || !file_exists(sample)) GTEST_SKIP() << "shared data not present";
  std::string text;
  const std::string piece = read_file(sample);
  while (text.size() < (10u << 20)) text += piece;
  auto with = BpeTokenizer::from_json(deepseek_llm_json(dir, true), "with");
  auto without = BpeTokenizer::from_json(deepseek_llm_json(dir, false), "without");
  auto gpt2 = BpeTokenizer::from_gpt2_files(shared_data_dir() + "/tokenizer_vectors/gpt2/vocab.json",
                                            shared_data_dir() + "/tokenizer_vectors/gpt2/merges.txt", {"<|endoftext|>"});
  auto time = [&](const BpeTokenizer& t, bool allow) {
    t.encode(text.substr(0, 1 << 20), allow);  // warm the piece cache
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      auto ids = t.encode(text, allow);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double a = time(without, false), b = time(with, false), c = time(gpt2, false), d = time(gpt2, true);
  EXPECT_EQ(with.encode(text.substr(0, 100000), false), without.encode(text.substr(0, 100000), false));
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("encode %.1f MB, best of 3: deepseek-llm without user-defined tokens %.3f s (%.1f MB/s), with 2,398 "
              "%.3f s (%.1f MB/s); gpt2 allow_special=false %.3f s (%.1f MB/s), true %.3f s (%.1f MB/s)\n",
              mb, a, mb / a, b, mb / b, c, mb / c, d, mb / d);
}

// ---- load errors name the file ----

TEST(TokenizerJson, LoadErrorsNameTheFileAndEntry) {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string p = path_join(dir.path, name);
    write_file_atomic(p, text);
    return p;
  };
  const std::string vocab = R"("vocab": {"a": 0, "b": 1, "ab": 2})";
  auto tj = [&](const std::string& merges, const std::string& added = "[]") {
    return std::string(R"({"added_tokens": )") + added + R"(, "model": {"type": "BPE", )" + vocab +
           R"(, "merges": )" + merges + "}}";
  };
  ASSERT_EQ(BpeTokenizer::from_json(tj(R"(["a b"])"), "ok").merges().size(), 1u);  // the control
  std::string p = write("notjson.json", "{\"model\": ");
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": not valid JSON");
  p = write("badmerge.json", tj(R"(["a b", "ab"])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": model.merges[1] = 'ab': expected 'left right'");
  p = write("unknown.json", tj(R"(["a b", "a z"])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": model.merges[1]: merge 'a z' names 'z', which is not");
  p = write("product.json", tj(R"(["b a"])"));  // "ba" is not in the vocabulary
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": model.merges[0]: merge 'b' + 'a' produces a token");
  p = write("clash.json", tj("[]", R"([{"id": 1, "content": "<x>", "special": true}])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": added_tokens[0]: '<x>' has id 1, which is already 'b'");
  p = write("clash2.json", tj("[]", R"([{"id": 9, "content": "<x>"}, {"id": 9, "content": "<y>"}])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": added_tokens[1]: '<y>' has id 9, which is already '<x>'");
  p = write("moved.json", tj("[]", R"([{"id": 0, "content": "ab"}])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": added_tokens[0]: 'ab' has id 0 but model.vocab gives it 2");
  p = write("gap.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 5}, "merges": []}})");
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": model.vocab: no token with id 1");
  p = write("type.json", R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": model.vocab['a'] is \"zero\"");
  p = write("lstrip.json", tj("[]", R"([{"id": 3, "content": "<m>", "lstrip": true}])"));
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": added_tokens[0] '<m>': lstrip = true is not supported");
  p = write("pre.json", R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": )"
                        R"({"Regex": "(unclosed"}, "behavior": "Isolated"}, {"type": "ByteLevel"}]}, )"
                        R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  EXPECT_THROW_MSG(BpeTokenizer::load(p), DataError, p + ": pre_tokenizer: ");
  // GPT-2 release files: the merges file and line, or the vocabulary file.
  const std::string vj = write("vocab.json", R"({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3})");
  const std::string mt = write("merges.txt", "#version: 0.2\na b\n\nb q\n");
  EXPECT_THROW_MSG(BpeTokenizer::from_gpt2_files(vj, mt, {"<|endoftext|>"}), DataError,
                   mt + ":4: merge 'b q' names 'q', which is not in the vocabulary");
  const std::string mt2 = write("merges2.txt", "a b c\n");
  EXPECT_THROW_MSG(BpeTokenizer::from_gpt2_files(vj, mt2, {}), DataError, mt2 + ":1: 'a b c': expected 'left right'");
  EXPECT_THROW_MSG(BpeTokenizer::from_gpt2_files(vj, write("m3.txt", "a b\n"), {"<eos>"}), DataError,
                   vj + ": special token '<eos>' is not in the vocabulary");
}

// ---- training on files (tokenizer train --input) ----

namespace {
// Small source files with indentation, blank lines and a JSONL file: the fixture of the tests below.
std::map<std::string, std::string> source_fixture() {
  std::map<std::string, std::string> files;
  std::string py, cpp;
  for (int i = 0; i < 40; ++i) {
    py += "def f" + std::to_string(i) + "(x, y):\n    if x > y:\n        return x - " + std::to_string(i) +
          "\n    return y\n\n\n";
    cpp += "int g" + std::to_string(i) + "(int a) {\n  for (int k = 0; k < a; ++k) {\n    a += k * " +
           std::to_string(i % 7) + ";\n  }\n  return a;\n}\n\n";
  }
  files["src/util.py"] = py + "class Point:\n    def __init__(self):\n        self.x = 0\n";
  files["src/main.cpp"] = "#include <cstdio>\n\n" + cpp + "int main() {\n  std::printf(\"ok\\n\");\n}\n";
  files["notes.txt"] = "Notes \xff on the code\n\tindented with a tab\n    and spaces\n";  // one invalid byte
  return files;
}
}  // namespace

TEST(TokenizerFiles, TrainsOnRawFilesLikeWholeFileTraining) {
  TempDir dir;
  std::vector<std::string> whole;
  for (const auto& [name, text] : source_fixture()) {
    std::filesystem::create_directories(std::filesystem::path(path_join(dir.path, name)).parent_path());
    write_file_atomic(path_join(dir.path, name), text);
    whole.push_back(data::repair_utf8(text));
  }
  pipeline::TokenizerFilesOptions o;
  o.inputs = {dir.path};
  o.train.vocab_size = 420;
  o.chunk_bytes = 64;  // many chunks per file: the cuts must not change the counts
  pipeline::TokenizerFilesStats st;
  auto t = pipeline::train_tokenizer_on_files(o, &st);
  EXPECT_EQ(st.files, 3);
  EXPECT_EQ(st.documents, 3);
  // (a) the same merges as training on each whole file as one document
  auto ref = BpeTokenizer::train(whole, o.train);
  ASSERT_EQ(t.merges().size(), ref.merges().size());
  EXPECT_EQ(t.merges(), ref.merges());
  EXPECT_EQ(t.to_json(), ref.to_json());
  // (b) newline and indentation tokens
  bool newline = false, indent = false;
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    const std::string& b = t.token_bytes(id);
    if (b.size() >= 2 && b.find('\n') != std::string::npos) newline = true;
    if (b.size() >= 2 && b.find_first_not_of(" \n") == std::string::npos && b.find("  ") != std::string::npos) indent = true;
  }
  EXPECT_TRUE(newline);
  EXPECT_TRUE(indent);
  // (c) byte-exact round trip of every file
  for (const auto& [name, text] : source_fixture()) {
    const std::string s = data::repair_utf8(text);
    EXPECT_EQ(t.decode(t.encode(s, false)), s) << name;
  }
  EXPECT_LT(t.encode(whole[1], false).size() * 2, whole[1].size());  // it did learn the code
  // --max-docs and JSONL records
  write_file_atomic(path_join(dir.path, "extra.jsonl"), "{\"text\": \"hello hello\"}\n{\"text\": \"world\"}\n");
  o.inputs = {path_join(dir.path, "extra.jsonl")};
  o.max_docs = 1;
  pipeline::train_tokenizer_on_files(o, &st);
  EXPECT_EQ(st.documents, 1);
  EXPECT_EQ(st.bytes, 11);
}

namespace {
size_t lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST(TokenizerCli, TrainFromFilesAndBadInvocations) {
  TempDir dir;
  const std::string in = path_join(dir.path, "in");
  std::vector<std::string> whole;
  for (const auto& [name, text] : source_fixture()) {
    std::filesystem::create_directories(std::filesystem::path(path_join(in, name)).parent_path());
    write_file_atomic(path_join(in, name), text);
    whole.push_back(data::repair_utf8(text));
  }
  const std::string out = path_join(dir.path, "tok.json");
  // Run-config overrides act as defaults for the flags: the pre-tokenizer comes from one here.
  CliRun ok = run_cli("tokenizer train --input " + in + "/src " + in + "/notes.txt --vocab-size 400 --out " + out +
                       " --tokenizer.pretokenizer=deepseek-v3", dir.path);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("wrote " + out), std::string::npos) << ok.out;
  auto t = BpeTokenizer::load(out);
  auto ref = BpeTokenizer::train(whole, {400, {"<|endoftext|>"}, "deepseek-v3"});
  EXPECT_EQ(t.merges(), ref.merges());
  EXPECT_EQ(t.pretokenizer_patterns(), tok::pretokenizer_patterns("deepseek-v3"));
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--input " + in + " --out " + out + " --vocab-size 100", "--vocab-size 100 is below 257"},
           {"--input " + in + " --vocab-size 400", "--input needs --out"},
           {"--input " + in + " --out " + out + " --vocab-size 400 --config " + out, "--input and --config"},
           {"--out " + out, "--out needs --input"},
           {"--input " + in + " --out " + out + " --vocab-size 400 --tokenizer.vocab_sise=3", "tokenizer.vocab_sise"},
           {"--tokenizer.pretokenizer=gpt3", "tokenizer.pretokenizer"}}) {
    CliRun bad = run_cli("tokenizer train " + args, dir.path);
    EXPECT_NE(bad.code, 0) << args;
    EXPECT_EQ(lines(bad.err), 1u) << args << "\n" << bad.err;
    EXPECT_NE(bad.err.find(needle), std::string::npos) << args << "\n" << bad.err;
  }
}

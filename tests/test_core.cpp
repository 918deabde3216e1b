#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/platform.h"
#include "dsforge/core/run_config.h"
#include "dsforge/core/safetensors.h"
#include "test_util.h"

using namespace dsforge;

TEST(Io, Crc32cKnownValue) {
  // The CRC-32C check value from the Castagnoli/iSCSI specification (RFC 3720, B.4).
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
}

TEST(Io, AtomicWriteReplacesWholeFile) {
  TempDir dir;
  const std::string p = path_join(dir.path, "a/b.txt");
  write_file_atomic(p, "first version");
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");
  for (const auto& e : std::filesystem::directory_iterator(path_join(dir.path, "a")))
    EXPECT_EQ(e.path().filename(), "b.txt");  // no temporary left behind
}

TEST(Safetensors, RoundTripAndLayout) {
  TensorMap t{{"b", at::arange(6, at::kFloat).view({2, 3})}, {"a", at::tensor({1, 2, 3}, at::kLong)}};
  std::string bytes = encode_safetensors(t, {{"format", "pt"}});
  // Layout: u64 header length, then JSON starting with '{'.
  uint64_t hlen;
  std::memcpy(&hlen, bytes.data(), 8);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ((8 + hlen) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + hlen + 6 * 4 + 3 * 8);
  auto back = decode_safetensors(bytes, "mem");
  EXPECT_TRUE(at::equal(back.tensors.at("b"), t.at("b")));
  EXPECT_TRUE(at::equal(back.tensors.at("a"), t.at("a")));
  EXPECT_EQ(back.metadata.at("format"), "pt");
}

TEST(Safetensors, RefusesCorruptAndTruncated) {
  TensorMap t{{"w", at::randn({4, 4})}};
  std::string bytes = encode_safetensors(t);
  std::string corrupt = bytes;
  corrupt[corrupt.size() - 3] ^= 0x55;
  EXPECT_THROW_MSG(decode_safetensors(corrupt, "x.safetensors"), CheckpointError, "checksum mismatch");
  EXPECT_THROW_MSG(decode_safetensors(bytes.substr(0, bytes.size() - 10), "x.safetensors"), CheckpointError,
                   "out of range");
  EXPECT_THROW_MSG(decode_safetensors("abc", "x.safetensors"), CheckpointError, "truncated");
}

TEST(RunConfig, DefaultsParseOverridesAndHash) {
  TempDir dir;
  const std::string p = path_join(dir.path, "r.toml");
  write_file_atomic(p, "[train]\nlr = 0.01\nmax_steps = 7\n[generate]\nprompts = [\"a:\", \"b:\"]\n");
  RunConfig c = load_run_config(p, {"train.batch_size=3", "--run.seed=5"});
  EXPECT_DOUBLE_EQ(c.train.lr, 0.01);
  EXPECT_EQ(c.train.max_steps, 7);
  EXPECT_EQ(c.train.batch_size, 3);
  EXPECT_EQ(c.run.seed, 5);
  EXPECT_EQ(c.generate.prompts, (std::vector<std::string>{"a:", "b:"}));
  // The dump parses back to the same config.
  write_file_atomic(p, to_toml(c));
  RunConfig d = load_run_config(p);
  EXPECT_EQ(to_toml(d), to_toml(c));
  EXPECT_EQ(checkpoint_hash(c), checkpoint_hash(d));
  d.train.seq_len += 1;
  EXPECT_NE(checkpoint_hash(c), checkpoint_hash(d));
  d = c;
  d.train.lr *= 2;  // optimisation settings may change on resume
  EXPECT_EQ(checkpoint_hash(c), checkpoint_hash(d));
}

TEST(RunConfig, UnknownKeyNamesFileLineAndSuggestion) {
  TempDir dir;
  const std::string p = path_join(dir.path, "bad.toml");
  write_file_atomic(p, "[train]\nlr = 0.01\nmax_stesp = 10\n");
  EXPECT_THROW_MSG(load_run_config(p), ConfigError, "bad.toml:3: unknown key 'train.max_stesp' (did you mean 'train.max_steps'?)");
}

TEST(RunConfig, TypeAndRangeErrorsNameTheKey) {
  TempDir dir;
  const std::string p = path_join(dir.path, "bad.toml");
  write_file_atomic(p, "[train]\nmax_steps = \"ten\"\n");
  EXPECT_THROW_MSG(load_run_config(p), ConfigError, "key 'train.max_steps' must be an integer");
  write_file_atomic(p, "[train]\nlr = -1.0\n");
  EXPECT_THROW_MSG(load_run_config(p), ConfigError, "train.lr");
  EXPECT_THROW_MSG(load_run_config(path_join(dir.path, "missing.toml")), ConfigError, "config file not found");
  RunConfig c;
  EXPECT_THROW_MSG(apply_override(c, "train.batch_size=abc"), ConfigError, "expected an integer");
  EXPECT_THROW_MSG(apply_override(c, "trian.lr=1"), ConfigError, "unknown key 'trian.lr'");
}

TEST(Platform, HugePageBlocksAreAlignedZeroedAndWritable) {
  // 2 MB-aligned whatever the size (one byte, a page and a bit, several pages), zero-filled, writable to
  // the last byte asked for, and released without a trace (a hundred rounds of 5 MB stay unmapped).
  for (size_t bytes : {size_t{1}, (size_t{2} << 20) + 1, size_t{5} << 20}) {
    for (int round = 0; round < (bytes == (size_t{5} << 20) ? 100 : 1); ++round) {
      auto* p = static_cast<unsigned char*>(alloc_huge_pages(bytes));
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t{2} << 20), 0u) << bytes;
      EXPECT_EQ(p[0], 0);
      EXPECT_EQ(p[bytes - 1], 0);
      p[bytes - 1] = 2, p[0] = 1;
      EXPECT_EQ(p[0] + p[bytes - 1], bytes == 1 ? 2 : 3);
      free_huge_pages(p, bytes);
    }
  }
}

TEST(Platform, BellWakesEverySleeperAndLosesNoRing) {
  // Eight sleepers follow a counter posted 2000 times, one ring per post; each sleeps with a 10 s
  // timeout, so a ring lost between a sleeper's look and its sleep would show as a 10 s stall.
  using namespace std::chrono;
  Bell bell;
  std::atomic<int> posted{0};
  constexpr int kPosts = 2000, kSleepers = 8;
  std::atomic<int> finished{0};
  const auto t0 = steady_clock::now();
  std::vector<std::thread> sleepers;
  for (int i = 0; i < kSleepers; ++i)
    sleepers.emplace_back([&] {
      for (int seen = 0; seen < kPosts;) {
        const uint32_t round = bell.round();
        const int now = posted.load();
        if (now > seen) seen = now;
        else bell.wait(round, milliseconds(10000));
      }
      ++finished;
    });
  for (int i = 0; i < kPosts; ++i) {
    posted.fetch_add(1);
    bell.ring();
    if (i % 64 == 0) std::this_thread::yield();
  }
  for (auto& t : sleepers) t.join();
  EXPECT_EQ(finished.load(), kSleepers);
  EXPECT_LT(duration<double>(steady_clock::now() - t0).count(), 5.0);
  // No ring: the timeout; a stale round: at once.
  auto a = steady_clock::now();
  bell.wait(bell.round(), milliseconds(60));
  EXPECT_GE(duration<double>(steady_clock::now() - a).count(), 0.05);
  a = steady_clock::now();
  bell.wait(bell.round() - 1, milliseconds(10000));
  EXPECT_LT(duration<double>(steady_clock::now() - a).count(), 1.0);
}

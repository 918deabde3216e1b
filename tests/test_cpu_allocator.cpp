// The caching CPU allocator: large blocks come back to the next request of nearly the same size, a
// reused block faults no pages in, blocks from 2 MB up are huge-page aligned, the cache stays under
// its limit, and tensors stay intact under concurrent use. The whole test binary runs with it
// installed (as the CLI does), so every other test exercises it too.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "dsforge/core/cpu_allocator.h"

using namespace dsforge;

namespace {
const bool kInstalled = core::install_cpu_allocator();

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Frees every cached block, then restores the limit in force before the test.
struct FreshCache {
  size_t limit = core::cpu_cache_stats().limit_bytes;
  FreshCache() { core::release_cpu_cache(); }
  ~FreshCache() { core::set_cpu_cache_limit(limit); }
};
}  // namespace

TEST(CpuAllocator, ReusesAFreedBlockForTheSameSize) {
  ASSERT_TRUE(kInstalled) << "DSFORGE_CPU_CACHE_MB=0 in the environment?";
  FreshCache fresh;
  const auto before = core::cpu_cache_stats();
  void* first;
  {
    at::Tensor a = at::empty({1 << 20});  // 4 MB
    first = a.data_ptr();
    EXPECT_GE(core::cpu_cache_stats().live_bytes, size_t{4} << 20);
  }
  EXPECT_GE(core::cpu_cache_stats().cached_bytes, size_t{4} << 20);
  at::Tensor b = at::empty({1 << 20});
  EXPECT_EQ(b.data_ptr(), first);
  const auto after = core::cpu_cache_stats();
  EXPECT_EQ(after.misses - before.misses, 1);
  EXPECT_EQ(after.hits - before.hits, 1);
  // Small tensors never reach the cache.
  at::Tensor small = at::empty({1000});
  EXPECT_EQ(core::cpu_cache_stats().hits, after.hits);
  EXPECT_EQ(core::cpu_cache_stats().misses, after.misses);
}

TEST(CpuAllocator, BestFitWithinAnEighthAndNoFurther) {
  FreshCache fresh;
  void *p4, *p8;
  {
    at::Tensor a = at::empty({1 << 20});  // 4 MB
    at::Tensor b = at::empty({1 << 21});  // 8 MB: too large for a's block, and in use together
    p4 = a.data_ptr();
    p8 = b.data_ptr();
    EXPECT_NE(p8, p4);
  }                                                  // both cached (12 MB was in use at once)
  at::Tensor near = at::empty({(1 << 20) - 20000});  // 80 KB smaller: within 1/8, reuses the 4 MB block
  EXPECT_EQ(near.data_ptr(), p4);
  at::Tensor tiny = at::empty({1 << 18});  // 1 MB: the cached 8 MB block would waste 7/8 of itself
  EXPECT_NE(tiny.data_ptr(), p8);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(near.data_ptr()) % (2u << 20), 0u) << "blocks from 2 MB up are 2 MB-aligned";
}

TEST(CpuAllocator, HoldsAtMostAQuarterMoreThanItsPeakInUse) {
  FreshCache fresh;
  { at::Tensor a = at::empty({5 << 20}); }  // 20 MB in use at the peak, then cached
  const auto before = core::cpu_cache_stats();
  EXPECT_GE(before.cached_bytes, size_t{20} << 20);
  // 8 MB cannot reuse the 20 MB block (it would waste more than 1/8): before mapping a new block the
  // cache gives the old one back, since 8 + 20 MB would exceed 5/4 of the 20 MB peak.
  {
    at::Tensor b = at::empty({2 << 20});
    const auto during = core::cpu_cache_stats();
    EXPECT_EQ(during.evictions - before.evictions, 1);
    EXPECT_LE(during.live_bytes + during.cached_bytes, size_t{25} << 20);
  }
  // Under the bound a freed block stays cached: 4 MB next to the cached 8 MB (12 of the 25 MB allowed).
  { at::Tensor c = at::empty({1 << 20}); }
  EXPECT_EQ(core::cpu_cache_stats().evictions, before.evictions + 1);
}

TEST(CpuAllocator, AReusedBlockFaultsNoPagesIn) {
  FreshCache fresh;
  const int64_t n = 16 << 20;  // 64 MB: glibc would mmap and munmap it every time
  { at::empty({n}).fill_(1.0f); }
  const long f0 = minor_faults();
  {
    at::Tensor again = at::empty({n});
    again.fill_(2.0f);
    EXPECT_EQ(again.sum().item<double>(), 2.0 * n);
  }
  const long faults = minor_faults() - f0;
  EXPECT_LT(faults, 200) << "64 MB is 16384 pages of 4 KB; a reused block should fault none of them";
}

TEST(CpuAllocator, StaysUnderItsLimitEvictingTheOldestFirst) {
  FreshCache fresh;
  core::set_cpu_cache_limit(size_t{9} << 20);
  const auto before = core::cpu_cache_stats();
  void* first;
  {
    at::Tensor a = at::empty({1 << 20}), b = at::empty({1 << 20}), c = at::empty({1 << 20});  // 3 x 4 MB
    first = a.data_ptr();
    a.reset();  // freed first: the oldest
  }
  const auto after = core::cpu_cache_stats();
  EXPECT_LE(after.cached_bytes, size_t{9} << 20);
  EXPECT_EQ(after.evictions - before.evictions, 1);
  at::Tensor again = at::empty({1 << 20});
  EXPECT_NE(again.data_ptr(), first) << "the least recently freed block should have been unmapped";
}

TEST(CpuAllocator, ConcurrentTensorsKeepTheirContents) {
  FreshCache fresh;
  core::set_cpu_cache_limit(size_t{64} << 20);
  std::atomic<int> bad{0};
  const int old_threads = at::get_num_threads();
  at::set_num_threads(4);
  at::parallel_for(0, 64, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int round = 0; round < 4; ++round) {
        const int64_t n = (64 << 10) + ((i * 7919 + round * 104729) % 512) * 4096;  // 256 KB .. 8.2 MB
        at::Tensor t = at::empty({n});
        float* p = t.data_ptr<float>();
        for (int64_t j = 0; j < n; j += 1024) p[j] = static_cast<float>(i * 10 + round);
        for (int64_t j = 0; j < n; j += 1024)
          if (p[j] != static_cast<float>(i * 10 + round)) ++bad;
      }
    }
  });
  at::set_num_threads(old_threads);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_LE(core::cpu_cache_stats().cached_bytes, size_t{64} << 20);
}

TEST(CpuAllocator, RawAllocateAndDeallocateLargeAndSmall) {
  c10::Allocator* a = c10::GetCPUAllocator();
  for (size_t n : {size_t{100}, size_t{3} << 20}) {
    void* p = a->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    static_cast<char*>(p)[n - 1] = 7;
    a->raw_deallocate(p);
  }
}

TEST(CpuAllocator, ABadLimitInTheEnvironmentIsNamed) {
  const std::string cmd =
      std::string("DSFORGE_CPU_CACHE_MB=lots ") + DSFORGE_CLI + " metrics bleu --hyp /dev/null --ref /dev/null 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (size_t k = fread(buf, 1, sizeof buf, pipe)) out.append(buf, k);
  pclose(pipe);
  EXPECT_NE(out.find("DSFORGE_CPU_CACHE_MB"), std::string::npos) << out;
  EXPECT_NE(out.find("'lots'"), std::string::npos) << out;
}

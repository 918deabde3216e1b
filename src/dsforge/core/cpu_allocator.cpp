#include "dsforge/core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "dsforge/core/platform.h"

namespace dsforge::core {
namespace {

constexpr size_t kMinCachedBytes = size_t{256} << 10;  // smaller requests: posix_memalign, as ATen does
constexpr size_t kGranule = size_t{64} << 10;          // block sizes are multiples of this
constexpr size_t kHugePage = size_t{2} << 20;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache;  // never destroyed: tensors may outlive static destructors
    return *cache;
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    evict_to(limit_);
  }

  void* get(size_t n) {
    const size_t size = round_up(n, kGranule);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {  // best fit, at most 1/8 wasted
        void* p = it->second;
        Block& b = blocks_.at(p);
        free_.erase(it);
        by_age_.erase(b.stamp);
        cached_ -= b.size;
        live_ += b.size;
        ++hits_;
        return p;
      }
      ++misses_;
      // A miss maps a new block: first unmap the oldest free blocks as far as needed to keep what the
      // process holds (in use + cached) within 5/4 of its largest in-use total so far, so that the cache
      // adds at most a quarter to the peak memory of a step that repeats.
      peak_live_ = std::max(peak_live_, live_ + size);
      const size_t allowed = peak_live_ + peak_live_ / 4;
      evict_to(allowed > live_ + size ? allowed - live_ - size : 0);
    }
    void* p = map_block(size);
    if (!p) {  // out of address space or memory: give back what the cache holds and try once more
      release_all();
      p = map_block(size);
    }
    TORCH_CHECK(p, "dsforge CPU allocator: cannot allocate ", n, " bytes (", std::strerror(errno), ")");
    std::lock_guard<std::mutex> lock(mu_);
    blocks_[p] = Block{size, 0};
    live_ += size;
    return p;
  }

  // Returns a block to the cache; false when p is not one of ours.
  bool put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(p);
    if (it == blocks_.end()) return false;
    Block& b = it->second;
    b.stamp = ++clock_;
    live_ -= b.size;
    cached_ += b.size;
    free_.emplace(b.size, p);
    by_age_.emplace(b.stamp, p);
    evict_to(limit_);
    return true;
  }

  void release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    evict_to(0);
    peak_live_ = live_;  // a fresh start: the bound follows what is in use from here
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    CpuCacheStats s;
    s.hits = hits_;
    s.misses = misses_;
    s.evictions = evictions_;
    s.cached_bytes = cached_;
    s.live_bytes = live_;
    s.limit_bytes = limit_;
    return s;
  }

 private:
  struct Block {
    size_t size;
    uint64_t stamp;  // when it was last freed (orders eviction)
  };

  // A fresh anonymous mapping; from 2 MB up, 2 MB-aligned and advised as transparent huge pages
  // (alloc_huge_pages, honoured where /sys/kernel/mm/transparent_hugepage/enabled allows it).
  static void* map_block(size_t size) {
    if (size >= kHugePage) return alloc_huge_pages(size);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  static void unmap_block(void* p, size_t size) {
    if (size >= kHugePage) free_huge_pages(p, size);
    else munmap(p, size);
  }

  // Unmaps the least recently freed blocks until at most `bytes` are cached. Holds mu_.
  void evict_to(size_t bytes) {
    while (cached_ > bytes && !by_age_.empty()) {
      void* p = by_age_.begin()->second;
      by_age_.erase(by_age_.begin());
      const size_t size = blocks_.at(p).size;
      for (auto [lo, hi] = free_.equal_range(size); lo != hi; ++lo)
        if (lo->second == p) {
          free_.erase(lo);
          break;
        }
      blocks_.erase(p);
      cached_ -= size;
      ++evictions_;
      unmap_block(p, size);
    }
  }

  std::mutex mu_;
  size_t peak_live_ = 0;                     // the most bytes in use at once so far
  std::unordered_map<void*, Block> blocks_;  // every block mapped here, in use or free
  std::multimap<size_t, void*> free_;        // free blocks by size
  std::map<uint64_t, void*> by_age_;         // free blocks by the time they were freed
  size_t limit_ = 0, cached_ = 0, live_ = 0;
  uint64_t clock_ = 0;
  int64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

void release_block(void* p) {
  if (p && !BlockCache::instance().put(p)) std::free(p);  // raw_deallocate of a small block
}

// c10::Allocator's interface changed across libtorch versions (allocate() lost its const and
// copy_data() became pure virtual in 2.x), so both forms are declared and none says `override`:
// whichever the installed headers declare virtual is the one overridden.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const { return make(n); }
  c10::DataPtr allocate(size_t n) { return make(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const { return &release_block; }

 private:
  static c10::DataPtr make(size_t n) {
    if (n < kMinCachedBytes) return c10::GetDefaultCPUAllocator()->allocate(n);
    void* p = BlockCache::instance().get(n);
    return {p, p, &release_block, c10::Device(c10::DeviceType::CPU)};
  }
};

size_t limit_from_env() {
  const char* v = std::getenv("DSFORGE_CPU_CACHE_MB");
  if (!v || !*v) return size_t{1024} << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  if (*end || mb < 0)
    throw std::invalid_argument(std::string("DSFORGE_CPU_CACHE_MB: expected a whole number of megabytes (0 turns the "
                                            "cache off), got '") + v + "'");
  return static_cast<size_t>(mb) << 20;
}

}  // namespace

bool install_cpu_allocator() {
  static const bool active = [] {
    const size_t limit = limit_from_env();
    if (limit == 0) return false;
    BlockCache::instance().set_limit(limit);
    // Blocks below the cache's threshold stay with glibc; keep it from handing them back to the kernel
    // after every step (its dynamic thresholds trim heap tops and mmap mid-sized blocks, each
    // reuse then faulting its pages in again: ~4000 page faults per DeepSeek micro step).
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    static auto* allocator = new CachingCpuAllocator;  // never destroyed, like the cache
    c10::SetCPUAllocator(allocator, /*priority=*/1);   // above ATen's own registration (0)
    return c10::GetCPUAllocator() == allocator;
  }();
  return active;
}

CpuCacheStats cpu_cache_stats() { return BlockCache::instance().stats(); }

void set_cpu_cache_limit(size_t bytes) { BlockCache::instance().set_limit(bytes); }

void release_cpu_cache() { BlockCache::instance().release_all(); }

}  // namespace dsforge::core

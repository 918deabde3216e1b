// A caching allocator for large CPU tensors.
//
// glibc serves every allocation above its mmap threshold (at most 32 MB, often far less) with a
// fresh mmap and returns it with munmap on free, so each step of a training loop faults in again,
// page by page, memory it held a moment ago: a [2048, 8192] float32 logits tensor costs ~40 ms of
// page faults on this VM before a single value is written, and a GPT-2 4L step takes ~45 000 such
// faults (measured with getrusage; bench/RESULTS.md). ATen's default CPU allocator goes straight to
// posix_memalign, so PyTorch on CPU pays this on every step.
//
// This allocator keeps freed blocks of at least kMinCachedBytes and hands them out again to
// requests of nearly the same size (best fit, at most 1/8 larger), so a loop that repeats the same
// shapes stops faulting after its first step. New blocks of 2 MB or more are 2 MB-aligned and
// advised as transparent huge pages, which also makes the first touch ~5x cheaper. The cache holds at
// most DSFORGE_CPU_CACHE_MB of free blocks (default 1024); the least recently freed go first. A request
// it cannot serve first unmaps the oldest free blocks as far as needed to keep in-use plus cached bytes
// within 5/4 of the largest in-use total so far (release_cpu_cache starts that count afresh), so the
// cache adds at most a quarter to a repeating step's peak memory. Small
// allocations go to posix_memalign as before. DSFORGE_CPU_CACHE_MB=0 leaves ATen's allocator alone.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dsforge::core {

// Makes the caching allocator c10's CPU allocator, once per process; later calls do nothing.
// Returns whether it is active (false when DSFORGE_CPU_CACHE_MB=0).
bool install_cpu_allocator();

struct CpuCacheStats {
  int64_t hits = 0, misses = 0;   // large requests served from the cache / by a new mapping
  int64_t evictions = 0;          // cached blocks unmapped to stay under the limit
  size_t cached_bytes = 0;        // free blocks held now
  size_t live_bytes = 0;          // large blocks in use now
  size_t limit_bytes = 0;
};
CpuCacheStats cpu_cache_stats();

// Changes the most free bytes the cache keeps (evicting down to it now).
void set_cpu_cache_limit(size_t bytes);

// Unmaps every cached free block (blocks in use are untouched).
void release_cpu_cache();

}  // namespace dsforge::core

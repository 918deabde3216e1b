// What this process may use of the machine: CPUs (affinity mask and cgroup CPU quota) and memory
// (MemAvailable and the cgroup memory limit). Containers, Slurm and `taskset` restrict both; sizing
// threads or batches from the whole machine oversubscribes them.
//
//   CpuBudget c = usable_cpus();   // c.count, and c.reason: "2 of 64 CPUs (affinity mask)"
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace dsforge {

struct CpuBudget {
  int count = 1;          // CPUs this process may run on at once
  int machine = 1;        // std::thread::hardware_concurrency()
  int affinity = 0;       // CPUs in the affinity mask (0 = unknown)
  double quota = 0;       // cgroup CPU quota in CPUs (0 = none)
  std::string reason;     // what limited `count`, for logs and `dsforge doctor`
};
CpuBudget usable_cpus();

// The smaller of MemAvailable and the cgroup's memory limit less its usage; 0 when unknown.
int64_t available_memory_bytes();

// A round counter that threads sleep on until it moves: ring() advances it and wakes every sleeper with
// one call. Each sleeper then goes on alone (Linux: a futex on the counter), where a condition variable's
// woken waiters reacquire its mutex one after another, each release a further wake-up.
//
//   const uint32_t seen = bell.round();  // before looking for work, so a ring after the look is not lost
//   if (!work()) bell.wait(seen, std::chrono::milliseconds(200));
class Bell {
 public:
  uint32_t round() const { return round_.load(std::memory_order_acquire); }
  void ring();
  // Returns once round() != seen, after the timeout, or spuriously: callers look again.
  void wait(uint32_t seen, std::chrono::milliseconds timeout);

 private:
  std::atomic<uint32_t> round_{0};
  std::atomic<int> sleepers_{0};
#ifndef __linux__
  std::mutex mu_;
  std::condition_variable cv_;
#endif
};

// Memory for arrays read whole again and again (a model's weights, every decode step): `bytes` in
// 2 MB-aligned memory advised as transparent huge pages where Linux allows them (the kernel's
// transparent_hugepage setting "always" or "madvise"): one TLB entry per 2 MB instead of per 4 KB, and
// physically contiguous, which the caches and prefetchers hold on to better than scattered 4 KB pages.
// Elsewhere plain 2 MB-aligned memory. Zero-filled; null when there is no memory for it (errno says why);
// release with free_huge_pages and the same `bytes`.
void* alloc_huge_pages(size_t bytes);
void free_huge_pages(void* p, size_t bytes);
// Hands the heap's free pages back to the system (glibc: malloc_trim), after many blocks were freed at
// once (a model's weights moved to huge pages); a no-op elsewhere.
void release_free_heap();

// cgroup "cpu.max" text ("max 100000" or "150000 100000") -> CPUs (0 = no quota). Exposed for tests.
double parse_cgroup_cpu_max(const std::string& text);

}  // namespace dsforge

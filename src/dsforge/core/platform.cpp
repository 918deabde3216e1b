#include "dsforge/core/platform.h"

#include <sched.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "dsforge/core/error.h"

namespace dsforge {
namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// cgroup v2 (unified hierarchy) first, then v1's cfs quota and period.
double cgroup_cpu_quota() {
  if (double q = parse_cgroup_cpu_max(first_line("/sys/fs/cgroup/cpu.max")); q > 0) return q;
  const std::string quota = first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
  const std::string period = first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  if (quota.empty() || period.empty()) return 0;
  const double q = std::atof(quota.c_str()), p = std::atof(period.c_str());
  return q > 0 && p > 0 ? q / p : 0;
}

int64_t cgroup_memory_headroom() {
  for (const auto& [limit_path, usage_path] :
       {std::pair<std::string, std::string>{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const std::string limit = first_line(limit_path);
    if (limit.empty() || limit == "max") continue;
    const double l = std::atof(limit.c_str()), u = std::atof(first_line(usage_path).c_str());
    if (l <= 0 || l > 1e18) continue;  // v1 reports "no limit" as a huge number
    return static_cast<int64_t>(std::max(0.0, l - u));
  }
  return 0;
}

}  // namespace

double parse_cgroup_cpu_max(const std::string& text) {
  std::istringstream ss(text);
  std::string quota, period;
  if (!(ss >> quota >> period) || quota == "max") return 0;
  const double q = std::atof(quota.c_str()), p = std::atof(period.c_str());
  return q > 0 && p > 0 ? q / p : 0;
}

CpuBudget usable_cpus() {
  CpuBudget b;
  b.machine = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  b.count = b.machine;
  b.reason = fmt(b.machine, " CPUs (the whole machine)");
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    b.affinity = CPU_COUNT(&set);
    if (b.affinity > 0 && b.affinity < b.count) {
      b.count = b.affinity;
      b.reason = fmt(b.count, " of ", b.machine, " CPUs (affinity mask)");
    }
  }
  b.quota = cgroup_cpu_quota();
  if (b.quota > 0) {
    const int q = std::max(1, static_cast<int>(std::ceil(b.quota - 1e-9)));
    if (q < b.count) {
      b.count = q;
      b.reason = fmt(b.count, " of ", b.machine, " CPUs (cgroup CPU quota ", b.quota, ")");
    }
  }
  return b;
}

int64_t available_memory_bytes() {
  int64_t avail = 0;
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ss(line.substr(13));
      int64_t kb = 0;
      ss >> kb;
      avail = kb * 1024;
      break;
    }
  }
  const int64_t headroom = cgroup_memory_headroom();
  if (headroom > 0 && (avail == 0 || headroom < avail)) return headroom;
  return avail;
}

// Sleepers count themselves before sleeping and ring() reads the count after advancing the round (both
// sequentially consistent): either ring() sees the sleeper and wakes it, or the sleeper's futex call sees
// the new round and returns at once.
void Bell::ring() {
  round_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
#ifdef __linux__
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&round_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  { std::lock_guard<std::mutex> lock(mu_); }  // a sleeper between its check and its wait is waiting after this
  cv_.notify_all();
#endif
}

void Bell::wait(uint32_t seen, std::chrono::milliseconds timeout) {
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
#ifdef __linux__
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "the futex is the counter's word");
  const auto ms = timeout.count();
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000L};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&round_), FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
#else
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return round_.load(std::memory_order_seq_cst) != seen; });
#endif
  sleepers_.fetch_sub(1, std::memory_order_seq_cst);
}

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
#ifdef __linux__
size_t whole_pages(size_t bytes) { return round_up(std::max<size_t>(bytes, 1), static_cast<size_t>(sysconf(_SC_PAGESIZE))); }
#endif
}  // namespace

void* alloc_huge_pages(size_t bytes) {
#ifdef __linux__
  // Map a huge page more than asked, keep the 2 MB-aligned part, return the rest.
  const size_t size = whole_pages(bytes);
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(raw), aligned = round_up(start, kHugePage);
  if (aligned > start) munmap(raw, aligned - start);
  if (start + kHugePage > aligned) munmap(reinterpret_cast<void*>(aligned + size), start + kHugePage - aligned);
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
#else
  const size_t size = round_up(std::max<size_t>(bytes, 1), kHugePage);  // aligned_alloc wants whole alignments
  void* p = std::aligned_alloc(kHugePage, size);
  if (p) std::memset(p, 0, size);
  return p;
#endif
}

void free_huge_pages(void* p, size_t bytes) {
  if (!p) return;
#ifdef __linux__
  munmap(p, whole_pages(bytes));
#else
  (void)bytes;
  std::free(p);
#endif
}

void release_free_heap() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace dsforge

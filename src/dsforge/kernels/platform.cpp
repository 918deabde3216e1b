#include "dsforge/kernels/platform.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "dsforge/core/log.h"
#include "dsforge/kernels/compat.h"
#include "dsforge/kernels/fused.h"

#include <dlfcn.h>
#ifdef DSFORGE_HAVE_OPENMP
#include <omp.h>
#endif

#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <utility>

namespace dsforge::kernels {
namespace {

// ------------------------------------------------------------------ float32 GEMM
// Where the build found the system BLAS (the libblas.so.3 libtorch itself uses, DSFORGE_HAVE_BLAS)
// straight to sgemm, column-major, as the same product transposed with the operands swapped: no tensor
// views or operator dispatch per product.
#ifdef DSFORGE_HAVE_BLAS
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);
extern "C" void sgemv_(const char* trans, const int* m, const int* n, const float* alpha, const float* a, const int* lda,
                       const float* x, const int* incx, const float* beta, float* y, const int* incy);
#endif

// ------------------------------------------------------------------ bfloat16 GEMM
// oneDNN's dnnl_gemm_bf16bf16f32 (row-major, AVX512-BF16 dot products where the CPU has them): about
// twice sgemm's speed single-threaded on attention's shapes here (165-200 vs 80-110 GFLOP/s). libtorch
// links oneDNN dynamically on Debian; the symbol is looked up at run time, so a libtorch that hides it
// (oneDNN linked statically) simply leaves bfloat16 attention and experts on float32
// (bf16_gemm_available() says which).
using Bf16Gemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t,
                         float, float*, int64_t);
const char* bf16_gemm_missing_reason = "";
// A oneDNN without a bf16 GEMM for this CPU answers dnnl_unimplemented: one small product with a
// known result decides, once, before any kernel relies on it.
Bf16Gemm bf16_gemm_fn() {
  static const Bf16Gemm f = [] {
    auto g = reinterpret_cast<Bf16Gemm>(dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32"));
    if (!g) {
      bf16_gemm_missing_reason = "oneDNN's dnnl_gemm_bf16bf16f32 is not exported by this libtorch";
    } else {
      const uint16_t a[4] = {0x3f80, 0x4000, 0x4040, 0x4080}, b[4] = {0x3f80, 0x3f80, 0x4000, 0xbf80};  // [1 2; 3 4], [1 1; 2 -1]
      float c[4] = {0, 0, 0, 0};
      const bool ok = g('N', 'N', 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2) == 0 && c[0] == 5 && c[1] == -1 && c[2] == 11 && c[3] == -1;
      if (!ok) bf16_gemm_missing_reason = "oneDNN's dnnl_gemm_bf16bf16f32 failed its probe product (no bf16 GEMM for this CPU)";
      if (!ok) g = nullptr;
    }
    if (!g) log_info("kernels: ", bf16_gemm_missing_reason, "; bf16 attention and experts compute in float32");
    return g;
  }();
  return f;
}

// ------------------------------------------------------------------ vector ISA
// The loops of vec.h per instruction set, best first, and the CPU features each needs
// (__builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 registers).
struct Isa {
  const char* name;
  const VectorLoops& (*table)();
  std::vector<const char*> needs;
};

const std::vector<Isa>& isas() {
  static const std::vector<Isa> all = {
      {"avx512", &vector_loops_avx512, {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"}},
      {"avx2", &vector_loops_avx2, {"avx2", "fma"}},
      {"generic", &vector_loops_generic, {}},
  };
  return all;
}

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const std::string f = feature;
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "avx512vnni") return __builtin_cpu_supports("avx512vnni");
#endif
  return false;  // not x86: only the generic loops (compiled for the target's baseline)
}

// The features of isa this CPU lacks ("" when it runs it).
std::string missing_features(const Isa& isa) {
  std::string missing;
  for (const char* f : isa.needs)
    if (!cpu_has(f)) missing += (missing.empty() ? "" : " ") + std::string(f);
  return missing;
}

const Isa* find_isa(const std::string& name) {
  for (const Isa& i : isas())
    if (name == i.name) return &i;
  return nullptr;
}

const Isa& best_isa() {
  for (const Isa& i : isas())
    if (missing_features(i).empty()) return i;
  return isas().back();
}

std::atomic<const VectorLoops*> g_loops{nullptr};
std::string g_isa_reason;  // why the first choice was made (written once, before g_loops is published)
std::atomic<bool> g_isa_overridden{false};  // by set_vector_isa

const VectorLoops* choose_vector_loops() {
  static const VectorLoops* chosen = [] {
    const Isa& best = best_isa();
    const Isa* pick = &best;
    if (best.name == std::string("generic")) {
      g_isa_reason = "this CPU lacks " + missing_features(*find_isa("avx2"));
    } else {
      g_isa_reason = "this CPU has";
      for (const char* f : best.needs) g_isa_reason += std::string(" ") + f;
    }
    if (const char* env = std::getenv("DSFORGE_KERNEL_ISA"); env && *env) {
      const Isa* want = find_isa(env);
      if (!want) {
        g_isa_reason = fmt("DSFORGE_KERNEL_ISA=", env, " is not one of generic, avx2, avx512; using the best this CPU runs");
      } else if (const std::string miss = missing_features(*want); !miss.empty()) {
        g_isa_reason = fmt("DSFORGE_KERNEL_ISA=", env, " asked, but this CPU lacks ", miss, "; using the best it runs");
      } else {
        pick = want;
        g_isa_reason = fmt("DSFORGE_KERNEL_ISA=", env, " (this CPU runs ", best.name, ")");
      }
      log_info("kernels: vector loops ", pick->name, ": ", g_isa_reason);
    } else if (pick->name == std::string("generic")) {
      log_info("kernels: vector loops generic: ", g_isa_reason);
    }
    const VectorLoops* t = &pick->table();
    g_loops.store(t, std::memory_order_release);
    return t;
  }();
  return chosen;
}

}  // namespace

// ------------------------------------------------------------------ GEMMs
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
#ifdef DSFORGE_HAVE_BLAS
  const float alpha = 1.0f;
  // A few rows (a batched decode step): sgemm would pack all of B first (few_rows.inc). One row against
  // B^T also beats sgemv there (0.24 against ~1 us for 150 x 64; equal at 2048 x 256).
  // (Not on the baseline ISA, whose dot products run at half sgemv's speed.)
  const VectorLoops& vl = vector_loops();
  if (!trans_a && M <= vl.few_rows_max && M >= (trans_b && vl.few_rows_max > 3 ? 1 : 2)) {
    (trans_b ? vl.gemm_nt_f32 : vl.gemm_nn_f32)(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M == 1 && !trans_a) {  // one row (a decode step): sgemv, which reads B once at memory speed
    const int one = 1, ld = static_cast<int>(ldb);
    // row-major B [K, N] is column-major [N, K]; B^T [N, K] row-major is column-major [K, N]
    const int rows = static_cast<int>(trans_b ? K : N), cols = static_cast<int>(trans_b ? N : K);
    if (beta == 0.0f) std::memset(C, 0, sizeof(float) * static_cast<size_t>(N));  // y may hold NaN: 0 * NaN is NaN in some BLAS
    sgemv_(trans_b ? "T" : "N", &rows, &cols, &alpha, B, &ld, A, &one, &beta, C, &one);
    return;
  }

  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
#else
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  auto view = [&](const float* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<float*>(p), {trans ? cols : rows, trans ? rows : cols}, {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == 0.0f) at::mm_out(c, view(A, M, K, lda, trans_a), view(B, K, N, ldb, trans_b));
  else c.addmm_(view(A, M, K, lda, trans_a), view(B, K, N, ldb, trans_b), beta, 1.0f);
#endif
}

void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
             const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int status = bf16_gemm_fn()(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  if (status != 0) throw std::runtime_error("dnnl_gemm_bf16bf16f32 failed with status " + std::to_string(status));
}

bool bf16_gemm_available() { return bf16_gemm_fn() != nullptr; }

void gemm_nt_bf16w(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, int64_t ldb,
                   float beta, float* C, int64_t ldc) {
  vector_loops().gemm_nt_f32_bf16w(M, N, K, A, lda, B, ldb, beta, C, ldc);
}

// OpenBLAS's OpenMP build sizes its threading by omp_get_max_threads(), which inside a parallel region
// still reports the outer team's size: a product called from one of the kernels' tasks then takes the
// threaded path for some shapes, and OpenBLAS serves one threaded call at a time, so the tasks'
// products run one after another (measured: 512x96x256 products from two tasks ran at 104 GFLOP/s in
// all, against 98 from one task and 187 with OPENBLAS_NUM_THREADS=1). Every task that calls a GEMM
// first says it has one thread; the setting belongs to the task and ends with it.
void blas_single_threaded_in_this_task() {
#ifdef DSFORGE_HAVE_OPENMP
  if (omp_in_parallel()) omp_set_num_threads(1);
#endif
}

namespace {

using TaskFn = std::function<void(int64_t task, int64_t worker)>;
using Clock = std::chrono::steady_clock;

// This thread is running a task of run_tasks: a nested call runs as a plain loop.
thread_local bool t_in_task = false;

// A thread waiting for work or for the end of a job: it spins (pause) for kSpinAlone, then yields its
// core to other runnable threads between looks (a server's HTTP threads) until kSpinYielding, then
// `sleep` (a condition wait) takes over. A decode step's products come microseconds apart, so the team
// never sleeps within a step.
constexpr std::chrono::microseconds kSpinAlone{20}, kSpinYielding{300};
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}
template <typename Ready, typename Sleep>
void spin_wait(const Ready& ready, const Sleep& sleep) {
  const auto start = Clock::now();
  for (int64_t i = 1; !ready(); ++i) {
    cpu_relax();
    if (i % 64) continue;
    const auto waited = Clock::now() - start;
    if (waited > kSpinYielding) {
      sleep();
      return;
    }
    if (waited > kSpinAlone) std::this_thread::yield();
  }
}

// The threads of run_tasks: the caller and `size` helpers, kept between calls. A job's tasks are claimed
// from one atomic word, state_ = (job number, task count, next task), by compare-and-swap: a helper runs
// task i of job g only if the word still said job g with i < count when it claimed i, so a helper that
// wakes late (descheduled, or asleep) finds the job's tasks taken and nothing to do, and the caller
// never waits for a helper that has not started: only for the tasks claimed, counted in done_. A
// job's function stays put while any of its tasks is unfinished, which is all a claimer reads.
//
// OpenMP's team (at::parallel_for) was used before: libgomp counts every pool thread a process has ever
// made (the main thread's, the engine thread's) against the CPUs and, with more of them than CPUs,
// spins only ~1000 times before sleeping in the kernel, so each of a decode step's ~50 parallel
// regions cost futex sleeps and wakes (a sixth of the serving threads' time under perf at 16 streams on
// 2 vCPUs), and its closing barrier waited for every thread of the team, scheduled or not.
class TaskTeam {
  static constexpr int kCountBits = 20;  // job numbers: the 24 bits above, wrapping
  static constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1, kJobMask = (uint64_t{1} << 24) - 1;
  static uint64_t job_of(uint64_t s) { return s >> (2 * kCountBits); }
  static int64_t count_of(uint64_t s) { return static_cast<int64_t>((s >> kCountBits) & kCountMask); }
  static int64_t next_of(uint64_t s) { return static_cast<int64_t>(s & kCountMask); }

 public:
  explicit TaskTeam(int64_t size) {
    for (int64_t i = 1; i <= size; ++i) threads_.emplace_back([this, i] { serve(i); });
  }
  int64_t size() const { return static_cast<int64_t>(threads_.size()); }
  static constexpr int64_t kMaxTasks = static_cast<int64_t>(kCountMask);

  // f over tasks [0, n) (n <= kMaxTasks) on the caller (worker 0) and helpers 1 .. workers - 1
  // (workers <= size() + 1).
  void run(int64_t n, int64_t workers, const TaskFn& f) {
    f_.store(&f, std::memory_order_relaxed);
    workers_.store(workers, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    job_ = (job_ + 1) & kJobMask;
    state_.store((job_ << (2 * kCountBits)) | (static_cast<uint64_t>(n) << kCountBits), std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      wake_.notify_all();
    }
    while (claim_and_run(job_, 0)) {
    }
    spin_wait([&] { return done_.load(std::memory_order_acquire) == n; },
              [&] {
                std::unique_lock<std::mutex> lock(mu_);
                finished_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == n; });
              });
    if (error_) std::rethrow_exception(error_);
  }

  std::mutex busy;  // one job at a time; a second caller meanwhile takes OpenMP's path

 private:
  // Claims the next task of job `job` and runs it as `worker`; false when there is none (the job is
  // done or another has replaced it).
  bool claim_and_run(uint64_t job, int64_t worker) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (job_of(s) != job || next_of(s) >= count_of(s)) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    const TaskFn& f = *f_.load(std::memory_order_acquire);
    if (!failed_.load(std::memory_order_relaxed)) {
      t_in_task = true;
      try {
        f(next_of(s), worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed_.exchange(true)) error_ = std::current_exception();  // the tasks not yet begun are skipped
      }
      t_in_task = false;
    }
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == count_of(s)) {
      std::lock_guard<std::mutex> lock(mu_);  // a caller past its spinning waits on finished_
      finished_.notify_all();
    }
    return true;
  }

  void serve(int64_t index) {
#ifdef DSFORGE_HAVE_OPENMP
    omp_set_num_threads(1);  // this thread's BLAS calls and ATen operations run on it alone
#endif
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return job_of(state_.load(std::memory_order_seq_cst)) != seen; };
      spin_wait(fresh, [&] {
        std::unique_lock<std::mutex> lock(mu_);
        sleeping_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, fresh);
        sleeping_.fetch_sub(1, std::memory_order_relaxed);
      });
      seen = job_of(state_.load(std::memory_order_acquire));
      if (index < workers_.load(std::memory_order_relaxed))
        while (claim_and_run(seen, index)) {
        }
    }
  }

  std::vector<std::thread> threads_;
  uint64_t job_ = 0;  // the caller's count of jobs
  std::atomic<uint64_t> state_{0};
  std::atomic<const TaskFn*> f_{nullptr};
  std::atomic<int64_t> workers_{0}, done_{0}, sleeping_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  std::mutex mu_;
  std::condition_variable wake_, finished_;
};

// The process's team, grown to the most helpers asked for (the old one is left running: its threads
// sleep). Never destroyed: its threads wait on it until the process ends. A forked child starts afresh.
std::atomic<TaskTeam*> g_team{nullptr};
std::mutex g_team_mu;
TaskTeam* team_of(int64_t helpers) {
  TaskTeam* t = g_team.load(std::memory_order_acquire);
  if (t && t->size() >= helpers) return t;
  std::lock_guard<std::mutex> lock(g_team_mu);
  t = g_team.load(std::memory_order_acquire);
  if (!t || t->size() < helpers) {
    static const bool registered = [] { return pthread_atfork(nullptr, nullptr, [] { g_team.store(nullptr); }) == 0; }();
    (void)registered;
    t = new TaskTeam(helpers);
    g_team.store(t, std::memory_order_release);
  }
  return t;
}

}  // namespace

void run_tasks(int64_t n, int64_t workers, const std::function<void(int64_t task, int64_t worker)>& f) {
  workers = std::min(workers, n);
  if (workers <= 1 || t_in_task || at::in_parallel_region()) {
    for (int64_t t = 0; t < n; ++t) f(t, 0);
    return;
  }
  TaskTeam* team = n <= TaskTeam::kMaxTasks ? team_of(workers - 1) : nullptr;
  std::unique_lock<std::mutex> mine;
  if (team) mine = std::unique_lock<std::mutex>(team->busy, std::try_to_lock);
  if (mine.owns_lock()) {
#ifdef DSFORGE_HAVE_OPENMP
    const int outer = omp_get_max_threads();  // the caller's tasks run their BLAS alone too
    omp_set_num_threads(1);
    struct Restore {
      int n;
      ~Restore() { omp_set_num_threads(n); }
    } restore{outer};
#endif
    team->run(n, workers, f);
    return;
  }
  std::atomic<int64_t> next{0};  // another thread holds the team: OpenMP's
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t) {
    blas_single_threaded_in_this_task();
    for (int64_t t; (t = next++) < n;) f(t, begin);
  });
}

// ------------------------------------------------------------------ vector ISA
const VectorLoops& vector_loops() {
  const VectorLoops* t = g_loops.load(std::memory_order_acquire);
  return t ? *t : *choose_vector_loops();
}

std::vector<std::string> supported_vector_isas() {
  std::vector<std::string> out;
  for (const Isa& i : isas())
    if (missing_features(i).empty()) out.push_back(i.name);
  return out;
}

void set_vector_isa(const std::string& isa) {
  const Isa* want = find_isa(isa);
  if (!want) throw std::invalid_argument("set_vector_isa: unknown ISA '" + isa + "' (generic, avx2, avx512)");
  if (const std::string miss = missing_features(*want); !miss.empty())
    throw std::invalid_argument("set_vector_isa: this CPU lacks " + miss + " for " + isa);
  choose_vector_loops();  // the first choice is made (and logged) before it is overridden
  g_loops.store(&want->table(), std::memory_order_release);
  g_isa_overridden = true;
}

// ------------------------------------------------------------------ int8 products
bool vnni_available() {
  static const bool has = cpu_has("avx512vnni");
  return has;
}

void gemm_u8s8(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int32_t* C,
               int64_t ldc) {
  const VectorLoops& vl = vector_loops();
  (vl.gemm_u8s8_nt_vnni && vnni_available() ? vl.gemm_u8s8_nt_vnni : vl.gemm_u8s8_nt)(M, N, K, A, lda, B, ldb, C, ldc);
}

std::string int8_kernel() {
  const VectorLoops& vl = vector_loops();
  return vl.gemm_u8s8_nt_vnni && vnni_available() ? std::string(vl.isa) + "-vnni" : std::string(vl.isa);
}

void int8_row_sums(const int8_t* w, int64_t N, int64_t K, int32_t* sums) {
  for (int64_t n = 0; n < N; ++n) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += w[n * K + k];
    sums[n] = s;
  }
}

void linear_w8a8(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const int8_t* w, const float* w_scale,
                 const int32_t* w_sum, float* y, int64_t ldy, bool accumulate, float static_scale) {
  thread_local std::vector<uint8_t> q;
  thread_local std::vector<int32_t> acc;
  thread_local std::vector<float> sx;
  q.resize(static_cast<size_t>(M * K));
  acc.resize(static_cast<size_t>(M * N));
  sx.resize(static_cast<size_t>(M));
  const VectorLoops& vl = vector_loops();
  if (static_scale > 0) {
    const float inv = 1.0f / static_scale;
    for (int64_t m = 0; m < M; ++m) {
      sx[m] = static_scale;
      for (int64_t k = 0; k < K; ++k) {
        const float v = std::nearbyint(x[m * ldx + k] * inv);
        q[m * K + k] = static_cast<uint8_t>(static_cast<int32_t>(v < -127.0f ? -127.0f : v > 127.0f ? 127.0f : v) + 128);
      }
    }
  } else {
    vl.quantize_rows_u8(x, ldx, M, K, q.data(), K, sx.data());
  }
  gemm_u8s8(M, N, K, q.data(), K, w, K, acc.data(), N);
  for (int64_t m = 0; m < M; ++m) {
    const int32_t* a = acc.data() + m * N;
    float* yr = y + m * ldy;
    const float s = sx[m];
    if (accumulate)
      for (int64_t n = 0; n < N; ++n) yr[n] += s * w_scale[n] * static_cast<float>(a[n] - 128 * w_sum[n]);
    else
      for (int64_t n = 0; n < N; ++n) yr[n] = s * w_scale[n] * static_cast<float>(a[n] - 128 * w_sum[n]);
  }
}

// ------------------------------------------------------------------ switches and the doctor's list
bool fused_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("DSFORGE_FUSED");
    const bool off = v && std::string(v) == "0";
    if (off) log_info("kernels: DSFORGE_FUSED=0: the fused kernels are off, every op runs as its ATen composition");
    return !off;
  }();
  return on;
}

bool autocast_enabled(c10::DeviceType t) { return compat::autocast_enabled(t); }
c10::ScalarType autocast_dtype_of(c10::DeviceType t) { return compat::autocast_dtype(t); }

std::vector<FastPath> fast_paths() {
  std::vector<FastPath> out;
  out.push_back({"fused kernels", fused_enabled(), fused_enabled() ? "cross-entropy, GELU, SwiGLU, RMSNorm, RoPE, "
                                                                     "attention, grouped experts, AdamW"
                                                                   : "DSFORGE_FUSED=0 in the environment"});
  const std::string isa = vector_loops().isa, best = best_isa().name;
  std::string detail = isa + ": " + (g_isa_overridden ? "chosen by set_vector_isa, this CPU runs " + best : g_isa_reason);
  detail += " (built for avx512, avx2 and generic, chosen at run time; DSFORGE_KERNEL_ISA=generic|avx2|avx512 forces one)";
#ifdef DSFORGE_VEC_NATIVE
  detail += "; DSFORGE_NATIVE build: the loop files also use -march=native (runs only on CPUs like the build machine's)";
#endif
  out.push_back({"vector kernels", isa == best, detail});
  const std::string i8 = int8_kernel();
  out.push_back({"int8 products", i8 == "avx512-vnni",
                 i8 == "avx512-vnni" ? "AVX-512 VNNI vpdpbusd (w8a8 decode)"
                                     : i8 + ": " + (vector_loops().gemm_u8s8_nt_vnni ? "this CPU lacks avx512vnni" : "no VNNI form for these loops") +
                                           ", so bytes are widened to int16 (half the products per instruction)"});
#ifdef DSFORGE_HAVE_BLAS
  out.push_back({"direct sgemm", true, "attention products call the system libblas.so.3 directly"});
#else
  out.push_back({"direct sgemm", false, "no BLAS found at build time: attention products go through at::mm_out"});
#endif
  const bool bf16 = bf16_gemm_available();
  out.push_back({"bf16 GEMM", bf16, bf16 ? "oneDNN dnnl_gemm_bf16bf16f32 (bf16 attention and experts)" : bf16_gemm_missing_reason});
#ifdef DSFORGE_HAVE_OPENMP
  out.push_back({"single-threaded BLAS per task", true, "kernel tasks set OpenMP's thread count to 1 for their products"});
#else
  out.push_back({"single-threaded BLAS per task", false,
                 "built without OpenMP: a threaded BLAS may serialise the tasks' products"});
#endif
  return out;
}

}  // namespace dsforge::kernels

#include "dsforge/train/memory.h"

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/platform.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/train/precision.h"

namespace dsforge::train {
namespace {

std::atomic<int64_t> g_current{0}, g_peak{0};

void note_alloc(int64_t n) {
  const int64_t now = g_current.fetch_add(n) + n;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

// Wraps the CPU allocator, keeping each block's base DataPtr and size in a table keyed by its address:
// the context of the returned DataPtr is the data pointer itself, as raw_allocate() (used by oneDNN
// kernels) requires. Both the const and non-const forms of allocate() are declared so this compiles
// against libtorch 1.x (const) and 2.x (non-const); copy_data() is required from 2.3.
std::mutex g_blocks_mutex;
std::unordered_map<void*, std::pair<c10::DataPtr, int64_t>>* g_blocks = new std::unordered_map<void*, std::pair<c10::DataPtr, int64_t>>();

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t n) const { return wrap(n); }
  c10::DataPtr allocate(size_t n) { return wrap(n); }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::Allocator* base() const { return base_; }

 private:
  static void release(void* data) {
    std::pair<c10::DataPtr, int64_t> block;  // destroyed (freed by the base allocator) outside the lock
    {
      std::lock_guard<std::mutex> lock(g_blocks_mutex);
      auto it = g_blocks->find(data);
      if (it == g_blocks->end()) return;
      block = std::move(it->second);
      g_blocks->erase(it);
    }
    g_current.fetch_sub(block.second);
  }
  c10::DataPtr wrap(size_t n) const {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    if (data == nullptr) return inner;  // zero-byte allocations
    {
      std::lock_guard<std::mutex> lock(g_blocks_mutex);
      g_blocks->emplace(data, std::make_pair(std::move(inner), static_cast<int64_t>(n)));
    }
    note_alloc(static_cast<int64_t>(n));
    return {data, data, &CountingAllocator::release, device};
  }
  c10::Allocator* base_;
};

CountingAllocator* g_installed = nullptr;

}  // namespace

TensorMemoryTracker::TensorMemoryTracker() {
  if (g_installed) throw Error("TensorMemoryTracker: already active");
  g_installed = new CountingAllocator(c10::GetAllocator(c10::DeviceType::CPU));
  g_current = 0;
  g_peak = 0;
  c10::SetAllocator(c10::DeviceType::CPU, g_installed, /*priority=*/255);
}

TensorMemoryTracker::~TensorMemoryTracker() {
  c10::SetAllocator(c10::DeviceType::CPU, g_installed->base(), /*priority=*/255);
  // Blocks allocated while tracking may outlive the tracker; their deleter needs no allocator, so the
  // wrapper object is kept (a few bytes) rather than risk a dangling pointer.
  g_installed = nullptr;
}

int64_t TensorMemoryTracker::current() const { return g_current.load(); }
int64_t TensorMemoryTracker::peak() const { return g_peak.load(); }
void TensorMemoryTracker::reset_peak() { g_peak = g_current.load(); }

MemoryProbe probe_training_memory(const model::ModelConfig& mc, int64_t seq_len, bool bf16,
                                  const model::DropoutRates& dropout, double mtp_loss_weight) {
  const int64_t row_len = model::training_row_length(mc, seq_len);
  // The probe must not move the global random stream the run depends on.
  auto gen = at::detail::getDefaultCPUGenerator();
  at::Tensor rng_state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng_state = gen.get_state();
  }
  MemoryProbe probe;
  // Forward activations grow linearly with rows; the backward pass adds transients on top (the gradient
  // of the logits, recomputed pieces) while freeing activations. Measure the live bytes at the end of
  // forward for 2 and 4 rows (after an untracked warm-up: first-call allocations are not rows), and
  // scale by how far the whole step's peak, less the parameter gradients, rises above it at 4 rows.
  // Gradients are left out because state_bytes counts them for every parameter; with few rows some
  // experts receive no tokens and no gradient, which would otherwise look like per-row cost.
  const int64_t rows[3] = {1, 2, 4};
  int64_t forward_bytes[3] = {0, 0, 0}, step_peak[3] = {0, 0, 0};
  int64_t n_params = 0;
  {
    model::CausalLm m = model::build_model(mc);
    m->set_dropout(dropout);
    m->train();
    for (const auto& p : m->parameters()) n_params += p.numel();
    auto tokens_gen = at::detail::createCPUGenerator(0);
    TensorMemoryTracker tracker;
    for (int i = 0; i < 3; ++i) {
      at::Tensor batch = at::randint(mc.vocab_size, {rows[i], row_len}, tokens_gen, at::kLong);
      for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
      const int64_t base = tracker.current();
      tracker.reset_peak();
      {
        AutocastScope autocast(c10::Device(c10::kCPU), bf16 ? at::kBFloat16 : at::kFloat);
        at::Tensor loss = m->loss(batch, mtp_loss_weight).total;
        forward_bytes[i] = tracker.current() - base;
        loss.backward();
      }
      int64_t grad_bytes = 0;
      for (const auto& p : m->parameters())
        if (p.grad().defined()) grad_bytes += p.grad().numel() * p.grad().element_size();
      step_peak[i] = tracker.peak() - base - grad_bytes;
      m->update_expert_bias(0.0);
    }
  }
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng_state);
  }
  const double fwd_row = static_cast<double>(forward_bytes[2] - forward_bytes[1]) / 2.0;
  const double fwd_base = std::max(static_cast<double>(forward_bytes[1]) - 2.0 * fwd_row, 0.0);
  const double backward_factor =
      std::max(1.0, static_cast<double>(step_peak[2]) / std::max(static_cast<double>(forward_bytes[2]), 1.0));
  probe.per_row_bytes = std::max<int64_t>(static_cast<int64_t>(fwd_row * backward_factor), 1);
  probe.activation_base = static_cast<int64_t>(fwd_base * backward_factor);
  probe.state_bytes = n_params * (16 + (bf16 ? 2 : 0));
  return probe;
}

BatchPlan plan_batch(const MemoryProbe& probe, int64_t global_batch, int64_t budget_bytes) {
  auto need = [&](int64_t b) {
    return probe.state_bytes + static_cast<int64_t>(1.1 * static_cast<double>(probe.activation_base + b * probe.per_row_bytes));
  };
  BatchPlan plan;
  plan.budget_bytes = budget_bytes;
  for (int64_t b = global_batch; b >= 1; --b) {
    if (global_batch % b != 0 || need(b) > budget_bytes) continue;
    plan.micro_batch = b;
    plan.accum_steps = global_batch / b;
    plan.estimated_bytes = need(b);
    plan.reason = fmt("micro-batch ", b, " x ", plan.accum_steps, " accumulation steps = batch ", global_batch,
                      " (estimated ", need(b) >> 20, " MiB of a ", budget_bytes >> 20, " MiB budget; ",
                      probe.per_row_bytes >> 10, " KiB per row)");
    return plan;
  }
  throw Error(fmt("train.memory_gb: even micro-batch 1 needs about ", need(1) >> 20, " MiB (", probe.state_bytes >> 20,
                  " MiB of weights, gradients and optimizer state) but the budget is ", budget_bytes >> 20,
                  " MiB; raise train.memory_gb or shrink the model or train.seq_len"));
}

int64_t available_memory_bytes() { return dsforge::available_memory_bytes(); }

}  // namespace dsforge::train

#include "dsforge/train/data_parallel.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cstdio>

#include "dsforge/core/error.h"
#include "dsforge/dist/comm.h"
#include "dsforge/dist/reducer.h"
#include "dsforge/dist/zero.h"
#include "dsforge/model/io.h"

namespace dsforge::train {
namespace {

std::string fixed_mb(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

at::Tensor cpu_rng_state() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

}  // namespace

struct DataParallel::ReducerHolder {
  std::unique_ptr<dist::GradReducer> reducer;
};

DataParallel::DataParallel(dist::Comm* comm, bool zero1, uint64_t seed) : comm_(comm), zero1_(comm && zero1), seed_(seed) {
  if (comm_) {
    rank_ = comm_->rank();
    world_ = comm_->world_size();
  }
}

std::vector<bool> DataParallel::owned(const std::vector<at::Tensor>& params) {
  if (!zero1_) return {};
  std::vector<int64_t> numels;
  for (const auto& p : params) numels.push_back(p.numel());
  owner_ = dist::partition_params(numels, world_);
  std::vector<bool> out;
  for (int o : owner_) out.push_back(o == rank_);
  return out;
}

void DataParallel::attach(const std::vector<at::Tensor>& params, const std::vector<std::string>& names, double bucket_mb) {
  params_ = params;
  names_ = names;
  shapes_.clear();
  for (const auto& p : params) shapes_.push_back(p.sizes().vec());
  if (!comm_) return;
  reducer_ = std::make_shared<ReducerHolder>();
  reducer_->reducer = std::make_unique<dist::GradReducer>(*comm_, params, bucket_mb);
}

std::string DataParallel::describe(int64_t rows_per_rank, const AdamW& opt) const {
  if (!comm_) return "";
  int64_t full = 0;
  for (const auto& p : params_) full += 2 * p.numel() * static_cast<int64_t>(p.element_size());
  const auto buckets = bucket_count();
  return fmt(world_, " ranks, ", rows_per_rank, " rows per rank per micro-batch, ", buckets,
             buckets == 1 ? " gradient bucket" : " gradient buckets", "; optimizer state ", fixed_mb(opt.state_bytes()),
             " on this rank", zero1_ ? fmt(" (ZeRO-1; plain DDP would hold ", fixed_mb(full), ")") : std::string());
}

void DataParallel::agree(const std::string& what, const std::string& value) {
  if (comm_) comm_->agree(what, value);
}

void DataParallel::share_error(std::string& error) {
  if (!comm_) return;
  error = comm_->share(error, 0);
}

int DataParallel::local_world() const { return comm_ ? comm_->env().local_world_size : 1; }

std::string DataParallel::share_text(const std::string& text) { return comm_ ? comm_->share(text, 0) : text; }

void DataParallel::broadcast_module(torch::nn::Module& m) {
  if (!comm_) return;
  for (auto& [name, t] : model::model_state(m)) comm_->broadcast(t, 0);
}

void DataParallel::broadcast_scalars(at::Tensor& doubles) {
  if (comm_) comm_->broadcast(doubles, 0);
}

void DataParallel::broadcast_moments(AdamW& opt, const TensorMap* lead_state) {
  if (!comm_) return;
  // From rank 0's (full) file to the owners: all ranks in plain DDP, one rank under ZeRO-1.
  for (size_t i = 0; i < params_.size(); ++i)
    for (const std::string kind : {"exp_avg.", "exp_avg_sq."}) {
      at::Tensor t = lead() ? lead_state->at(kind + names_[i]).to(params_[i].options()) : at::empty_like(params_[i]);
      comm_->broadcast(t, 0);
      if (!lead() && opt.owns(i)) (kind == "exp_avg." ? opt.params()[i].exp_avg : opt.params()[i].exp_avg_sq).copy_(t);
    }
  at::Tensor steps = at::tensor(std::vector<double>{static_cast<double>(opt.steps())}, at::kDouble);
  comm_->broadcast(steps, 0);
  opt.set_steps(static_cast<int64_t>(steps.item<double>()));
}

TensorMap DataParallel::gather_rng(c10::Device device) {
  TensorMap out;
  auto save = [&](const std::string& name, at::Generator gen) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    out[name] = gen.get_state();
  };
  save("cpu", at::detail::getDefaultCPUGenerator());
  if (!device.is_cpu()) save(device.str(), at::globalContext().defaultGenerator(device));
  if (!comm_) return out;
  const at::Tensor mine = out.at("cpu");
  for (int r = 1; r < world_; ++r) {
    at::Tensor t = rank_ == r ? mine.clone() : at::empty_like(mine);
    comm_->broadcast(t, r);
    if (lead()) out["cpu.rank" + std::to_string(r)] = t;
  }
  return out;
}

void DataParallel::scatter_rng(const TensorMap* lead_states, c10::Device device, int64_t step) {
  if (lead() && lead_states) {
    for (const auto& [name, state] : *lead_states) {
      // Another rank's stream, or a state written on another device (a GPU checkpoint resumed on CPU),
      // is skipped before its generator is asked for.
      if (name.rfind("cpu.rank", 0) == 0) continue;
      if (name != "cpu" && c10::Device(name) != device) continue;
      at::Generator gen = name == "cpu" ? at::detail::getDefaultCPUGenerator()
                                        : at::globalContext().defaultGenerator(c10::Device(name));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
  }
  if (!comm_) return;
  const at::Tensor mine = cpu_rng_state();
  for (int r = 1; r < world_; ++r) {
    at::Tensor t = at::empty_like(mine);
    at::Tensor have = at::zeros({1}, at::kLong);
    if (lead() && lead_states) {
      auto it = lead_states->find("cpu.rank" + std::to_string(r));
      if (it != lead_states->end() && it->second.sizes().equals(mine.sizes())) {
        t.copy_(it->second);
        have.fill_(1);
      }
    }
    comm_->broadcast(have, 0);
    comm_->broadcast(t, 0);
    if (rank_ != r) continue;
    if (have.item<int64_t>() == 1) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(t);
    } else {  // a checkpoint of fewer ranks: a fresh stream of its own
      at::manual_seed(seed_ + 1000003ULL * static_cast<uint64_t>(r) + static_cast<uint64_t>(step));
    }
  }
}

TensorMap DataParallel::gather_optimizer(const AdamW& opt) {
  if (!zero1_) return opt.state_dict();
  std::vector<at::Tensor> m(params_.size()), v(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (opt.owns(i)) {
      m[i] = opt.params()[i].exp_avg;
      v[i] = opt.params()[i].exp_avg_sq;
    }
  const auto options = params_.front().options();
  dist::broadcast_from_owners(*comm_, m, owner_, shapes_, options);
  dist::broadcast_from_owners(*comm_, v, owner_, shapes_, options);
  TensorMap out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out["exp_avg." + names_[i]] = m[i];
    out["exp_avg_sq." + names_[i]] = v[i];
  }
  out["step"] = at::tensor(std::vector<int64_t>{opt.steps()}, at::kLong);
  return out;
}

void DataParallel::share_updated_params() {
  if (zero1_) dist::broadcast_from_owners(*comm_, params_, owner_, shapes_, params_.front().options());
}

void DataParallel::begin_backward(bool last_micro_batch) {
  if (reducer_) reducer_->reducer->begin_backward(/*sync=*/last_micro_batch);
}

void DataParallel::finish_backward() {
  if (reducer_) reducer_->reducer->finish();
}

int DataParallel::launched_in_backward() const {
  return reducer_ ? static_cast<int>(reducer_->reducer->launched_in_backward()) : 0;
}

int DataParallel::bucket_count() const { return reducer_ ? static_cast<int>(reducer_->reducer->bucket_count()) : 0; }

void DataParallel::reduce_step(double& loss, double& aux, bool& stop, std::vector<at::Tensor>& sums) {
  if (!comm_) return;
  std::vector<at::Tensor> parts{at::tensor(std::vector<double>{loss, aux, stop ? 1.0 : 0.0}, at::kDouble)};
  for (const auto& c : sums) parts.push_back(c.to(at::kCPU, at::kDouble).reshape(-1));
  at::Tensor s = at::cat(parts);
  comm_->allreduce_sum(s);
  const double* sp = s.data_ptr<double>();
  loss = sp[0] / world_;
  aux = sp[1] / world_;
  stop = sp[2] > 0;
  int64_t off = 3;
  for (auto& c : sums) {
    c.copy_(s.narrow(0, off, c.numel()).view(c.sizes()));
    off += c.numel();
  }
}

}  // namespace dsforge::train

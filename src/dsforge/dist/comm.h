// The communicator of a data-parallel job: a c10d process group (Gloo on CPU) behind a small
// interface, plus the rendezvous store for strings. c10d's and Gloo's headers stay in comm.cpp.
//
// Every collective either completes or throws RankLostError within dist.timeout_s; the message names
// the ranks that stopped answering (asked through the store), never a silent hang:
//
//   auto comm = Comm::connect(env, /*timeout_s=*/120);
//   comm->agree("run config", to_toml(cfg));   // refused on every rank if any rank differs
//   comm->allreduce_sum(grads);                // in place
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/dist/env.h"

namespace dsforge::dist {

// A peer died or stopped answering; what() names it.
class RankLostError : public Error { using Error::Error; };

class Comm {
 public:
  // Rendezvous through a c10d TCPStore at MASTER_ADDR:MASTER_PORT (hosted by rank 0, or by the
  // launcher when env.agent_store) and a Gloo group over the interface that routes to the master
  // (GLOO_SOCKET_IFNAME overrides).
  static std::unique_ptr<Comm> connect(const DistEnv& env, double timeout_s);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const DistEnv& env() const { return env_; }

  // Collectives, in place, blocking. Every rank must call them in the same order.
  void allreduce_sum(at::Tensor& t);
  void broadcast(at::Tensor& t, int root);
  void barrier();

  // An all-reduce (sum) running while the caller goes on (the backward pass); wait() joins it.
  class Pending {
   public:
    Pending();
    ~Pending();
    Pending(Pending&&) noexcept;
    Pending& operator=(Pending&&) noexcept;
    void wait();
    bool valid() const;

   private:
    friend class Comm;
    struct Impl;
    std::unique_ptr<Impl> impl_;
  };
  Pending allreduce_sum_async(at::Tensor t, const std::string& what = "all-reduce");

  // Strings through the store. agree() throws ConfigError on every rank when `value` differs
  // between ranks, naming them; share() returns root's value on every rank.
  void agree(const std::string& what, const std::string& value);
  std::string share(const std::string& value, int root);

  // Turns a failed collective into RankLostError: which ranks still answer through the store.
  [[noreturn]] void fail(const std::string& during, const std::exception& cause);

 private:
  explicit Comm(DistEnv env, double timeout_s);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistEnv env_;
  double timeout_s_;
  int64_t share_seq_ = 0;
};

}  // namespace dsforge::dist

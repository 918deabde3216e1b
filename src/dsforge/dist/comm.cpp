#include "dsforge/dist/comm.h"

#include <atomic>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_NCCL)  // a CUDA libtorch built with NCCL (never Debian's): CUDA tensors go through NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "dsforge/core/log.h"

namespace dsforge::dist {
namespace {

using Group = c10d::ProcessGroupGloo;
// The work handle type differs between libtorch 1.x (ProcessGroup::Work) and 2.x (c10d::Work).
using WorkPtr = decltype(std::declval<Group&>().barrier());

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// The local address of the interface that routes to `host` (a connected UDP socket sends nothing).
std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res)
    throw ConfigError(fmt("MASTER_ADDR '", host, "' does not resolve to an IPv4 address"));
  std::string out;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    char buf[INET_ADDRSTRLEN] = {};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf))
      out = buf;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  if (out.empty()) throw ConfigError(fmt("no network route from this host to MASTER_ADDR '", host, "'"));
  return out;
}

std::string as_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<uint8_t> as_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

}  // namespace

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;  // Gloo: CPU tensors, barriers, and CUDA tensors without NCCL
#if defined(USE_C10D_NCCL)
  // Created on the first collective over a CUDA tensor (every rank reaches it at the same call), with
  // its own key prefix in the store.
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
  double timeout_s = 0;
  int rank = 0, world = 1;
#endif
  // The group a collective over `t` goes through.
  template <typename F>
  WorkPtr run(const at::Tensor& t, F&& f) {
#if defined(USE_C10D_NCCL)
    if (t.is_cuda()) {
      if (!nccl) {
        auto o = c10d::ProcessGroupNCCL::Options::create();
        o->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
        nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank, world, o);
        log_info("dist: NCCL for CUDA tensors (rank ", rank, "/", world, ")");
      }
      return f(*nccl);
    }
#endif
    return f(*group);
  }
};

struct Comm::Pending::Impl {
  WorkPtr work;
  Comm* comm = nullptr;
  std::string what;  // named in the error when it fails
};

Comm::Pending::Pending() = default;
Comm::Pending::~Pending() = default;
Comm::Pending::Pending(Pending&&) noexcept = default;
Comm::Pending& Comm::Pending::operator=(Pending&&) noexcept = default;
bool Comm::Pending::valid() const { return impl_ != nullptr; }

void Comm::Pending::wait() {
  if (!impl_) return;
  try {
    impl_->work->wait();
  } catch (const std::exception& e) {
    Comm* comm = impl_->comm;
    const std::string what = impl_->what;
    impl_.reset();
    comm->fail(what, e);
  }
  impl_.reset();
}

Comm::Comm(DistEnv env, double timeout_s) : impl_(std::make_unique<Impl>()), env_(std::move(env)), timeout_s_(timeout_s) {}
Comm::~Comm() = default;

std::unique_ptr<Comm> Comm::connect(const DistEnv& env, double timeout_s) {
  std::unique_ptr<Comm> comm(new Comm(env, timeout_s));
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(env.master_port);
  opts.isServer = env.rank == 0 && !env.agent_store;
  opts.numWorkers = env.agent_store ? c10::nullopt : c10::optional<std::size_t>(static_cast<std::size_t>(env.world_size));
  opts.waitWorkers = !env.agent_store;
  opts.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (const std::exception& e) {
    throw RankLostError(fmt("rank ", env.rank, ": rendezvous at ", env.master_addr, ":", env.master_port, " failed within ",
                            timeout_s, " s (dist.timeout_s): ", e.what()));
  }
  // Keys of a restarted job (torchrun's restart count) never meet the previous attempt's.
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  comm->impl_->store = c10::make_intrusive<c10d::PrefixStore>(std::string("dsforge/") + (restart ? restart : "0"), tcp);

  auto gopts = Group::Options::create(timeout);
  std::string where;
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
    gopts->devices.push_back(Group::createDeviceForInterface(ifname));
    where = fmt("interface ", ifname);
  } else {
    const std::string local = is_loopback(env.master_addr) ? std::string("127.0.0.1")
                                                           : local_address_towards(env.master_addr, env.master_port);
    gopts->devices.push_back(Group::createDeviceForHostname(local));
    where = local;
  }
  gopts->threads = 2;
  try {
    comm->impl_->group = c10::make_intrusive<Group>(comm->impl_->store, env.rank, env.world_size, gopts);
#if defined(USE_C10D_NCCL)
    comm->impl_->timeout_s = timeout_s;
    comm->impl_->rank = env.rank;
    comm->impl_->world = env.world_size;
#endif
  } catch (const std::exception& e) {
    throw RankLostError(fmt("rank ", env.rank, ": creating the Gloo group of ", env.world_size, " ranks on ", where,
                            " failed: ", e.what()));
  }
  log_info("dist: rank ", env.rank, "/", env.world_size, " (local ", env.local_rank, "/", env.local_world_size,
           ") via ", env.source, ", store ", env.master_addr, ":", env.master_port, ", gloo on ", where);
  return comm;
}

void Comm::allreduce_sum(at::Tensor& t) { allreduce_sum_async(t).wait(); }

Comm::Pending Comm::allreduce_sum_async(at::Tensor t, const std::string& what) {
  std::vector<at::Tensor> ts{std::move(t)};
  Pending p;
  p.impl_ = std::make_unique<Pending::Impl>();
  p.impl_->comm = this;
  p.impl_->what = what;
  try {
    p.impl_->work = impl_->run(ts[0], [&](auto& g) -> WorkPtr { return g.allreduce(ts); });
  } catch (const std::exception& e) {
    fail(what, e);
  }
  return p;
}

void Comm::broadcast(at::Tensor& t, int root) {
  std::vector<at::Tensor> ts{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  try {
    impl_->run(t, [&](auto& g) -> WorkPtr { return g.broadcast(ts, o); })->wait();
  } catch (const std::exception& e) {
    fail("broadcast", e);
  }
}

void Comm::barrier() {
  try {
    impl_->group->barrier()->wait();
  } catch (const std::exception& e) {
    fail("barrier", e);
  }
}

void Comm::agree(const std::string& what, const std::string& value) {
  auto& store = *impl_->store;
  // Every rank calls agree() the same number of times in the same order: the call's number keeps a
  // second agreement on the same subject from reading the first one's values.
  static std::atomic<int64_t> calls{0};
  const std::string key = "agree/" + std::to_string(calls++) + "/" + what + "/";
  std::vector<std::string> values(static_cast<size_t>(world_size()));
  try {
    store.set(key + std::to_string(rank()), as_bytes(value));
    for (int r = 0; r < world_size(); ++r) values[static_cast<size_t>(r)] = as_string(store.get(key + std::to_string(r)));
  } catch (const std::exception& e) {
    fail("comparing " + what, e);
  }
  std::string differ;
  for (int r = 1; r < world_size(); ++r)
    if (values[static_cast<size_t>(r)] != values[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw ConfigError(fmt("dist: the ", what, " of rank(s) ", differ, " differs from rank 0's; every rank must run the same ",
                          what, " (refused on every rank)"));
}

std::string Comm::share(const std::string& value, int root) {
  const std::string key = "share/" + std::to_string(share_seq_++);
  try {
    if (rank() == root) impl_->store->set(key, as_bytes(value));
    return as_string(impl_->store->get(key));
  } catch (const std::exception& e) {
    fail("sharing a value from rank " + std::to_string(root), e);
  }
}

void Comm::fail(const std::string& during, const std::exception& cause) {
  // Survivors check in through the store; whoever has not within 3 s is reported lost.
  std::string lost;
  try {
    auto& store = *impl_->store;
    store.set("alive/" + std::to_string(rank()), as_bytes("1"));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    std::vector<int> missing;
    do {
      missing.clear();
      for (int r = 0; r < world_size(); ++r)
        if (!store.check({"alive/" + std::to_string(r)})) missing.push_back(r);
      if (missing.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < deadline);
    for (int r : missing) lost += (lost.empty() ? "rank " : ", rank ") + std::to_string(r);
    if (lost.empty()) lost = "no rank (all answer through the store)";
  } catch (const std::exception&) {
    lost = env_.agent_store ? fmt("the launcher (its rendezvous store at ", env_.master_addr, ":", env_.master_port, " is gone)")
                            : std::string("rank 0 (it hosted the rendezvous store, which is gone)");
  }
  std::string why = cause.what();
  why = why.substr(0, why.find('\n'));  // c10::Error appends a backtrace
  throw RankLostError(fmt("rank ", rank(), ": ", during, " failed: lost ", lost, ". Restart the job to resume from the last ",
                          "checkpoint. (", why, ")"));
}

}  // namespace dsforge::dist

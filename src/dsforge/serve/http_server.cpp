// The HTTP side of `dsforge serve` (cpp-httplib from Debian). This file alone sees httplib.h, compiled
// with the definitions Debian's build of the library was made with (see CMakeLists.txt).
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <unistd.h>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/platform.h"
#include "dsforge/core/utf8.h"
#include "dsforge/deploy/export.h"
#include "dsforge/model/io.h"
#include "dsforge/serve/server.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::serve {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {
// JSON text; a byte-level model can emit bytes that are not UTF-8: they become U+FFFD, never an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string render_chat(const std::vector<std::pair<std::string, std::string>>& messages) {
  std::string out;
  for (const auto& [role, content] : messages) {
    std::string r = role;
    if (!r.empty()) r[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(r[0])));
    out += r + ": " + content + "\n";
  }
  return out + "Assistant:";
}

size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

namespace {

// An OpenAI-style error: the status and {"error": {...}}.
struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code;
  ApiError(int s, std::string msg, std::string p = "", std::string t = "invalid_request_error", std::string c = "")
      : std::runtime_error(std::move(msg)), status(s), type(std::move(t)), param(std::move(p)), code(std::move(c)) {}
};

std::string error_body(const std::string& message, const std::string& type, const std::string& param, const std::string& code) {
  json e = {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}};
  return dump(json{{"error", e}});
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e.what(), e.type, e.param, e.code), "application/json");
}

// Latency histogram in Prometheus form (cumulative buckets, seconds).
struct Histogram {
  std::vector<double> bounds{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  std::vector<int64_t> counts = std::vector<int64_t>(bounds.size() + 1, 0);
  double sum = 0;
  int64_t n = 0;
  void add(double v) {
    size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
    ++n;
  }
  void write(std::ostringstream& o, const std::string& name, const std::string& help) const {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    int64_t acc = 0;
    for (size_t i = 0; i < bounds.size(); ++i) {
      acc += counts[i];
      o << name << "_bucket{le=\"" << bounds[i] << "\"} " << acc << "\n";
    }
    o << name << "_bucket{le=\"+Inf\"} " << n << "\n" << name << "_sum " << sum << "\n" << name << "_count " << n << "\n";
  }
};

struct Metrics {
  std::mutex mu;
  std::map<std::string, int64_t> requests;  // "route,status" -> count
  Histogram ttft, inter_token, request_latency;
};

// One request's generation as the HTTP thread sees it: the engine thread appends tokens, the HTTP thread
// turns them into text (UTF-8 completed, stop strings held back) and writes it out.
// Every stream's writer sleeps on one bell (core/platform.h) that the engine rings after each round of
// steps (and at each request's end). A condition variable's wake-up per token cost ~28 us on the engine's
// threads here (the futex call, and the woken writer preempting the caller): 0.45 ms of a 16-row step's
// ~2.5. Woken once per round on a condition variable, the writers then queued on its mutex: a timer
// around the engine's after-round call read 279 us per round at 16 streams, 201-221 us on the bell (micro
// cut to 2 layers, its weights in L3).
struct Stream {
  std::mutex mu;
  std::atomic<size_t> count{0};  // ids.size(), read by a writer waiting on the bell
  std::vector<int64_t> ids;
  std::vector<double> logprobs;
  std::vector<std::vector<TokenLogprob>> tops;
  std::string text;  // the bytes of `ids` (the end-of-text token adds none)
  Clock::time_point last_token;
  std::vector<double> gaps;  // seconds between tokens, for the metrics (added by the HTTP thread)
};

struct Params {
  std::vector<int64_t> prompt;
  std::vector<std::string> stops;
  model::SampleOptions sampling;
  int64_t logprobs = -1;  // -1 = none; completions: top N alternatives; chat: top_logprobs
  bool stream = false;
  bool include_usage = true;
};

class Server {
 public:
  Server(const std::string& model_path, const ServeOptions& opts) : opts_(opts) {
    namespace fs = std::filesystem;
    std::string dir = model_path;
    if (fs::is_regular_file(model_path)) {  // a GGUF file: imported into a scratch folder, removed at exit
      imported_ = (fs::temp_directory_path() / ("dsforge-serve-" + std::to_string(::getpid()))).string();
      remove_all(imported_);
      deploy::import_gguf(model_path, imported_);
      dir = imported_;
    } else if (!fs::is_directory(dir)) {
      throw ConfigError(fmt(model_path, ": neither a model folder (config.json, weights, tokenizer.json) nor a .gguf file"));
    }
    model::CausalLm m = model::load_pretrained(dir);
    model::pack_decode_weights(m);
    tok_ = std::make_unique<tok::BpeTokenizer>(tok::BpeTokenizer::load(path_join(dir, "tokenizer.json")));
    if (tok_->vocab_size() > m->config().vocab_size)
      throw ConfigError(fmt(dir, ": the tokenizer has ", tok_->vocab_size(), " tokens, the model ", m->config().vocab_size));
    if (opts.weights == "bf16") model::keep_bf16_decode_weights(m, "serve --weights bf16: " + dir);
    else if (opts.weights != "f32") throw ConfigError(fmt("serve --weights: '", opts.weights, "' is not one of f32, bf16"));
    eos_ = m->config().eos_token_id;
    const fs::path named = fs::path(fs::absolute(model_path)).lexically_normal();
    name_ = opts.model_name.empty() ? (named.has_filename() ? named.filename() : named.parent_path().filename()).string() : opts.model_name;
    EngineOptions eo = opts.engine;
    eo.after_round = [this] { bell_.ring(); };
    engine_ = std::make_unique<Engine>(m, eo);
    created_ = static_cast<int64_t>(std::time(nullptr));
    routes();
  }

  ~Server() {
    if (!imported_.empty()) remove_all(imported_);
  }

  int run(const std::function<void(int)>& on_listening, const std::function<bool()>& stop) {
    svr_.new_task_queue = [n = opts_.max_connections] { return new httplib::ThreadPool(static_cast<size_t>(n) + 4); };
    svr_.set_payload_max_length(opts_.max_body_bytes);
    svr_.set_read_timeout(10, 0);  // a client that stops sending mid-request holds a thread this long at most
    svr_.set_write_timeout(30, 0);
    int listening = -1;  // the listening socket, seen when httplib creates it
    svr_.set_socket_options([&listening](socket_t sock) {
      httplib::default_socket_options(sock);
      listening = sock;
    });
    const int port = opts_.port == 0 ? svr_.bind_to_any_port(opts_.host) : (svr_.bind_to_port(opts_.host, opts_.port) ? opts_.port : -1);
    svr_.set_socket_options(httplib::default_socket_options);  // `listening` ends with this function
    if (port < 0) throw ConfigError(fmt("serve: cannot listen on ", opts_.host, ":", opts_.port, " (in use, or not an address of this machine)"));
    // httplib listens with a backlog of 5 connections: when more clients connect at once than that,
    // the kernel drops their SYNs and each waits out TCP's 1 s retransmission timeout (measured with 16
    // clients connecting together: TcpExtListenDrops rose, and those benchmark runs were up to 1.5x
    // slower). Listening again on the same socket raises the backlog to the connections it accepts.
    if (listening >= 0) ::listen(listening, opts_.max_connections + 16);
    std::cout << "dsforge serve: model " << name_ << " on http://" << opts_.host << ":" << port
              << " (context " << engine_->context() << ", max batch " << opts_.engine.max_batch
              << (opts_.weights == "bf16" ? ", bfloat16 decode weights" : "") << ")" << std::endl;
    if (on_listening) on_listening(port);

    // SIGTERM / SIGINT: stop taking requests, let in-flight ones finish, then stop listening.
    std::atomic<bool> quit{false};
    std::thread watcher([&] {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTERM);
      sigaddset(&set, SIGINT);
      while (!quit.load()) {
        timespec ts{0, 100 * 1000 * 1000};
        const int sig = sigtimedwait(&set, nullptr, &ts);
        if (sig == SIGTERM || sig == SIGINT || (stop && stop())) {
          std::cout << "dsforge serve: draining " << active_.load() << " request(s), then exiting" << std::endl;
          draining_ = true;
          engine_->drain();
          while (active_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          svr_.stop();
          return;
        }
      }
    });
    svr_.listen_after_bind();
    quit = true;
    watcher.join();
    return 0;
  }

 private:
  void routes() {
    svr_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      thread_local bool niced = false;  // a pool thread lowers its own priority once (Linux: per thread)
      if (!niced && opts_.http_thread_nice > 0) {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), ::getpriority(PRIO_PROCESS, 0) + opts_.http_thread_nice);
        niced = true;
      }
      if (draining_ && req.path != "/health" && req.path != "/metrics") {
        send_error(res, ApiError(503, "the server is shutting down", "", "server_error", "shutting_down"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!opts_.api_key.empty() && req.path.rfind("/v1/", 0) == 0 &&
          req.get_header_value("Authorization") != "Bearer " + opts_.api_key) {
        send_error(res, ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "", "invalid_request_error", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (active_.load() >= opts_.max_connections) {
        send_error(res, ApiError(503, "too many concurrent connections", "", "server_error", "overloaded"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr_.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(metrics_.mu);
      ++metrics_.requests[req.path + "," + std::to_string(res.status)];
    });
    svr_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_error(res, ApiError(404, "unknown route " + req.method + " " + req.path, "", "invalid_request_error", "unknown_url"));
      else if (res.status == 413) send_error(res, ApiError(413, "request body too large", "", "invalid_request_error", "payload_too_large"));
      else if (res.status == 405) send_error(res, ApiError(405, "method not allowed on " + req.path));
      else send_error(res, ApiError(res.status, "bad request"));
    });
    svr_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, e.what(), "", "server_error"));
      }
    });
    svr_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.status = draining_ ? 503 : 200;
      res.set_content(dump(json{{"status", draining_ ? "draining" : "ok"}}), "application/json");
    });
    svr_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", name_}, {"object", "model"}, {"created", created_}, {"owned_by", "dsforge"}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
    svr_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics_text(), "text/plain; version=0.0.4"); });
    svr_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
    svr_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });
  }

  std::string metrics_text() {
    const EngineStats s = engine_->stats();
    std::ostringstream o;
    o << "# HELP dsforge_requests_total HTTP requests by route and status\n# TYPE dsforge_requests_total counter\n";
    std::lock_guard<std::mutex> lock(metrics_.mu);
    for (const auto& [key, n] : metrics_.requests) {
      const size_t comma = key.rfind(',');
      o << "dsforge_requests_total{route=\"" << key.substr(0, comma) << "\",status=\"" << key.substr(comma + 1) << "\"} " << n << "\n";
    }
    auto counter = [&](const char* name, const char* help, double v, const char* type = "counter") {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << v << "\n";
    };
    counter("dsforge_prompt_tokens_total", "prompt tokens prefilled", static_cast<double>(s.prompt_tokens));
    counter("dsforge_generated_tokens_total", "tokens generated", static_cast<double>(s.generated_tokens));
    counter("dsforge_requests_completed_total", "generations that finished", static_cast<double>(s.completed));
    counter("dsforge_requests_cancelled_total", "generations cancelled (client gone, timeout)", static_cast<double>(s.cancelled));
    counter("dsforge_requests_refused_total", "requests refused with 429 (queue full)", static_cast<double>(s.refused));
    counter("dsforge_decode_steps_total", "batched decode steps", static_cast<double>(s.steps));
    counter("dsforge_engine_prefill_seconds_total", "engine time prefilling prompts", s.prefill_s);
    counter("dsforge_engine_decode_seconds_total", "engine time in batched decode steps", s.decode_s);
    counter("dsforge_engine_sample_seconds_total", "engine time sampling and delivering the steps' tokens", s.sample_s);
    counter("dsforge_running_requests", "requests generating now", static_cast<double>(s.running), "gauge");
    counter("dsforge_queue_depth", "requests waiting for a batch row", static_cast<double>(s.queued), "gauge");
    counter("dsforge_batch_occupancy", "mean running rows per decode step over max batch",
            s.steps > 0 ? s.occupancy_sum / static_cast<double>(s.steps) : 0.0, "gauge");
    metrics_.ttft.write(o, "dsforge_time_to_first_token_seconds", "time from request to its first token");
    metrics_.inter_token.write(o, "dsforge_inter_token_seconds", "time between two tokens of a stream");
    metrics_.request_latency.write(o, "dsforge_request_seconds", "time from request to its last token");
    return o.str();
  }

  // ---- request parsing ----

  static double number(const json& body, const char* key, double fallback, double lo, double hi) {
    if (!body.contains(key) || body[key].is_null()) return fallback;
    if (!body[key].is_number()) throw ApiError(400, fmt("'", key, "' must be a number"), key);
    const double v = body[key].get<double>();
    if (!(v >= lo && v <= hi)) throw ApiError(400, fmt("'", key, "' must be between ", lo, " and ", hi, ", got ", v), key);
    return v;
  }
  static int64_t integer(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!body.contains(key) || body[key].is_null()) return fallback;
    if (!body[key].is_number_integer()) throw ApiError(400, fmt("'", key, "' must be an integer"), key);
    const int64_t v = body[key].get<int64_t>();
    if (v < lo || v > hi) throw ApiError(400, fmt("'", key, "' must be between ", lo, " and ", hi, ", got ", v), key);
    return v;
  }

  Params parse(const json& body, bool chat) {
    if (!body.is_object()) throw ApiError(400, "the body must be a JSON object");
    if (body.contains("model") && !(body["model"].is_string() && body["model"].get<std::string>() == name_))
      throw ApiError(404, fmt("model '", body["model"].is_string() ? body["model"].get<std::string>() : dump(body["model"]),
                              "' is not served here (this server has '", name_, "')"), "model", "invalid_request_error", "model_not_found");
    if (body.contains("n") && !body["n"].is_null() && integer(body, "n", 1, 1, 1) != 1) throw ApiError(400, "only n = 1 is supported", "n");
    Params p;
    std::string text;
    if (chat) {
      if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
        throw ApiError(400, "'messages' must be a non-empty array of {role, content}", "messages");
      std::vector<std::pair<std::string, std::string>> messages;
      for (const auto& m : body["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
          throw ApiError(400, "each message needs a string 'role' and a string 'content'", "messages");
        const std::string role = m["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant" && role != "developer")
          throw ApiError(400, "message role '" + role + "' is not system, developer, user or assistant", "messages");
        messages.emplace_back(role == "developer" ? "system" : role, m["content"].get<std::string>());
      }
      text = render_chat(messages);
      if (body.contains("logprobs") && body["logprobs"].is_boolean() && body["logprobs"].get<bool>())
        p.logprobs = integer(body, "top_logprobs", 0, 0, 20);
      else if (body.contains("logprobs") && !body["logprobs"].is_boolean() && !body["logprobs"].is_null())
        throw ApiError(400, "'logprobs' must be true or false", "logprobs");
    } else {
      if (!body.contains("prompt")) throw ApiError(400, "'prompt' is required", "prompt");
      const json& pr = body["prompt"];
      if (pr.is_string()) {
        text = pr.get<std::string>();
      } else if (pr.is_array() && pr.size() == 1 && pr[0].is_string()) {
        text = pr[0].get<std::string>();
      } else if (pr.is_array() && !pr.empty() && pr[0].is_number_integer()) {
        for (const auto& t : pr) {
          if (!t.is_number_integer()) throw ApiError(400, "'prompt' as tokens must be an array of integers", "prompt");
          p.prompt.push_back(t.get<int64_t>());
        }
      } else {
        throw ApiError(400, "'prompt' must be a string, an array of one string, or an array of token ids", "prompt");
      }
      p.logprobs = integer(body, "logprobs", -1, 0, 5);
    }
    if (p.prompt.empty()) {
      for (int32_t id : tok_->encode(text, /*allow_special=*/false)) p.prompt.push_back(id);
      if (p.prompt.empty()) throw ApiError(400, "the prompt is empty", chat ? "messages" : "prompt");
    }
    const int64_t ctx = engine_->context();
    if (static_cast<int64_t>(p.prompt.size()) >= ctx)
      throw ApiError(400, fmt("the prompt has ", p.prompt.size(), " tokens; this model's context is ", ctx), chat ? "messages" : "prompt",
                     "invalid_request_error", "context_length_exceeded");
    const char* max_key = chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    const int64_t room = ctx - static_cast<int64_t>(p.prompt.size());
    int64_t max_new = integer(body, max_key, chat ? std::min(room, opts_.max_tokens_cap) : opts_.default_max_tokens, 1, opts_.max_tokens_cap);
    if (max_new > room)
      throw ApiError(400, fmt("max_tokens ", max_new, " plus the prompt's ", p.prompt.size(), " tokens exceed the context of ", ctx), max_key,
                     "invalid_request_error", "context_length_exceeded");
    p.sampling.max_new_tokens = max_new;
    p.sampling.temperature = number(body, "temperature", 1.0, 0.0, 2.0);
    p.sampling.top_p = number(body, "top_p", 1.0, 0.0, 1.0);
    if (p.sampling.top_p <= 0) throw ApiError(400, "'top_p' must be above 0", "top_p");
    p.sampling.top_k = integer(body, "top_k", 0, 0, 1 << 20);
    if (body.contains("seed") && !body["seed"].is_null()) {
      if (!body["seed"].is_number_integer()) throw ApiError(400, "'seed' must be an integer", "seed");
      p.sampling.seed = static_cast<uint64_t>(body["seed"].get<int64_t>());
    } else {
      p.sampling.seed = std::random_device{}();
    }
    if (body.contains("stop") && !body["stop"].is_null()) {
      const json& s = body["stop"];
      if (s.is_string()) p.stops.push_back(s.get<std::string>());
      else if (s.is_array() && s.size() <= 4) {
        for (const auto& x : s) {
          if (!x.is_string()) throw ApiError(400, "'stop' must be a string or up to 4 strings", "stop");
          p.stops.push_back(x.get<std::string>());
        }
      } else {
        throw ApiError(400, "'stop' must be a string or up to 4 strings", "stop");
      }
      for (const auto& s2 : p.stops)
        if (s2.empty()) throw ApiError(400, "a stop string must not be empty", "stop");
    }
    bool ignore_eos = false;  // vLLM's extension: generate max_tokens whatever the model says (benchmarks)
    if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
      if (!body["ignore_eos"].is_boolean()) throw ApiError(400, "'ignore_eos' must be true or false", "ignore_eos");
      ignore_eos = body["ignore_eos"].get<bool>();
    }
    if (eos_ >= 0 && !ignore_eos) p.sampling.stop_tokens = {eos_};
    if (body.contains("stream") && !body["stream"].is_null()) {
      if (!body["stream"].is_boolean()) throw ApiError(400, "'stream' must be true or false", "stream");
      p.stream = body["stream"].get<bool>();
    }
    return p;
  }

  // ---- generation ----

  std::string piece(int64_t id) const { return id == eos_ ? std::string() : tok_->token_bytes(static_cast<int32_t>(id)); }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    ++active_;
    struct Leave {
      std::atomic<int>& n;
      ~Leave() { --n; }
    } leave{active_};
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
    }
    const Params p = parse(body, chat);
    auto stream = std::make_shared<Stream>();
    auto r = std::make_shared<Request>();
    r->prompt = p.prompt;
    r->sampling = p.sampling;
    r->top_logprobs = std::max<int64_t>(p.logprobs, 0);
    const auto stops = p.stops;
    // Engine thread: record the token; a stop string ends the request.
    // The writer is woken by the bell after the round (Engine's after_round).
    r->on_token = [this, stream, stops](int64_t id, double lp, const std::vector<TokenLogprob>& top) {
      const std::string text = piece(id);
      bool go_on = true;
      {
        std::lock_guard<std::mutex> lock(stream->mu);
        const auto now = Clock::now();
        if (!stream->ids.empty()) stream->gaps.push_back(std::chrono::duration<double>(now - stream->last_token).count());
        stream->last_token = now;
        stream->ids.push_back(id);
        stream->logprobs.push_back(lp);
        stream->tops.push_back(top);
        stream->count.store(stream->ids.size(), std::memory_order_release);
        // A stop string can only be completed by this piece: look at the new bytes and the tail before them.
        const size_t before = stream->text.size();
        stream->text += text;
        for (const auto& s : stops)
          if (stream->text.find(s, before >= s.size() ? before - s.size() + 1 : 0) != std::string::npos) go_on = false;
      }
      return go_on;
    };
    // The end of the request wakes the writers too (it may come outside a round: cancelled, shut down).
    r->on_finish = [this] { bell_.ring(); };
    bool queued = false;
    try {
      queued = engine_->submit(r);
    } catch (const ConfigError& e) {
      throw ApiError(400, e.what());
    }
    if (!queued) throw ApiError(429, "the server is at capacity (queue full); retry later", "", "server_error", "rate_limited");

    const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opts_.request_timeout_s));
    const size_t n_prompt = p.prompt.size();
    const std::string model = name_;
    // The reply: the generated text cut before the first stop string.
    auto finished_text = [stops](std::string text, bool& stopped) {
      stopped = false;
      size_t cut = std::string::npos;
      for (const auto& s : stops) cut = std::min(cut, text.find(s));
      if (cut != std::string::npos) {
        text.resize(cut);
        stopped = true;
      }
      return text;
    };
    auto usage = [n_prompt](size_t completion) {
      return json{{"prompt_tokens", n_prompt}, {"completion_tokens", completion}, {"total_tokens", n_prompt + completion}};
    };
    // The inter-token gaps go into the metrics here, on the HTTP thread: the engine's threads deliver
    // tokens without a lock in common (a contended mutex puts the second one to sleep).
    auto add_gaps = [this](std::vector<double>& gaps) {
      if (gaps.empty()) return;
      std::lock_guard<std::mutex> lock(metrics_.mu);
      for (double g : gaps) metrics_.inter_token.add(g);
      gaps.clear();
    };
    auto record = [this, r, stream, add_gaps]() {
      std::vector<double> gaps;
      {
        std::lock_guard<std::mutex> lock(stream->mu);
        gaps.swap(stream->gaps);
      }
      add_gaps(gaps);
      std::lock_guard<std::mutex> lock(metrics_.mu);
      if (!r->output.empty()) metrics_.ttft.add(r->first_token_s);
      metrics_.request_latency.add(r->total_s);
    };

    if (!p.stream) {
      // The JSON answer is written when generation ends; until then a space every half second (valid
      // leading JSON whitespace) tells whether the client is still there, so a departed one is cancelled.
      res.set_chunked_content_provider("application/json", [=](size_t, httplib::DataSink& sink) {
        while (!r->wait_for(0.5)) {
          if (Clock::now() > deadline || !sink.write(" ", 1)) {
            r->cancelled = true;
            r->wait();
            sink.done();
            return false;
          }
        }
        record();
        if (r->finish_reason == "error") {
          const std::string e = error_body(r->error, "server_error", "", "");
          sink.write(e.data(), e.size());
          sink.done();
          return true;
        }
        // Generation has ended: the engine no longer touches the stream.
        const std::vector<int64_t>& ids = stream->ids;
        bool stopped = false;
        const std::string text = finished_text(stream->text, stopped);
        const std::string reason = stopped || r->finish_reason == "stop" ? "stop" : "length";
        json choice = {{"index", 0}};
        if (chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
        else choice["text"] = text;
        choice["logprobs"] = p.logprobs < 0 ? json(nullptr) : logprobs_json(ids, stream->logprobs, stream->tops, chat);
        choice["finish_reason"] = reason;
        json out = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created}, {"model", model},
                    {"choices", json::array({choice})}, {"usage", usage(ids.size())}};
        const std::string s = dump(out);
        sink.write(s.data(), s.size());
        sink.done();
        return true;
      });
      return;
    }

    // Server-sent events: a chunk per piece of text that is complete UTF-8 and cannot be the start of a stop string.
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [=](size_t, httplib::DataSink& sink) {
      auto send = [&](const json& j) {
        const std::string s = "data: " + dump(j) + "\n\n";
        return sink.write(s.data(), s.size());
      };
      auto chunk = [&](const json& delta_or_text, const json& logprobs, const json& reason) {
        json choice = {{"index", 0}};
        if (chat) choice["delta"] = delta_or_text;
        else choice["text"] = delta_or_text;
        choice["logprobs"] = logprobs;
        choice["finish_reason"] = reason;
        return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model},
                    {"choices", json::array({choice})}};
      };
      if (chat && !send(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr))) {
        r->cancelled = true;
        return false;
      }
      // A text chunk without log-probabilities, the one sent per token: the chunk rendered once around
      // a placeholder, then only the text is escaped (building the object per token cost more than the write).
      const std::string shape = dump(chunk(chat ? json{{"content", "@@"}} : json("@@"), nullptr, nullptr));
      const size_t at = shape.rfind("\"@@\"");  // the text is the last string of the chunk
      const std::string before = "data: " + shape.substr(0, at), after = shape.substr(at + 4) + "\n\n";
      auto send_text = [&](const std::string& text) {
        const std::string s = before + dump(json(text)) + after;
        return sink.write(s.data(), s.size());
      };
      size_t sent_bytes = 0, sent_tokens = 0, seen_tokens = 0;  // seen: wait for more than these (held-back text waits too)
      bool alive = true;
      for (;;) {
        // What arrived since the last chunk (the tokens beyond sent_tokens) and the text so far.
        std::vector<int64_t> new_ids;
        std::vector<double> new_lps;
        std::vector<std::vector<TokenLogprob>> new_tops;
        std::vector<double> gaps;
        std::string generated;
        const bool done = r->finished();
        if (!done) {
          const uint32_t round = bell_.round();
          if (stream->count.load(std::memory_order_acquire) <= seen_tokens && !r->finished())
            bell_.wait(round, std::chrono::milliseconds(200));
        }
        {
          std::lock_guard<std::mutex> lock(stream->mu);
          seen_tokens = stream->ids.size();
          const auto from = static_cast<long>(sent_tokens);
          new_ids.assign(stream->ids.begin() + from, stream->ids.end());
          new_lps.assign(stream->logprobs.begin() + from, stream->logprobs.end());
          new_tops.assign(stream->tops.begin() + from, stream->tops.end());
          generated = stream->text;
          gaps.swap(stream->gaps);
        }
        add_gaps(gaps);
        bool stopped = false;
        std::string text = finished_text(std::move(generated), stopped);
        size_t ready = text.size();
        if (!done && !stopped) {
          ready -= stop_holdback(text, stops);
          ready = complete_utf8_prefix(std::string_view(text).substr(0, ready));
        }
        if (ready > sent_bytes || (p.logprobs >= 0 && !new_ids.empty() && (done || ready > sent_bytes))) {
          const std::string delta = text.substr(sent_bytes, ready - sent_bytes);
          const bool sent = p.logprobs < 0 ? send_text(delta)
                                           : send(chunk(chat ? json{{"content", delta}} : json(delta),
                                                        logprobs_json(new_ids, new_lps, new_tops, chat), nullptr));
          if (!sent) {
            alive = false;
            break;
          }
          sent_bytes = ready;
          sent_tokens += new_ids.size();
        }
        if (done) break;
        if (Clock::now() > deadline) {
          alive = false;
          break;
        }
      }
      if (!alive) {
        r->cancelled = true;
        r->wait();
        return false;
      }
      record();
      if (r->finish_reason == "error") {
        const std::string e = "data: " + error_body(r->error, "server_error", "", "") + "\n\n";
        sink.write(e.data(), e.size());
      } else {
        bool stopped = false;  // generation has ended: the engine no longer touches the stream
        finished_text(stream->text, stopped);
        json last = chunk(chat ? json::object() : json(""), nullptr, stopped || r->finish_reason == "stop" ? "stop" : "length");
        last["usage"] = usage(stream->ids.size());
        send(last);
      }
      const std::string done_line = "data: [DONE]\n\n";
      sink.write(done_line.data(), done_line.size());
      sink.done();
      return true;
    });
  }

  json logprobs_json(const std::vector<int64_t>& ids, const std::vector<double>& lps, const std::vector<std::vector<TokenLogprob>>& tops,
                     bool chat) const {
    if (chat) {
      json content = json::array();
      for (size_t i = 0; i < ids.size(); ++i) {
        const std::string t = piece(ids[i]);
        json alts = json::array();
        for (const auto& a : tops[i]) {
          const std::string at = piece(a.id);
          alts.push_back({{"token", at}, {"logprob", a.logprob}, {"bytes", std::vector<int>(at.begin(), at.end())}});
        }
        content.push_back({{"token", t}, {"logprob", lps[i]}, {"bytes", std::vector<int>(t.begin(), t.end())}, {"top_logprobs", alts}});
      }
      return json{{"content", content}};
    }
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
    size_t offset = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string t = piece(ids[i]);
      tokens.push_back(t);
      token_logprobs.push_back(lps[i]);
      offsets.push_back(offset);
      offset += t.size();
      json alts = json::object();
      for (const auto& a : tops[i]) alts[piece(a.id)] = a.logprob;
      top.push_back(alts);
    }
    return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
  }

  ServeOptions opts_;
  std::string imported_;  // scratch folder of an imported GGUF file
  std::unique_ptr<tok::BpeTokenizer> tok_;
  Bell bell_;  // before engine_: the engine thread rings it until the engine is gone
  std::unique_ptr<Engine> engine_;
  int64_t eos_ = -1;
  std::string name_;
  int64_t created_ = 0;
  httplib::Server svr_;
  Metrics metrics_;
  std::atomic<int> active_{0};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> next_id_{1};
};

}  // namespace

int serve(const std::string& model_path, const ServeOptions& opts, const std::function<void(int)>& on_listening,
          const std::function<bool()>& stop) {
  // SIGTERM/SIGINT are taken by the server's watcher thread (sigtimedwait): block them in every thread
  // started from here on.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &set, &old);
  int rc = 0;
  try {
    Server server(model_path, opts);
    rc = server.run(on_listening, stop);
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return rc;
}

}  // namespace dsforge::serve

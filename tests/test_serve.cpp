// dsforge serve: the continuous-batching engine (concurrent requests get what each gets alone) and the
// OpenAI-compatible HTTP server, driven over loopback with raw sockets (including malformed and
// truncated requests) and with the official OpenAI npm client.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/serve/engine.h"
#include "dsforge/serve/server.h"
#include "test_util.h"
#include "tiny_model.h"

namespace dsforge {
namespace {

using nlohmann::json;

const std::vector<std::string> kDocs = {"the cat sat on the mat", "a dog ran in the park", "the sun is hot today",
                                        "birds sing in the morning", "the cat and the dog play", "The cat sees the red ball."};

TEST(ServeText, StopHoldbackAndChatRendering) {
  EXPECT_EQ(serve::stop_holdback("hello wor", {"world"}), 3u);
  EXPECT_EQ(serve::stop_holdback("hello", {"world"}), 0u);
  EXPECT_EQ(serve::stop_holdback("abc\nUs", {"\nUser:", "c\nX"}), 3u);
  EXPECT_EQ(serve::render_chat({{"system", "Be brief."}, {"user", "Hi"}}), "System: Be brief.\nUser: Hi\nAssistant:");
}

// A nano model with large random weights: peaked distributions, so sampling is well defined.
model::CausalLm peaked_model(int64_t vocab = 300) {
  model::ModelConfig mc = model::model_config_from_preset("nano");
  mc.vocab_size = vocab;
  mc.max_position_embeddings = 512;
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.25, 11);
  m->eval();
  return m;
}

std::shared_ptr<serve::Request> request(const std::vector<int64_t>& prompt, uint64_t seed, int64_t n, double temperature) {
  auto r = std::make_shared<serve::Request>();
  r->prompt = prompt;
  r->sampling.max_new_tokens = n;
  r->sampling.temperature = temperature;
  r->sampling.seed = seed;
  return r;
}

void concurrent_requests_get_what_each_gets_alone(model::CausalLm m) {
  std::vector<std::vector<int64_t>> prompts;
  std::mt19937_64 rng(5);
  // 3 to 39 tokens (folded into a step beside running rows, or prefilled on their own where the step
  // has no room), and one of 70 (longer than a fused step takes: always on its own).
  for (int i = 0; i < 8; ++i) {
    std::vector<int64_t> p(static_cast<size_t>(i == 7 ? 70 : 3 + 9 * i % 40));
    for (auto& t : p) t = static_cast<int64_t>(rng() % 300);
    prompts.push_back(p);
  }
  int64_t prompt_tokens = 0;
  for (const auto& p : prompts) prompt_tokens += static_cast<int64_t>(p.size());
  // Alone: dsforge generate (one prompt, positions from 0) and the engine with nothing else running.
  std::vector<std::vector<int64_t>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    model::SampleOptions o;
    o.max_new_tokens = 20;
    o.temperature = i % 2 ? 0.8 : 0.0;
    o.seed = 100 + i;
    alone.push_back(model::generate(m, {prompts[i]}, o)[0]);
    serve::Engine solo(m, {});
    auto r = request(prompts[i], 100 + i, 20, o.temperature);
    ASSERT_TRUE(solo.submit(r));
    r->wait();
    EXPECT_EQ(r->output, alone[i]) << "engine alone vs generate, prompt " << i;
  }
  // Together: staggered arrivals into a batch of 4 (the rest queue), so requests join running cohorts,
  // leave them, and wait for rows.
  serve::EngineOptions eo;
  eo.max_batch = 4;
  eo.join_floor = 32;
  serve::Engine engine(m, eo);
  std::vector<std::shared_ptr<serve::Request>> reqs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    reqs.push_back(request(prompts[i], 100 + i, 20, i % 2 ? 0.8 : 0.0));
    ASSERT_TRUE(engine.submit(reqs.back()));
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * static_cast<int>(i)));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i]->wait();
    EXPECT_EQ(reqs[i]->finish_reason, "length");
    EXPECT_EQ(reqs[i]->output, alone[i]) << "batched vs alone, prompt " << i;
  }
  const serve::EngineStats s = engine.stats();
  EXPECT_EQ(s.completed, static_cast<int64_t>(prompts.size()));
  EXPECT_EQ(s.generated_tokens, 20 * static_cast<int64_t>(prompts.size()));
  EXPECT_LT(s.steps, 20 * static_cast<int64_t>(prompts.size()));  // rows really shared steps
  EXPECT_EQ(s.prompt_tokens, prompt_tokens);
  EXPECT_GT(s.decode_s, 0.0);
  EXPECT_GT(s.prefill_s, 0.0);  // the 70-token prompt
}

TEST(ServeEngine, ConcurrentRequestsGetWhatEachGetsAlone) { concurrent_requests_get_what_each_gets_alone(peaked_model()); }

// The same with bfloat16 decode weights (serve --weights bf16): a row's tokens do not depend on the
// rows beside it there either.
TEST(ServeEngine, ConcurrentRequestsGetWhatEachGetsAloneWithBf16Weights) {
  model::CausalLm m = peaked_model();
  model::keep_bf16_decode_weights(m, "test");
  concurrent_requests_get_what_each_gets_alone(m);
  model::CausalLm gpt2 = model::build_model(model::model_config_from_preset("gpt2-tiny"));
  EXPECT_THROW(model::keep_bf16_decode_weights(gpt2, "test"), ConfigError);
}

TEST(ServeEngine, FinishHookRunsOnceAfterTheLastToken) {
  // A streaming writer waits for tokens on its own condition: the end of a request must wake it, and
  // finished() must already be true then (else the writer would wait out its timeout after the last token).
  model::CausalLm m = peaked_model();
  serve::Engine engine(m, {});
  for (const bool stop_early : {false, true}) {
    auto r = request({5, 6, 7}, 3, 12, 0.8);
    std::atomic<int> tokens{0}, finishes{0}, finished_before_hook{0};
    r->on_token = [&](int64_t, double, const std::vector<serve::TokenLogprob>&) { return ++tokens < (stop_early ? 4 : 100); };
    r->on_finish = [&, raw = r.get()] {
      EXPECT_EQ(finishes.load(), 0);
      ++finishes;
      if (raw->finished()) ++finished_before_hook;
    };
    ASSERT_TRUE(engine.submit(r));
    r->wait();
    for (int i = 0; i < 100 && finishes.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(finishes.load(), 1);
    EXPECT_EQ(finished_before_hook.load(), 1);
    EXPECT_EQ(tokens.load(), stop_early ? 4 : 12);
    EXPECT_EQ(r->finish_reason, stop_early ? "stop" : "length");
  }
}

TEST(ServeEngine, CancelledRequestsLeaveAndLimitsHold) {
  model::CausalLm m = peaked_model();
  serve::EngineOptions eo;
  eo.max_batch = 1;
  eo.max_queue = 1;
  serve::Engine engine(m, eo);
  auto a = request({1, 2, 3}, 1, 400, 0.0);
  a->on_token = [](int64_t, double, const std::vector<serve::TokenLogprob>&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return true;
  };
  ASSERT_TRUE(engine.submit(a));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto b = request({4, 5}, 1, 5, 0.0);
  ASSERT_TRUE(engine.submit(b));                        // queued behind a
  EXPECT_FALSE(engine.submit(request({6}, 1, 5, 0.0)));  // queue full
  a->cancelled = true;
  a->wait();
  EXPECT_EQ(a->finish_reason, "cancelled");
  EXPECT_LT(a->output.size(), 400u);
  b->wait();
  EXPECT_EQ(b->output.size(), 5u);
  EXPECT_THROW(engine.submit(request(std::vector<int64_t>(500, 1), 1, 100, 0.0)), ConfigError);  // beyond the context
  EXPECT_THROW(engine.submit(request({999}, 1, 1, 0.0)), ConfigError);                            // not in the vocabulary
  const auto s = engine.stats();
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(s.refused, 1);
}

// ---- HTTP over loopback ----

struct Reply {
  int status = 0;
  std::string head, body;  // body with chunked transfer decoded
};

std::string dechunk(const std::string& raw) {
  std::string out;
  size_t at = 0;
  while (at < raw.size()) {
    const size_t eol = raw.find("\r\n", at);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(raw.substr(at, eol - at), nullptr, 16);
    if (n == 0) break;
    out += raw.substr(eol + 2, n);
    at = eol + 2 + n + 2;
  }
  return out;
}

// Sends `raw` to 127.0.0.1:port and reads until the server closes (or `timeout_s`).
Reply http_raw(int port, const std::string& raw, double timeout_s = 60) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Reply r;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return r;
  }
  ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[65536];
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration<double, std::milli>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0 || ::poll(&p, 1, left) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t split = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || split == std::string::npos) return r;
  r.status = std::stoi(all.substr(9, 3));
  r.head = all.substr(0, split);
  r.body = all.substr(split + 4);
  if (r.head.find("Transfer-Encoding: chunked") != std::string::npos) r.body = dechunk(r.body);
  return r;
}

Reply http(int port, const std::string& method, const std::string& path, const std::string& body = "", const std::string& extra = "") {
  std::string raw = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra;
  if (!body.empty() || method == "POST") raw += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return http_raw(port, raw + "\r\n" + body);
}

// The server on a thread of this process, stopped by the destructor (the drain path).
struct TestServer {
  TempDir dir;
  std::string model_dir;
  std::atomic<int> port{0};
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit TestServer(serve::ServeOptions o = {}) {
    model_dir = save_tiny_model(dir.path, kDocs, "nano");
    o.port = 0;
    o.model_name = "tiny";
    thread = std::thread([this, o] {
      serve::serve(model_dir, o, [this](int p) { port = p; }, [this] { return stop.load(); });
    });
    for (int i = 0; i < 600 && port == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ~TestServer() {
    stop = true;
    thread.join();
  }
};

json parse_sse(const std::string& body, std::string* text, bool* done) {
  json last;
  *done = false;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    const std::string payload = body.substr(at + 6, end - at - 6);
    at = end;
    if (payload == "[DONE]") {
      *done = true;
      continue;
    }
    last = json::parse(payload);
    if (last["choices"][0].contains("text")) *text += last["choices"][0]["text"].get<std::string>();
    else if (last["choices"][0]["delta"].contains("content")) *text += last["choices"][0]["delta"]["content"].get<std::string>();
  }
  return last;
}

TEST(SlowServe, OpenAiRoutesAnswerAndRefuseBadInput) {
  TestServer s;
  ASSERT_GT(s.port.load(), 0);
  const int port = s.port;
  EXPECT_EQ(http(port, "GET", "/health").status, 200);
  const Reply models = http(port, "GET", "/v1/models");
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "tiny");

  const std::string body = R"({"model":"tiny","prompt":"the cat","max_tokens":8,"temperature":0.7,"seed":3})";
  const Reply plain = http(port, "POST", "/v1/completions", body);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json pj = json::parse(plain.body);
  EXPECT_EQ(pj["object"], "text_completion");
  EXPECT_EQ(pj["usage"]["completion_tokens"].get<int>() + pj["usage"]["prompt_tokens"].get<int>(), pj["usage"]["total_tokens"].get<int>());
  const Reply streamed = http(port, "POST", "/v1/completions", R"({"model":"tiny","prompt":"the cat","max_tokens":8,"temperature":0.7,"seed":3,"stream":true})");
  ASSERT_EQ(streamed.status, 200);
  EXPECT_NE(streamed.head.find("text/event-stream"), std::string::npos);
  std::string text;
  bool done = false;
  const json last = parse_sse(streamed.body, &text, &done);
  EXPECT_TRUE(done);
  EXPECT_EQ(text, pj["choices"][0]["text"].get<std::string>());  // same seed: the same text, streamed or not
  EXPECT_EQ(last["usage"]["completion_tokens"], pj["usage"]["completion_tokens"]);

  const Reply chat = http(port, "POST", "/v1/chat/completions",
                          R"({"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"logprobs":true,"top_logprobs":2})");
  ASSERT_EQ(chat.status, 200) << chat.body;
  const json cj = json::parse(chat.body);
  EXPECT_EQ(cj["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(cj["choices"][0]["logprobs"]["content"].size(), cj["usage"]["completion_tokens"].get<size_t>());

  // Bad input: the right status, an OpenAI-style error naming the parameter.
  struct Bad {
    std::string path, body;
    int status;
    std::string param;
  };
  const std::vector<Bad> bad = {
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", R"({"model":"tiny","prompt":"x","max_tokens":"ten"})", 400, "max_tokens"},
      {"/v1/completions", R"({"model":"tiny","prompt":"x","max_tokens":-1})", 400, "max_tokens"},
      {"/v1/completions", R"({"model":"tiny","prompt":"x","max_tokens":100000000})", 400, "max_tokens"},
      {"/v1/completions", R"({"model":"gpt-5","prompt":"x"})", 404, "model"},
      {"/v1/completions", R"({"model":"tiny"})", 400, "prompt"},
      {"/v1/completions", R"({"model":"tiny","prompt":"x","temperature":9})", 400, "temperature"},
      {"/v1/chat/completions", R"({"model":"tiny","messages":[{"role":"robot","content":"x"}]})", 400, "messages"},
      {"/v1/completions", json{{"model", "tiny"}, {"prompt", std::string(20000, 'a') + " b c d e f g"}}.dump(), 400, "prompt"},
  };
  for (const auto& b : bad) {
    const Reply r = http(port, "POST", b.path, b.body);
    EXPECT_EQ(r.status, b.status) << b.body << " -> " << r.body;
    const json e = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << r.body;
    if (!b.param.empty()) {
      EXPECT_EQ(e["error"]["param"], b.param) << r.body;
    }
  }
  const Reply route = http(port, "GET", "/v2/nothing");
  EXPECT_EQ(route.status, 404);
  EXPECT_TRUE(json::parse(route.body).contains("error"));
  EXPECT_EQ(http(port, "POST", "/v1/completions", std::string(2 << 20, ' ')).status, 413);

  const Reply metrics = http(port, "GET", "/metrics");
  EXPECT_NE(metrics.body.find("dsforge_generated_tokens_total"), std::string::npos);
  // The three answered requests' tokens, and a gap between each two of a request's tokens.
  auto counter = [&](const std::string& name) {
    const size_t at = metrics.body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::atof(metrics.body.c_str() + at + name.size() + 2);
  };
  const int tokens[] = {pj["usage"]["completion_tokens"].get<int>(), last["usage"]["completion_tokens"].get<int>(),
                        cj["usage"]["completion_tokens"].get<int>()};
  EXPECT_EQ(counter("dsforge_generated_tokens_total"), tokens[0] + tokens[1] + tokens[2]) << metrics.body;
  EXPECT_EQ(counter("dsforge_inter_token_seconds_count"), tokens[0] + tokens[1] + tokens[2] - 3) << metrics.body;
  EXPECT_NE(metrics.body.find("dsforge_time_to_first_token_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.body.find("route=\"/v1/completions\",status=\"400\""), std::string::npos);
  EXPECT_EQ(http(port, "GET", "/health").status, 200);  // still serving
}

TEST(SlowServe, SurvivesMalformedAndTruncatedRequests) {
  TestServer s;
  const int port = s.port;
  ASSERT_GT(port, 0);
  std::mt19937_64 rng(17);
  const std::string valid = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n"
                            R"({"model":"tiny","prompt":"the cat","max_tokens":2}  )";
  int answered = 0;
  for (int i = 0; i < 42; ++i) {
    std::string raw;
    switch (i % 6) {
      case 0: raw = valid.substr(0, rng() % valid.size()); break;  // truncated anywhere
      case 1: {                                                     // random bytes
        raw.resize(1 + rng() % 300);
        for (auto& c : raw) c = static_cast<char>(rng() % 256);
        break;
      }
      case 2: raw = "POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}"; break;
      case 3: raw = "GARBAGE / HTTP/9.9\r\nConnection: close\r\n\r\n"; break;
      case 4: {  // valid head, body with bytes flipped
        raw = valid;
        for (int k = 0; k < 5; ++k) raw[raw.size() - 1 - rng() % 52] = static_cast<char>(rng() % 256);
        break;
      }
      case 5: raw = "POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\nContent-Length: 10\r\n\r\n[1,2,3]   "; break;
    }
    const Reply r = http_raw(port, raw, 1.0);  // a truncated request is never answered: the client gives up
    if (r.status != 0) {
      ++answered;
      EXPECT_TRUE(r.status == 200 || (r.status >= 400 && r.status < 500)) << r.status << " for case " << i % 6 << ": " << r.body;
    }
  }
  EXPECT_GE(answered, 14);  // the complete ones (bad methods, bad bodies) get their 4xx
  EXPECT_EQ(http(port, "GET", "/health").status, 200);
  const Reply ok = http(port, "POST", "/v1/completions", R"({"model":"tiny","prompt":"the cat","max_tokens":3})");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(SlowServe, ClientThatLeavesIsCancelled) {
  TestServer s;
  const int port = s.port;
  ASSERT_GT(port, 0);
  // Nearly the whole context (2048): the fused decode step generates 1500 tokens of this model in under
  // the 0.3 s the client used to read, so it now reads 0.05 s of a stream that would last ~0.4 s.
  const std::string body = R"({"model":"tiny","prompt":"the cat","max_tokens":2030,"stream":true,"ignore_eos":true})";
  const std::string raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  http_raw(port, raw, 0.05);  // reads briefly, then hangs up
  json m;
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::string text = http(port, "GET", "/metrics").body;
    if (text.find("dsforge_requests_cancelled_total 1") != std::string::npos &&
        text.find("dsforge_running_requests 0") != std::string::npos)
      return;
  }
  FAIL() << http(port, "GET", "/metrics").body;
}

TEST(SlowServe, SigtermDrainsThenExitsZero) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, "nano");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::execl(DSFORGE_CLI, DSFORGE_CLI, "serve", "--model", model_dir.c_str(), "--port", "0", "--name", "tiny", "--run.threads=1",
            static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(fds[1]);
  ASSERT_GT(pid, 0);
  // The listening line names the port: "dsforge serve: model tiny on http://127.0.0.1:PORT (...)".
  std::string out;
  int port = 0;
  char buf[256];
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) break;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    const size_t at = out.find("127.0.0.1:");
    if (at != std::string::npos && out.find(' ', at) != std::string::npos) {
      port = std::stoi(out.substr(at + 10));
      break;
    }
  }
  if (port == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    FAIL() << "no listening line: " << out;
  }
  Reply streamed;
  std::thread client([&] {
    streamed = http(port, "POST", "/v1/completions", R"({"model":"tiny","prompt":"the cat","max_tokens":300,"stream":true,"ignore_eos":true})");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGTERM);
  client.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::string text;
  bool done = false;
  const json last = parse_sse(streamed.body, &text, &done);
  EXPECT_TRUE(done) << "the in-flight stream finished before the exit";
  EXPECT_EQ(last["usage"]["completion_tokens"], 300);
}

TEST(SlowServe, OfficialOpenAiClientStreamsAndNot) {
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  if (!file_exists(node_modules() + "/openai/package.json")) GTEST_SKIP() << "the npm package openai is not installed (scripts/setup.sh)";
  TestServer s;
  ASSERT_GT(s.port.load(), 0);
  const std::string out = s.dir.path + "/client.json", err = s.dir.path + "/client.err";
  const std::string cmd = "DSFORGE_NODE_MODULES='" + node_modules() + "' timeout 120 node " + source_dir() + "/tests/serve/openai_client.mjs http://127.0.0.1:" +
                          std::to_string(s.port.load()) + "/v1 tiny >'" + out + "' 2>'" + err + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(err);
  const json r = json::parse(read_file(out));
  EXPECT_EQ(r["models"][0], "tiny");
  EXPECT_EQ(r["completion"]["text"], r["completion_stream"]["text"]);
  EXPECT_GT(r["completion_stream"]["chunks"].get<int>(), 1);
  EXPECT_EQ(r["completion"]["usage"]["completion_tokens"], r["completion_stream"]["usage"]["completion_tokens"]);
  EXPECT_EQ(r["chat"]["role"], "assistant");
  EXPECT_EQ(r["chat"]["content"], r["chat_stream"]["content"]);
  EXPECT_EQ(r["chat"]["logprobs"], r["chat"]["usage"]["completion_tokens"]);
  EXPECT_EQ(r["bad_request"]["status"], 400);
  EXPECT_EQ(r["bad_request"]["param"], "max_tokens");
}

}  // namespace
}  // namespace dsforge

// `dsforge serve`: an OpenAI-compatible HTTP server over the continuous-batching engine (engine.h).
//
// Routes: POST /v1/completions, POST /v1/chat/completions (both stream server-sent events with
// "stream": true), GET /v1/models, GET /health, GET /metrics (Prometheus text). Errors are OpenAI-style
// JSON ({"error": {"message", "type", "param", "code"}}) with the matching 4xx/5xx status, and the server
// keeps serving. SIGTERM or SIGINT: new requests get 503, in-flight ones finish, then serve() returns 0.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "dsforge/serve/engine.h"

namespace dsforge::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";   // loopback unless told otherwise
  int port = 8080;                   // 0 = any free port (printed when listening)
  std::string api_key;               // non-empty: every /v1 route needs "Authorization: Bearer KEY"
  std::string model_name;            // the id /v1/models reports (default: the model folder's name)
  int64_t max_tokens_cap = 2048;     // a request asking for more gets 400
  int64_t default_max_tokens = 16;   // OpenAI's default for /v1/completions
  size_t max_body_bytes = 1 << 20;   // larger bodies get 413
  int max_connections = 64;          // more at once get 503
  double request_timeout_s = 600;    // a request still generating after this is cancelled
  // The niceness of the HTTP threads (0 = as the process): below the engine's thread, which is the one
  // every stream waits for, a stream's writer runs a little later and sends what arrived meanwhile.
  int http_thread_nice = 5;
  // "bf16": the decode step reads a bfloat16 copy of the linear weights (DeepseekV3Impl::keep_bf16_weights;
  // DeepSeek-V3 models), half the bytes per token; "f32": the weights as loaded.
  std::string weights = "f32";
  EngineOptions engine;
};

// Loads the model folder (or a .gguf file exported by dsforge), listens, and serves until SIGTERM /
// SIGINT (or until `stop` returns true, polled; for tests). `on_listening(port)` runs once bound.
int serve(const std::string& model_path, const ServeOptions& opts, const std::function<void(int port)>& on_listening = nullptr,
          const std::function<bool()>& stop = nullptr);

// The default chat rendering when the model folder has no chat template: each message as
// "Role: content\n" (System, User, Assistant), then "Assistant:" for the reply.
std::string render_chat(const std::vector<std::pair<std::string, std::string>>& messages);

// How many trailing bytes of `text` could still grow into one of `stops` (held back while streaming).
size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops);

}  // namespace dsforge::serve

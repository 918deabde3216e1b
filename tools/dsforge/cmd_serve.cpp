// dsforge serve
#include <memory>

#include "commands.h"
#include "dsforge/core/run_config.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/serve/server.h"

namespace dsforge::cli {

void add_serve_command(CLI::App& app, Context& ctx) {
  struct ServeArgs {
    std::string model;
    serve::ServeOptions o;
  };
  auto a = std::make_shared<ServeArgs>();
  serve::ServeOptions& o = a->o;
  CLI::App* s = app.add_subcommand("serve", "an OpenAI-compatible HTTP server (completions, chat, streaming) with continuous batching");
  s->add_option("--model", a->model, "model folder (dsforge's or a Hugging Face one) or a .gguf file dsforge exported")->required()->check(CLI::ExistingPath);
  s->add_option("--host", o.host, "address to listen on (loopback by default)")->capture_default_str();
  s->add_option("--port", o.port, "port (0: any free one, printed)")->capture_default_str();
  s->add_option("--api-key", o.api_key, "require 'Authorization: Bearer KEY' on /v1 routes");
  s->add_option("--name", o.model_name, "the model id clients send and /v1/models lists (default: the folder's name)");
  s->add_option("--max-batch", o.engine.max_batch, "requests decoded together in one batched step")->capture_default_str();
  s->add_option("--max-queue", o.engine.max_queue, "requests waiting beyond the batch before 429")->capture_default_str();
  s->add_option("--prefill-budget", o.engine.prefill_budget, "prompt tokens prefilled between two decode steps")->capture_default_str();
  s->add_option("--context", o.engine.context, "positions per request, prompt and output (0: the model's maximum)")->capture_default_str();
  s->add_option("--max-tokens", o.max_tokens_cap, "the largest max_tokens a request may ask")->capture_default_str();
  s->add_option("--max-body", o.max_body_bytes, "largest request body in bytes")->capture_default_str();
  s->add_option("--max-connections", o.max_connections, "concurrent connections before 503")->capture_default_str();
  s->add_option("--http-nice", o.http_thread_nice, "niceness added to the HTTP threads, below the engine's (0 = none)")
      ->check(CLI::Range(0, 19))
      ->capture_default_str();
  s->add_option("--weights", o.weights,
                "f32, or bf16: the decode step reads bfloat16 copies of the linear weights (DeepSeek-V3; half the bytes per token)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  s->add_option("--timeout", o.request_timeout_s, "seconds a request may run before it is cancelled")->capture_default_str();
  s->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      RunConfig cfg;  // run.threads and the other runtime keys apply (--run.threads=2)
      for (const auto& ov : ctx.overrides) apply_override(cfg, ov);
      validate(cfg);
      pipeline::configure_threads(cfg);
      return serve::serve(a->model, a->o);
    };
  });
}

}  // namespace dsforge::cli

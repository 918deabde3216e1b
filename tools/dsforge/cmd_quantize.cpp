// dsforge quantize
#include <cstdio>
#include <memory>

#include "commands.h"
#include "dsforge/compress/quantize.h"

namespace dsforge::cli {

void add_quantize_command(CLI::App& app, Context& ctx) {
  struct QuantizeArgs {
    std::string model, out;
    compress::QuantizeOptions o;
  };
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* q = app.add_subcommand("quantize", "int8 weights per output channel: a smaller model folder every command reads");
  q->add_option("--model", a->model, "model folder")->required()->check(CLI::ExistingDirectory);
  q->add_option("--out", a->out, "output model folder")->required();
  q->add_option("--scheme", a->o.scheme,
                "int8-weight (int8 storage, float32 arithmetic) or w8a8 (the same storage; decode multiplies int8 weights with "
                "per-token int8 activations)")
      ->capture_default_str();
  q->add_flag("--include-embeddings", a->o.include_embeddings, "also quantise the embedding and the output head");
  q->add_option("--calib", a->o.calib_path,
                "w8a8: text for static activation scales (max |x| of each linear's input over its tokens); default dynamic, per token");
  q->add_option("--calib-tokens", a->o.calib_tokens, "w8a8 --calib: calibration tokens read")->capture_default_str();
  q->callback([&ctx, a]() {
    ctx.action = [a]() {
      const auto r = compress::quantize_model(a->model, a->out, a->o);
      std::printf("wrote %s: %lld tensors (%lld parameters) int8, weights %.2f MB -> %.2f MB (%.2fx), max relative error %.4f\n",
                  a->out.c_str(), static_cast<long long>(r.tensors_quantized), static_cast<long long>(r.parameters_quantized),
                  r.bytes_before / 1e6, r.bytes_after / 1e6, static_cast<double>(r.bytes_before) / static_cast<double>(r.bytes_after),
                  r.max_relative_error);
      if (r.calib_tokens > 0)
        std::printf("calibration: %lld linears, %lld tokens through the decode path: loss %.5f (float32) -> %.5f (w8a8, static "
                    "scales), %+.3f%%\n",
                    static_cast<long long>(r.calibrated_linears), static_cast<long long>(r.calib_tokens), r.calib_loss_f32,
                    r.calib_loss_w8a8, 100 * (r.calib_loss_w8a8 / r.calib_loss_f32 - 1));
      return 0;
    };
  });
}

}  // namespace dsforge::cli

// dsforge export --format hf|gguf
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/deploy/export.h"

namespace dsforge::cli {

void add_export_command(CLI::App& app, Context& ctx) {
  struct ExportArgs {
    std::string model, format, out, dtype = "f32", type = "f32", max_shard = "5GB";
  };
  auto a = std::make_shared<ExportArgs>();
  CLI::App* e = app.add_subcommand("export", "write a model folder for other tools: a Hugging Face folder or a GGUF file for llama.cpp");
  e->add_option("--model", a->model, "model folder (config.json, weights, tokenizer.json)")->required()
      ->check(CLI::ExistingDirectory);
  e->add_option("--format", a->format, "hf | gguf")->required()->check(CLI::IsMember({"hf", "gguf"}));
  e->add_option("--out", a->out, "output folder (hf) or file (gguf)")->required();
  e->add_option("--dtype", a->dtype, "hf: weight dtype f32 | bf16 | f16")->capture_default_str();
  e->add_option("--max-shard-size", a->max_shard, "hf: largest safetensors shard (5GB, 500MB, 2GiB)")->capture_default_str();
  e->add_option("--type", a->type, "gguf: tensor type f32 | f16 | bf16 | q8_0")->capture_default_str();
  e->callback([&ctx, a]() {
    ctx.action = [a]() {
      if (a->format == "hf") {
        const auto r = deploy::export_hf(a->model, a->out, {a->dtype, deploy::parse_byte_size(a->max_shard)});
        std::cout << "wrote " << a->out << ": " << r.files.size() << " files, " << r.shards << " weight shard"
                  << (r.shards == 1 ? "" : "s") << ", " << r.weight_bytes << " bytes of " << a->dtype << " weights\n";
        return 0;
      }
      const auto r = deploy::export_gguf(a->model, a->out, deploy::parse_ggml_type(a->type));
      for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
      std::cout << "wrote " << a->out << ": GGUF v3, architecture " << r.architecture << ", " << r.tensors << " tensors ("
                << a->type << "), " << r.bytes << " bytes\n";
      return 0;
    };
  });
}

}  // namespace dsforge::cli

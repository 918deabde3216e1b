#include "dsforge/pipeline/model_tools.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/info.h"
#include "dsforge/model/io.h"

namespace dsforge::pipeline {

std::string model_info_report(const std::string& source, int64_t seq_len, bool as_json) {
  std::string path = source;
  if (std::filesystem::is_directory(source)) path = path_join(source, "config.json");
  model::ModelConfig c = model::load_model_config(path);
  if (!c.is_deepseek()) {  // dense baselines: count the built module
    const int64_t n = model::count_parameters(*model::build_model(c));
    if (as_json) return fmt("{\n  \"model_type\": \"", c.model_type, "\",\n  \"parameters\": ", n, "\n}\n");
    return fmt(source, ": ", c.model_type, ", ", c.num_hidden_layers, " layers, d=", c.hidden_size, "\n  parameters ", n, "\n");
  }
  model::ModelInfo info = model::model_info(c, seq_len);
  if (as_json) return model::model_info_json(info) + "\n";
  return fmt(source, ": ", c.model_type, ", ", c.num_hidden_layers, " layers, d=", c.hidden_size, ", ",
             c.n_routed_experts, " routed experts (top-", c.num_experts_per_tok, ") + ", c.n_shared_experts, " shared, MTP depth ",
             c.num_nextn_predict_layers, "\n", model::format_model_info(info, c));
}

void export_logits(const std::string& checkpoint_dir, const std::vector<int64_t>& tokens, const std::string& out_path) {
  if (tokens.empty()) throw ConfigError("model logits: --tokens is empty");
  auto m = model::load_pretrained(checkpoint_dir);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= m->config().vocab_size)
      throw ConfigError(fmt("model logits: token ", i, " is ", tokens[i], ", outside [0, ", m->config().vocab_size, ")"));
  at::NoGradGuard no_grad;
  m->eval();
  at::Tensor x = at::tensor(tokens, at::kLong).unsqueeze(0);
  TensorMap out;
  auto ds = std::dynamic_pointer_cast<model::DeepseekV3Impl>(m);
  if (!ds) {
    out["logits"] = m->forward(x).squeeze(0).to(at::kFloat).contiguous();
  } else {
    at::Tensor h = ds->hidden(x);
    out["logits"] = ds->logits_from_hidden(h).squeeze(0).to(at::kFloat).contiguous();
    if (ds->config().num_nextn_predict_layers > 0 && tokens.size() >= 2) {
      auto mtp = ds->mtp_logits(x, h, /*with_targets=*/false);  // slot j predicts token j + 2
      if (!mtp.empty()) out["mtp_logits"] = mtp[0].squeeze(0).to(at::kFloat).contiguous();
    }
  }
  save_safetensors(out_path, out, {{"format", "pt"}});
}

}  // namespace dsforge::pipeline

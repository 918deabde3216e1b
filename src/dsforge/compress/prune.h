// Pruning of a model folder (`dsforge prune`): unstructured magnitude pruning, and structured pruning
// of whole routed experts, attention heads or FFN neurons, each optionally followed by recovery
// fine-tuning through the one trainer (train/trainer.h).
//
//   magnitude  the `amount` smallest |w| of the linear layers' weights become 0 (embedding, head and
//              router excluded). scope "global": one threshold over all of them; "layer": every weight
//              matrix loses the same fraction. The zeros are a mask that recovery keeps: it is applied
//              again after every optimizer step. schedule "cubic" prunes gradually during recovery,
//              s_t = s_f (1 - (1 - t / t_end)^3) at every `prune_every` steps (Zhu & Gupta 2017, eq. 1
//              with s_i = 0, t_0 = 0), masks by magnitude at each such step.
//   experts    per MoE layer, routed experts are ranked on calibration text by
//              score = load / total load + gate mass / total gate mass (load: how often the router picks
//              an expert; gate mass: the sum of the routing weights it gets), and the lowest are removed:
//              their rows of the router weight and of the correction bias go, the rest are renumbered,
//              config.n_routed_experts shrinks. With group-limited routing (n_group > 1) each group
//              loses the same number of experts (so groups stay contiguous and equal); an amount that
//              does not allow this, or leaves too few experts for num_experts_per_tok, is refused.
//   heads      per attention layer (MTP blocks included), the heads with the smallest L2 norm of their
//              weights (q_b_proj / q_proj rows, kv_b_proj rows, o_proj columns) are removed;
//              config.num_attention_heads (and num_key_value_heads) shrink.
//   neurons    per SwiGLU (dense MLPs, every routed expert, the shared experts), the intermediate
//              neurons with the smallest L2 norm of (gate row, up row, down column) are removed;
//              intermediate_size and moe_intermediate_size shrink (shared experts keep n_shared * width).
//
// Structured pruning is exact for the units it removes: the pruned model computes what the original
// computes with those units switched off (zero head or neuron weights; an expert the router never
// selects). The output folder is staged beside `out_dir` and renamed into place: whole or absent.
//
//   compress::PruneOptions o; o.method = "experts"; o.amount = 0.25; o.calib_path = "calib.txt";
//   compress::PruneReport r = compress::prune_model("runs/m/model", "runs/m/pruned", o);
//
// Free of libtorch (the CLI includes it); the tensor-level pieces are in compress/prune_units.h.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>


namespace dsforge::compress {

struct PruneOptions {
  std::string method;              // magnitude | experts | heads | neurons
  double amount = 0;               // fraction removed, in [0, 1)
  std::string scope = "global";    // magnitude: global | layer
  std::string schedule = "oneshot";  // magnitude: oneshot | cubic (gradual, during recovery)
  int64_t prune_every = 10;        // cubic: steps between mask updates
  double prune_end = 0.75;         // cubic: the share of the recovery steps after which sparsity is final
  std::string calib_path;          // experts: a UTF-8 text file the router statistics come from
  int64_t calib_tokens = 32768;    // experts: at most this many calibration tokens
  int64_t calib_seq_len = 0;       // 0 = the model's training seq_len (dsforge_training.json), else 128
  // Recovery fine-tuning (0 steps = none): the run config names the token shards (its run folder's
  // shards/manifest.json, made with the model's tokenizer) and the training settings; train.max_steps
  // becomes recover_steps. Checkpoints and metrics go to recovery_dir (default "<out_dir>.recovery"),
  // where an interrupted recovery resumes.
  int64_t recover_steps = 0;
  std::string run_config;
  std::vector<std::string> overrides;  // --section.key=value for the run config
  std::string recovery_dir;
};

struct PruneReport {
  std::string method;
  double amount = 0;
  int64_t params_before = 0, params_after = 0;  // count_parameters of the loaded modules
  int64_t prunable = 0, zeros = 0;              // magnitude: weights considered and zero at the end
  // Structured: per pruned layer, the unit indices removed (experts, heads or neurons of the dense MLP
  // / of expert 0 for neurons), keyed by the layer's state-dict prefix.
  std::map<std::string, std::vector<int64_t>> removed;
  int64_t recover_steps = 0;
  double recover_final_loss = 0;
  std::string to_json() const;
};

// Loads, prunes, optionally recovers, writes `out_dir` (refused when it exists and is not empty) with
// config.json, model.safetensors, the source's tokenizer.json and dsforge_training.json, and
// dsforge_pruning.json (this report). Throws ConfigError for bad options (naming the option and what
// is allowed) and DataError for unusable calibration text.
PruneReport prune_model(const std::string& model_dir, const std::string& out_dir, const PruneOptions& opts);

// Recovery and distillation share this: the tokenizer.json of the model folder and the one at
// `tokenizer_path` must describe the same tokenizer; ConfigError naming both otherwise.
void check_same_tokenizer(const std::string& model_dir, const std::string& tokenizer_path, const std::string& what);

}  // namespace dsforge::compress

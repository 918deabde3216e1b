#include "dsforge/compress/distill.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/compress/prune.h"
#include "dsforge/compress/recovery.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/lm_task.h"
#include "dsforge/train/trainer.h"

namespace dsforge::compress {
namespace fs = std::filesystem;

at::Tensor distillation_kl(const at::Tensor& student_logits, const at::Tensor& teacher_logits, double temperature) {
  TORCH_CHECK(temperature > 0, "distillation_kl: temperature must be > 0");
  TORCH_CHECK(teacher_logits.defined() && student_logits.sizes() == teacher_logits.sizes(), "distillation_kl: student ",
              student_logits.sizes(), " vs teacher ", teacher_logits.sizes());
  const int64_t v = student_logits.size(-1);
  const at::Tensor s = at::log_softmax(student_logits.reshape({-1, v}).to(at::kFloat) / temperature, -1);  // (N, V)
  const at::Tensor t = at::log_softmax(teacher_logits.detach().reshape({-1, v}).to(at::kFloat) / temperature, -1);
  // KL(p_t || p_s) per row, summed over the vocabulary, averaged over rows ("batchmean"); T^2 keeps the
  // gradient's scale independent of T (Hinton et al. 2015).
  return (t.exp() * (t - s)).sum(-1).mean() * (temperature * temperature);
}

DistillLoss distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& targets,
                              double temperature, double alpha) {
  TORCH_CHECK(temperature > 0, "distillation_loss: temperature must be > 0");
  const int64_t V = student_logits.size(-1);
  const at::Tensor zs = student_logits.reshape({-1, V}).to(at::kFloat);  // (N, V)
  DistillLoss out;
  out.ce = -zs.log_softmax(-1).gather(1, targets.reshape({-1}).unsqueeze(1)).mean();
  if (alpha > 0) {
    out.kd = distillation_kl(student_logits, teacher_logits, temperature);
    out.total = out.kd * alpha + out.ce * (1.0 - alpha);
  } else {
    out.kd = at::zeros({}, zs.options());
    out.total = out.ce;
  }
  return out;
}

namespace {

// What the trainer optimises and checkpoints: the student and, with hidden matching, the projection.
class DistillModuleImpl : public torch::nn::Module {
 public:
  DistillModuleImpl(model::CausalLm s, int64_t d_student, int64_t d_teacher, bool with_projection) : student(std::move(s)) {
    register_module("student", student);
    if (with_projection)
      projection = register_module("projection", torch::nn::Linear(torch::nn::LinearOptions(d_student, d_teacher).bias(false)));
  }
  model::CausalLm student;
  torch::nn::Linear projection{nullptr};
};
TORCH_MODULE(DistillModule);

// (last hidden states, logits) of a model, in one pass where the model allows it.
std::pair<at::Tensor, at::Tensor> hidden_and_logits(model::CausalLmImpl& m, const at::Tensor& x, bool need_hidden) {
  if (auto* ds = dynamic_cast<model::DeepseekV3Impl*>(&m)) {
    at::Tensor h = ds->hidden(x);
    return {h, ds->logits_from_hidden(h)};
  }
  return {need_hidden ? m.hidden_states(x) : at::Tensor(), m.forward(x)};
}

// LmTask's data, schedule and MoE bias updates for the student; the loss is the distillation loss, and
// the trainer optimises and checkpoints the student together with the hidden-state projection.
class DistillTask : public train::LmTask {
 public:
  DistillTask(const RunConfig& cfg, model::CausalLm teacher, model::CausalLm student, bool student_pretrained,
              const std::string& shard, const DistillOptions& o, std::string identity)
      : LmTask(cfg, student, shard, student_pretrained),
        teacher_(std::move(teacher)),
        module_(student, student->config().hidden_size, teacher_->config().hidden_size, o.hidden_weight > 0),
        o_(o),
        identity_(std::move(identity)) {
    teacher_->eval();
    for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
  }

  model::CausalLm& student() { return model(); }
  torch::nn::Module& module() override { return *module_; }
  void init_weights(double std, uint64_t seed) override {
    LmTask::init_weights(std, seed);  // a student folder keeps its weights
    if (module_->projection) {
      at::NoGradGuard g;
      auto gen = at::detail::createCPUGenerator(seed + 17);
      module_->projection->weight.copy_(at::normal(0.0, std, module_->projection->weight.sizes(), gen, at::TensorOptions().dtype(at::kFloat)));
    }
  }
  std::string describe() const override {
    return fmt("distillation: student of ", model::count_parameters(*module_->student), " parameters, teacher of ",
               model::count_parameters(*teacher_), " (T = ", o_.temperature, ", alpha = ", o_.alpha,
               o_.hidden_weight > 0 ? fmt(", hidden ", o_.hidden_weight) : std::string(), ")");
  }
  std::string identity() const override { return identity_; }
  // The student's FLOPs and memory probe leave out the teacher's forward: not reported rather than wrong.
  double flops_per_token() const override { return 0; }
  std::optional<train::MemoryProbe> probe_memory(bool) override { return std::nullopt; }

  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override {
    at::Tensor batch = loader_->next_batch(rows, first, count).to(device);  // (count, S + 1 + D)
    const at::Tensor x = batch.narrow(1, 0, seq_len_), y = batch.narrow(1, 1, seq_len_);
    const bool hidden = o_.hidden_weight > 0;
    auto [h_s, z_s] = hidden_and_logits(*student(), x, hidden);
    at::Tensor h_t, z_t;
    if (o_.alpha > 0 || hidden) {
      at::NoGradGuard no_grad;
      if (teacher_->parameters().front().device() != device) teacher_->to(device);
      std::tie(h_t, z_t) = hidden_and_logits(*teacher_, x, hidden);
    }
    DistillLoss l = distillation_loss(z_s, z_t, y, o_.temperature, o_.alpha);
    at::Tensor total = l.total;
    if (hidden) total = total + (module_->projection(h_s) - h_t.to(h_s.scalar_type())).pow(2).mean() * o_.hidden_weight;
    if (auto* ds = dynamic_cast<model::DeepseekV3Impl*>(student().get()); ds && ds->is_training())
      for (auto& moe : ds->moe_layers())
        if (moe->aux_loss().defined()) total = total + moe->aux_loss();
    return {total, l.ce, o_.alpha > 0 ? l.kd : at::Tensor()};
  }

 private:
  model::CausalLm teacher_;
  DistillModule module_;
  DistillOptions o_;
  std::string identity_;
};

}  // namespace

DistillReport distill(const DistillOptions& o) {
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw ConfigError(fmt("distill: --alpha ", o.alpha, " must be in [0, 1]"));
  if (!(o.temperature > 0)) throw ConfigError(fmt("distill: --temperature ", o.temperature, " must be > 0"));
  if (!(o.hidden_weight >= 0)) throw ConfigError(fmt("distill: --hidden-weight ", o.hidden_weight, " must be >= 0"));
  if (o.out_dir.empty()) throw ConfigError("distill: --out DIR is required");
  if (!file_exists(path_join(o.teacher_dir, "config.json")))
    throw ConfigError(fmt("--teacher ", o.teacher_dir, ": no config.json (not a model folder)"));
  const std::string teacher_tok = path_join(o.teacher_dir, "tokenizer.json");
  model::CausalLm teacher = model::load_pretrained(o.teacher_dir);
  FinetuneData d = finetune_data(o.run_config, o.overrides, 0, o.out_dir, o.teacher_dir, teacher->config().vocab_size, "distill");

  // The student: a model folder (its tokenizer must be the teacher's), or a preset / config.json that
  // takes the teacher's vocabulary and end-of-text id (as the pipeline's train stage does).
  model::CausalLm student;
  bool pretrained = false;
  if (fs::is_directory(o.student)) {
    if (!file_exists(path_join(o.student, "config.json")))
      throw ConfigError(fmt("--student ", o.student, ": a folder without config.json (pass a model folder, a preset or a config.json)"));
    check_same_tokenizer(o.student, teacher_tok, "distill (--student folder vs --teacher)");
    student = model::load_pretrained(o.student);
    pretrained = true;
  } else {
    model::ModelConfig mc = model::load_model_config(o.student);
    const auto tok = tok::BpeTokenizer::load(teacher_tok);
    mc.vocab_size = teacher->config().vocab_size;
    mc.bos_token_id = mc.eos_token_id = tok.eot_id();
    model::validate(mc, o.student);
    student = model::build_model(mc);
  }
  if (student->config().vocab_size != teacher->config().vocab_size)
    throw ConfigError(fmt("distill: tokenizer mismatch: the student has ", student->config().vocab_size,
                          " tokens, the teacher ", teacher->config().vocab_size));
  const int64_t seq = d.cfg.train.seq_len;
  for (const auto* m : {&student, &teacher})
    if ((*m)->config().max_position_embeddings < model::training_positions((*m)->config(), seq))
      throw ConfigError(fmt("distill: train.seq_len = ", seq, " exceeds the ", m == &student ? "student" : "teacher",
                            "'s max_position_embeddings ", (*m)->config().max_position_embeddings));

  make_dirs(o.out_dir);
  write_file_atomic(path_join(o.out_dir, "config.toml"), to_toml(d.cfg));
  const std::string identity = fmt(fs::absolute(o.teacher_dir).string(), "|", o.student, "|T=", o.temperature,
                                   "|alpha=", o.alpha, "|hidden=", o.hidden_weight);
  DistillTask task(d.cfg, teacher, student, pretrained, d.train_shard, o, identity);
  train::Trainer trainer(d.cfg, task);
  train::TrainCallbacks cb;
  cb.evaluate = eval::lm_validator(task.student(), d.manifest_path, seq, d.cfg.train.batch_size, d.cfg.eval.batches);
  trainer.set_callbacks(cb);
  const train::TrainResult r = trainer.fit();
  DistillReport rep;
  rep.teacher_params = model::count_parameters(*teacher);
  rep.student_params = model::count_parameters(*task.student());
  rep.steps = r.final_step;
  rep.final_loss = r.last_loss;
  rep.interrupted = r.interrupted;
  if (r.interrupted) return rep;

  rep.model_dir = path_join(o.out_dir, "model");
  const std::string stage = rep.model_dir + ".partial";
  remove_all(stage);
  task.student()->eval();
  model::save_pretrained(stage, *task.student());
  write_file_atomic(path_join(stage, "tokenizer.json"), read_file(teacher_tok));
  model::save_training_info(stage, {seq, r.final_step});
  remove_all(rep.model_dir);  // this run's own output folder: a re-run replaces it
  publish_dir(stage, rep.model_dir, "distilled model");
  nlohmann::ordered_json j = {{"teacher", o.teacher_dir},       {"student", o.student},           {"temperature", o.temperature},
                              {"alpha", o.alpha},               {"hidden_weight", o.hidden_weight}, {"steps", rep.steps},
                              {"teacher_params", rep.teacher_params}, {"student_params", rep.student_params},
                              {"final_train_loss", rep.final_loss}};
  write_file_atomic(path_join(o.out_dir, "distill.json"), j.dump(2) + "\n");
  return rep;
}

}  // namespace dsforge::compress

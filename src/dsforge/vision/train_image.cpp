#include "dsforge/vision/train_image.h"

#include "dsforge/vision/models.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/train/adversarial.h"
#include "dsforge/train/task.h"

namespace dsforge::vision {

at::Tensor image_batch(const ImageDataset& d, const std::vector<int64_t>& indices, const AugmentOptions* augment, uint64_t seed,
                       int64_t step, int64_t first_row, bool normalise) {
  const auto n = static_cast<int64_t>(indices.size());
  const int64_t C = d.channels, plane = d.height * d.width;
  at::Tensor x = at::empty({n, C, d.height, d.width}, at::kFloat);
  float* out = x.data_ptr<float>();
  std::vector<uint8_t> buf(static_cast<size_t>(d.image_bytes()));
  for (int64_t k = 0; k < n; ++k) {
    const uint8_t* src = d.image(indices[static_cast<size_t>(k)]);
    if (augment && augment->any()) {
      augment_image(src, C, d.height, d.width, buf.data(), *augment, image_seed(seed, step, first_row + k));
      src = buf.data();
    }
    for (int64_t c = 0; c < C; ++c) {
      const float mean = static_cast<float>(d.mean.empty() || !normalise ? 0.0 : d.mean[static_cast<size_t>(c)]);
      const float inv =
          static_cast<float>(1.0 / (d.stddev.empty() || !normalise ? 1.0 : std::max(1e-6, d.stddev[static_cast<size_t>(c)])));
      float* o = out + (k * C + c) * plane;
      const uint8_t* s = src + c * plane;
      for (int64_t i = 0; i < plane; ++i) o[i] = (static_cast<float>(s[i]) * (1.0f / 255.0f) - mean) * inv;
    }
  }
  return x;
}

at::Tensor normalise_pixels(const at::Tensor& x01, const std::vector<double>& mean, const std::vector<double>& stddev) {
  const int64_t C = x01.size(1);
  std::vector<float> m(static_cast<size_t>(C), 0.0f), inv(static_cast<size_t>(C), 1.0f);
  for (size_t c = 0; c < m.size(); ++c) {
    if (c < mean.size()) m[c] = static_cast<float>(mean[c]);
    if (c < stddev.size()) inv[c] = static_cast<float>(1.0 / std::max(1e-6, stddev[c]));
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  return (x01 - at::tensor(m, opts).to(x01.device()).view({1, C, 1, 1})) * at::tensor(inv, opts).to(x01.device()).view({1, C, 1, 1});
}

namespace {

// Image classification as a task of the one training loop.
class ImageTask : public train::TrainTask {
 public:
  ImageTask(ImageClassifier m, const ImageDataset& d, AugmentOptions a, uint64_t seed, std::string identity,
            std::optional<train::AttackOptions> adversarial, double adversarial_weight)
      : m_(std::move(m)), d_(d), a_(a), seed_(seed), identity_(std::move(identity)), adversarial_(std::move(adversarial)),
        adversarial_weight_(adversarial_weight), stream_(d.size(), seed) {}
  torch::nn::Module& module() override { return *m_; }
  void init_weights(double, uint64_t seed) override { m_->init_weights(seed); }
  std::string describe() const override {
    return fmt(m_->config().arch, ": ", model::count_parameters(*m_), " parameters, ", d_.size(), " training images ", d_.channels, "x",
               d_.height, "x", d_.width, ", augmentation ", a_.describe(),
               adversarial_ ? fmt(", adversarial training: ", adversarial_->describe(), " (weight ", adversarial_weight_, ")") : "");
  }
  std::string config_json() const override { return to_json(m_->config()).dump(); }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override {
    if (step != step_) step_ = step, micro_ = 0;
    const std::vector<int64_t> idx = stream_.next(rows, first, count);
    // Each image's augmentation is keyed by (step, its row in the step): the same after a resume.
    const int64_t row = micro_++ * rows + first;
    at::Tensor x = image_batch(d_, idx, &a_, seed_, step, row, /*normalise=*/!adversarial_).to(device);
    std::vector<int64_t> labels;
    for (const int64_t i : idx) labels.push_back(d_.labels[static_cast<size_t>(i)]);
    at::Tensor y = at::tensor(labels, at::kLong).to(device);
    if (!adversarial_) {
      at::Tensor loss = at::cross_entropy_loss(m_->forward(x).to(at::kFloat), y);
      return {loss, loss, at::Tensor()};
    }
    // x is in pixels [0, 1]: attack there (the model in eval mode, so dropout and batch-norm statistics
    // stay out of the attack), then train on the attacked batch.
    auto ce = [&](const at::Tensor& px, at::Reduction::Reduction r) {
      return at::cross_entropy_loss(m_->forward(normalise_pixels(px, d_.mean, d_.stddev)).to(at::kFloat), y, {}, r);
    };
    train::AttackOptions a = *adversarial_;
    a.seed = image_seed(seed_ ^ 0xad5e11ULL, step, row);
    m_->eval();
    const at::Tensor x_adv = train::perturb([&](const at::Tensor& px) { return ce(px, at::Reduction::None); }, x, a, {}, train::Box{0, 1});
    m_->train();
    at::Tensor loss = ce(x_adv, at::Reduction::Mean);
    if (adversarial_weight_ < 1) loss = adversarial_weight_ * loss + (1 - adversarial_weight_) * ce(x, at::Reduction::Mean);
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  double flops_per_token() const override { return 3 * image_model_flops(m_->config()); }

 private:
  ImageClassifier m_;
  const ImageDataset& d_;
  AugmentOptions a_;
  uint64_t seed_;
  std::string identity_;
  std::optional<train::AttackOptions> adversarial_;
  double adversarial_weight_;
  tasks::ExampleStream stream_;
  int64_t step_ = -1, micro_ = 0;
};

ImageModelConfig model_config(const ImageTrainOptions& opt, const ImageDataset& d) {
  ImageModelConfig c = default_image_model(opt.arch, d.channels, d.height, d.width, static_cast<int64_t>(d.classes.size()));
  if (!opt.model.is_null() && !opt.model.empty()) {
    nlohmann::json j = to_json(c);
    for (const auto& [k, v] : opt.model.items()) {
      static const std::set<std::string> known = {"width_base", "hidden", "patch", "dim", "depth", "heads", "mlp", "dropout"};
      if (!known.count(k)) throw ConfigError(fmt("image model: unknown setting '", k, "' (known: width_base, hidden, patch, dim, depth, heads, mlp, dropout)"));
      j[k] = v;
    }
    c = image_model_config_from_json(j, "image model settings");
  }
  return c;
}

}  // namespace

ImageEvalResult evaluate_image_model(ImageClassifierImpl& model, const ImageDataset& d, int64_t hard) {
  ImageEvalResult r;
  r.images = d.size();
  if (d.size() == 0) throw DataError("image evaluation: the split has no images");
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard ng;
  const c10::Device device = model.parameters().front().device();
  std::vector<double> losses(static_cast<size_t>(d.size()));
  std::vector<double> confidence(static_cast<size_t>(d.size()));
  r.predictions.resize(static_cast<size_t>(d.size()));
  double forward_seconds = 0;
  const int64_t B = 64;  // larger batches are not faster on CPU and cost memory (conv im2col buffers grow with it)
  for (int64_t first = 0; first < d.size(); first += B) {
    std::vector<int64_t> idx(static_cast<size_t>(std::min(B, d.size() - first)));
    std::iota(idx.begin(), idx.end(), first);
    at::Tensor x = image_batch(d, idx).to(device);
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor logp = at::log_softmax(model.forward(x).to(at::kFloat), 1).cpu().contiguous();
    forward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t K = logp.size(1);
    const float* lp = logp.data_ptr<float>();
    for (size_t k = 0; k < idx.size(); ++k) {
      const int64_t i = idx[k];
      const float* row = lp + static_cast<int64_t>(k) * K;
      const int64_t best = std::max_element(row, row + K) - row;
      r.predictions[static_cast<size_t>(i)] = best;
      losses[static_cast<size_t>(i)] = -row[d.labels[static_cast<size_t>(i)]];
      confidence[static_cast<size_t>(i)] = std::exp(row[best]);
    }
  }
  if (was_training) model.train();
  r.images_per_second = static_cast<double>(d.size()) / std::max(1e-9, forward_seconds);
  r.loss = std::accumulate(losses.begin(), losses.end(), 0.0) / static_cast<double>(d.size());
  std::vector<std::string> pred, gold;
  for (int64_t i = 0; i < d.size(); ++i) {
    pred.push_back(d.classes[static_cast<size_t>(r.predictions[static_cast<size_t>(i)])]);
    gold.push_back(d.classes[static_cast<size_t>(d.labels[static_cast<size_t>(i)])]);
  }
  r.report = eval::classification_report(pred, gold);
  for (const int64_t index : eval::highest_first(losses, hard)) {
    const auto i = static_cast<size_t>(index);
    r.hardest.push_back({index, d.sources.empty() ? "" : d.sources[i], gold[i], pred[i], losses[i], confidence[i]});
  }
  return r;
}

ImageTrainResult train_image_model(const std::string& data_dir, const std::string& out_dir, const ImageTrainOptions& opt) {
  if (out_dir.empty()) throw ConfigError("image train: --out is required");
  const nlohmann::json info = read_dataset_info(data_dir);
  const ImageDataset train = load_image_split(data_dir, "train");
  const ImageDataset val = load_image_split(data_dir, held_out_split(info, data_dir));

  ImageTrainResult r;
  r.config = model_config(opt, train);
  r.out_dir = out_dir;
  r.train_images = train.size();
  ImageClassifier model = make_image_model(r.config);
  r.parameters = model::count_parameters(*model);
  r.forward_flops = image_model_flops(r.config);

  tasks::FinetuneSchedule sched = tasks::finetune_schedule(train.size(), opt);
  RunConfig cfg = tasks::finetune_run_config(sched, opt.overrides, out_dir);
  if (opt.adversarial) train::validate(*opt.adversarial, "image train: adversarial");
  if (!(opt.adversarial_weight > 0 && opt.adversarial_weight <= 1))
    throw ConfigError(fmt("image train: adversarial weight ", opt.adversarial_weight, ": expected a value in (0, 1]"));
  const std::string adversarial = opt.adversarial ? fmt(opt.adversarial->describe(), " x", opt.adversarial_weight) : "";
  ImageTask task(model, train, opt.augment, opt.seed + 1,
                 fmt("image|", data_dir, "|", train.size(), "|", to_json(r.config).dump(), "|", opt.augment.describe(),
                     adversarial.empty() ? "" : "|" + adversarial),
                 opt.adversarial, opt.adversarial_weight);
  auto evaluate = [&](int64_t) {
    const ImageEvalResult e = evaluate_image_model(*model, val, 0);
    return train::Scalars{{"val_loss", e.loss}, {"val_accuracy", e.report.accuracy}};
  };
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = tasks::run_finetune(task, cfg, (train.size() + opt.batch - 1) / opt.batch, "image train", evaluate);
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.val = evaluate_image_model(*model, val);

  // The model folder, whole or not at all.
  const std::string stage = path_join(out_dir, "model.partial"), dir = path_join(out_dir, "model");
  remove_all(stage);
  make_dirs(stage);
  const nlohmann::json options = info.value("options", nlohmann::json::object());
  nlohmann::ordered_json config = {{"model_type", "image_classifier"},
                                   {"image_model", to_json(r.config)},
                                   {"classes", train.classes},
                                   {"mean", train.mean},
                                   {"std", train.stddev},
                                   {"preprocess", {{"grayscale", train.channels == 1}, {"equalize", options.value("equalize", "none")}}},
                                   {"data", data_dir}};
  if (opt.adversarial) config["adversarial_training"] = adversarial;
  write_file_atomic(path_join(stage, "config.json"), config.dump(2) + "\n");
  save_safetensors(path_join(stage, "model.safetensors"), model::model_state(*model), {{"format", "pt"}});
  replace_dir(stage, dir, "image model");
  write_file_atomic(path_join(out_dir, "image.json"), image_train_json(r).dump(2) + "\n");
  write_file_atomic(path_join(out_dir, "report.html"), image_report_html(r, train, val, opt.augment, opt.seed + 1));
  return r;
}

LoadedImageModel load_image_model(const std::string& model_dir) {
  const std::string path = path_join(model_dir, "config.json");
  if (!file_exists(path)) throw IoError(fmt(model_dir, ": no config.json (a folder written by `dsforge image train`?)"));
  LoadedImageModel m;
  try {
    m.config = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON: ", e.what()));
  }
  if (m.config.value("model_type", "") != "image_classifier")
    throw ConfigError(fmt(path, ": model_type is '", m.config.value("model_type", ""), "', expected 'image_classifier'"));
  const ImageModelConfig c = image_model_config_from_json(m.config.at("image_model"), path);
  m.classes = m.config.at("classes").get<std::vector<std::string>>();
  m.mean = m.config.at("mean").get<std::vector<double>>();
  m.stddev = m.config.at("std").get<std::vector<double>>();
  m.preprocess.grayscale = c.channels == 1;
  m.preprocess.equalize = m.config.value("preprocess", nlohmann::json::object()).value("equalize", "none");
  m.preprocess.height = c.height;
  m.preprocess.width = c.width;
  m.model = make_image_model(c);
  const std::string weights = path_join(model_dir, "model.safetensors");
  model::load_model_state(*m.model, load_safetensors(weights).tensors, weights);
  m.model->eval();
  return m;
}

ImageEvalResult evaluate_loaded_model(const std::string& model_dir, const std::string& data_dir, const std::string& split) {
  const LoadedImageModel m = load_image_model(model_dir);
  ImageDataset d = load_image_split(data_dir, split);
  const ImageModelConfig& c = m.model->config();
  if (d.channels != c.channels || d.height != c.height || d.width != c.width)
    throw DataError(fmt(data_dir, ": images are ", d.channels, "x", d.height, "x", d.width, ", the model ", model_dir, " takes ", c.channels,
                        "x", c.height, "x", c.width));
  if (d.classes != m.classes) throw DataError(fmt(data_dir, ": its classes differ from the model's (", model_dir, "/config.json)"));
  d.mean = m.mean;  // the normalisation the model was trained with
  d.stddev = m.stddev;
  return evaluate_image_model(*m.model, d);
}

std::vector<ImagePrediction> predict_image_files(const LoadedImageModel& m, const std::vector<std::string>& files) {
  const ImageModelConfig& c = m.model->config();
  RawImages raw;
  raw.classes = m.classes;
  for (const auto& f : files) raw.images.push_back(read_image_file(f));
  if (raw.images.empty()) throw DataError("image predict: no image files given");
  ImageDataset d;
  for (auto& im : raw.images) {  // one at a time: the files may differ in channels
    RawImages one;
    one.images.push_back(std::move(im));
    ImageDataset s = standardise(std::move(one), m.preprocess);
    std::vector<uint8_t> px = s.pixels;
    if (s.channels == 1 && c.channels == 3) {
      std::vector<uint8_t> rgb;
      for (int k = 0; k < 3; ++k) rgb.insert(rgb.end(), px.begin(), px.end());
      px = rgb;
    }
    d.add(px.data(), c.channels, s.height, s.width, 0, s.sources[0]);
  }
  d.classes = m.classes;
  d.mean = m.mean;
  d.stddev = m.stddev;
  std::vector<int64_t> idx(static_cast<size_t>(d.size()));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  at::NoGradGuard ng;
  at::Tensor p = at::softmax(m.model->forward(image_batch(d, idx)).to(at::kFloat), 1).contiguous();
  std::vector<ImagePrediction> out;
  for (int64_t i = 0; i < d.size(); ++i) {
    const int64_t best = p[i].argmax().item<int64_t>();
    out.push_back({files[static_cast<size_t>(i)], m.classes[static_cast<size_t>(best)], p[i][best].item<double>()});
  }
  return out;
}

nlohmann::ordered_json image_eval_json(const ImageEvalResult& e) {
  nlohmann::ordered_json per_class = nlohmann::ordered_json::object();
  for (size_t k = 0; k < e.report.labels.size(); ++k)
    per_class[e.report.labels[k]] = {{"precision", e.report.per_class[k].precision}, {"recall", e.report.per_class[k].recall},
                                     {"f1", e.report.per_class[k].fmeasure}, {"support", e.report.support[k]}};
  nlohmann::ordered_json hard = nlohmann::ordered_json::array();
  for (const auto& h : e.hardest)
    hard.push_back({{"index", h.index}, {"source", h.source}, {"gold", h.gold}, {"predicted", h.predicted}, {"loss", h.loss},
                    {"confidence", h.confidence}});
  return {{"images", e.images},
          {"accuracy", e.report.accuracy},
          {"macro_f1", e.report.macro.fmeasure},
          {"weighted_f1", e.report.weighted.fmeasure},
          {"loss", e.loss},
          {"images_per_second", e.images_per_second},
          {"labels", e.report.labels},
          {"confusion", e.report.confusion},
          {"per_class", per_class},
          {"hardest", hard}};
}

nlohmann::ordered_json image_train_json(const ImageTrainResult& r) {
  return {{"model", to_json(r.config)},   {"parameters", r.parameters},     {"forward_flops", r.forward_flops},
          {"train_images", r.train_images}, {"train_seconds", r.train_seconds}, {"epoch_losses", r.epoch_losses},
          {"eval", image_eval_json(r.val)}};
}

std::string image_report_html(const ImageTrainResult& r, const ImageDataset& train, const ImageDataset& val, const AugmentOptions& augment,
                              uint64_t seed) {
  using report::html_escape;
  const int scale = train.height < 64 ? 3 : 1;
  auto img = [](const std::string& png, const std::string& alt) {
    return fmt("<img alt=\"", html_escape(alt), "\" src=\"data:image/png;base64,", base64(png), "\">");
  };
  std::string body = fmt("<h1>", html_escape(r.config.arch), " image classifier</h1>\n<p>", r.parameters, " parameters, ",
                         r.train_images, " training images (", train.channels, "x", train.height, "x", train.width, ", ",
                         train.classes.size(), " classes), trained in ", fmt(std::lround(r.train_seconds)), " s; accuracy <b>",
                         fmt(std::round(r.val.report.accuracy * 10000) / 100), "%</b>, macro F1 ",
                         fmt(std::round(r.val.report.macro.fmeasure * 10000) / 10000), " on ", r.val.images, " held-out images; ",
                         std::lround(r.val.images_per_second), " images/s inference.</p>\n");
  // Augmentation preview: each row one training image, then seven draws of its augmentation.
  std::vector<std::vector<uint8_t>> aug;
  std::vector<const uint8_t*> tiles;
  const int64_t shown = std::min<int64_t>(6, train.size());
  aug.reserve(static_cast<size_t>(shown * 7));
  for (int64_t i = 0; i < shown; ++i) {
    tiles.push_back(train.image(i));
    for (int k = 0; k < 7; ++k) {
      aug.emplace_back(static_cast<size_t>(train.image_bytes()));
      augment_image(train.image(i), train.channels, train.height, train.width, aug.back().data(), augment, image_seed(seed, k, i));
      tiles.push_back(aug.back().data());
    }
  }
  body += fmt("<h2>Augmentation</h2><p>", html_escape(augment.describe()), ": each row is one training image, then seven draws.</p>",
              img(png_grid(tiles, train.channels, train.height, train.width, 8, scale), "augmentation preview"), "\n");
  if (!r.epoch_losses.empty()) {
    report::Series s{"train loss", {}, r.epoch_losses};
    for (size_t e = 0; e < r.epoch_losses.size(); ++e) s.x.push_back(static_cast<double>(e + 1));
    body += report::svg_line_chart("Training loss per epoch", {s}, "cross-entropy", false, "epoch");
  }
  body += report::svg_confusion("Confusion matrix (held-out)", r.val.report.labels, r.val.report.confusion);
  std::vector<double> f1;
  for (const auto& p : r.val.report.per_class) f1.push_back(p.fmeasure);
  body += report::svg_bar_chart("F1 per class", r.val.report.labels, f1, {}, "F1");
  if (!r.val.hardest.empty()) {
    std::vector<const uint8_t*> hard;
    std::string captions = "<ol>";
    for (const auto& h : r.val.hardest) {
      hard.push_back(val.image(h.index));
      captions += fmt("<li>", html_escape(h.source), ": gold <b>", html_escape(h.gold), "</b>, predicted <b>", html_escape(h.predicted),
                      "</b> (p = ", std::round(h.confidence * 1000) / 1000, ", loss ", std::round(h.loss * 100) / 100, ")</li>");
    }
    body += fmt("<h2>Hardest held-out images</h2><p>Highest loss first (row by row).</p>",
                img(png_grid(hard, val.channels, val.height, val.width, 8, scale), "hardest images"), captions, "</ol>\n");
  }
  return report::html_page(fmt("dsforge image ", r.config.arch), body);
}

}  // namespace dsforge::vision

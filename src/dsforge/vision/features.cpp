#include "dsforge/vision/features.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <opencv2/features2d.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/log.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/train/task.h"
#include "dsforge/vision/opencv_mat.h"

namespace dsforge::vision {
namespace {

cv::Mat gray_mat(const uint8_t* chw, int64_t c, int64_t h, int64_t w) {
  cv::Mat m = chw_to_mat(chw, c, h, w);
  if (m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_RGB2GRAY);
  return m;
}

// Multinomial logistic regression as a task of the one training loop.
class LinearTask : public train::TrainTask {
 public:
  LinearTask(int64_t dims, int64_t classes, at::Tensor x, at::Tensor y, uint64_t seed)
      : x_(std::move(x)), y_(std::move(y)), stream_(x_.size(0), seed) {
    lin_ = std::make_shared<torch::nn::LinearImpl>(dims, classes);
    root_.register_module("linear", torch::nn::Linear(lin_));
  }
  torch::nn::Module& module() override { return root_; }
  void init_weights(double, uint64_t) override {
    at::NoGradGuard ng;
    lin_->weight.zero_();  // the loss is convex: start at the uniform prediction
    lin_->bias.zero_();
  }
  std::string describe() const override { return fmt("linear classifier: ", x_.size(1), " features, ", x_.size(0), " images"); }
  std::string config_json() const override { return nlohmann::json{{"model_type", "linear_classifier"}, {"features", x_.size(1)}}.dump(); }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t, c10::Device device) override {
    at::Tensor idx = at::tensor(stream_.next(rows, first, count), at::kLong);
    at::Tensor loss = at::cross_entropy_loss(lin_->forward(x_.index_select(0, idx).to(device)), y_.index_select(0, idx).to(device));
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  at::Tensor logits(const at::Tensor& x) { return lin_->forward(x); }

 private:
  torch::nn::Module root_;
  std::shared_ptr<torch::nn::LinearImpl> lin_;
  at::Tensor x_, y_;
  tasks::ExampleStream stream_;
};

at::Tensor to_tensor(const std::vector<std::vector<float>>& rows) {
  const auto n = static_cast<int64_t>(rows.size()), d = static_cast<int64_t>(rows.at(0).size());
  at::Tensor t = at::empty({n, d}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (const auto& r : rows) p = std::copy(r.begin(), r.end(), p);
  return t;
}

// Bag of visual words over a 1 + 2x2 spatial pyramid: 5 x words values, each histogram L1-normalised
// and square-rooted (the Hellinger kernel as a dot product).
std::vector<std::vector<float>> bow_features(const std::vector<DenseSift>& sift, const at::Tensor& centers) {
  const int64_t K = centers.size(0);
  const at::Tensor c2 = centers.pow(2).sum(1);
  std::vector<std::vector<float>> out;
  for (const auto& s : sift) {
    std::vector<float> h(static_cast<size_t>(5 * K), 0.0f);
    if (!s.descriptors.empty()) {
      const at::Tensor d = to_tensor(s.descriptors);
      const at::Tensor word = (c2.unsqueeze(0) - 2 * d.matmul(centers.t())).argmin(1).contiguous();
      const int64_t* wp = word.data_ptr<int64_t>();
      for (size_t k = 0; k < s.descriptors.size(); ++k) {
        const auto [x, y] = s.where[k];
        h[static_cast<size_t>(wp[k])] += 1;
        const int q = (x >= 0.5f ? 1 : 0) + (y >= 0.5f ? 2 : 0);
        h[static_cast<size_t>((1 + q) * K + wp[k])] += 1;
      }
    }
    for (int level = 0; level < 5; ++level) {
      float sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += h[static_cast<size_t>(level * K + k)];
      for (int64_t k = 0; k < K; ++k) {
        float& v = h[static_cast<size_t>(level * K + k)];
        v = sum > 0 ? std::sqrt(v / sum) : 0.0f;
      }
    }
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace

std::vector<std::vector<float>> hog_features(const ImageDataset& d) {
  const int cell = static_cast<int>(std::max<int64_t>(4, std::min(d.height, d.width) / 4));
  const int win = 4 * cell;
  cv::HOGDescriptor hog(cv::Size(win, win), cv::Size(2 * cell, 2 * cell), cv::Size(cell, cell), cv::Size(cell, cell), 9);
  std::vector<std::vector<float>> out;
  out.reserve(static_cast<size_t>(d.size()));
  for (int64_t i = 0; i < d.size(); ++i) {
    cv::Mat g = gray_mat(d.image(i), d.channels, d.height, d.width);
    if (g.rows != win || g.cols != win) cv::resize(g, g, cv::Size(win, win), 0, 0, g.rows > win ? cv::INTER_AREA : cv::INTER_LINEAR);
    std::vector<float> f;
    hog.compute(g, f);
    out.push_back(std::move(f));
  }
  return out;
}

DenseSift dense_sift(const uint8_t* chw, int64_t c, int64_t h, int64_t w) {
  static thread_local cv::Ptr<cv::SIFT> sift = cv::SIFT::create();
  cv::Mat g = gray_mat(chw, c, h, w);
  const int64_t side = std::min(h, w);
  if (side < 32) {
    const double f = std::ceil(32.0 / static_cast<double>(side));
    cv::resize(g, g, cv::Size(), f, f, cv::INTER_LINEAR);
  }
  std::vector<cv::KeyPoint> kps;
  const float step_x = static_cast<float>(g.cols) / 7.0f, step_y = static_cast<float>(g.rows) / 7.0f;
  const float size = 2.0f * std::min(step_x, step_y);
  for (int y = 1; y <= 6; ++y)
    for (int x = 1; x <= 6; ++x) kps.emplace_back(x * step_x, y * step_y, size);
  cv::Mat desc;
  sift->compute(g, kps, desc);
  DenseSift out;
  for (int r = 0; r < desc.rows; ++r) {
    out.descriptors.emplace_back(desc.ptr<float>(r), desc.ptr<float>(r) + desc.cols);
    out.where.emplace_back(kps[static_cast<size_t>(r)].pt.x / static_cast<float>(g.cols), kps[static_cast<size_t>(r)].pt.y / static_cast<float>(g.rows));
  }
  return out;
}

FeatureBaselineResult feature_baseline(const std::string& data_dir, const FeatureOptions& opt) {
  if (opt.kind != "hog" && opt.kind != "sift") throw ConfigError(fmt("image features: kind '", opt.kind, "': expected hog or sift"));
  if (opt.words < 2) throw ConfigError("image features: --words must be at least 2");
  const nlohmann::json info = read_dataset_info(data_dir);
  const ImageDataset train = load_image_split(data_dir, "train");
  const ImageDataset val = load_image_split(data_dir, held_out_split(info, data_dir));

  FeatureBaselineResult r;
  r.kind = opt.kind;
  r.train_images = train.size();
  r.images = val.size();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> ftr, fva;
  double extract_seconds = 0;
  if (opt.kind == "hog") {
    ftr = hog_features(train);
    extract_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fva = hog_features(val);
  } else {
    std::vector<DenseSift> str, sva;
    for (int64_t i = 0; i < train.size(); ++i) str.push_back(dense_sift(train.image(i), train.channels, train.height, train.width));
    extract_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t i = 0; i < val.size(); ++i) sva.push_back(dense_sift(val.image(i), val.channels, val.height, val.width));
    // The vocabulary: k-means (k-means++ seeding, OpenCV's RNG seeded) on a seeded sample of training descriptors.
    std::vector<std::pair<int64_t, int64_t>> all;
    for (size_t i = 0; i < str.size(); ++i)
      for (size_t k = 0; k < str[i].descriptors.size(); ++k) all.emplace_back(static_cast<int64_t>(i), static_cast<int64_t>(k));
    if (static_cast<int64_t>(all.size()) < opt.words)
      throw DataError(fmt("image features: ", all.size(), " SIFT descriptors, fewer than --words ", opt.words));
    shuffle_in_place(all, opt.seed + 17);
    all.resize(static_cast<size_t>(std::min<int64_t>(opt.kmeans_sample, static_cast<int64_t>(all.size()))));
    cv::Mat sample(static_cast<int>(all.size()), 128, CV_32F);
    for (size_t j = 0; j < all.size(); ++j) {
      const auto& v = str[static_cast<size_t>(all[j].first)].descriptors[static_cast<size_t>(all[j].second)];
      std::copy(v.begin(), v.end(), sample.ptr<float>(static_cast<int>(j)));
    }
    cv::theRNG().state = opt.seed * 2654435761ull + 1;
    cv::Mat labels, centers;
    cv::kmeans(sample, static_cast<int>(opt.words), labels, cv::TermCriteria(cv::TermCriteria::COUNT + cv::TermCriteria::EPS, 30, 1e-3), 1,
               cv::KMEANS_PP_CENTERS, centers);
    at::Tensor c = at::from_blob(centers.ptr<float>(), {centers.rows, centers.cols}, at::kFloat).clone();
    ftr = bow_features(str, c);
    fva = bow_features(sva, c);
  }
  r.extract_images_per_second = static_cast<double>(train.size()) / std::max(1e-9, extract_seconds);
  at::Tensor xtr = to_tensor(ftr), xva = to_tensor(fva);
  r.dims = xtr.size(1);
  const at::Tensor mu = xtr.mean(0), sd = xtr.std(0).clamp_min(1e-6);
  xtr = (xtr - mu) / sd;
  xva = (xva - mu) / sd;
  const auto K = static_cast<int64_t>(train.classes.size());
  LinearTask task(r.dims, K, xtr, at::tensor(train.labels, at::kLong), opt.seed + 1);
  tasks::FinetuneSchedule sched = tasks::finetune_schedule(train.size(), opt);
  tasks::run_finetune(task, tasks::finetune_run_config(sched, opt.overrides, ""), (train.size() + opt.batch - 1) / opt.batch,
                      "image features");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at::NoGradGuard ng;
  const at::Tensor pred = task.logits(xva).argmax(1).contiguous();
  std::vector<std::string> p, g;
  for (int64_t i = 0; i < val.size(); ++i) {
    p.push_back(val.classes[static_cast<size_t>(pred[i].item<int64_t>())]);
    g.push_back(val.classes[static_cast<size_t>(val.labels[static_cast<size_t>(i)])]);
  }
  r.report = eval::classification_report(p, g);
  return r;
}

nlohmann::ordered_json feature_baseline_json(const FeatureBaselineResult& r) {
  return {{"kind", r.kind},
          {"dims", r.dims},
          {"train_images", r.train_images},
          {"images", r.images},
          {"accuracy", r.report.accuracy},
          {"macro_f1", r.report.macro.fmeasure},
          {"extract_images_per_second", r.extract_images_per_second},
          {"train_seconds", r.train_seconds},
          {"labels", r.report.labels},
          {"confusion", r.report.confusion}};
}

}  // namespace dsforge::vision

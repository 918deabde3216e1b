// Image data sets, augmentation, classic features and the image classifiers (src/dsforge/vision/).
#include <ATen/ATen.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/vision/augment.h"
#include "dsforge/vision/features.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/models.h"
#include "dsforge/vision/train_image.h"
#include "test_util.h"
#include "tiny_model.h"
#include "dsforge/vision/multimodal.h"

namespace dsforge {
namespace {

namespace fs = std::filesystem;
using namespace vision;

template <typename E, typename F>
std::string message_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// A 16x16 gray image: a filled rectangle (x0, y0)-(x1, y1) of brightness v on black.
cv::Mat rect_image(int x0, int y0, int x1, int y1, int v, int size = 16) {
  cv::Mat m(size, size, CV_8UC1, cv::Scalar(0));
  m(cv::Rect(x0, y0, x1 - x0, y1 - y0)).setTo(cv::Scalar(v));
  return m;
}

TEST(Vision, MnistIdxReadsGzipAndRefusesTruncation) {
  TempDir t;
  std::string im = be32(0x803) + be32(3) + be32(2) + be32(2), lb = be32(0x801) + be32(3);
  for (int i = 0; i < 12; ++i) im += static_cast<char>(i * 20);
  lb += std::string{"\x07\x00\x02", 3};
  write_gz(t.path + "/x-images-idx3-ubyte.gz", im);
  write_gz(t.path + "/x-labels-idx1-ubyte.gz", lb);
  const RawImages r = read_images(t.path);  // the folder holding the pair
  ASSERT_EQ(r.images.size(), 3u);
  EXPECT_EQ(r.format, "mnist-idx");
  EXPECT_EQ(r.images[1].chw, (std::vector<uint8_t>{80, 100, 120, 140}));
  EXPECT_EQ(r.images[0].label, 7);
  EXPECT_EQ(r.images[2].label, 2);
  EXPECT_EQ(r.classes.size(), 8u);  // 0..7
  write_gz(t.path + "/x-images-idx3-ubyte.gz", im.substr(0, im.size() - 3));
  EXPECT_NE(message_of<DataError>([&] { read_images(t.path); }).find("truncated"), std::string::npos);
}

TEST(Vision, DigitsCsvScalesSixteenToByte) {
  TempDir t;
  write_file_atomic(t.path + "/d.csv", "0,8,16,4,3\n16,16,0,0,1\n");
  const RawImages r = read_images(t.path + "/d.csv");
  ASSERT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.images[0].height, 2);
  EXPECT_EQ(r.images[0].chw, (std::vector<uint8_t>{0, 128, 255, 64}));  // 8 * 255/16 = 127.5 -> 128
  EXPECT_EQ(r.classes, (std::vector<std::string>{"1", "3"}));
  EXPECT_EQ(r.images[0].label, 1);
  write_file_atomic(t.path + "/bad.csv", "0,8,16,4,3\n1,2,3\n");
  EXPECT_NE(message_of<DataError>([&] { read_images(t.path + "/bad.csv"); }).find("bad.csv:2"), std::string::npos);
}

TEST(Vision, FolderCountsUnreadableAndRequiresASizeForMixedImages) {
  TempDir t;
  fs::create_directories(t.path + "/set/cat");
  fs::create_directories(t.path + "/set/dog");
  cv::imwrite(t.path + "/set/cat/a.png", rect_image(2, 2, 8, 8, 200));
  cv::imwrite(t.path + "/set/cat/b.png", rect_image(4, 4, 12, 12, 90, 20));  // another size
  cv::imwrite(t.path + "/set/dog/c.jpg", rect_image(0, 0, 16, 4, 255));
  write_file_atomic(t.path + "/set/dog/broken.png", "not a png at all");
  const std::string jpeg = read_file(t.path + "/set/dog/c.jpg");
  write_file_atomic(t.path + "/set/dog/cut.jpg", jpeg.substr(0, jpeg.size() / 2));
  write_file_atomic(t.path + "/set/dog/notes.txt", "ignored");
  const RawImages raw = read_images(t.path + "/set");
  EXPECT_EQ(raw.images.size(), 3u);
  EXPECT_EQ(raw.classes, (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(raw.unreadable.size(), 2u);
  EXPECT_NE(raw.unreadable[0].find("broken.png"), std::string::npos);
  EXPECT_NE(raw.unreadable[1].find("truncated JPEG"), std::string::npos);
  EXPECT_NE(message_of<DataError>([&] { standardise(read_images(t.path + "/set"), {}); }).find("mixed sizes"), std::string::npos);
  StandardiseOptions so;
  so.size = 12;
  const ImageDataset d = standardise(read_images(t.path + "/set"), so);
  EXPECT_EQ(d.height, 12);
  EXPECT_EQ(d.channels, 1);

  fs::create_directories(t.path + "/empty/cls");
  EXPECT_NE(message_of<DataError>([&] { read_images(t.path + "/empty"); }).find("no readable images"), std::string::npos);
  fs::create_directories(t.path + "/flat");
  cv::imwrite(t.path + "/flat/a.png", rect_image(2, 2, 8, 8, 200));
  EXPECT_NE(message_of<DataError>([&] { read_images(t.path + "/flat"); }).find("one subfolder of images per class"), std::string::npos);
}

TEST(Vision, PerceptualHashSeesThroughBrightnessNotContent) {
  const cv::Mat a = rect_image(2, 2, 9, 12, 200), brighter = rect_image(2, 2, 9, 12, 250), other = rect_image(8, 1, 15, 6, 200);
  const uint64_t ha = perceptual_hash(a.data, 1, 16, 16);
  EXPECT_EQ(ha, perceptual_hash(a.clone().data, 1, 16, 16));
  EXPECT_LE(hamming64(ha, perceptual_hash(brighter.data, 1, 16, 16)), 2);
  EXPECT_GE(hamming64(ha, perceptual_hash(other.data, 1, 16, 16)), 12);
  // sum |a - b| / sum (a + b): 200 vs 250 on 7x10 pixels = 50 / 450.
  EXPECT_NEAR(pixel_difference(a.data, brighter.data, 256), 50.0 / 450.0, 1e-12);
  EXPECT_DOUBLE_EQ(pixel_difference(a.data, other.data, 256) <= 1.0, true);
}

TEST(Vision, NearDuplicateIndexAgreesWithAllPairs) {
  std::mt19937_64 rng(5);
  std::vector<uint64_t> h;
  for (int i = 0; i < 300; ++i) {  // clusters: a base hash and copies with a few bits flipped
    uint64_t v = i % 3 == 0 || h.empty() ? rng() : h[static_cast<size_t>(rng() % h.size())];
    for (int f = static_cast<int>(rng() % 6); f > 0; --f) v ^= uint64_t{1} << (rng() % 64);
    h.push_back(v);
  }
  for (int d : {0, 1, 3, 5}) {
    std::vector<int64_t> brute;
    for (size_t i = 0; i < h.size(); ++i) {
      bool dup = false;
      for (const int64_t k : brute) dup |= hamming64(h[i], h[static_cast<size_t>(k)]) <= d;
      if (!dup) brute.push_back(static_cast<int64_t>(i));
    }
    EXPECT_EQ(near_duplicate_keep(h, d), brute) << "distance " << d;
  }
  EXPECT_EQ(near_duplicate_keep({0, 1, 3, ~uint64_t{0}}, 1), (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(near_duplicate_keep({0, 0}, -1).size(), 2u);
}

TEST(Vision, AugmentationIsSeededAndEachOperationDoesWhatItSays) {
  const cv::Mat img = rect_image(3, 2, 9, 13, 120);
  std::vector<uint8_t> a(256), b(256);
  const AugmentOptions all = parse_augment("rotate=20,translate=0.1,scale=0.1,shear=5,crop=0.7,hflip,brightness=0.2,contrast=0.2,cutout=0.3");
  augment_image(img.data, 1, 16, 16, a.data(), all, image_seed(3, 10, 4));
  augment_image(img.data, 1, 16, 16, b.data(), all, image_seed(3, 10, 4));
  EXPECT_EQ(a, b);
  int differ = 0;
  for (int row = 0; row < 8; ++row) {
    augment_image(img.data, 1, 16, 16, b.data(), all, image_seed(3, 10, 5 + row));
    differ += a != b;
  }
  EXPECT_GE(differ, 7);
  // A flip alone: the image or its mirror, nothing else.
  const AugmentOptions flip = parse_augment("hflip");
  int mirrored = 0;
  for (int s = 0; s < 20; ++s) {
    augment_image(img.data, 1, 16, 16, a.data(), flip, image_seed(1, s, 0));
    bool same = true, mirror = true;
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x) {
        same &= a[static_cast<size_t>(y * 16 + x)] == img.at<uint8_t>(y, x);
        mirror &= a[static_cast<size_t>(y * 16 + x)] == img.at<uint8_t>(y, 15 - x);
      }
    EXPECT_TRUE(same || mirror);
    mirrored += mirror;
  }
  EXPECT_GT(mirrored, 3);
  EXPECT_LT(mirrored, 17);
  // Brightness alone: one offset for every pixel, clamped to 0..255 (read at (5, 5), inside the rectangle).
  for (uint64_t s : {77, 78, 79}) {
    augment_image(img.data, 1, 16, 16, a.data(), parse_augment("brightness=0.2"), s);
    const int offset = static_cast<int>(a[5 * 16 + 5]) - 120;
    EXPECT_LE(std::abs(offset), 51);
    for (int k = 0; k < 256; ++k) EXPECT_EQ(static_cast<int>(a[static_cast<size_t>(k)]), std::clamp(img.data[k] + offset, 0, 255));
  }
  // Cutout alone: only pixels set to 0, at most a 5x5 square (0.3 x 16 = 4.8).
  const cv::Mat full(16, 16, CV_8UC1, cv::Scalar(77));
  int zeroed = 0;
  for (int s = 0; s < 10; ++s) {
    augment_image(full.data, 1, 16, 16, a.data(), parse_augment("cutout=0.3"), image_seed(2, s, 0));
    int z = 0;
    for (const uint8_t v : a) {
      z += v == 0;
      EXPECT_TRUE(v == 0 || v == 77);
    }
    EXPECT_LE(z, 25);
    zeroed += z > 0;
  }
  EXPECT_GT(zeroed, 0);
  EXPECT_NE(message_of<ConfigError>([] { parse_augment("rotate=10,blur=2"); }).find("unknown key 'blur'"), std::string::npos);
  EXPECT_NE(message_of<ConfigError>([] { parse_augment("crop=1.5"); }).find("crop=1.5"), std::string::npos);
  EXPECT_EQ(parse_augment(all.describe()).describe(), all.describe());
}

TEST(Vision, HogIsInvariantToContrastScaling) {
  const cv::Mat a = rect_image(3, 2, 9, 13, 200), half = rect_image(3, 2, 9, 13, 100), other = rect_image(1, 9, 15, 14, 200);
  ImageDataset d;
  d.add(a.data, 1, 16, 16, 0, "a");
  d.add(half.data, 1, 16, 16, 0, "half");
  d.add(other.data, 1, 16, 16, 0, "other");
  const auto f = hog_features(d);
  ASSERT_EQ(f[0].size(), 324u);  // 3 x 3 blocks of 2 x 2 cells x 9 bins
  double same = 0, diff = 0;
  for (size_t k = 0; k < f[0].size(); ++k) {
    same = std::max(same, static_cast<double>(std::abs(f[0][k] - f[1][k])));
    diff = std::max(diff, static_cast<double>(std::abs(f[0][k] - f[2][k])));
  }
  EXPECT_LT(same, 0.02);  // block normalisation removes the factor 2 (up to OpenCV's gamma table)
  EXPECT_GT(diff, 0.1);
  const DenseSift s = dense_sift(a.data, 1, 16, 16);
  EXPECT_EQ(s.descriptors.size(), 36u);
  EXPECT_EQ(s.descriptors[0].size(), 128u);
}

// The digits prepared once for the tests below.
std::string prepared_digits(const std::string& dir, double val = 0.2, uint64_t seed = 0) {
  PrepareImagesOptions o;
  o.val_fraction = val;
  o.seed = seed;
  prepare_images(shared_data_dir() + "/sklearn_toy/digits.csv", dir, o);
  return dir;
}

TEST(Vision, PrepareSplitsEachClassBySeedAndRefusesToOverwrite) {
  if (!fs::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  prepared_digits(t.path + "/a");
  prepared_digits(t.path + "/b");
  prepared_digits(t.path + "/c", 0.2, 9);
  const nlohmann::json info = read_dataset_info(t.path + "/a");
  const auto& s = info["stats"];
  EXPECT_EQ(s["images_read"], 1797);
  int64_t val = 0;
  for (const auto& [cls, n] : s["class_balance"]["val"].items()) {
    const int64_t total = n.get<int64_t>() + s["class_balance"]["train"][cls].get<int64_t>();
    EXPECT_EQ(n.get<int64_t>(), std::lround(0.2 * static_cast<double>(total))) << cls;
    val += n.get<int64_t>();
  }
  const ImageDataset va = load_image_split(t.path + "/a", "val"), vb = load_image_split(t.path + "/b", "val"),
                     vc = load_image_split(t.path + "/c", "val"), tr = load_image_split(t.path + "/a", "train");
  EXPECT_EQ(va.size(), val);
  EXPECT_EQ(va.sources, vb.sources);
  EXPECT_NE(va.sources, vc.sources);
  // The stored mean is the training split's.
  double sum = 0;
  for (const uint8_t v : tr.pixels) sum += v / 255.0;
  EXPECT_NEAR(info["mean"][0].get<double>(), sum / static_cast<double>(tr.pixels.size()), 1e-9);
  EXPECT_NE(message_of<IoError>([&] { prepared_digits(t.path + "/a"); }).find("already holds"), std::string::npos);
  EXPECT_NE(message_of<DataError>([&] { load_image_split(t.path + "/a", "test"); }).find("no 'test' split"), std::string::npos);
  EXPECT_TRUE(fs::exists(t.path + "/a/classes.png"));
}

TEST(Vision, ModelsMatchPyTorchReference) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) not installed";
  TempDir t;
  for (const std::string arch : {"cnn", "mobilenet", "vit"}) {
    ImageModelConfig c = default_image_model(arch, 3, 12, 12, 5);
    c.width_base = 8;
    c.hidden = 16;
    c.dim = 16;
    c.depth = 2;
    c.heads = 2;
    c.mlp = 24;
    ImageClassifier m = make_image_model(c);
    m->init_weights(7);
    {  // batch-norm statistics that are not the identity, so eval mode is checked too
      at::NoGradGuard ng;
      for (auto& b : m->named_buffers())
        if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
        else if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.3, 0.3);
    }
    m->eval();
    const std::string dir = t.path + "/" + arch;
    make_dirs(dir);
    write_file_atomic(dir + "/config.json", nlohmann::json{{"image_model", to_json(c)}}.dump());
    TensorMap state;
    for (auto& p : m->named_parameters()) state[p.key()] = p.value().detach();
    for (auto& b : m->named_buffers()) state[b.key()] = b.value().detach();
    save_safetensors(dir + "/model.safetensors", state);
    at::Tensor x = at::randn({4, 3, 12, 12}, at::detail::createCPUGenerator(3));
    save_safetensors(dir + "/x.safetensors", {{"x", x}});
    const std::string cmd = "/usr/bin/python3 " + source_dir() + "/tests/reference/vision_ref.py forward " + dir + " " + dir +
                            "/x.safetensors " + dir + "/y.safetensors";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    at::NoGradGuard ng;
    const at::Tensor ours = m->forward(x), ref = load_safetensors(dir + "/y.safetensors").tensors.at("logits");
    EXPECT_TRUE(at::allclose(ours, ref, 1e-4, 1e-5)) << arch << ": max diff " << (ours - ref).abs().max().item<double>();
  }
  EXPECT_NE(message_of<ConfigError>([] {
              ImageModelConfig c = default_image_model("vit", 1, 28, 28, 10);
              c.patch = 5;
              make_image_model(c);
            }).find("patch 5 must divide"),
            std::string::npos);
}

TEST(SlowVision, DigitsCnnLearnsAndItsFolderPredicts) {
  if (!fs::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  const std::string data = prepared_digits(t.path + "/digits");
  ImageTrainOptions o;
  o.epochs = 6;
  o.augment = parse_augment("rotate=5");
  const ImageTrainResult r = train_image_model(data, t.path + "/run", o);
  EXPECT_GE(r.val.report.accuracy, 0.95);
  EXPECT_EQ(r.val.images, 359);
  EXPECT_EQ(r.val.hardest.size(), 16u);
  EXPECT_GE(r.val.hardest[0].loss, r.val.hardest[15].loss);
  // A second run with the same seed trains the same model.
  const ImageTrainResult again = train_image_model(data, t.path + "/run2", o);
  EXPECT_EQ(again.epoch_losses, r.epoch_losses);
  // The saved folder scores the same and predicts image files.
  const ImageEvalResult e = evaluate_loaded_model(t.path + "/run/model", data, "val");
  EXPECT_DOUBLE_EQ(e.report.accuracy, r.val.report.accuracy);
  const ImageDataset val = load_image_split(data, "val");
  std::vector<std::string> files;
  for (int i = 0; i < 5; ++i) {
    cv::Mat m(8, 8, CV_8UC1, const_cast<uint8_t*>(val.image(i)));
    files.push_back(t.path + "/v" + std::to_string(i) + ".png");
    cv::imwrite(files.back(), m);
  }
  const auto pred = predict_image_files(load_image_model(t.path + "/run/model"), files);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pred[static_cast<size_t>(i)].label, val.classes[static_cast<size_t>(e.predictions[static_cast<size_t>(i)])]);
  const std::string html = read_file(t.path + "/run/report.html");
  EXPECT_NE(html.find("Hardest held-out images"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);
}

TEST(SlowVision, FeatureBaselinesBeatChanceByFar) {
  if (!fs::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  const std::string data = prepared_digits(t.path + "/digits");
  FeatureOptions o;
  o.epochs = 10;
  EXPECT_GE(feature_baseline(data, o).report.accuracy, 0.9);
  o.kind = "sift";
  o.words = 32;
  const FeatureBaselineResult s = feature_baseline(data, o);
  EXPECT_EQ(s.dims, 5 * 32);
  EXPECT_GE(s.report.accuracy, 0.8);
}

TEST(Cli, ImageCommandsAndTheirErrors) {
  TempDir t;
  fs::create_directories(t.path + "/set/a");
  fs::create_directories(t.path + "/set/b");
  for (int i = 0; i < 6; ++i) {
    cv::imwrite(t.path + "/set/a/" + std::to_string(i) + ".png", rect_image(i, 1, i + 6, 14, 220));
    cv::imwrite(t.path + "/set/b/" + std::to_string(i) + ".png", rect_image(1, i, 14, i + 5, 220));
  }
  write_file_atomic(t.path + "/set/b/bad.png", "garbage");
  auto r = run_cli("image prepare " + t.path + "/set --out " + t.path + "/data --val 0.34", t.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("1 unreadable"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("bad.png"), std::string::npos) << r.err;
  r = run_cli("image prepare " + t.path + "/set --out " + t.path + "/data", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("already holds"), std::string::npos) << r.err;
  r = run_cli("image train --data " + t.path + "/data --arch cnn --out " + t.path + "/run --epochs 2 --augment spin=3", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("unknown key 'spin'"), std::string::npos) << r.err;
  r = run_cli("image train --data " + t.path + "/data --arch vit --set patch=5 --out " + t.path + "/run --epochs 1", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("patch 5 must divide"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t.path + "/run/model"));
  r = run_cli("image train --data " + t.path + "/data --arch mobilenet --out " + t.path + "/run --epochs 2 --batch 4", t.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("held-out: accuracy"), std::string::npos);
  r = run_cli("image predict --model " + t.path + "/run/model " + t.path + "/set/a/0.png", t.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind(t.path + "/set/a/0.png\t", 0), 0u) << r.out;
  r = run_cli("image predict --model " + t.path + "/run/model " + t.path + "/set/b/bad.png", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("not a decodable image"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsforge

namespace dsforge {
namespace {

using namespace vision;

TEST(Vision, NumberWords) {
  EXPECT_EQ(number_words(0), "zero");
  EXPECT_EQ(number_words(13), "thirteen");
  EXPECT_EQ(number_words(40), "forty");
  EXPECT_EQ(number_words(47), "forty-seven");
  EXPECT_EQ(number_words(100), "one hundred");
  EXPECT_EQ(number_words(115), "one hundred and fifteen");
  EXPECT_EQ(number_words(999), "nine hundred and ninety-nine");
  EXPECT_THROW(number_words(1000), ConfigError);
}

TEST(SlowVision, MultimodalTrainsSavesAndAnswersAboutAPictureFile) {
  if (!std::filesystem::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  std::vector<std::string> docs;
  for (int n = 0; n < 200; ++n) docs.push_back("Q: what number is shown? A: " + number_words(n) + ". Q: what is the sum of the digits? A: " + number_words(n % 19));
  const std::string lm = save_tiny_model(t.path + "/lm", docs);
  PrepareImagesOptions po;
  prepare_images(shared_data_dir() + "/sklearn_toy/digits.csv", t.path + "/digits", po);
  MultimodalOptions o;
  o.train_examples = 256;
  o.test_examples = 24;
  o.epochs = 1;
  o.freeze_lm = true;
  o.write_examples = 3;
  const MultimodalResult r = train_multimodal(lm, t.path + "/digits", t.path + "/mm", o);
  EXPECT_EQ(r.prefix_tokens, 4);  // 8 x 16 pictures, the CNN's stride-4 columns
  EXPECT_LT(r.trainable_parameters, r.total_parameters);
  EXPECT_GE(r.exact_match, 0.0);
  EXPECT_LE(r.exact_match, 1.0);
  ASSERT_EQ(r.exact_match_by_question.size(), 2u);
  // Frozen: the saved language model is the one it started from.
  const TensorMap before = load_safetensors(lm + "/model.safetensors").tensors,
                  after = load_safetensors(t.path + "/mm/model/lm/model.safetensors").tensors;
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [k, v] : before) EXPECT_TRUE(at::equal(v, after.at(k))) << k;
  // The picture written to examples/ gets the answer the held-out scoring gave (same pixels, same model).
  const std::string answer = answer_about(t.path + "/mm/model", t.path + "/mm/examples/heldout_0.png", "", r.samples[0].question, r.max_answer_tokens);
  EXPECT_EQ(answer, r.samples[0].answer);
  EXPECT_NE(read_file(t.path + "/mm/examples/examples.tsv").find("heldout_2.png"), std::string::npos);
  // A GPT-2 language model cannot take the prefix.
  const std::string gpt2 = save_tiny_model(t.path + "/gpt2", docs, "gpt2-tiny");
  EXPECT_THROW(train_multimodal(gpt2, t.path + "/digits", t.path + "/mm2", o), ConfigError);
  auto cli = run_cli("generate --model " + lm + " --image " + t.path + "/mm/examples/heldout_0.png --prompt 'Q: what number is shown? A:'", t.path);
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("multimodal folder"), std::string::npos) << cli.err;
}

}  // namespace
}  // namespace dsforge

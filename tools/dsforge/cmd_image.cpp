// `dsforge image prepare|features|train|eval|predict`: image data sets, classic baselines and classifiers.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/vision/features.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/multimodal.h"
#include "dsforge/vision/train_image.h"

namespace dsforge::cli {

void use_threads(const Context& ctx) {
  RunConfig cfg;
  for (const auto& ov : ctx.overrides) apply_override(cfg, ov);
  pipeline::configure_threads(cfg);
}

nlohmann::json parse_settings(const std::vector<std::string>& settings) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& s : settings) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos) throw ConfigError(fmt("--set '", s, "': expected key=value"));
    const std::string v = s.substr(eq + 1);
    try {
      j[s.substr(0, eq)] = nlohmann::json::parse(v);
    } catch (const nlohmann::json::exception&) {
      j[s.substr(0, eq)] = v;  // a bare word: features=log-mel
    }
  }
  return j;
}

namespace {

void print_eval(const std::string& what, const vision::ImageEvalResult& e) {
  std::printf("%s: accuracy %.2f%%, macro F1 %.4f, loss %.4f on %lld images; %.0f images/s\n", what.c_str(), 100 * e.report.accuracy,
              e.report.macro.fmeasure, e.loss, static_cast<long long>(e.images), e.images_per_second);
}

void add_image_prepare(CLI::App* img, Context& ctx) {
  struct Args {
    std::string source, out;
    vision::PrepareImagesOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = img->add_subcommand("prepare", "read, standardise, deduplicate, split and shard an image set");
  c->add_option("source", a->source,
                "a folder with one subfolder of images per class, an MNIST *-images-idx3-ubyte[.gz] file (or its folder), "
                "or a CSV of pixel rows with the class last (scikit-learn digits.csv)")
      ->required();
  c->add_option("--out", a->out, "folder for the shards and dataset.json")->required();
  c->add_option("--size", a->opt.standardise.size, "resize every image to N x N (0 = keep; then all must match)")->capture_default_str();
  c->add_flag("--grayscale", a->opt.standardise.grayscale, "convert to one channel");
  c->add_option("--equalize", a->opt.standardise.equalize, "none, hist (histogram equalisation) or clahe")
      ->check(CLI::IsMember({"none", "hist", "clahe"}))
      ->capture_default_str();
  c->add_option("--dedup-distance", a->opt.dedup_distance, "perceptual-hash bits within which images are near-duplicates (-1 = keep all)")
      ->capture_default_str();
  c->add_option("--dedup-pixels", a->opt.dedup_pixels, "pixel difference a near-duplicate may have: sum |a - b| / sum (a + b), 0..1")
      ->capture_default_str();
  c->add_option("--val", a->opt.val_fraction, "validation share per class")->capture_default_str();
  c->add_option("--test", a->opt.test_fraction, "test share per class")->capture_default_str();
  c->add_option("--seed", a->opt.seed, "split seed")->capture_default_str();
  c->add_option("--shard-images", a->opt.shard_images, "images per shard file")->capture_default_str();
  c->callback([&ctx, a]() {
    ctx.action = [a]() {
      const vision::ImagePrepareResult r = vision::prepare_images(a->source, a->out, a->opt);
      const auto& s = r.stats;
      std::printf("image prepare: %lld images read (%s), %lld unreadable, %lld near-duplicates removed -> train %lld, val %lld, test %lld\n",
                  static_cast<long long>(s["images_read"].get<int64_t>()), s["format"].get<std::string>().c_str(),
                  static_cast<long long>(s["unreadable"].get<int64_t>()), static_cast<long long>(s["near_duplicates_removed"].get<int64_t>()),
                  static_cast<long long>(r.train), static_cast<long long>(r.val), static_cast<long long>(r.test));
      for (const auto& u : s["unreadable_examples"]) std::cerr << "image prepare: skipped " << u.get<std::string>() << "\n";
      std::printf("mean %s, std %s; class balance (train) %s\nwrote %s/dataset.json\n", s["mean"].dump().c_str(), s["std"].dump().c_str(),
                  s["class_balance"]["train"].dump().c_str(), r.out_dir.c_str());
      return 0;
    };
  });
}

void add_image_features(CLI::App* img, Context& ctx) {
  struct Args {
    std::string data, out;
    std::vector<std::string> kinds{"hog", "sift"};
    vision::FeatureOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = img->add_subcommand("features", "HOG and SIFT bag-of-words features with a linear classifier (the classic baselines)");
  c->add_option("--data", a->data, "a prepared image folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("--kind", a->kinds, "hog, sift (both by default)")->check(CLI::IsMember({"hog", "sift"}))->capture_default_str();
  c->add_option("--words", a->opt.words, "SIFT vocabulary size (k-means)")->capture_default_str();
  c->add_option("--epochs", a->opt.epochs, "linear classifier epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--seed", a->opt.seed, "seed (vocabulary sample, k-means, batches)")->capture_default_str();
  c->add_option("--out", a->out, "folder for features.json");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      a->opt.overrides = ctx.overrides;
      use_threads(ctx);
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      std::printf("%-6s %6s %10s %9s %12s %10s\n", "kind", "dims", "accuracy", "macro F1", "extract im/s", "seconds");
      for (const auto& k : a->kinds) {
        vision::FeatureOptions o = a->opt;
        o.kind = k;
        const vision::FeatureBaselineResult r = vision::feature_baseline(a->data, o);
        std::printf("%-6s %6lld %9.2f%% %9.4f %12.0f %10.1f\n", k.c_str(), static_cast<long long>(r.dims), 100 * r.report.accuracy,
                    r.report.macro.fmeasure, r.extract_images_per_second, r.train_seconds);
        all.push_back(vision::feature_baseline_json(r));
      }
      if (!a->out.empty()) {
        make_dirs(a->out);
        write_file_atomic(path_join(a->out, "features.json"), all.dump(2) + "\n");
      }
      return 0;
    };
  });
}

void add_image_train(CLI::App* img, Context& ctx) {
  struct Args {
    std::string data, out, augment = "none";
    std::vector<std::string> settings;
    vision::ImageTrainOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = img->add_subcommand("train", "train a CNN, MobileNet or ViT classifier through the training loop; score it on the held-out split");
  c->add_option("--data", a->data, "a prepared image folder (dsforge image prepare)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--arch", a->opt.arch, "cnn, mobilenet or vit")->check(CLI::IsMember({"cnn", "mobilenet", "vit"}))->capture_default_str();
  c->add_option("--out", a->out, "run folder: model/, image.json, report.html, checkpoints/, metrics.jsonl, tb/")->required();
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate (5% warmup, then linear decay)")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--weight-decay", a->opt.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--seed", a->opt.seed, "seed (initialisation, batches, augmentation)")->capture_default_str();
  c->add_option("--augment", a->augment,
                "on-the-fly augmentation, e.g. rotate=10,translate=0.1,scale=0.1,shear=5,crop=0.8,hflip,vflip,brightness=0.2,"
                "contrast=0.2,cutout=0.25,reflect")
      ->capture_default_str();
  c->add_option("--set", a->settings, "model setting key=value: width_base, hidden, patch, dim, depth, heads, mlp, dropout");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      a->opt.overrides = ctx.overrides;
      use_threads(ctx);
      a->opt.augment = vision::parse_augment(a->augment);
      a->opt.model = parse_settings(a->settings);
      const vision::ImageTrainResult r = vision::train_image_model(a->data, a->out, a->opt);
      std::printf("%s: %lld parameters, %.1f MFLOPs per image, trained on %lld images in %.1f s\n", r.config.arch.c_str(),
                  static_cast<long long>(r.parameters), r.forward_flops / 1e6, static_cast<long long>(r.train_images), r.train_seconds);
      print_eval("held-out", r.val);
      std::printf("wrote %s/model, image.json, report.html\n", a->out.c_str());
      return 0;
    };
  });
}

void add_image_eval(CLI::App* img, Context& ctx) {
  struct Args {
    std::string model, data, split = "val";
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = img->add_subcommand("eval", "score a trained image classifier on a prepared split");
  c->add_option("--model", a->model, "model folder (dsforge image train's <out>/model)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--data", a->data, "a prepared image folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("--split", a->split, "train, val or test")->check(CLI::IsMember({"train", "val", "test"}))->capture_default_str();
  c->add_flag("--json", a->json, "print the full result as JSON");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      const vision::ImageEvalResult e = vision::evaluate_loaded_model(a->model, a->data, a->split);
      print_eval(a->split, e);
      if (a->json) std::cout << vision::image_eval_json(e).dump(2) << "\n";
      return 0;
    };
  });
}

void add_image_predict(CLI::App* img, Context& ctx) {
  struct Args {
    std::string model;
    std::vector<std::string> files;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = img->add_subcommand("predict", "classify image files with a trained model");
  c->add_option("--model", a->model, "model folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("files", a->files, "image files")->required()->check(CLI::ExistingFile);
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      for (const auto& p : vision::predict_image_files(vision::load_image_model(a->model), a->files))
        std::printf("%s\t%s\t%.4f\n", p.file.c_str(), p.label.c_str(), p.confidence);
      return 0;
    };
  });
}

}  // namespace

void add_image_commands(CLI::App& app, Context& ctx) {
  CLI::App* img = app.add_subcommand("image", "image data sets, HOG/SIFT baselines and CNN / MobileNet / ViT classifiers");
  img->require_subcommand(1);
  add_image_prepare(img, ctx);
  add_image_features(img, ctx);
  add_image_train(img, ctx);
  add_image_eval(img, ctx);
  add_image_predict(img, ctx);
}

void add_multimodal_command(CLI::App& app, Context& ctx) {
  CLI::App* mm = app.add_subcommand("multimodal", "pictures and spoken clips as prefix tokens of a DeepSeek language model that answers about them");
  mm->require_subcommand(1);
  struct Args {
    std::string lm, data, out;
    vision::MultimodalOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = mm->add_subcommand(
      "train", "train a question-answering task: digits (pictures: number, sum), spoken (a clip: the word, its WordNet definition) or "
               "digit-pair (a picture and a clip: do they match, their sum)");
  c->add_option("--lm", a->lm, "DeepSeek-V3 model folder with tokenizer.json (e.g. runs/quickstart/model)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--task", a->opt.task, "digits, spoken or digit-pair")->check(CLI::IsMember({"digits", "spoken", "digit-pair"}))->capture_default_str();
  c->add_option("--inputs", a->opt.inputs, "all, image or audio: what the model sees (one modality alone = the baseline)")
      ->check(CLI::IsMember({"all", "image", "audio"}))
      ->capture_default_str();
  c->add_option("--data", a->data, "a prepared digit image set (dsforge image prepare on MNIST or digits.csv): digits and digit-pair")
      ->check(CLI::ExistingDirectory);
  c->add_option("--audio-data", a->opt.audio_data, "a prepared spoken-words folder (dsforge audio prepare): spoken and digit-pair")
      ->check(CLI::ExistingDirectory);
  c->add_option("--out", a->out, "run folder: model/, multimodal.json, examples/, checkpoints/")->required();
  c->add_option("--encoder", a->opt.encoder, "image encoder: cnn, mobilenet or vit")->check(CLI::IsMember({"cnn", "mobilenet", "vit"}))->capture_default_str();
  c->add_option("--audio-encoder", a->opt.audio_encoder, "audio encoder: lstm, gru or cnn")->check(CLI::IsMember({"lstm", "gru", "cnn"}))->capture_default_str();
  c->add_flag("--freeze-lm", a->opt.freeze_lm, "train only the encoders, projectors and prefix positions");
  c->add_option("--encoder-from", a->opt.encoder_from, "a `dsforge image train` model folder (same --encoder) to start the image encoder from")
      ->check(CLI::ExistingDirectory);
  c->add_option("--audio-encoder-from", a->opt.audio_encoder_from,
                "a `dsforge audio train` model folder (same --audio-encoder) to start the audio encoder from (its features too)")
      ->check(CLI::ExistingDirectory);
  c->add_option("--wordnet", a->opt.wordnet_dir, "WordNet's dict folder (the spoken task's definitions)")->capture_default_str();
  c->add_option("--digits", a->opt.digits, "digits per picture (1-3; the digits task)")->capture_default_str();
  c->add_option("--train-examples", a->opt.train_examples, "training examples (from the train splits)")->capture_default_str();
  c->add_option("--test-examples", a->opt.test_examples, "held-out examples (image val split, audio test split)")->capture_default_str();
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--seed", a->opt.seed, "seed")->capture_default_str();
  c->add_option("--write-examples", a->opt.write_examples, "held-out pictures and clips written to <out>/examples")->capture_default_str();
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      a->opt.overrides = ctx.overrides;
      use_threads(ctx);
      const vision::MultimodalResult r = vision::train_multimodal(a->lm, a->data, a->out, a->opt);
      std::printf("multimodal %s (inputs %s): %lld prefix tokens, %lld trainable of %lld parameters (language model %s), trained in %.1f s\n",
                  r.task.c_str(), r.inputs.c_str(), static_cast<long long>(r.prefix_tokens), static_cast<long long>(r.trainable_parameters),
                  static_cast<long long>(r.total_parameters), r.freeze_lm ? "frozen" : "tuned", r.train_seconds);
      std::printf("held-out (%lld examples): exact match %.2f%%, BLEU %.2f, chrF %.2f\n", static_cast<long long>(r.held_out),
                  100 * r.exact_match, r.bleu, r.chrf);
      for (size_t q = 0; q < r.questions.size(); ++q)
        std::printf("  %-58s exact match %.2f%%\n", r.questions[q].c_str(), 100 * r.exact_match_by_question.at(q));
      for (size_t i = 0; i < r.samples.size() && i < 4; ++i)
        std::printf("  %s -> %s (expected %s)\n", r.samples[i].question.c_str(), r.samples[i].answer.c_str(), r.samples[i].expected.c_str());
      std::printf("wrote %s/model, multimodal.json, examples/\n", a->out.c_str());
      return 0;
    };
  });
}

}  // namespace dsforge::cli

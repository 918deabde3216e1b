// Audio classifiers through the one training loop: the feature window and normalisation against
// hand-computed values, the model FLOPs against the recurrent weights they multiply, seeded in-loader
// augmentation, and LSTM, GRU and CNN classifiers learning tone "words" well enough to score voices they
// never heard; the saved model scored and used again from the CLI; bad input refused by name.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/models.h"
#include "dsforge/audio/prepare.h"
#include "dsforge/audio/train_audio.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/multimodal.h"
#include "dsforge/model/causal_lm.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace dsforge;
using namespace dsforge::audio;

namespace {

// A "word" of class c spoken by speaker s: two tones in sequence whose pitches depend on the class, each
// speaker a little higher and faster than the last, with a little noise.
std::vector<float> word(int c, int s, int take, int64_t rate) {
  const double shift = 1.0 + 0.03 * s, seconds = 0.30 - 0.01 * s + 0.01 * take;
  const double f1 = (300 + 250 * c) * shift, f2 = (1500 - 300 * c) * shift;
  std::vector<float> x(static_cast<size_t>(seconds * static_cast<double>(rate)));
  uint64_t noise = 12345 + static_cast<uint64_t>(c * 100 + s * 10 + take);
  for (size_t i = 0; i < x.size(); ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(rate);
    const double f = i < x.size() / 2 ? f1 : f2;
    noise = noise * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = static_cast<float>(0.4 * std::sin(2 * M_PI * f * t) + 0.02 * (static_cast<double>(noise >> 40) / 16777216.0 - 0.5));
  }
  return x;
}

// IN/<class>/<speaker>_<take>.wav for 3 classes x 8 speakers x 4 takes, prepared with two test voices
// and one validation voice.
std::string make_words(const std::string& root) {
  const std::string in = path_join(root, "words"), out = path_join(root, "prepared");
  const std::vector<std::string> classes = {"ba", "di", "gu"};
  for (const auto& c : classes) make_dirs(path_join(in, c));
  for (int c = 0; c < 3; ++c)
    for (int s = 0; s < 8; ++s)
      for (int take = 0; take < 4; ++take)
        write_wav(path_join(in, fmt(classes[static_cast<size_t>(c)], "/spk", s, "_", take, ".wav")), word(c, s, take, 8000), 8000);
  PrepareOptions o;
  o.rate = 8000;
  o.test_speakers = {"spk2", "spk6"};
  o.val_speakers = {"spk4"};
  prepare_audio(in, out, o);
  return out;
}

}  // namespace

TEST(AudioClassifier, WindowNormalisationAndFlopsMatchHandCounts) {
  AudioModelConfig c = default_audio_model("lstm", 16000, 1000, 3);
  EXPECT_EQ(c.n_fft, 400);
  EXPECT_EQ(c.hop_length, 160);
  EXPECT_EQ(c.frames(), 1 + 1000 / 160);
  c.clip_samples = 6;
  c.n_fft = 4;
  c.hop_length = 2;
  c.n_mels = 4;
  c.n_mfcc = 2;
  AudioFeaturizer f(c);
  const float x[] = {1, 2, 3, 4};
  EXPECT_EQ(f.window(x, 4), (std::vector<float>{0, 1, 2, 3, 4, 0}));  // centred in silence
  const float y[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(f.window(y, 9), (std::vector<float>{2, 3, 4, 5, 6, 7}));  // the middle of a longer clip

  // After fitting on a split, its features are normalised to mean 0 and deviation 1 per row.
  AudioModelConfig m = default_audio_model("cnn", 8000, 2400, 2);
  AudioSplit s;
  s.rate = 8000;
  s.classes = {"a", "b"};
  s.speaker_names = {"x"};
  s.offsets = {0};
  for (int k = 0; k < 6; ++k) {
    const auto w = word(k % 2, k, 0, 8000);
    s.samples.insert(s.samples.end(), w.begin(), w.end());
    s.offsets.push_back(static_cast<int64_t>(s.samples.size()));
    s.labels.push_back(k % 2);
    s.speakers.push_back(0);
  }
  AudioFeaturizer g(m);
  g.fit_normalisation(s);
  const at::Tensor b = g.batch(s, {0, 1, 2, 3, 4, 5});
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{6, m.n_mels, m.frames()}));
  const at::Tensor rows = b.transpose(0, 1).reshape({m.n_mels, -1});
  EXPECT_LT(rows.mean(1).abs().max().item<double>(), 1e-4);
  EXPECT_LT((rows.std(1, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-3);

  // FLOPs: two per multiply-add, and a recurrent layer multiplies each of its input-to-hidden and
  // hidden-to-hidden weights once per frame; the head once per clip.
  for (const std::string arch : {"lstm", "gru"}) {
    AudioModelConfig r = default_audio_model(arch, 8000, 4000, 5);
    r.hidden = 16;
    AudioClassifier net = make_audio_model(r);
    int64_t recurrent = 0, head = 0;
    for (const auto& p : net->named_parameters()) {
      if (p.key().find("weight_") != std::string::npos) recurrent += p.value().numel();
      if (p.key() == "head.weight") head = p.value().numel();
    }
    EXPECT_DOUBLE_EQ(audio_model_flops(r), 2.0 * static_cast<double>(r.frames() * recurrent + head)) << arch;
    const at::Tensor feats = at::randn({3, r.rows(), r.frames()});
    EXPECT_EQ(net->forward(feats).sizes(), (std::vector<int64_t>{3, 5}));
    EXPECT_EQ(net->sequence_features(feats).sizes(), (std::vector<int64_t>{3, (r.frames() + 7) / 8, 32}));
  }
  AudioClassifier cnn = make_audio_model(m);
  const at::Tensor feats = at::randn({2, m.n_mels, m.frames()});
  EXPECT_EQ(cnn->forward(feats).sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(cnn->sequence_features(feats).sizes(), (std::vector<int64_t>{2, (m.frames() / 4 + 1) / 2, 64}));

  AudioModelConfig bad = m;
  bad.n_mfcc = 80;
  EXPECT_THROW_MSG(validate(bad), ConfigError, "n_mfcc 80");
  bad = m;
  bad.arch = "transformer";
  EXPECT_THROW_MSG(make_audio_model(bad), ConfigError, "arch must be lstm, gru or cnn");
}

TEST(AudioClassifier, AugmentationSpecIsParsedAndSeeded) {
  const AudioAugment a = parse_audio_augment("shift=0.05,speed=0.9:1.1,snr=15,freq-mask=2x3,time-mask=1x5");
  EXPECT_DOUBLE_EQ(a.wave.max_shift_seconds, 0.05);
  EXPECT_DOUBLE_EQ(a.wave.speed_min, 0.9);
  EXPECT_DOUBLE_EQ(a.wave.speed_max, 1.1);
  EXPECT_DOUBLE_EQ(a.wave.snr_db, 15);
  EXPECT_EQ(a.spec.freq_masks, 2);
  EXPECT_EQ(a.spec.freq_width, 3);
  EXPECT_EQ(a.spec.time_masks, 1);
  EXPECT_EQ(a.spec.time_width, 5);
  EXPECT_EQ(parse_audio_augment(a.describe()).describe(), a.describe());
  EXPECT_FALSE(parse_audio_augment("none").any());
  EXPECT_THROW_MSG(parse_audio_augment("speed=0.3:1"), ConfigError, "'speed=0.3:1'");
  EXPECT_THROW_MSG(parse_audio_augment("pitch=2"), ConfigError, "'pitch=2': expected a known item");
  EXPECT_THROW_MSG(parse_audio_augment("time-mask=2"), ConfigError, "COUNTxWIDTH");

  // The same (seed, step, row) gives the same augmented features; another step another draw; clips
  // without augmentation are untouched by the seed.
  AudioSplit s;
  s.rate = 8000;
  s.classes = {"a", "b"};
  s.speaker_names = {"x"};
  s.offsets = {0};
  for (int k = 0; k < 2; ++k) {
    const auto w = word(k, 0, 0, 8000);
    s.samples.insert(s.samples.end(), w.begin(), w.end());
    s.offsets.push_back(static_cast<int64_t>(s.samples.size()));
    s.labels.push_back(k);
    s.speakers.push_back(0);
  }
  AudioFeaturizer f(default_audio_model("lstm", 8000, 3200, 2));
  const at::Tensor a1 = f.batch(s, {0, 1}, &a, 5, 3, 0), a2 = f.batch(s, {0, 1}, &a, 5, 3, 0), a3 = f.batch(s, {0, 1}, &a, 5, 4, 0);
  EXPECT_TRUE(at::equal(a1, a2));
  EXPECT_FALSE(at::equal(a1, a3));
  const AudioAugment none;
  EXPECT_TRUE(at::equal(f.batch(s, {0, 1}, &none, 5, 3, 0), f.batch(s, {0, 1})));
  EXPECT_TRUE(at::equal(f.batch(s, {1}, &a, 5, 3, 1), a1.narrow(0, 1, 1)));  // keyed by row: the same clip in a smaller batch
}

TEST(AudioClassifier, LearnsWordsAndScoresUnheardVoices) {
  TempDir dir;
  const std::string data = make_words(dir.path);
  for (const std::string arch : {"lstm", "gru", "cnn"}) {
    AudioTrainOptions o;
    o.arch = arch;
    o.epochs = arch == "cnn" ? 12 : 15;
    o.batch = 16;
    o.lr = 5e-3;
    o.augment = parse_audio_augment("shift=0.02,speed=0.95:1.05,freq-mask=1x4");
    o.model = {{"hidden", 32}, {"layers", 1}, {"width_base", 8}};
    const std::string out = path_join(dir.path, arch);
    const AudioTrainResult r = train_audio_model(data, out, o);
    EXPECT_EQ(r.train_clips, 3 * 5 * 4) << arch;
    EXPECT_EQ(r.val_accuracy.size(), static_cast<size_t>(o.epochs)) << arch;
    EXPECT_LT(r.epoch_losses.back(), r.epoch_losses.front()) << arch;
    EXPECT_GE(r.test.report.accuracy, 0.9) << arch;
    ASSERT_EQ(r.test.speakers.size(), 2u);
    EXPECT_EQ(r.test.speakers[0].speaker, "spk2");
    EXPECT_EQ(r.test.speakers[0].clips + r.test.speakers[1].clips, r.test.clips);
    EXPECT_EQ(r.test.report.confusion.size(), 3u);

    // The saved folder scores the same and classifies a file from outside the prepared set.
    const AudioEvalResult e = evaluate_loaded_audio_model(path_join(out, "model"), data, "test");
    EXPECT_NEAR(e.loss, r.test.loss, 1e-5) << arch;
    EXPECT_EQ(e.predictions, r.test.predictions) << arch;
    const LoadedAudioModel m = load_audio_model(path_join(out, "model"));
    const std::string wav = path_join(dir.path, "di.wav");
    std::vector<float> clip(800, 0.0f);  // 0.1 s of silence first: trimmed as in preparation
    const auto w = word(1, 6, 1, 8000);
    clip.insert(clip.end(), w.begin(), w.end());
    write_wav(wav, clip, 8000);
    EXPECT_EQ(predict_audio_files(m, {wav})[0].label, "di") << arch;

    const auto j = nlohmann::json::parse(read_file(path_join(out, "audio_train.json")));
    EXPECT_DOUBLE_EQ(j["test"]["accuracy"].get<double>(), r.test.report.accuracy);
    const std::string html = read_file(path_join(out, "report.html"));
    EXPECT_NE(html.find("Held-out voices"), std::string::npos);
    EXPECT_NE(html.find("<audio controls"), std::string::npos);
    int wavs = 0;
    for (const auto& f : std::filesystem::directory_iterator(path_join(out, "hardest"))) wavs += f.path().extension() == ".wav";
    EXPECT_EQ(wavs, static_cast<int>(r.test.hardest.size()));
  }
  // A finished run asked again resumes at its last step and trains no more.
  AudioTrainOptions o;
  o.arch = "cnn";
  o.epochs = 12;
  o.batch = 16;
  o.lr = 5e-3;
  o.augment = parse_audio_augment("shift=0.02,speed=0.95:1.05,freq-mask=1x4");
  o.model = {{"hidden", 32}, {"layers", 1}, {"width_base", 8}};
  const AudioTrainResult again = train_audio_model(data, path_join(dir.path, "cnn"), o);
  EXPECT_TRUE(again.epoch_losses.empty());
}

TEST(AudioClassifier, CliTrainsScoresAndRefusesBadInput) {
  TempDir dir;
  const std::string data = make_words(dir.path), out = path_join(dir.path, "run");
  CliRun t = run_cli("audio train --data " + data + " --arch gru --out " + out + " --epochs 2 --batch 16 --set hidden=16 --set layers=1",
                     dir.path);
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("voice spk6"), std::string::npos) << t.out;
  CliRun e = run_cli("audio eval --model " + path_join(out, "model") + " --data " + data + " --split val --json", dir.path);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.out.find("\"confusion\""), std::string::npos);
  CliRun bad = run_cli("audio train --data " + data + " --out " + path_join(dir.path, "x") + " --augment speed=3:4", dir.path);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("speed=3:4"), std::string::npos) << bad.err;
  CliRun key = run_cli("audio train --data " + data + " --out " + path_join(dir.path, "x") + " --set colour=3", dir.path);
  EXPECT_NE(key.code, 0);
  EXPECT_NE(key.err.find("'colour': unknown"), std::string::npos) << key.err;
  CliRun notmodel = run_cli("audio eval --model " + data + " --data " + data, dir.path);
  EXPECT_NE(notmodel.code, 0);
  EXPECT_NE(notmodel.err.find("no config.json"), std::string::npos) << notmodel.err;
}

namespace {

// IN/<zero..nine>/<speaker>_0.wav: ten tone "words", three speakers, two of them for training.
std::string make_spoken_digits(const std::string& root) {
  const std::string in = path_join(root, "digit-words"), out = path_join(root, "digit-words-prepared");
  for (int d = 0; d < 10; ++d) make_dirs(path_join(in, vision::number_words(d)));
  for (int d = 0; d < 10; ++d)
    for (int s = 0; s < 3; ++s)
      write_wav(path_join(in, fmt(vision::number_words(d), "/spk", s, "_0.wav")), word(d % 4, s, d / 4, 8000), 8000);
  PrepareOptions o;
  o.rate = 8000;
  o.test_speakers = {"spk2"};
  o.val_fraction = 0;
  prepare_audio(in, out, o);
  return out;
}

}  // namespace

TEST(AudioMultimodal, WordNetFirstSensesAreTheMostFrequentOnes) {
  if (!std::filesystem::exists("/usr/share/wordnet/index.noun")) GTEST_SKIP() << "wordnet-base not installed";
  const auto d = data::wordnet_first_definitions("/usr/share/wordnet", {"dog", "seven"});
  EXPECT_EQ(d.at("dog"),
            "a member of the genus Canis (probably descended from the common wolf) that has been domesticated by man since prehistoric times");
  EXPECT_EQ(d.at("seven"), "the cardinal number that is the sum of six and one");
  EXPECT_THROW_MSG(data::wordnet_first_definitions("/usr/share/wordnet", {"qwzx"}), DataError, "no noun 'qwzx'");
}

TEST(AudioMultimodal, AClipAndAPictureArePrefixTokensOfOneLanguageModel) {
  if (!std::filesystem::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  std::vector<std::string> docs;
  for (int n = 0; n < 100; ++n)
    docs.push_back("Q: do the shown and the spoken digit match? A: yes. Q: what is the sum of the shown and the spoken digit? A: " +
                   vision::number_words(n % 19) + ". no.");
  const std::string lm = save_tiny_model(t.path + "/lm", docs);
  vision::PrepareImagesOptions po;
  vision::prepare_images(shared_data_dir() + "/sklearn_toy/digits.csv", t.path + "/digits", po);
  const std::string audio_data = make_spoken_digits(t.path);

  vision::MultimodalOptions o;
  o.task = "digit-pair";
  o.audio_data = audio_data;
  o.audio_encoder = "gru";
  o.train_examples = 64;
  o.test_examples = 40;
  o.write_examples = 40;
  o.epochs = 1;
  o.batch = 16;
  const vision::MultimodalResult both = vision::train_multimodal(lm, t.path + "/digits", t.path + "/both", o);
  // 8x8 pictures: 2 CNN columns; the clip window at 8 kHz, hop 80: 1 + clip / 80 frames in windows of 8.
  const auto cfg = nlohmann::json::parse(read_file(t.path + "/both/model/config.json"));
  EXPECT_EQ(cfg["image_tokens"].get<int64_t>(), 2);
  const int64_t clip = cfg["audio_encoder"]["clip_samples"].get<int64_t>();
  EXPECT_EQ(cfg["audio_tokens"].get<int64_t>(), (1 + clip / 80 + 7) / 8);
  EXPECT_EQ(both.prefix_tokens, 2 + cfg["audio_tokens"].get<int64_t>());
  EXPECT_TRUE(std::filesystem::exists(t.path + "/both/model/vision.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(t.path + "/both/model/audio.safetensors"));
  // The held-out examples: half of the match questions match, every sum is the shown plus the spoken digit.
  const std::string tsv = read_file(t.path + "/both/examples/examples.tsv");
  int yes = 0, no = 0;
  for (size_t at = tsv.find("match? A:\t"); at != std::string::npos; at = tsv.find("match? A:\t", at + 1))
    (tsv.compare(at + 10, 3, "yes") == 0 ? yes : no) += 1;
  EXPECT_EQ(yes + no, 20);
  EXPECT_GE(yes, 5);
  EXPECT_GE(no, 5);
  // The saved model answers a written picture and clip as the held-out scoring did.
  const std::string answer = vision::answer_about(t.path + "/both/model", t.path + "/both/examples/heldout_0.png",
                                                  t.path + "/both/examples/heldout_0.wav", both.samples[0].question,
                                                  both.max_answer_tokens);
  EXPECT_EQ(answer, both.samples[0].answer);
  EXPECT_THROW_MSG(vision::answer_about(t.path + "/both/model", t.path + "/both/examples/heldout_0.png", "", both.samples[0].question, 8),
                   ConfigError, "give --audio FILE");

  // One modality alone: the baseline sees the picture only.
  o.inputs = "image";
  o.write_examples = 2;
  const vision::MultimodalResult image_only = vision::train_multimodal(lm, t.path + "/digits", t.path + "/image", o);
  EXPECT_EQ(image_only.prefix_tokens, 2);
  EXPECT_FALSE(std::filesystem::exists(t.path + "/image/model/audio.safetensors"));
  EXPECT_LT(image_only.trainable_parameters, both.trainable_parameters);
  auto cli = run_cli("generate --model " + t.path + "/image/model --image " + t.path + "/image/examples/heldout_0.png --audio " +
                         t.path + "/both/examples/heldout_0.wav --prompt 'Q: do the shown and the spoken digit match? A:'",
                     t.path);
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("reads no audio"), std::string::npos) << cli.err;

  o.task = "spoken";
  o.inputs = "image";
  EXPECT_THROW_MSG(vision::train_multimodal(lm, "", t.path + "/x", o), ConfigError, "the spoken task has no image input");
  o.task = "digit-pair";
  o.inputs = "all";
  o.audio_data = "";
  EXPECT_THROW_MSG(vision::train_multimodal(lm, t.path + "/digits", t.path + "/x", o), ConfigError, "needs --audio-data");
}

TEST(AudioMultimodal, SpokenWordsAnswerWithTheWordAndItsDefinition) {
  if (!std::filesystem::exists("/usr/share/wordnet/index.noun")) GTEST_SKIP() << "wordnet-base not installed";
  TempDir t;
  const std::string audio_data = make_spoken_digits(t.path);
  const std::string lm = save_tiny_model(t.path + "/lm", {"Q: which word is spoken? A: seven. Q: what does the spoken word mean? A: a number."});
  // An audio classifier to start the encoder from: its architecture, features and normalisation come along.
  AudioTrainOptions ao;
  ao.arch = "cnn";
  ao.epochs = 1;
  ao.model = {{"width_base", 4}, {"hidden", 8}};
  train_audio_model(audio_data, t.path + "/cls", ao);
  vision::MultimodalOptions o;
  o.task = "spoken";
  o.audio_data = audio_data;
  o.audio_encoder = "cnn";
  o.audio_encoder_from = t.path + "/cls/model";
  o.train_examples = 40;
  o.test_examples = 10;
  o.write_examples = 10;
  o.epochs = 1;
  const vision::MultimodalResult r = vision::train_multimodal(lm, "", t.path + "/mm", o);
  EXPECT_EQ(r.questions, vision::multimodal_questions("spoken"));
  const auto cfg = nlohmann::json::parse(read_file(t.path + "/mm/model/config.json"));
  const auto cls = nlohmann::json::parse(read_file(t.path + "/cls/model/config.json"));
  EXPECT_EQ(cfg["audio_encoder"], cls["audio_model"]);
  EXPECT_EQ(cfg["audio_mean"], cls["mean"]);
  EXPECT_FALSE(cfg.contains("encoder"));
  // The expected answers: the word for question 1, its first WordNet sense for question 2.
  const std::string tsv = read_file(t.path + "/mm/examples/examples.tsv");
  EXPECT_NE(tsv.find("Q: which word is spoken? A:\t"), std::string::npos);
  int definitions = 0;
  for (int d = 0; d < 10; ++d)
    definitions += tsv.find(data::wordnet_first_definitions("/usr/share/wordnet", {vision::number_words(d)}).at(vision::number_words(d))) !=
                   std::string::npos;
  EXPECT_GE(definitions, 3);
  EXPECT_EQ(vision::answer_about(t.path + "/mm/model", "", t.path + "/mm/examples/heldout_1.wav", r.samples[1].question, r.max_answer_tokens),
            r.samples[1].answer);
  o.audio_encoder = "lstm";
  EXPECT_THROW_MSG(vision::train_multimodal(lm, "", t.path + "/mm2", o), ConfigError, "is a cnn, --audio-encoder says lstm");
}

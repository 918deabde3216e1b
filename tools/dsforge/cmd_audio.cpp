// dsforge audio synth | prepare | augment | features | train | eval | predict
#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/augment.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/audio/features.h"
#include "dsforge/audio/prepare.h"
#include "dsforge/audio/synth.h"
#include "dsforge/audio/train_audio.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::cli {
namespace {

void add_feature_options(CLI::App* c, audio::FeatureOptions& o) {
  c->add_option("--n-fft", o.n_fft, "FFT size")->capture_default_str();
  c->add_option("--win-length", o.win_length, "window length (0 = n_fft)")->capture_default_str();
  c->add_option("--hop-length", o.hop_length, "hop (0 = win_length / 2)")->capture_default_str();
  c->add_option("--power", o.power, "spectrogram: 1 magnitude, 2 power")->capture_default_str();
  c->add_option("--n-mels", o.n_mels, "mel filters")->capture_default_str();
  c->add_option("--f-min", o.f_min, "lowest mel frequency (Hz)")->capture_default_str();
  c->add_option("--f-max", o.f_max, "highest mel frequency (Hz; 0 = Nyquist)")->capture_default_str();
  c->add_option("--mel-scale", o.mel_scale, "htk or slaney")->capture_default_str();
  c->add_option("--mel-norm", o.mel_norm, "filter normalisation: slaney or empty")->capture_default_str();
  c->add_option("--top-db", o.top_db, "log-mel and MFCC floor below the clip's maximum (negative = none)")->capture_default_str();
  c->add_option("--n-mfcc", o.n_mfcc, "MFCC coefficients")->capture_default_str();
  c->add_flag("--log-mels", o.log_mels, "MFCC over ln(mel + 1e-6) instead of decibels");
}

void print_eval(const audio::AudioEvalResult& e) {
  std::printf("%s: accuracy %.2f%%, macro F1 %.4f, loss %.4f on %lld clips; %.0f clips/s\n", e.split.c_str(), 100 * e.report.accuracy,
              e.report.macro.fmeasure, e.loss, static_cast<long long>(e.clips), e.clips_per_second);
  for (const auto& s : e.speakers)
    std::printf("  voice %-12s %4lld clips  accuracy %.2f%%\n", s.speaker.c_str(), static_cast<long long>(s.clips), 100 * s.accuracy());
}

void add_audio_train(CLI::App* audio, Context& ctx) {
  struct Args {
    std::string data, out, augment = "none";
    std::vector<std::string> settings;
    audio::AudioTrainOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = audio->add_subcommand(
      "train", "train an LSTM or GRU over MFCC frames or a CNN over log-mel through the training loop; score it on held-out voices");
  c->add_option("--data", a->data, "a prepared audio folder (dsforge audio prepare)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--arch", a->opt.arch, "lstm, gru or cnn")->check(CLI::IsMember({"lstm", "gru", "cnn"}))->capture_default_str();
  c->add_option("--out", a->out, "run folder: model/, audio_train.json, report.html, hardest/, checkpoints/, metrics.jsonl, tb/")->required();
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate (5% warmup, then linear decay)")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--weight-decay", a->opt.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--seed", a->opt.seed, "seed (initialisation, batches, augmentation)")->capture_default_str();
  c->add_option("--clip-seconds", a->opt.clip_seconds, "the window every clip is centred in (0 = the longest training clip)")
      ->capture_default_str();
  c->add_option("--augment", a->augment,
                "in-loader augmentation, e.g. shift=0.1,speed=0.9:1.1,snr=20,freq-mask=2x6,time-mask=2x10 (or none)")
      ->capture_default_str();
  c->add_option("--set", a->settings,
                "model setting key=value: features (mfcc|log-mel), n_fft, hop_length, n_mels, n_mfcc, hidden, layers, bidirectional, "
                "width_base, token_frames, dropout");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      a->opt.overrides = ctx.overrides;
      use_threads(ctx);
      a->opt.augment = audio::parse_audio_augment(a->augment);
      a->opt.model = parse_settings(a->settings);
      const audio::AudioTrainResult r = audio::train_audio_model(a->data, a->out, a->opt);
      std::printf("%s over %s: %lld parameters, %.1f MFLOPs per clip, trained on %lld clips in %.1f s\n", r.config.arch.c_str(),
                  r.config.features.c_str(), static_cast<long long>(r.parameters), r.forward_flops / 1e6,
                  static_cast<long long>(r.train_clips), r.train_seconds);
      print_eval(r.val);
      if (r.test.clips > 0) print_eval(r.test);
      std::printf("wrote %s/model, audio_train.json, report.html, hardest/\n", a->out.c_str());
      return 0;
    };
  });
}

void add_audio_eval(CLI::App* audio, Context& ctx) {
  struct Args {
    std::string model, data, split = "test";
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = audio->add_subcommand("eval", "score a trained audio classifier on a prepared split: accuracy, F1, per voice, hardest clips");
  c->add_option("--model", a->model, "model folder (dsforge audio train's <out>/model)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--data", a->data, "a prepared audio folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("--split", a->split, "train, val or test")->check(CLI::IsMember({"train", "val", "test"}))->capture_default_str();
  c->add_flag("--json", a->json, "print the full result as JSON (confusion matrix, per class, hardest clips)");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      const audio::AudioEvalResult e = audio::evaluate_loaded_audio_model(a->model, a->data, a->split);
      print_eval(e);
      if (a->json) std::cout << audio::audio_eval_json(e).dump(2) << "\n";
      return 0;
    };
  });
}

void add_audio_predict(CLI::App* audio, Context& ctx) {
  struct Args {
    std::string model;
    std::vector<std::string> files;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = audio->add_subcommand("predict", "classify audio files with a trained model (decoded, resampled, trimmed, normalised as in training)");
  c->add_option("--model", a->model, "model folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("files", a->files, "audio files")->required()->check(CLI::ExistingFile);
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      for (const auto& p : audio::predict_audio_files(audio::load_audio_model(a->model), a->files))
        std::printf("%s\t%s\t%.4f\n", p.file.c_str(), p.label.c_str(), p.confidence);
      return 0;
    };
  });
}

}  // namespace

void add_audio_commands(CLI::App& app, Context& ctx) {
  CLI::App* audio = app.add_subcommand("audio", "audio: the synthetic spoken-words set, preparation into shards, features, classifiers");
  audio->require_subcommand(1);

  add_audio_train(audio, ctx);
  add_audio_eval(audio, ctx);
  add_audio_predict(audio, ctx);

  auto so = std::make_shared<audio::SynthOptions>();
  auto synth_out = std::make_shared<std::string>();
  CLI::App* s = audio->add_subcommand(
      "synth", "make the built-in spoken-words set with espeak-ng (digits and 30 nouns, 10 voices x 2 speeds x 2 pitches, "
               "sox noise at set SNRs): synthetic speech, not recordings");
  s->add_option("-o,--out", *synth_out, "output folder (<word>/<voice>_s<speed>_p<pitch>_<noise>.wav)")->required();
  s->add_option("--words", so->words, "words to speak (default: zero..nine and 30 nouns)")->delimiter(',');
  s->add_option("--voices", so->voices, "espeak-ng voices (default: 10 English voice variants)")->delimiter(',');
  s->add_option("--speeds", so->speeds, "words per minute")->delimiter(',')->capture_default_str();
  s->add_option("--pitches", so->pitches, "pitches, 0..99")->delimiter(',')->capture_default_str();
  s->add_option("--snrs", so->snrs, "SNRs (dB) of the noisy takes")->delimiter(',')->capture_default_str();
  s->add_option("--seed", so->seed, "noise choice and offsets")->capture_default_str();
  s->callback([&ctx, so, synth_out]() {
    ctx.action = [so, synth_out]() {
      const auto r = audio::synthesize_spoken_words(*synth_out, *so);
      std::cout << fmt(r.clips, " clips (", r.clean, " clean, ", r.noisy, " with noise) in ", *synth_out, "\n");
      return 0;
    };
  });

  struct PrepArgs {
    std::string input, out;
    bool no_trim = false;
    audio::PrepareOptions opt;
  };
  auto pa = std::make_shared<PrepArgs>();
  CLI::App* p = audio->add_subcommand(
      "prepare", "decode, resample, trim, normalise and split labelled clips (IN/<class>/<speaker>_*.wav) by speaker into shards");
  p->add_option("-i,--input", pa->input, "folder with one subfolder per class")->required()->check(CLI::ExistingDirectory);
  p->add_option("-o,--out", pa->out, "output folder (train/val/test.safetensors, audio.json)")->required();
  p->add_option("--rate", pa->opt.rate, "sample rate (Hz)")->capture_default_str();
  p->add_flag("--no-trim", pa->no_trim, "keep leading and trailing silence");
  p->add_option("--trim-db", pa->opt.trim_db, "silence: frames this many dB below the loudest")->capture_default_str();
  p->add_option("--loudness", pa->opt.target_dbfs, "target RMS level (dBFS)")->capture_default_str();
  p->add_option("--min-seconds", pa->opt.min_seconds, "skip clips shorter than this after trimming")->capture_default_str();
  p->add_option("--max-seconds", pa->opt.max_seconds, "cut clips longer than this (0 = keep whole)")->capture_default_str();
  p->add_option("--val-fraction", pa->opt.val_fraction, "share of speakers held out for validation")->capture_default_str();
  p->add_option("--test-fraction", pa->opt.test_fraction, "share of speakers held out for test")->capture_default_str();
  p->add_option("--test-speakers", pa->opt.test_speakers, "these speakers are the test split")->delimiter(',');
  p->add_option("--val-speakers", pa->opt.val_speakers, "these speakers are the validation split")->delimiter(',');
  p->add_option("--seed", pa->opt.seed, "speaker split seed")->capture_default_str();
  p->callback([&ctx, pa]() {
    ctx.action = [pa]() {
      pa->opt.trim = !pa->no_trim;
      std::cout << audio::prepare_table(audio::prepare_audio(pa->input, pa->out, pa->opt));
      return 0;
    };
  });

  struct AugArgs {
    std::string input, output;
    std::vector<double> speed;
    uint64_t seed = 0;
    audio::WaveAugment a;
  };
  auto aa = std::make_shared<AugArgs>();
  CLI::App* ag = audio->add_subcommand("augment", "one seeded augmentation of a clip, to listen to: time shift, speed, noise");
  ag->add_option("-i,--input", aa->input, "audio file")->required()->check(CLI::ExistingFile);
  ag->add_option("-o,--output", aa->output, "WAV file to write")->required();
  ag->add_option("--shift", aa->a.max_shift_seconds, "largest time shift (s), either way")->capture_default_str();
  ag->add_option("--speed", aa->speed, "speed factor range MIN,MAX (0.5..2), e.g. 0.9,1.1")->delimiter(',')->expected(2);
  ag->add_option("--snr", aa->a.snr_db, "white noise at this SNR (dB); negative = none")->capture_default_str();
  ag->add_option("--seed", aa->seed, "seed")->capture_default_str();
  ag->callback([&ctx, aa]() {
    ctx.action = [aa]() {
      if (!aa->speed.empty()) {
        aa->a.speed_min = aa->speed[0];
        aa->a.speed_max = aa->speed[1];
      }
      const audio::Clip c = audio::read_audio(aa->input);
      const auto y = audio::augment_wave(c.samples, c.rate, aa->a, aa->seed);
      audio::write_wav(aa->output, y, c.rate);
      std::cout << fmt(aa->output, ": ", y.size(), " samples at ", c.rate, " Hz (from ", c.samples.size(), ")\n");
      return 0;
    };
  });

  struct FeatArgs {
    std::vector<std::string> inputs;
    std::string kind = "mfcc", out;
    int64_t rate = 0;
    uint64_t seed = 0;
    audio::FeatureOptions opt;
    audio::SpecAugment spec;
  };
  auto fa = std::make_shared<FeatArgs>();
  CLI::App* f = audio->add_subcommand(
      "features", "log-mel spectrogram or MFCC of audio files (torchaudio 0.13's definitions); prints each shape and range");
  f->add_option("-i,--input", fa->inputs, "audio files")->required()->check(CLI::ExistingFile);
  f->add_option("--kind", fa->kind, "spectrogram, mel, log-mel or mfcc")
      ->check(CLI::IsMember({"spectrogram", "mel", "log-mel", "mfcc"}))
      ->capture_default_str();
  f->add_option("--rate", fa->rate, "resample to this rate first (0 = the file's; --sample-rate defaults to it)");
  f->add_option("--out", fa->out, "write the features of the inputs as raw float32 rows, one file per input: OUT/<name>.f32");
  add_feature_options(f, fa->opt);
  f->add_option("--freq-masks", fa->spec.freq_masks, "SpecAugment: frequency masks")->capture_default_str();
  f->add_option("--freq-width", fa->spec.freq_width, "SpecAugment: rows per frequency mask at most")->capture_default_str();
  f->add_option("--time-masks", fa->spec.time_masks, "SpecAugment: time masks")->capture_default_str();
  f->add_option("--time-width", fa->spec.time_width, "SpecAugment: frames per time mask at most")->capture_default_str();
  f->add_option("--seed", fa->seed, "SpecAugment seed")->capture_default_str();
  f->callback([&ctx, fa]() {
    ctx.action = [fa]() {
      if (!fa->out.empty()) make_dirs(fa->out);
      for (const auto& path : fa->inputs) {
        audio::Clip c = audio::read_audio(path);
        if (fa->rate > 0) c.samples = audio::resample(c.samples, c.rate, fa->rate);
        audio::FeatureOptions o = fa->opt;
        o.sample_rate = fa->rate > 0 ? fa->rate : c.rate;
        audio::Features x = audio::FeatureExtractor(o).compute(fa->kind, c.samples);
        audio::spec_augment(x, fa->spec, fa->seed);
        const auto [lo, hi] = std::minmax_element(x.data.begin(), x.data.end());
        std::cout << fmt(path, ": ", fa->kind, " ", x.rows, " x ", x.frames, " (", c.format, ", ", c.rate, " Hz, ",
                         static_cast<double>(c.samples.size()) / static_cast<double>(o.sample_rate), " s), min ", *lo, " max ", *hi, "\n");
        if (!fa->out.empty()) {
          std::string name = path.substr(path.find_last_of('/') + 1);
          write_file_atomic(path_join(fa->out, name + ".f32"),
                            std::string_view(reinterpret_cast<const char*>(x.data.data()), x.data.size() * sizeof(float)));
        }
      }
      return 0;
    };
  });
}

}  // namespace dsforge::cli

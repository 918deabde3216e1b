// Quantised variants side by side, one run, one thread by default: for each model the f32 folder, its
// int8-weight and its w8a8 quantisation (`dsforge quantize --scheme ...`):
//   size of model.safetensors, peak RSS, prefill tokens/s (a 256-token prompt), decode tokens/s at batch 1
//   (16-token prompt, 128 new tokens, greedy) and batch 16, and bits per byte on held-out text scored
//   through the decode path (chunks of 64 tokens through forward_cached: the arithmetic decode uses,
//   int8 x int8 for w8a8), with its change against f32;
// (the quality model also with static activation scales calibrated on TinyStories' training text);
// and llama.cpp (node-llama-cpp 3.21.1) on the same model exported as GGUF q8_0 against dsforge w8a8,
// decode at batch 1, each with its peak RSS. Speed models (mini, micro) have random weights; the
// quality model is a trained one:
//
//   dsforge pipeline --config configs/run/continual_base.toml     # nano on TinyStories (9 s): the quality model
//   ./build/bench_quant [--threads 1] [--skip-llama] [--model runs/continual-base/model] [--text held_out.txt]
//
// The rows are also written as JSON (--json FILE) and as an HTML page with bar charts (--html FILE).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_models.h"
#include "bench_util.h"
#include "dsforge/compress/quantize.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/deploy/export.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tokenizer/bpe.h"

using namespace dsforge;
using namespace dsforge::bench;

namespace {

// The variants of `f32_dir`: {name, folder}. "+head": the embedding and the output head quantised too
// (--include-embeddings): at batch 1 the head is a large share of the bytes a step reads.
std::vector<std::pair<std::string, std::string>> variants(const std::string& f32_dir, const std::string& calib = "") {
  std::vector<std::pair<std::string, std::string>> out{{"f32", f32_dir}};
  for (const auto& [scheme, head] : {std::pair<const char*, bool>{"int8-weight", false}, {"w8a8", false}, {"w8a8", true}}) {
    const std::string name = std::string(scheme) + (head ? "+head" : "");
    const std::string d = f32_dir + "-" + name;
    if (!std::filesystem::exists(d)) {
      compress::QuantizeOptions o;
      o.scheme = scheme;
      o.include_embeddings = head;
      compress::quantize_model(f32_dir, d, o);
    }
    out.push_back({name, d});
  }
  if (!calib.empty()) {  // static activation scales from `calib` (quantize --calib)
    const std::string d = f32_dir + "-w8a8+head+calib";
    if (!std::filesystem::exists(d)) {
      compress::QuantizeOptions o;
      o.scheme = "w8a8";
      o.include_embeddings = true;
      o.calib_path = calib;
      compress::quantize_model(f32_dir, d, o);
    }
    out.push_back({"w8a8+head+calib", d});
  }
  return out;
}


// printf that also keeps the text (the HTML page repeats the tables).
std::string g_printed;
__attribute__((format(printf, 1, 2))) void say(const char* f, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  std::fputs(buf, stdout);
  g_printed += buf;
}

double file_mb(const std::string& p) { return static_cast<double>(std::filesystem::file_size(p)) / 1e6; }

// Bits per byte of `text` through the decode path (model::decode_path_nll, windows of `window` tokens).
double decode_bits_per_byte(model::CausalLm m, const tok::BpeTokenizer& tok, const std::string& text, int64_t window) {
  const std::vector<int32_t> ids = tok.encode(text);
  return model::decode_path_nll(m, std::vector<int64_t>(ids.begin(), ids.end()), window).first / std::log(2.0) /
         static_cast<double>(text.size());
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  bool skip_llama = false;
  std::string quality_model = std::string(DSFORGE_SOURCE_DIR) + "/runs/continual-base/model";
  std::string text_path = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data/tinystories/validation_slice.txt";
  std::string json_out, html_out;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--skip-llama")) skip_llama = true;
    else if (!std::strcmp(argv[i], "--model") && i + 1 < argc) quality_model = argv[++i];
    else if (!std::strcmp(argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_out = argv[++i];
    else if (!std::strcmp(argv[i], "--html") && i + 1 < argc) html_out = argv[++i];
  }
  at::set_num_threads(threads);
  const std::string dir = (std::filesystem::temp_directory_path() / ("dsforge-bench-quant-" + std::to_string(::getpid()))).string();
  make_dirs(dir);
  nlohmann::json rows = nlohmann::json::array();
  const bool llama = !skip_llama && llama_available();

  say("== speed, random weights, %d thread(s), int8 kernel: see `dsforge doctor`\n", threads);
  say("| model | variant | model.safetensors MB | peak RSS MB | prefill tok/s | decode tok/s b1 | decode tok/s b16 | "
              "b1 vs f32 |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const char* preset : {"micro", "mini"}) {
    const std::string f32 = make_random_model(dir, preset);
    double f32_b1 = 0, w8a8_b1 = 0;
    std::string w8a8_dir;
    for (const auto& [name, folder] : variants(f32)) {
      reset_peak_rss();
      model::CausalLm m = model::load_pretrained(folder);
      const int64_t V = m->config().vocab_size;
      std::vector<int64_t> long_prompt;
      for (int i = 0; i < 256; ++i) long_prompt.push_back(1 + i * 13 % (V - 1));
      const DecodeSpeed d = decode_speed(m);  // warms up first
      model::SampleOptions o;
      o.max_new_tokens = 1;
      const double prefill = 256.0 / median3([&] { model::generate(m, {long_prompt}, o); });
      const double b1 = d.batch1, b16 = d.batch16;
      const double rss = peak_rss_mb(), size = file_mb(folder + "/model.safetensors");
      if (name == "f32") f32_b1 = b1;
      if (name == "w8a8+head") w8a8_b1 = b1, w8a8_dir = folder;
      say("| %s | %s | %.1f | %.0f | %.0f | %.0f | %.0f | %.2fx |\n", preset, name.c_str(), size, rss, prefill, b1, b16,
                  b1 / f32_b1);
      std::fflush(stdout);
      rows.push_back({{"model", preset}, {"variant", name}, {"size_mb", size}, {"peak_rss_mb", rss}, {"prefill_tok_s", prefill},
                      {"decode_b1_tok_s", b1}, {"decode_b16_tok_s", b16}});
    }
    if (llama) {
      // llama.cpp q8_0 (every matrix int8 in blocks of 32, the head included) against dsforge w8a8+head.
      deploy::export_gguf(f32, dir + "/q8.gguf", deploy::GgmlType::Q8_0);
      const int64_t vocab = model::load_pretrained(w8a8_dir)->config().vocab_size;
      const LlamaDecode r = llama_decode(dir + "/q8.gguf", vocab, bench_prompt(vocab), 128, threads, dir);
      if (r.ok) {
        say("| %s | llama.cpp q8_0 | %.1f | %.0f | | %.0f | | dsforge w8a8+head / llama.cpp q8_0: %.2fx |\n", preset,
                    file_mb(dir + "/q8.gguf"), r.peak_rss_mb, r.tokens_per_s, w8a8_b1 / r.tokens_per_s);
        rows.push_back({{"model", preset}, {"variant", "llama.cpp q8_0"}, {"size_mb", file_mb(dir + "/q8.gguf")},
                        {"peak_rss_mb", r.peak_rss_mb}, {"decode_b1_tok_s", r.tokens_per_s}});
      } else {
        say("llama.cpp failed: %s\n", r.error.c_str());
      }
      std::fflush(stdout);
    }
  }

  if (file_exists(quality_model + "/config.json") && file_exists(text_path)) {
    std::string text = read_file(text_path);
    if (text.size() > 60000) text = text.substr(0, text.rfind('\n', 60000) + 1);
    say("\n== quality: %s on the first %zu bytes of %s, scored through the decode path (windows of 256 tokens)\n",
                quality_model.c_str(), text.size(), text_path.c_str());
    say("| variant | bits per byte | vs f32 |\n|---|---:|---:|\n");
    const std::string base = dir + "/quality";
    std::filesystem::copy(quality_model, base, std::filesystem::copy_options::recursive);
    const tok::BpeTokenizer tok = tok::BpeTokenizer::load(base + "/tokenizer.json");
    double f32_bpb = 0;
    // Calibration text: the model's training text (TinyStories), held-out text scored.
    const std::string calib = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data/tinystories/train_first1000.txt";
    for (const auto& [name, folder] : variants(base, file_exists(calib) ? calib : "")) {
      const double bpb = decode_bits_per_byte(model::load_pretrained(folder), tok, text, 256);
      if (name == "f32") f32_bpb = bpb;
      say("| %s | %.5f | %+.3f%% |\n", name.c_str(), bpb, 100 * (bpb / f32_bpb - 1));
      rows.push_back({{"model", quality_model}, {"variant", name}, {"bits_per_byte", bpb}});
    }
  } else {
    say("\n(quality skipped: %s or %s missing; `dsforge pipeline --config configs/run/continual_base.toml` makes the model)\n",
                quality_model.c_str(), text_path.c_str());
  }
  if (!json_out.empty()) write_file_atomic(json_out, rows.dump(2) + "\n");
  if (!html_out.empty()) {
    // Per model, decode tokens/s at batch 1 and 16 by variant; the quality model's bits per byte; the tables.
    std::string body = "<h1>dsforge quantised variants</h1><div class=\"grid2\">";
    for (const char* preset : {"micro", "mini"})
      for (const char* key : {"decode_b1_tok_s", "decode_b16_tok_s"}) {
        std::vector<std::string> labels;
        std::vector<double> values;
        for (const auto& r : rows)
          if (r["model"] == preset && r.contains(key)) labels.push_back(r["variant"]), values.push_back(r[key].get<double>());
        if (!labels.empty())
          body += report::svg_bar_chart(fmt(preset, ": decode tokens/s, batch ", std::string(key) == "decode_b1_tok_s" ? 1 : 16),
                                        labels, values, {}, "tokens per second (one thread)");
      }
    std::vector<std::string> labels;
    std::vector<double> values;
    for (const auto& r : rows)
      if (r.contains("bits_per_byte")) labels.push_back(r["variant"]), values.push_back(r["bits_per_byte"].get<double>());
    if (!labels.empty()) body += report::svg_bar_chart("held-out bits per byte (decode path)", labels, values, {}, "bits per byte");
    body += "</div><h2>Tables</h2><pre>" + g_printed + "</pre>";
    write_file_atomic(html_out, report::html_page("dsforge quantised variants", body));
  }
  std::filesystem::remove_all(dir);
  return 0;
}

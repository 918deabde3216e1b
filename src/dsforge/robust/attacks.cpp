#include "dsforge/robust/attacks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "dsforge/core/error.h"
#include "dsforge/core/log.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/core/text.h"
#include "dsforge/data/augment.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/text_classifier.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/models.h"
#include "dsforge/vision/train_image.h"
#include "dsforge/train/adversarial.h"

namespace dsforge::robust {
namespace {

constexpr size_t kShown = 8;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Running totals of an attack; finish() turns them into the report's rates.
struct Tally {
  int64_t examples = 0, clean_correct = 0, robust_correct = 0, flipped = 0;
  double perturbation = 0, relative = 0, queries = 0;
  void finish(AttackReport& r) const {
    const auto n = static_cast<double>(std::max<int64_t>(examples, 1));
    const auto attacked = static_cast<double>(std::max<int64_t>(clean_correct, 1));
    r.examples = examples;
    r.clean_accuracy = static_cast<double>(clean_correct) / n;
    r.robust_accuracy = static_cast<double>(robust_correct) / n;
    r.success_rate = static_cast<double>(flipped) / attacked;
    r.mean_perturbation = perturbation / attacked;
    r.relative_perturbation = relative / attacked;
    r.queries_per_example = queries / attacked;
  }
  // One example of a gradient attack: true when the attack flipped a correct prediction.
  bool add(int64_t gold, int64_t clean, int64_t adv, double pert, double size, int64_t steps) {
    ++examples;
    robust_correct += adv == gold;
    if (clean != gold) return false;
    ++clean_correct;
    perturbation += pert;
    if (size > 0) relative += pert / size;
    queries += static_cast<double>(steps);
    flipped += adv != gold;
    return adv != gold;
  }
};

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<double> to_doubles(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Original | attacked | perturbation (x4 around mid grey) of one image in [0, 1], as one PNG strip.
std::string example_png(const at::Tensor& clean01, const at::Tensor& adv01) {
  auto bytes = [](const at::Tensor& t) {
    const at::Tensor u = (t.clamp(0, 1) * 255).round().to(at::kByte).contiguous();
    return std::vector<uint8_t>(u.data_ptr<uint8_t>(), u.data_ptr<uint8_t>() + u.numel());
  };
  const auto a = bytes(clean01), b = bytes(adv01), d = bytes((adv01 - clean01) * 4 + 0.5);
  const int64_t C = clean01.size(0), H = clean01.size(1), W = clean01.size(2);
  const int scale = H <= 32 ? 3 : 1;
  return vision::base64(vision::png_grid({a.data(), b.data(), d.data()}, C, H, W, 3, scale));
}

}  // namespace

AttackReport attack_image_model(const std::string& model_dir, const std::string& data_dir, const std::string& split,
                                const train::AttackOptions& a, int64_t max_examples, int64_t batch) {
  train::validate(a);
  const auto t0 = std::chrono::steady_clock::now();
  const vision::LoadedImageModel m = vision::load_image_model(model_dir);
  const vision::ImageDataset d = vision::load_image_split(data_dir, split);
  const nlohmann::json mc = m.config.at("image_model");
  if (d.channels != mc.value("channels", 0) || d.height != mc.value("height", 0) || d.width != mc.value("width", 0) || d.classes != m.classes)
    throw DataError(fmt(data_dir, " (", split, "): images ", d.channels, "x", d.height, "x", d.width, " with ", d.classes.size(),
                        " classes do not match the model in ", model_dir));
  AttackReport r;
  r.target = "image";
  r.attack = a.describe();
  r.model = model_dir;
  r.data = fmt(data_dir, " (", split, ")");
  const int64_t n = max_examples > 0 ? std::min(max_examples, d.size()) : d.size();
  auto logits = [&](const at::Tensor& px) { return m.model->forward(vision::normalise_pixels(px, m.mean, m.stddev)).to(at::kFloat); };
  Tally t;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    std::vector<int64_t> idx;
    for (int64_t i = b0; i < std::min(n, b0 + batch); ++i) idx.push_back(i);
    const at::Tensor x = vision::image_batch(d, idx, nullptr, 0, 0, 0, /*normalise=*/false);
    std::vector<int64_t> gold;
    for (const int64_t i : idx) gold.push_back(d.labels[static_cast<size_t>(i)]);
    const at::Tensor y = at::tensor(gold, at::kLong);
    train::AttackOptions ab = a;
    ab.seed = a.seed + static_cast<uint64_t>(b0);  // the same images get the same random start on every run
    const at::Tensor x_adv = train::perturb(
        [&](const at::Tensor& px) { return at::cross_entropy_loss(logits(px), y, {}, at::Reduction::None); }, x, ab, {}, train::Box{0, 1});
    at::NoGradGuard ng;
    const auto clean = to_vector(logits(x).argmax(-1)), adv = to_vector(logits(x_adv).argmax(-1));
    const auto pert = to_doubles(train::perturbation_norm(x_adv - x, a.norm));
    for (size_t k = 0; k < idx.size(); ++k) {
      if (!t.add(gold[k], clean[k], adv[k], pert[k], 0, a.step_count())) continue;
      if (r.shown.size() < kShown) {
        const auto row = static_cast<int64_t>(k);
        r.shown.push_back({d.sources.empty() ? fmt("#", idx[k]) : d.sources[static_cast<size_t>(idx[k])], "", d.classes[static_cast<size_t>(gold[k])],
                           d.classes[static_cast<size_t>(clean[k])], d.classes[static_cast<size_t>(adv[k])], pert[k],
                           example_png(x[row], x_adv[row])});
      }
    }
  }
  t.finish(r);
  r.seconds = seconds_since(t0);
  return r;
}

AttackReport embedding_attack(const tasks::TextClassifier& c, const std::vector<tasks::Example>& examples, const train::AttackOptions& a,
                              int64_t batch) {
  train::validate(a);
  const auto t0 = std::chrono::steady_clock::now();
  AttackReport r;
  r.target = "text";
  r.attack = fmt(a.describe(), " on token embeddings");
  Tally t;
  c.module().eval();
  for (size_t b0 = 0; b0 < examples.size(); b0 += static_cast<size_t>(batch)) {
    std::vector<std::string> texts;
    std::vector<int64_t> gold;
    for (size_t i = b0; i < std::min(examples.size(), b0 + static_cast<size_t>(batch)); ++i) {
      texts.push_back(examples[i].text);
      gold.push_back(c.label_index(examples[i].label));
    }
    auto [ids, mask] = c.encode(texts);
    const at::Tensor e = c.embed(ids).detach().to(at::kFloat);
    const at::Tensor y = at::tensor(gold, at::kLong).clamp_min(0);  // unknown labels: never counted correct below
    const at::Tensor token_mask = mask.unsqueeze(-1);
    train::AttackOptions ab = a;
    ab.seed = a.seed + b0;
    const at::Tensor e_adv = train::perturb(
        [&](const at::Tensor& emb) { return at::cross_entropy_loss(c.logits_from_embeddings(emb, mask), y, {}, at::Reduction::None); }, e, ab,
        token_mask);
    at::NoGradGuard ng;
    const auto clean = to_vector(c.logits_from_embeddings(e, mask).argmax(-1));
    const auto adv = to_vector(c.logits_from_embeddings(e_adv, mask).argmax(-1));
    const auto pert = to_doubles(train::perturbation_norm(e_adv - e, a.norm));
    const auto size = to_doubles(train::perturbation_norm(e * token_mask, a.norm));
    for (size_t k = 0; k < texts.size(); ++k) {
      if (!t.add(gold[k], clean[k], adv[k], pert[k], std::max(size[k], 1e-12), a.step_count())) continue;
      if (r.shown.size() < kShown)
        r.shown.push_back({texts[k], "", examples[b0 + k].label, c.labels()[static_cast<size_t>(clean[k])],
                           c.labels()[static_cast<size_t>(adv[k])], pert[k], ""});
    }
  }
  t.finish(r);
  r.seconds = seconds_since(t0);
  return r;
}

namespace {

// The text without span `s` and one neighbouring space.
std::string delete_span(const std::string& text, std::pair<size_t, size_t> s) {
  size_t a = s.first, b = s.second;
  if (b < text.size() && text[b] == ' ') ++b;
  else if (a > 0 && text[a - 1] == ' ') --a;
  return text.substr(0, a) + text.substr(b);
}

// `word` capitalised like `original` ("Film" for "Movie").
std::string cased_like(const std::string& original, std::string word) {
  if (!original.empty() && !word.empty() && std::isupper(static_cast<unsigned char>(original[0])))
    word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
  return word;
}

// Single-word synonyms of the word's dominant part of speech, at most `max` (what the attack tries).
std::vector<std::string> candidate_synonyms(const data::WordNet& wn, const std::string& word, bool keep_pos, int64_t max) {
  std::vector<std::string> out;
  const std::string w = lower_ascii(word);
  if (data::is_stopword(w)) return out;
  const char pos = wn.dominant_pos(w);
  if (pos == 0) return out;
  for (auto& s : wn.synonyms(w, keep_pos ? pos : 0)) {
    if (s.find(' ') != std::string::npos || s.find('-') != std::string::npos) continue;  // one word for one word
    out.push_back(std::move(s));
    if (static_cast<int64_t>(out.size()) >= max) break;
  }
  return out;
}

// Probability of class `gold` for each text, and the predicted class of each.
std::pair<std::vector<double>, std::vector<int64_t>> gold_probability(const tasks::TextClassifier& c, const std::vector<std::string>& texts,
                                                                      int64_t gold) {
  const at::Tensor p = c.probabilities(texts);
  return {to_doubles(p.select(1, gold)), to_vector(p.argmax(-1))};
}

}  // namespace

AttackReport synonym_attack(const tasks::TextClassifier& c, const std::vector<tasks::Example>& examples, const data::WordNet& wn,
                            const SynonymAttackOptions& o, std::vector<tasks::Example>* found) {
  if (!(o.budget > 0 && o.budget <= 1)) throw ConfigError(fmt("synonym attack: budget ", o.budget, ": expected a share of words in (0, 1]"));
  if (o.max_candidates < 1) throw ConfigError(fmt("synonym attack: max_candidates ", o.max_candidates, ": expected at least 1"));
  const auto t0 = std::chrono::steady_clock::now();
  AttackReport r;
  r.target = "text";
  r.attack = fmt("WordNet synonyms, budget ", o.budget, " of the words, ", o.max_candidates, " candidates per word",
                 o.keep_pos ? ", part of speech kept" : "");
  Tally t;
  for (const tasks::Example& ex : examples) {
    ++t.examples;
    const int64_t gold = c.label_index(ex.label);
    if (gold < 0) continue;
    auto [p0, pred0] = gold_probability(c, {ex.text}, gold);
    if (pred0[0] != gold) continue;
    ++t.clean_correct;
    double queries = 1;
    const auto spans = word_spans(ex.text);
    // Importance: how much deleting each substitutable word lowers the gold probability.
    std::vector<size_t> candidates;
    std::vector<std::string> deleted;
    for (size_t i = 0; i < spans.size(); ++i) {
      const std::string w = lower_ascii(ex.text.substr(spans[i].first, spans[i].second - spans[i].first));
      if (data::is_stopword(w) || wn.dominant_pos(w) == 0) continue;
      candidates.push_back(i);
      deleted.push_back(delete_span(ex.text, spans[i]));
    }
    const auto pdel = gold_probability(c, deleted, gold).first;
    queries += static_cast<double>(deleted.size());
    std::vector<size_t> order(candidates.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return pdel[a] < pdel[b]; });

    const auto budget = std::max<int64_t>(1, static_cast<int64_t>(std::floor(o.budget * static_cast<double>(spans.size()))));
    std::vector<std::string> current;  // the words, substituted ones replaced
    for (const auto& s : spans) current.push_back(ex.text.substr(s.first, s.second - s.first));
    auto render = [&](size_t at, const std::string& word) {
      std::string out;
      size_t pos = 0;
      for (size_t i = 0; i < spans.size(); ++i) {
        out += ex.text.substr(pos, spans[i].first - pos);
        out += i == at ? cased_like(current[i], word) : current[i];
        pos = spans[i].second;
      }
      return out + ex.text.substr(pos);
    };
    double p_now = p0[0];
    int64_t substituted = 0;
    bool flipped = false;
    for (size_t k = 0; k < order.size() && substituted < budget && !flipped; ++k) {
      const size_t i = candidates[order[k]];
      const std::vector<std::string> words = candidate_synonyms(wn, current[i], o.keep_pos, o.max_candidates);
      std::vector<std::string> texts;
      for (const auto& s : words) texts.push_back(render(i, s));
      if (texts.empty()) continue;
      auto [p, pred] = gold_probability(c, texts, gold);
      queries += static_cast<double>(texts.size());
      size_t best = static_cast<size_t>(std::min_element(p.begin(), p.end()) - p.begin());
      for (size_t j = 0; j < p.size(); ++j)  // a flip beats a lower probability
        if (pred[j] != gold) {
          best = j;
          break;
        }
      if (p[best] >= p_now && pred[best] == gold) continue;
      current[i] = cased_like(current[i], words[best]);
      p_now = p[best];
      ++substituted;
      if (pred[best] != gold) {
        flipped = true;
        if (found) found->push_back({render(spans.size(), ""), ex.label});
        if (r.shown.size() < kShown)
          r.shown.push_back({ex.text, render(spans.size(), ""), ex.label, ex.label, c.labels()[static_cast<size_t>(pred[best])],
                             static_cast<double>(substituted) / static_cast<double>(spans.size()), ""});
      }
    }
    t.queries += queries;
    t.perturbation += spans.empty() ? 0.0 : static_cast<double>(substituted) / static_cast<double>(spans.size());
    if (flipped) ++t.flipped;
    else ++t.robust_correct;
  }
  t.finish(r);
  r.seconds = seconds_since(t0);
  return r;
}

std::string random_synonym_substitution(const std::string& text, const data::WordNet& wn, double p, uint64_t seed) {
  SplitMix64 rng(seed);
  std::string out;
  size_t pos = 0;
  for (const auto& [a, b] : word_spans(text)) {
    if (rng.uniform() >= p) continue;
    const std::string word = text.substr(a, b - a);
    const auto syn = candidate_synonyms(wn, word, true, 30);
    if (syn.empty()) continue;
    out += text.substr(pos, a - pos) + cased_like(word, syn[rng.below(syn.size())]);
    pos = b;
  }
  return out + text.substr(pos);
}

nlohmann::ordered_json attack_json(const AttackReport& r) {
  nlohmann::ordered_json j = {{"target", r.target},
                              {"attack", r.attack},
                              {"model", r.model},
                              {"data", r.data},
                              {"examples", r.examples},
                              {"clean_accuracy", r.clean_accuracy},
                              {"robust_accuracy", r.robust_accuracy},
                              {"attack_success_rate", r.success_rate},
                              {"mean_perturbation", r.mean_perturbation},
                              {"queries_per_example", r.queries_per_example},
                              {"seconds", r.seconds}};
  if (r.relative_perturbation > 0) j["relative_perturbation"] = r.relative_perturbation;
  nlohmann::ordered_json shown = nlohmann::ordered_json::array();
  for (const auto& e : r.shown) {
    nlohmann::ordered_json s = {{"source", e.source}, {"gold", e.gold}, {"adversarial_prediction", e.adversarial_pred},
                                {"perturbation", e.perturbation}};
    if (!e.adversarial.empty()) s["adversarial"] = e.adversarial;
    shown.push_back(s);
  }
  j["examples_flipped"] = shown;
  return j;
}

std::string attack_table(const std::vector<std::pair<std::string, AttackReport>>& rows) {
  std::string out = fmt("                          clean    robust   success  perturbation  queries\n");
  char line[256];
  for (const auto& [name, r] : rows) {
    std::snprintf(line, sizeof line, "%-24s %6.2f%%  %6.2f%%  %6.2f%%  %12.4g  %7.1f   %s\n", name.c_str(), 100 * r.clean_accuracy,
                  100 * r.robust_accuracy, 100 * r.success_rate, r.mean_perturbation, r.queries_per_example, r.attack.c_str());
    out += line;
  }
  return out;
}

std::string attack_html_section(const std::string& title, const std::vector<std::pair<std::string, AttackReport>>& rows) {
  std::string h = fmt("<h2>", report::html_escape(title), "</h2>\n<table><tr><th>model</th><th>attack</th><th>examples</th><th>clean</th>",
                      "<th>robust</th><th>success rate</th><th>mean perturbation</th><th>queries / example</th></tr>\n");
  char cells[256];
  for (const auto& [name, r] : rows) {
    std::snprintf(cells, sizeof cells, "<td>%lld</td><td>%.2f%%</td><td>%.2f%%</td><td>%.2f%%</td><td>%.4g</td><td>%.1f</td>",
                  static_cast<long long>(r.examples), 100 * r.clean_accuracy, 100 * r.robust_accuracy, 100 * r.success_rate,
                  r.mean_perturbation, r.queries_per_example);
    h += fmt("<tr><td>", report::html_escape(name), "</td><td>", report::html_escape(r.attack), "</td>", cells, "</tr>\n");
  }
  h += "</table>\n";
  for (const auto& [name, r] : rows) {
    if (r.shown.empty()) continue;
    h += fmt("<h3>", report::html_escape(name), ": attacks that flipped the prediction</h3>\n");
    if (r.target == "image") {
      for (const auto& e : r.shown)
        h += fmt("<figure style=\"display:inline-block;margin:4px\"><img src=\"data:image/png;base64,", e.png_base64,
                 "\" alt=\"original, attacked, perturbation\"><figcaption>", report::html_escape(e.gold), " &rarr; ",
                 report::html_escape(e.adversarial_pred), "</figcaption></figure>\n");
      h += "<p>Each strip: the original, the attacked image, the perturbation (x4 around grey).</p>\n";
    } else {
      h += "<table><tr><th>original</th><th>attacked</th><th>gold</th><th>now</th></tr>\n";
      for (const auto& e : r.shown)
        h += fmt("<tr><td>", report::html_escape(e.source), "</td><td>",
                 report::html_escape(e.adversarial.empty() ? "(embedding perturbation)" : e.adversarial), "</td><td>",
                 report::html_escape(e.gold), "</td><td>", report::html_escape(e.adversarial_pred), "</td></tr>\n");
      h += "</table>\n";
    }
  }
  return h;
}

}  // namespace dsforge::robust

#include "dsforge/pipeline/stages.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/text.h"
#include "dsforge/core/utf8.h"
#include "dsforge/data/augment.h"
#include "dsforge/data/counterfactual.h"
#include "dsforge/data/corpus.h"
#include "dsforge/data/ingest.h"
#include "dsforge/data/shards.h"
#include "dsforge/data/splits.h"
#include "dsforge/dist/comm.h"
#include "dsforge/dist/env.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/run_folder.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/translate.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/encode_corpus.h"
#include "dsforge/train/trainer.h"

namespace dsforge::pipeline {
namespace {

std::string run_path(const RunConfig& cfg, const std::string& rel) { return path_join(cfg.run.out_dir, rel); }

std::string tokenizer_inputs_hash(const RunConfig& cfg, int64_t vocab) {
  std::string key = read_file(run_path(cfg, "data/DONE")) + "|" + std::to_string(vocab) + "|" +
                    std::to_string(cfg.tokenizer.max_train_docs) + "|" + cfg.tokenizer.pretokenizer;
  for (const auto& s : cfg.tokenizer.special_tokens) key += "|" + s;
  return hex64(fnv1a64(key));
}

int64_t tokenizer_vocab_size(const RunConfig& cfg) {
  return cfg.tokenizer.vocab_size > 0 ? cfg.tokenizer.vocab_size : model::load_model_config(cfg.model.config).vocab_size;
}

// The model config of this run: the configured architecture with the tokenizer's vocabulary.
// What the shards were made from: the prepared corpus (its stamp), the tokenizer file and, when
// augmentation is on, the augmented file (its stamp, not its text: the stamp already hashes the
// corpus and the augment settings). The corpus stamp matters on its own: a changed corpus can train
// a byte-identical tokenizer.
std::string shard_identity(const RunConfig& cfg) {
  std::string id = read_file(run_path(cfg, "tokenizer.json")) + "|data:" + read_file(run_path(cfg, "data/DONE"));
  if (cfg.augment.enabled) id += "|augment:" + read_file(run_path(cfg, "data/AUGMENT_DONE"));
  return hex64(fnv1a64(id));
}

model::ModelConfig run_model_config(const RunConfig& cfg, int64_t vocab_size, int64_t eot_id) {
  model::ModelConfig m = model::load_model_config(cfg.model.config);
  m.vocab_size = vocab_size;
  m.bos_token_id = m.eos_token_id = eot_id;
  model::validate(m, cfg.model.config);
  const int64_t positions = model::training_positions(m, cfg.train.seq_len);
  if (m.max_position_embeddings < positions)
    throw ConfigError(fmt(cfg.model.config, ": max_position_embeddings is ", m.max_position_embeddings, ", but train.seq_len = ",
                          cfg.train.seq_len, " needs ", positions, " positions per row",
                          positions > cfg.train.seq_len ? " (the MTP depths read ahead)" : "",
                          ": raise max_position_embeddings in the model config, or lower train.seq_len"));
  return m;
}

// "<what>: not found (made by `dsforge <command> --config <recipe>`)".
std::string missing(const RunConfig& cfg, const std::string& what, const std::string& command) {
  return fmt(what, ": not found (made by `dsforge ", command, cfg.source_path.empty() ? "" : " --config " + cfg.source_path,
             "`)");
}

}  // namespace

void configure_threads(const RunConfig& cfg) {
  // Ranks sharing a host share its cores (LOCAL_WORLD_SIZE), so they never oversubscribe them.
  const int n = cfg.run.threads > 0 ? static_cast<int>(cfg.run.threads)
                                    : dist::threads_per_rank(dist::dist_env_from_environment());
  at::set_num_threads(n);  // Debian's libtorch defaults to one intra-op thread
  at::globalContext().setFlushDenormal(true);
}

void stage_prepare(const RunConfig& cfg) {
  claim_run_folder(cfg, "data prepare");
  data::prepare_corpus(cfg);
}

std::string data_stats_report(const RunConfig& cfg, const std::vector<std::string>& inputs, bool as_json) {
  if (!inputs.empty()) {
    data::StatsAccumulator acc;
    data::IngestCounts ic =
        data::for_each_document(data::expand_inputs(inputs), data::ingest_options(cfg), [&](std::string&& d) { acc.add(d); });
    data::CorpusStats st = acc.finish();
    if (as_json) {
      nlohmann::ordered_json j = data::stats_json(st);
      j["files"] = ic.files;
      j["invalid_utf8_documents"] = ic.invalid_utf8;
      j["binary_files_skipped"] = ic.binary_files_skipped;
      return j.dump(2) + "\n";
    }
    return fmt(ic.files, " files (", ic.binary_files_skipped, " more skipped as not text), ", ic.invalid_utf8,
               " documents with invalid UTF-8 (", ic.dropped_invalid, " dropped)\n", data::stats_table(st));
  }
  const std::string path = run_path(cfg, "data/stats.json");
  if (!file_exists(path)) throw DataError(fmt(path, ": not found (run `dsforge data prepare` first, or pass --input)"));
  auto j = nlohmann::ordered_json::parse(read_file(path));
  if (as_json) return j.dump(2) + "\n";
  // The same table as the --input report, after the counts only a prepared run has.
  auto row = [](const std::string& key, const std::string& value) {
    return fmt("  ", key, std::string(34 - std::min<size_t>(33, key.size()), ' '), " ", value, "\n");
  };
  std::string out = "filters:\n";
  for (auto it = j["filters"].begin(); it != j["filters"].end(); ++it) out += row(it.key(), it.value().dump());
  const auto& sp = j["split"];
  out += fmt("split: ", sp["train_documents"].dump(), " train / ", sp["val_documents"].dump(), " validation",
             sp.contains("test_documents") ? fmt(" / ", sp["test_documents"].dump(), " test") : std::string(), " (",
             sp.value("val_source", std::string("hash split")), ")\n");
  return out + "train split:\n" + data::stats_table(data::stats_from_json(j["train"]));
}

namespace {

// Back-translation paraphrases of a chunk of documents: every non-empty line goes to the pivot language
// and back; copy k of a document is dropped when it equals the document or a line came back empty.
struct RoundTrip {
  tasks::Translator to_pivot, from_pivot;
  tasks::TranslateOptions decode;
  std::vector<std::vector<std::string>> paraphrase(const std::vector<std::string>& docs, int64_t copies, uint64_t seed,
                                                   AugmentCounts& counts) const {
    std::vector<std::string> lines;
    std::vector<std::pair<size_t, size_t>> span;  // per document: first line, line count
    for (const auto& doc : docs) {
      const size_t first = lines.size();
      size_t start = 0;
      while (true) {
        const size_t end = std::min(doc.find('\n', start), doc.size());
        lines.push_back(doc.substr(start, end - start));
        if (end == doc.size()) break;
        start = end + 1;
      }
      span.emplace_back(first, lines.size() - first);
    }
    std::vector<std::vector<std::string>> out(docs.size());
    for (int64_t k = 0; k < copies; ++k) {
      tasks::TranslateOptions d = decode;
      d.seed = seed + 1000003ULL * static_cast<uint64_t>(k);
      const std::vector<std::string> pivot = to_pivot.translate(lines, d);
      d.seed += 1;
      const std::vector<std::string> back = from_pivot.translate(pivot, d);
      for (size_t i = 0; i < docs.size(); ++i) {
        std::string copy;
        bool empty_line = false;
        for (size_t l = span[i].first; l < span[i].first + span[i].second; ++l) {
          if (l > span[i].first) copy += '\n';
          const bool blank = lines[l].find_first_not_of(" \t\r") == std::string::npos;
          if (!blank && back[l].empty()) empty_line = true;
          copy += blank ? lines[l] : back[l];
        }
        if (empty_line) ++counts.bt_dropped_empty;
        else if (copy == docs[i]) ++counts.bt_dropped_identical;
        else out[i].push_back(std::move(copy));
      }
    }
    return out;
  }
};

}  // namespace

AugmentCounts augment_file(const RunConfig& cfg, const std::string& input, const std::string& output,
                           const std::string& manifest) {
  const auto& a = cfg.augment;
  std::optional<data::WordNet> wn;
  std::optional<data::Augmenter> aug;
  if (a.copies > 0) {
    wn.emplace(cfg.data.wordnet_dir);
    aug.emplace(*wn, data::AugmentOptions{a.synonym_prob, a.insert_prob, a.swap_prob, a.delete_prob});
  }
  const std::optional<data::TermSwapper> cda =
      a.cda_pairs.empty() ? std::nullopt : std::optional<data::TermSwapper>(data::TermSwapper::load(a.cda_pairs));
  std::unique_ptr<RoundTrip> bt;
  if (!a.bt_models.empty()) {
    bt.reset(new RoundTrip{tasks::Translator(a.bt_models[0]), tasks::Translator(a.bt_models[1]), {}});
    bt->decode.temperature = a.bt_temperature;
    bt->decode.batch = 64;
  }
  // Output as the name says: JSONL holds any document; a text file holds one-line documents only.
  const bool jsonl_out = output.size() >= 6 && output.compare(output.size() - 6, 6, ".jsonl") == 0;
  std::unique_ptr<data::JsonlWriter> jw;
  std::ofstream tw;
  const std::string tmp = output + ".tmp";
  if (jsonl_out) {
    jw = std::make_unique<data::JsonlWriter>(output);
  } else {
    tw.open(tmp, std::ios::binary);
    if (!tw) throw IoError(fmt(tmp, ": cannot create"));
  }
  data::IngestOptions io = data::ingest_options(cfg);
  io.txt_documents = data::TxtDocuments::kLine;  // augmentation input: .txt is one document per line
  io.skip_binary = false;
  AugmentCounts counts;
  auto emit = [&](const std::string& copy, int64_t& counter) {
    if (jw) {
      jw->write(copy);
    } else if (copy.find('\n') != std::string::npos) {
      throw DataError(fmt(input, ": document ", counts.documents + 1, " spans lines; write the augmented copies to a .jsonl output"));
    } else {
      tw << copy << '\n';
    }
    ++counter;
  };
  // Documents go in chunks so that back-translation decodes many lines at once; memory stays bounded.
  std::vector<std::string> chunk;
  auto flush = [&]() {
    if (chunk.empty()) return;
    std::vector<std::vector<std::string>> paraphrases(chunk.size());
    if (bt) paraphrases = bt->paraphrase(chunk, a.bt_copies, fnv1a64(fmt(cfg.run.seed, ":bt:", counts.documents)), counts);
    for (size_t i = 0; i < chunk.size(); ++i) {
      const std::string& doc = chunk[i];
      const int64_t n = counts.documents + static_cast<int64_t>(i);
      if (cda && cda->mentions(doc) > 0) emit(cda->swap(doc), counts.cda_copies);  // the counterfactual copy
      for (int64_t k = 0; k < a.copies; ++k) {
        // One seed per (run seed, document, copy): reproducible and independent of thread or order.
        const uint64_t seed = fnv1a64(fmt(cfg.run.seed, ":", n, ":", k));
        std::string copy;
        if (doc.find('\n') == std::string::npos) {
          copy = aug->augment(doc, seed);
        } else {  // EDA works on words of a line: augment each line, keep the line structure
          size_t start = 0;
          for (int64_t line = 0; start <= doc.size(); ++line) {
            size_t end = std::min(doc.find('\n', start), doc.size());
            copy += aug->augment(doc.substr(start, end - start), seed ^ fnv1a64(std::to_string(line)));
            if (end < doc.size()) copy += '\n';
            start = end + 1;
          }
        }
        emit(copy, counts.eda_copies);
      }
      for (const auto& p : paraphrases[i]) emit(p, counts.bt_copies);
    }
    counts.documents += static_cast<int64_t>(chunk.size());
    if (bt) log_info("augment: ", counts.documents, " documents, ", counts.bt_copies, " back-translated copies");
    chunk.clear();
  };
  data::for_each_document({input}, io, [&](std::string&& doc) {
    chunk.push_back(std::move(doc));
    if (chunk.size() >= 256) flush();
  });
  flush();
  if (jw) {
    jw->commit();
  } else {
    tw.close();
    if (!tw) throw IoError(fmt(tmp, ": write failed"));
    std::filesystem::rename(tmp, output);
  }
  write_file_atomic(manifest.empty() ? output + ".manifest.json" : manifest, augment_counts_json(counts, cfg) + "\n");
  log_info("augment: ", counts.documents, " documents -> ", counts.eda_copies, " EDA, ", counts.cda_copies, " counterfactual, ",
           counts.bt_copies, " back-translated copies (", counts.bt_dropped_identical, " identical and ", counts.bt_dropped_empty,
           " empty round trips dropped) -> ", output);
  return counts;
}

std::string augment_counts_json(const AugmentCounts& c, const RunConfig& cfg) {
  nlohmann::ordered_json j = {{"documents", c.documents},
                              {"eda_copies", c.eda_copies},
                              {"counterfactual_copies", c.cda_copies},
                              {"back_translated_copies", c.bt_copies},
                              {"back_translation_dropped_identical", c.bt_dropped_identical},
                              {"back_translation_dropped_empty", c.bt_dropped_empty},
                              {"copies", c.eda_copies + c.cda_copies + c.bt_copies}};
  if (!cfg.augment.bt_models.empty()) j["back_translation_models"] = cfg.augment.bt_models;
  return j.dump(2);
}

void stage_augment(const RunConfig& cfg) {
  claim_run_folder(cfg, "data augment");
  const std::string out = data::split_path(cfg.run.out_dir, "train_augmented"), stamp = run_path(cfg, "data/AUGMENT_DONE");
  // The back-translation models' weights count too: a model retrained in place redoes the paraphrases.
  std::string models;
  for (const auto& m : cfg.augment.bt_models) {
    const std::string one = path_join(m, "model.safetensors"), index = path_join(m, "model.safetensors.index.json");
    models += hex64(fnv1a64(read_file(file_exists(one) || !file_exists(index) ? one : index)));
  }
  const std::string hash = hex64(fnv1a64(read_file(run_path(cfg, "data/DONE")) + section_hash(cfg, "augment") + models));
  if (file_exists(stamp) && read_file(stamp) == hash && file_exists(out)) {
    log_info("augment: reusing ", out);
    return;
  }
  RunConfig split_cfg = cfg;
  split_cfg.data.jsonl_field = "text";  // the prepared split's field, whatever the raw corpus used
  augment_file(split_cfg, data::split_path(cfg.run.out_dir, "train"), out, run_path(cfg, "data/augment.json"));
  write_file_atomic(stamp, hash);
}

void stage_tokenizer(const RunConfig& cfg) {
  const std::string out = run_path(cfg, "tokenizer.json"), stamp = run_path(cfg, "tokenizer.DONE");
  if (!file_exists(run_path(cfg, "data/DONE")))
    throw DataError(missing(cfg, fmt(cfg.run.out_dir, ": the prepared corpus (data/)"), "data prepare"));
  claim_run_folder(cfg, "tokenizer train");
  const int64_t vocab = tokenizer_vocab_size(cfg);
  const std::string hash = tokenizer_inputs_hash(cfg, vocab);
  if (file_exists(stamp) && read_file(stamp) == hash && file_exists(out)) {
    log_info("tokenizer: reusing ", out);
    return;
  }
  auto t0 = std::chrono::steady_clock::now();
  const tok::BpeTokenizer::TrainOptions opts{vocab, cfg.tokenizer.special_tokens, cfg.tokenizer.pretokenizer};
  tok::BpeTokenizer::PieceCounter counter(opts);  // streamed: memory grows with distinct pre-tokens only
  int64_t n_docs = 0;
  data::for_each_split_document(data::split_path(cfg.run.out_dir, "train"), [&](std::string&& doc) {
    if (cfg.tokenizer.max_train_docs > 0 && n_docs >= cfg.tokenizer.max_train_docs) return;
    counter.add(doc);
    ++n_docs;
  });
  auto tok = tok::BpeTokenizer::train_from_counts(counter.counts(), opts);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tok.save(out);
  write_file_atomic(stamp, hash);
  log_info("tokenizer: trained ", tok.vocab_size(), " tokens (", tok.merges().size(), " merges) on ", n_docs,
           " documents (", counter.counts().size(), " distinct pre-tokens) in ", fixed_digits(dt, 2), " s -> ", out);
}

void stage_tokenize(const RunConfig& cfg) {
  const std::string tpath = run_path(cfg, "tokenizer.json");
  if (!file_exists(tpath)) throw DataError(missing(cfg, tpath, "tokenizer train"));
  claim_run_folder(cfg, "tokenize");
  auto tok = tok::BpeTokenizer::load(tpath);
  tok::CorpusFiles files;
  files.train = data::split_path(cfg.run.out_dir, "train");
  files.val = data::split_path(cfg.run.out_dir, "val");
  // The test split exists when this config asks for one (prepare removes a stale one otherwise).
  if (!cfg.data.test_paths.empty()) files.test = data::split_path(cfg.run.out_dir, "test");
  if (cfg.augment.enabled) files.augmented = data::split_path(cfg.run.out_dir, "train_augmented");
  if (!files.augmented.empty() && !file_exists(files.augmented))
    throw DataError(fmt(files.augmented, ": augment.enabled is true but the augment stage has not run (`dsforge data augment`)"));
  tok::encode_corpus(files, tok, shard_identity(cfg), cfg.run.out_dir, cfg.run.threads);
}

int stage_train(const RunConfig& cfg, const TrainObserver& observer) {
  const std::string tpath = run_path(cfg, "tokenizer.json");
  const std::string manifest_path = run_path(cfg, "shards/manifest.json");
  if (!file_exists(tpath)) throw DataError(missing(cfg, tpath, "tokenizer train"));
  if (!file_exists(manifest_path)) throw DataError(missing(cfg, manifest_path, "tokenize"));
  // Data parallelism when a launcher (dsforge launch, torchrun, Slurm, mpirun) started several ranks.
  // The ranks agree on their config first, so that every rank takes the run folder's verdict together.
  const dist::DistEnv env = dist::dist_env_from_environment();
  std::unique_ptr<dist::Comm> comm;
  if (env.world_size > 1) {
    comm = dist::Comm::connect(env, cfg.dist.timeout_s);
    comm->agree("run config", to_toml(cfg));
  }
  claim_run_folder(cfg, "train");
  auto tok = tok::BpeTokenizer::load(tpath);
  data::Manifest manifest = data::read_manifest(manifest_path);
  if (manifest.tokenizer_hash != shard_identity(cfg))
    throw DataError(fmt(manifest_path, ": shards were made with another tokenizer than ", tpath,
                        " (re-run `dsforge tokenize`)"));
  model::ModelConfig mcfg = run_model_config(cfg, tok.vocab_size(), tok.eot_id());
  const bool lead = env.rank == 0;
  if (lead) write_file_atomic(run_path(cfg, "config.json"), model::model_config_to_json(mcfg));
  if (lead && mcfg.is_deepseek()) {
    auto p = model::count_params_formula(mcfg);
    log_info("model: ", cfg.model.config, ": ", p.main_total, " parameters (+", p.mtp, " MTP), ", mcfg.num_hidden_layers,
             " layers, d=", mcfg.hidden_size, ", ", mcfg.n_routed_experts, " routed experts (top-", mcfg.num_experts_per_tok,
             ") + ", mcfg.n_shared_experts, " shared, MLA d_c=", mcfg.kv_lora_rank);
  } else if (lead) {
    log_info("model: ", cfg.model.config, ": ", mcfg.model_type, ", ", mcfg.num_hidden_layers, " layers, d=", mcfg.hidden_size);
  }
  train::Trainer trainer(cfg, mcfg, manifest_path);
  trainer.set_comm(comm.get());
  train::TrainCallbacks callbacks;
  callbacks.evaluate = eval::lm_validator(trainer.model(), manifest_path, cfg.train.seq_len, cfg.train.batch_size,
                                          cfg.eval.batches);
  bool stop_requested = false;
  if (observer.on_validation) {
    callbacks.evaluate = [validate = callbacks.evaluate, &observer, &stop_requested](int64_t step) {
      train::Scalars ev = validate(step);
      stop_requested = observer.on_validation(step, ev.at("val_loss")) || stop_requested;
      return ev;
    };
    callbacks.stop_after = [&stop_requested](int64_t) { return stop_requested; };
  }
  trainer.set_callbacks(callbacks);
  train::TrainResult r = trainer.fit();
  if (r.interrupted) return kInterrupted;
  if (!lead) return kOk;
  const std::string model_dir = run_path(cfg, "model");
  model::save_pretrained(model_dir, *trainer.model());
  write_file_atomic(path_join(model_dir, "tokenizer.json"), read_file(tpath));
  model::save_training_info(model_dir, {cfg.train.seq_len, r.final_step});
  log_info("train: final model in ", model_dir);
  return kOk;
}

void stage_generate(const RunConfig& cfg, const std::string& model_dir_in) {
  const bool own_model = model_dir_in.empty();
  const std::string model_dir = own_model ? run_path(cfg, "model") : model_dir_in;
  if (own_model) {
    if (!file_exists(path_join(model_dir, "config.json"))) throw DataError(missing(cfg, fmt(model_dir, ": the trained model"), "train"));
  } else {
    check_model_dir(model_dir);
  }
  auto m = model::load_pretrained(model_dir);
  model::pack_decode_weights(m);
  if (cfg.generate.weights == "bf16") model::keep_bf16_decode_weights(m, fmt("generate.weights = bf16: ", model_dir));
  auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  model::SampleOptions opts;
  opts.max_new_tokens = cfg.generate.max_new_tokens;
  opts.temperature = cfg.generate.temperature;
  opts.top_k = cfg.generate.top_k;
  opts.top_p = cfg.generate.top_p;
  opts.repetition_penalty = cfg.generate.repetition_penalty;
  opts.stop_tokens = {tok.eot_id()};
  for (const auto& s : cfg.generate.stop) {
    auto ids = tok.encode(s, true);
    if (ids.size() != 1)
      throw ConfigError(fmt("key 'generate.stop': '", s, "' is ", ids.size(), " tokens; a stop string must be exactly one token"));
    opts.stop_tokens.push_back(ids[0]);
  }
  opts.seed = static_cast<uint64_t>(cfg.run.seed);
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : cfg.generate.prompts) {
    auto ids = tok.encode(p, false);
    if (ids.empty()) throw ConfigError(fmt("generate: prompt '", p, "' encodes to no tokens"));
    prompts.emplace_back(ids.begin(), ids.end());
  }
  // The bytes of the sampled ids. A byte-level BPE sample may stop inside a UTF-8 character, or
  // produce bytes that never form one: whatever is shown or saved is repaired (U+FFFD).
  auto bytes_of = [&](const std::vector<int64_t>& ids) {
    std::vector<int32_t> keep;
    for (int64_t id : ids)
      if (id != tok.eot_id()) keep.push_back(static_cast<int32_t>(id));
    return tok.decode(keep);
  };
  // The run's own model keeps its samples for the report, when they follow the run's recipe; any other
  // settings (another seed, other prompts, the defaults) only print.
  const bool save = own_model && matches_saved_recipe(cfg);
  if (own_model && !save)
    log_info("generate: samples.json left as it is: these settings differ from ", run_path(cfg, "config.toml"));
  auto save_samples = [&](const std::vector<std::string>& completions) {
    if (!save) return;
    nlohmann::json j = nlohmann::json::array();
    for (size_t i = 0; i < completions.size(); ++i)
      j.push_back({{"prompt", cfg.generate.prompts[i]}, {"completion", completions[i]}});
    // A barely trained byte-level model can emit a broken UTF-8 sequence: store it as U+FFFD
    // rather than fail after the generation (strict JSON output refuses invalid bytes).
    write_file_atomic(run_path(cfg, "samples.json"),
                      j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  };
  if (prompts.size() == 1) {  // stream token by token, whole characters only
    std::printf("  %s", cfg.generate.prompts[0].c_str());
    std::fflush(stdout);
    std::string pending;
    auto all = model::generate(m, prompts, opts, [&](int64_t, int64_t id) {
      if (id == tok.eot_id()) return;
      pending += tok.decode({static_cast<int32_t>(id)});
      const size_t n = complete_utf8_prefix(pending);
      if (n == 0) return;
      std::fputs(data::repair_utf8(std::string_view(pending).substr(0, n)).c_str(), stdout);
      std::fflush(stdout);
      pending.erase(0, n);
    });
    std::printf("%s\n", data::repair_utf8(pending).c_str());
    save_samples({data::repair_utf8(bytes_of(all[0]))});
    return;
  }
  auto outs = model::generate(m, prompts, opts);  // all prompts decode together, left-padded
  std::vector<std::string> completions;
  for (size_t i = 0; i < outs.size(); ++i) {
    completions.push_back(data::repair_utf8(bytes_of(outs[i])));
    std::printf("  %s%s\n", cfg.generate.prompts[i].c_str(), completions.back().c_str());
  }
  save_samples(completions);
}

int run_pipeline(const RunConfig& cfg) {
  if (dist::dist_env_from_environment().world_size > 1)
    throw ConfigError("pipeline: started as one of several ranks; every rank would write the same data files. Run the "
                      "data stages once (dsforge data prepare, tokenizer train, tokenize), then `dsforge launch ... -- train`");
  configure_threads(cfg);
  log_info("pipeline: run folder ", cfg.run.out_dir, ", config ", cfg.source_path.empty() ? "(defaults)" : cfg.source_path);
  log_info("resolved config:\n", to_toml(cfg));
  // Everything a later stage needs is checked before the first one runs.
  check_inputs(cfg);
  claim_run_folder(cfg, "pipeline");
  run_model_config(cfg, tokenizer_vocab_size(cfg), 0);
  stage_prepare(cfg);
  if (cfg.augment.enabled) stage_augment(cfg);
  stage_tokenizer(cfg);
  stage_tokenize(cfg);
  if (stage_train(cfg) == kInterrupted) return kInterrupted;
  stage_eval(cfg);
  log_info("generate: definitions from the trained model (temperature ", cfg.generate.temperature, ", top-k ",
           cfg.generate.top_k, ")");
  stage_generate(cfg);
  log_info("pipeline: report ", report::write_run_report(cfg.run.out_dir));
  log_info("pipeline: done; everything is in ", cfg.run.out_dir);
  return kOk;
}

}  // namespace dsforge::pipeline

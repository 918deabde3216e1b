// dsforge tokenizer train | encode | decode | convert
#include <chrono>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/pipeline/tokenizer_files.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::cli {

namespace {

// Two forms: the run's tokenizer stage (--config or run-config overrides), or files -> a
// tokenizer.json (--input ... --out). Overrides are applied and validated in both; with --input,
// tokenizer.vocab_size / pretokenizer / special_tokens act as defaults for the flags.
void add_train(CLI::App* t, Context& ctx) {
  struct TrainArgs {
    std::string config, out, pretokenizer;
    std::vector<std::string> inputs, specials;
    int64_t vocab_size = 0, max_docs = 0;
    CLI::Option *vocab_opt = nullptr, *pre_opt = nullptr, *special_opt = nullptr, *max_docs_opt = nullptr,
                *out_opt = nullptr;
  };
  auto ta = std::make_shared<TrainArgs>();
  CLI::App* tr = t->add_subcommand(
      "train", "train a tokenizer: on --input files -> --out tokenizer.json, or on a run's prepared corpus (--config)");
  tr->add_option("-c,--config", ta->config, "run config (TOML): train <run>/tokenizer.json; --section.key=value overrides")
      ->check(CLI::ExistingFile);
  tr->add_option("-i,--input", ta->inputs,
                 "files, folders or globs: *.jsonl/*.ndjson records' text field; any other file as raw text");
  ta->out_opt = tr->add_option("-o,--out", ta->out, "output tokenizer.json (with --input)");
  ta->vocab_opt = tr->add_option("--vocab-size", ta->vocab_size, "vocabulary size (default: tokenizer.vocab_size)");
  ta->pre_opt = tr->add_option("--pretokenizer", ta->pretokenizer, "gpt2 or deepseek-v3 (default: tokenizer.pretokenizer)");
  ta->special_opt = tr->add_option("--special", ta->specials, "special tokens, end-of-text first (default: tokenizer.special_tokens)");
  ta->max_docs_opt = tr->add_option("--max-docs", ta->max_docs, "at most N documents (a JSONL record or a raw file); 0 = all");
  tr->callback([&ctx, ta]() {
    ctx.action = [&ctx, ta]() {
      RunConfig cfg;
      if (!ta->config.empty()) {
        if (!ta->inputs.empty())
          throw ConfigError("tokenizer train: --input and --config exclude each other (--config trains the run's corpus)");
        cfg = load_run_config(ta->config, ctx.overrides);
      } else {
        for (const auto& o : ctx.overrides) apply_override(cfg, o);
        validate(cfg);
      }
      if (ta->inputs.empty()) {
        for (const CLI::Option* o : {ta->out_opt, ta->vocab_opt, ta->pre_opt, ta->special_opt, ta->max_docs_opt})
          if (o->count() > 0)
            throw ConfigError(fmt("tokenizer train: ", o->get_name(), " needs --input (for the run's tokenizer, set the "
                                  "tokenizer.* keys)"));
        pipeline::stage_tokenizer(cfg);
        return 0;
      }
      if (ta->out.empty()) throw ConfigError("tokenizer train: --input needs --out FILE (the tokenizer.json to write)");
      pipeline::TokenizerFilesOptions o;
      o.inputs = ta->inputs;
      o.train.vocab_size = ta->vocab_opt->count() ? ta->vocab_size : cfg.tokenizer.vocab_size;
      o.train.pretokenizer = ta->pre_opt->count() ? ta->pretokenizer : cfg.tokenizer.pretokenizer;
      o.train.special_tokens = ta->special_opt->count() ? ta->specials : cfg.tokenizer.special_tokens;
      o.max_docs = ta->max_docs_opt->count() ? ta->max_docs : cfg.tokenizer.max_train_docs;
      const int64_t least = 256 + static_cast<int64_t>(o.train.special_tokens.size());
      if (o.train.vocab_size <= 0)
        throw ConfigError("tokenizer train: --vocab-size N is required with --input (or --tokenizer.vocab_size=N)");
      if (o.train.vocab_size < least)
        throw ConfigError(fmt("tokenizer train: --vocab-size ", o.train.vocab_size, " is below ", least, " (256 bytes + ",
                              o.train.special_tokens.size(), " special tokens)"));
      if (o.train.pretokenizer != "gpt2" && o.train.pretokenizer != "deepseek-v3")
        throw ConfigError(fmt("tokenizer train: --pretokenizer '", o.train.pretokenizer, "' is unknown (gpt2, deepseek-v3)"));
      if (o.max_docs < 0) throw ConfigError(fmt("tokenizer train: --max-docs ", o.max_docs, " must be >= 0 (0 = all)"));
      pipeline::TokenizerFilesStats st;
      const auto t0 = std::chrono::steady_clock::now();
      auto tok = pipeline::train_tokenizer_on_files(o, &st);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      tok.save(ta->out);
      std::cout << "wrote " << ta->out << " (" << tok.vocab_size() << " tokens, " << tok.merges().size() << " merges) from "
                << st.files << " files, " << st.documents << " documents, " << st.bytes << " bytes, "
                << st.distinct_pieces << " distinct pre-tokens in " << std::fixed << std::setprecision(2) << dt
                << " s\n";
      return 0;
    };
  });
}

// encode and decode: stdin -> stdout.
void add_encode_decode(CLI::App* t, Context& ctx) {
  struct IoArgs {
    std::string tokenizer;
    bool add_special = false;
  };
  auto io = std::make_shared<IoArgs>();
  CLI::App* enc = t->add_subcommand("encode", "UTF-8 text on stdin -> space-separated ids on stdout");
  enc->add_option("-t,--tokenizer", io->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  enc->add_flag("--add-special", io->add_special, "treat special-token strings in the text as special tokens");
  enc->callback([&ctx, io]() {
    ctx.action = [io]() {
      auto tok = tok::BpeTokenizer::load(io->tokenizer);
      // Streamed in ~1 MB chunks cut only where pre-tokenization cannot change: bounded memory, and
      // the same ids as encoding the whole input at once.
      std::string pending;
      std::vector<char> buf(1 << 20);
      bool first = true;
      auto emit = [&](std::string_view text) {
        for (int32_t id : tok.encode(text, io->add_special)) {
          std::cout << (first ? "" : " ") << id;
          first = false;
        }
      };
      while (std::cin.read(buf.data(), static_cast<std::streamsize>(buf.size())) || std::cin.gcount() > 0) {
        pending.append(buf.data(), static_cast<size_t>(std::cin.gcount()));
        const size_t cut = tok.last_safe_split(pending);  // never inside an added token
        if (cut == 0) continue;
        emit(std::string_view(pending).substr(0, cut));
        pending.erase(0, cut);
      }
      emit(pending);
      std::cout << "\n";
      return 0;
    };
  });

  CLI::App* dec = t->add_subcommand("decode", "space-separated ids on stdin -> text on stdout");
  dec->add_option("-t,--tokenizer", io->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  dec->callback([&ctx, io]() {
    ctx.action = [io]() {
      auto tok = tok::BpeTokenizer::load(io->tokenizer);
      std::vector<int32_t> ids;
      std::string word;
      int64_t index = 0;
      while (std::cin >> word) {
        try {
          size_t pos = 0;
          long v = std::stol(word, &pos);
          if (pos != word.size()) throw std::invalid_argument(word);
          ids.push_back(static_cast<int32_t>(v));
        } catch (const std::exception&) {
          throw DataError(fmt("stdin: token ", index, " is '", word, "', expected an integer id"));
        }
        ++index;
      }
      std::cout << tok.decode(ids);
      return 0;
    };
  });
}

void add_convert(CLI::App* t, Context& ctx) {
  struct ConvertArgs {
    std::string vocab, merges, out;
    std::vector<std::string> specials{"<|endoftext|>"};
  };
  auto cv = std::make_shared<ConvertArgs>();
  CLI::App* conv = t->add_subcommand("convert", "GPT-2-style vocab.json + merges.txt -> tokenizer.json");
  conv->add_option("--vocab", cv->vocab, "vocab.json")->required()->check(CLI::ExistingFile);
  conv->add_option("--merges", cv->merges, "merges.txt")->required()->check(CLI::ExistingFile);
  conv->add_option("--out", cv->out, "output tokenizer.json")->required();
  conv->add_option("--special", cv->specials, "special tokens present in the vocabulary")->capture_default_str();
  conv->callback([&ctx, cv]() {
    ctx.action = [cv]() {
      auto tok = tok::BpeTokenizer::from_gpt2_files(cv->vocab, cv->merges, cv->specials);
      tok.save(cv->out);
      std::cout << "wrote " << cv->out << " (" << tok.vocab_size() << " tokens, " << tok.merges().size()
                << " merges)\n";
      return 0;
    };
  });
}

}  // namespace

void add_tokenizer_commands(CLI::App& app, Context& ctx) {
  CLI::App* t = app.add_subcommand("tokenizer", "byte-level BPE: train, encode, decode, convert");
  t->require_subcommand(1);
  add_train(t, ctx);
  add_encode_decode(t, ctx);
  add_convert(t, ctx);
}

}  // namespace dsforge::cli

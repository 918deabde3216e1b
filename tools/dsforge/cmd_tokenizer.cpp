// dsforge tokenizer train | encode | decode | convert
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::cli {

void add_tokenizer_commands(CLI::App& app, Context& ctx) {
  CLI::App* t = app.add_subcommand("tokenizer", "byte-level BPE: train, encode, decode, convert");
  t->require_subcommand(1);

  auto config = std::make_shared<std::string>();
  CLI::App* tr = t->add_subcommand("train", "train the run's tokenizer on its prepared corpus -> <run>/tokenizer.json");
  tr->add_option("-c,--config", *config, "run config (TOML)")->check(CLI::ExistingFile);
  tr->callback([&ctx, config]() {
    ctx.action = [&ctx, config]() {
      RunConfig cfg = config->empty() ? RunConfig{} : load_run_config(*config, ctx.overrides);
      pipeline::stage_tokenizer(cfg);
      return 0;
    };
  });

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
        const size_t cut = tok::last_safe_split(pending);
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

}  // namespace dsforge::cli

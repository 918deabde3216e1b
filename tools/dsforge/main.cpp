// dsforge: from raw text to a trained, evaluated DeepSeek-style model. See README.md.
#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.h"
#include "dsforge/core/cpu_allocator.h"
#include "dsforge/core/error.h"

int main(int argc, char** argv) {
  using namespace dsforge;
  CLI::App app{"dsforge: a C++ toolkit from raw text to a trained DeepSeek-style language model", "dsforge"};
  app.set_version_flag("--version", std::string("dsforge ") + DSFORGE_VERSION);
  app.require_subcommand(1);
  cli::Context ctx;

  // Run-config overrides (--train.lr=1e-3) are not CLI11 options: take them out of argv first.
  // Everything after a bare "--" is another command line (`dsforge launch ... -- train ...`): kept whole.
  std::vector<char*> args;
  bool passthrough = false;
  for (int i = 0; i < argc; ++i) {
    const char* a = argv[i];
    if (passthrough) {
      ctx.passthrough.emplace_back(a);
      continue;
    }
    if (i > 0 && std::strcmp(a, "--") == 0) {
      passthrough = true;
      continue;
    }
    const char* eq = std::strchr(a, '=');
    const char* dot = std::strchr(a, '.');
    const bool dashed = i > 0 && std::strncmp(a, "--", 2) == 0;
    if (dashed && eq && dot && dot < eq) {
      ctx.overrides.emplace_back(a + 2);
    } else if (dashed && dot && !eq) {
      // "--train.max_steps 10": overrides are one word, so say how to write it.
      const std::string value = i + 1 < argc ? argv[i + 1] : "VALUE";
      std::fprintf(stderr, "dsforge: error: override %s: write %s=%s (no space)\n", a, a, value.c_str());
      return 2;
    } else {
      args.push_back(argv[i]);
    }
  }

  cli::add_stage_commands(app, ctx);
  cli::add_tokenizer_commands(app, ctx);
  cli::add_model_commands(app, ctx);
  cli::add_report_command(app, ctx);
  cli::add_metrics_commands(app, ctx);
  cli::add_finetune_command(app, ctx);
  cli::add_launch_command(app, ctx);
  cli::add_analyze_command(app, ctx);
  cli::add_regress_command(app, ctx);
  cli::add_doctor_command(app, ctx);
  cli::add_export_command(app, ctx);
  cli::add_serve_command(app, ctx);
  cli::add_quantize_command(app, ctx);
  cli::add_prune_command(app, ctx);
  cli::add_distill_command(app, ctx);
  cli::add_embed_commands(app, ctx);
  cli::add_search_command(app, ctx);
  cli::add_continue_command(app, ctx);
  cli::add_image_commands(app, ctx);
  cli::add_multimodal_command(app, ctx);
  cli::add_robust_commands(app, ctx);
  cli::add_fairness_commands(app, ctx);
  cli::add_audio_commands(app, ctx);
  if (std::string hint = cli::unknown_command_message(app, args); !hint.empty()) {
    std::fprintf(stderr, "dsforge: error: %s\n", hint.c_str());
    return 2;
  }
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "dsforge: error: %s (see 'dsforge --help')\n", e.what());
    return 2;
  }
  try {
    core::install_cpu_allocator();  // large tensors reuse their pages from step to step
    return ctx.action ? ctx.action() : 0;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "dsforge: error: %s\n", e.what());
    return 2;
  } catch (const Interrupted& e) {
    std::fprintf(stderr, "dsforge: %s\n", e.what());
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsforge: error: %s\n", e.what());
    return 1;
  }
}

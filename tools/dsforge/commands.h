// Subcommand registration for the dsforge CLI. Each command parses flags into library types and
// makes one library call; main() turns exceptions into one-line errors and exit codes.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dsforge::cli {

// Set by a subcommand's callback; main() runs it after parsing.
struct Context {
  std::function<int()> action;
  std::vector<std::string> overrides;  // --section.key=value, taken out of argv before parsing
  std::vector<std::string> passthrough;  // the arguments after a bare "--"
};

// "unknown command 'trian' (did you mean 'train'?)" when the leading words of `args` name no
// subcommand where one is required; "" when they are fine (CLI11 reports everything else).
std::string unknown_command_message(const CLI::App& app, const std::vector<char*>& args);

// All cores unless --run.threads says otherwise (Debian's libtorch starts with one intra-op thread): what
// a command that trains or scores outside the run-config pipeline calls first.
void use_threads(const Context& ctx);
// --set key=value settings as a JSON object (each value parsed as JSON: numbers, true/false, "strings";
// a bare word is kept as a string). ConfigError naming the setting without '='.
nlohmann::json parse_settings(const std::vector<std::string>& settings);

void add_stage_commands(CLI::App& app, Context& ctx);
void add_tokenizer_commands(CLI::App& app, Context& ctx);
void add_model_commands(CLI::App& app, Context& ctx);
void add_report_command(CLI::App& app, Context& ctx);
void add_metrics_commands(CLI::App& app, Context& ctx);
void add_finetune_command(CLI::App& app, Context& ctx);
void add_launch_command(CLI::App& app, Context& ctx);
void add_analyze_command(CLI::App& app, Context& ctx);
void add_regress_command(CLI::App& app, Context& ctx);
void add_doctor_command(CLI::App& app, Context& ctx);
void add_export_command(CLI::App& app, Context& ctx);
void add_serve_command(CLI::App& app, Context& ctx);
void add_quantize_command(CLI::App& app, Context& ctx);
void add_prune_command(CLI::App& app, Context& ctx);
void add_distill_command(CLI::App& app, Context& ctx);
void add_embed_commands(CLI::App& app, Context& ctx);
void add_search_command(CLI::App& app, Context& ctx);
void add_continue_command(CLI::App& app, Context& ctx);
void add_image_commands(CLI::App& app, Context& ctx);
void add_multimodal_command(CLI::App& app, Context& ctx);
void add_robust_commands(CLI::App& app, Context& ctx);
void add_fairness_commands(CLI::App& app, Context& ctx);
void add_audio_commands(CLI::App& app, Context& ctx);

}  // namespace dsforge::cli

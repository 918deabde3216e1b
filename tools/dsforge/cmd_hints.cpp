// Hints for mistyped commands: the word the user wrote, and the nearest command that exists.
#include <algorithm>
#include <cstring>

#include "commands.h"
#include "dsforge/core/edit_distance.h"

namespace dsforge::cli {

std::string unknown_command_message(const CLI::App& app, const std::vector<char*>& args) {
  const CLI::App* current = &app;
  std::string path;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string word = args[i];
    if (word.empty() || word[0] == '-') return "";  // options: CLI11 checks them
    auto subs = current->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return "";  // a positional argument of a leaf command
    const CLI::App* next = nullptr;
    for (const CLI::App* s : subs)
      if (s->get_name() == word) next = s;
    if (next) {
      current = next;
      path += (path.empty() ? "" : " ") + word;
      continue;
    }
    // A word where a command is expected. Prefixes count as close ("prep" -> "prepare").
    std::string best, names;
    size_t best_d = 3;
    for (const CLI::App* s : subs) {
      const std::string& name = s->get_name();
      names += (names.empty() ? "" : ", ") + name;
      const size_t d = name.rfind(word, 0) == 0 ? 1 : edit_distance(word, name);
      if (d < best_d) best_d = d, best = name;
    }
    std::string msg = "unknown command '" + (path.empty() ? word : path + " " + word) + "'";
    if (!best.empty()) msg += " (did you mean '" + (path.empty() ? best : path + " " + best) + "'?)";
    else msg += " (commands: " + names + ")";
    return msg;
  }
  return "";
}

}  // namespace dsforge::cli

#include "dsforge/data/counterfactual.h"

#include <unistd.h>

#include <cctype>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"

namespace dsforge::data {

std::string repo_data_file(const std::string& path) {
  if (file_exists(path)) return path;
  std::vector<std::string> roots = {"."};
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    for (int up = 0; up < 3 && dir.find('/') != std::string::npos; ++up) {
      dir = dir.substr(0, dir.rfind('/'));
      roots.push_back(dir.empty() ? "/" : dir);
    }
  }
  for (const auto& r : roots)
    if (file_exists(path_join(r, path))) return path_join(r, path);
  throw IoError(fmt(path, ": not found (nor under the working directory or beside the dsforge executable)"));
}

TermSwapper TermSwapper::load(const std::string& path_in) {
  const std::string path = repo_data_file(path_in);
  const std::string text = read_file(path);
  std::vector<std::vector<std::string>> groups;
  for_each_line(text, [&](std::string line, size_t line_no) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::vector<std::string> terms = split_whitespace(line);
    if (terms.empty()) return;
    if (terms.size() < 2) throw DataError(fmt(path, ":", line_no, ": '", terms[0], "' has no counterpart (expected two or more terms)"));
    for (const auto& t : terms)
      if (word_spans(t).size() != 1 || word_spans(t)[0] != std::make_pair<size_t, size_t>(0, t.size()))
        throw DataError(fmt(path, ":", line_no, ": '", t, "' is not one word of letters"));
    groups.push_back(std::move(terms));
  });
  if (groups.empty()) throw DataError(fmt(path, ": no term pairs"));
  return TermSwapper(groups, path);
}

TermSwapper::TermSwapper(const std::vector<std::vector<std::string>>& groups, const std::string& origin) : groups_(groups) {
  for (const auto& g : groups) {
    if (g.size() < 2) throw DataError(fmt(origin, ": a term set needs two or more terms"));
    for (size_t i = 0; i < g.size(); ++i) next_.emplace(lower_ascii(g[i]), lower_ascii(g[(i + 1) % g.size()]));
  }
}

namespace {

// `word` in the case pattern of `like`: all upper (longer than one letter), capitalised, or as is.
std::string cased(const std::string& like, std::string word) {
  bool all_upper = like.size() > 1;
  for (char c : like) all_upper &= !std::islower(static_cast<unsigned char>(c));
  if (all_upper) {
    for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  } else if (!like.empty() && std::isupper(static_cast<unsigned char>(like[0])) && !word.empty()) {
    word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
  }
  return word;
}

}  // namespace

std::string TermSwapper::swap(const std::string& text) const {
  std::string out;
  size_t pos = 0;
  for (const auto& [a, b] : word_spans(text)) {
    const std::string word = text.substr(a, b - a);
    const auto it = next_.find(lower_ascii(word));
    if (it == next_.end()) continue;
    out += text.substr(pos, a - pos) + cased(word, it->second);
    pos = b;
  }
  return pos == 0 ? text : out + text.substr(pos);
}

int64_t TermSwapper::mentions(const std::string& text) const {
  int64_t n = 0;
  for (const auto& [a, b] : word_spans(text)) n += next_.count(lower_ascii(text.substr(a, b - a)));
  return n;
}

}  // namespace dsforge::data

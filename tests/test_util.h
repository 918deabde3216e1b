// Helpers shared by the tests: temporary folders, message-checking throws, paths.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "dsforge/core/io.h"

namespace dsforge {

struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dsforge-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline std::string source_dir() { return DSFORGE_SOURCE_DIR; }

// A small corpus of `n` "word: definition" lines ("w12: a warm place that is quiet and old"): enough
// repeated structure for a few training steps to lower the loss.
inline std::string definition_lines(int n) {
  const char* nouns[] = {"animal", "plant", "tool", "place", "person", "feeling", "color", "sound"};
  const char* adjs[] = {"small", "large", "bright", "quiet", "old", "young", "warm", "cold"};
  std::string text;
  for (int i = 0; i < n; ++i)
    text += "w" + std::to_string(i) + ": a " + adjs[i % 8] + " " + nouns[(i / 8) % 8] + " that is " + adjs[(i / 3) % 8] +
            " and " + adjs[(i / 5) % 8] + "\n";
  return text;
}

// One run of the dsforge CLI: its exit code and what it printed (kept as `dir`/stdout.txt, stderr.txt).
// `prefix` stands before the program on the shell line (an environment assignment, `cd DIR && `).
struct CliRun {
  int code;
  std::string out, err;
};
inline CliRun run_cli(const std::string& args, const std::string& dir, const std::string& prefix = "") {
  const std::string out = dir + "/stdout.txt", err = dir + "/stderr.txt";
  const int status = std::system((prefix + std::string(DSFORGE_CLI) + " " + args + " >" + out + " 2>" + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
}

// Opens an HTML report in headless Chromium; the page's script counts the charts that laid out.
struct BrowserRender {
  bool available = false;  // chromium installed
  int exit_code = 0;
  int charts_total = -1, charts_rendered = -1;
  std::string dom, console;
};
inline BrowserRender render_in_chromium(const std::string& html_path, const std::string& work_dir) {
  BrowserRender r;
  if (std::system("command -v chromium >/dev/null 2>&1") != 0) return r;
  r.available = true;
  const std::string dom = work_dir + "/dom.html", log = work_dir + "/chromium.log";
  const std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 "
                          "--virtual-time-budget=3000 --user-data-dir=" + work_dir + "/profile --dump-dom file://" +
                          html_path + " >" + dom + " 2>" + log;
  r.exit_code = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::string s;
    if (FILE* f = std::fopen(p.c_str(), "rb")) {
      char buf[65536];
      while (size_t n = std::fread(buf, 1, sizeof buf, f)) s.append(buf, n);
      std::fclose(f);
    }
    return s;
  };
  r.dom = slurp(dom);
  r.console = slurp(log);
  auto attr = [&](const std::string& name) {
    auto p = r.dom.find(name + "=\"");
    return p == std::string::npos ? -1 : std::stoi(r.dom.substr(p + name.size() + 2));
  };
  r.charts_total = attr("data-charts-total");
  r.charts_rendered = attr("data-charts-rendered");
  return r;
}
inline std::string shared_data_dir() { return source_dir() + "/../shared/data"; }
// The npm packages scripts/setup.sh installs for the tests (node-llama-cpp, openai): BUILD/node/node_modules,
// or DSFORGE_NODE_MODULES.
inline std::string node_modules() {
  if (const char* env = std::getenv("DSFORGE_NODE_MODULES")) return env;
  return (std::filesystem::path(DSFORGE_CLI).parent_path() / "node" / "node_modules").string();
}

// A TCP port free on 127.0.0.1 right now (the kernel picks it): tests never hard-code ports, so
// parallel test runs and other services cannot collide with them.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace dsforge

// Expects `stmt` to throw `type` with a message containing `needle`.
#define EXPECT_THROW_MSG(stmt, type, needle)                                                  \
  do {                                                                                        \
    try {                                                                                     \
      stmt;                                                                                   \
      ADD_FAILURE() << "expected " #type " from " #stmt;                                      \
    } catch (const type& e) {                                                                 \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)                        \
          << "message: " << e.what() << "\nexpected to contain: " << needle;                  \
    }                                                                                         \
  } while (0)

// End-to-end tests of the dsforge CLI on a tiny config: the whole pipeline, one-line errors, and
// SIGTERM during training followed by a resume.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/shards.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"

using namespace dsforge;

namespace {

// A small corpus of "word: definition" lines and a config that trains for a few seconds.
std::string write_tiny_config(const std::string& dir, int64_t max_steps) {
  write_file_atomic(path_join(dir, "corpus.txt"), definition_lines(600));
  const std::string cfg = path_join(dir, "tiny.toml");
  write_file_atomic(cfg, fmt("[run]\nout_dir = \"", path_join(dir, "run"), "\"\nthreads = 1\n",
                             "[data]\nsource = \"files\"\npaths = [\"", path_join(dir, "corpus.txt"), "\"]\nval_fraction = 0.1\n",
                             "[tokenizer]\nvocab_size = 320\n[model]\nconfig = \"nano\"\n",
                             "[train]\nseq_len = 32\nbatch_size = 4\nmax_steps = ", max_steps,
                             "\nwarmup_steps = 5\nlog_every = 5\neval_every = 20\ncheckpoint_every = 10\n",
                             "[eval]\nbatches = 4\n[generate]\nprompts = [\"w1:\"]\nmax_new_tokens = 8\n"));
  return cfg;
}

// The steps of the training records of a metrics.jsonl, in file order.
std::vector<int64_t> train_steps(const std::string& metrics) {
  std::vector<int64_t> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("kind", "train") == "train" && j.contains("loss")) out.push_back(j["step"].get<int64_t>());
  }
  return out;
}

size_t line_count(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST(Cli, VersionAndHelp) {
  TempDir dir;
  CliRun v = run_cli("--version", dir.path);
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("dsforge 0."), std::string::npos);
  for (const char* sub : {"pipeline", "train", "data prepare", "tokenizer encode", "tokenize", "eval", "generate"}) {
    CliRun h = run_cli(std::string(sub) + " --help", dir.path);
    EXPECT_EQ(h.code, 0) << sub;
    EXPECT_NE(h.out.find("Usage"), std::string::npos) << sub;
  }
}

TEST(Cli, BadInvocationsFailWithOneLine) {
  TempDir dir;
  CliRun missing = run_cli("train --config does-not-exist.toml", dir.path);
  EXPECT_NE(missing.code, 0);
  EXPECT_EQ(line_count(missing.err), 1u) << missing.err;
  EXPECT_NE(missing.err.find("does-not-exist.toml"), std::string::npos) << missing.err;

  const std::string bad = path_join(dir.path, "bad.toml");
  write_file_atomic(bad, "[train]\nlearning_rate = 0.1\n");
  CliRun typo = run_cli("train --config " + bad, dir.path);
  EXPECT_EQ(typo.code, 2);
  EXPECT_EQ(line_count(typo.err), 1u) << typo.err;
  EXPECT_NE(typo.err.find("unknown key 'train.learning_rate'"), std::string::npos) << typo.err;

  const std::string good = path_join(dir.path, "good.toml");
  write_file_atomic(good, "[train]\nlr = 0.1\n");
  CliRun value = run_cli("train --config " + good + " --train.lr=fast", dir.path);
  EXPECT_EQ(value.code, 2);
  EXPECT_NE(value.err.find("--train.lr=fast: expected a number"), std::string::npos) << value.err;

  CliRun sub = run_cli("trian", dir.path);
  EXPECT_EQ(sub.code, 2);
  EXPECT_EQ(line_count(sub.err), 1u) << sub.err;
}

TEST(Cli, PipelineEndToEndThenResumeExtends) {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir.path, 30);
  CliRun r = run_cli("pipeline --config " + cfg, dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string run = path_join(dir.path, "run");
  for (const char* f : {"config.toml", "tokenizer.json", "config.json", "metrics.jsonl", "eval.json", "data/stats.json",
                        "shards/manifest.json", "model/model.safetensors", "model/config.json", "model/tokenizer.json"})
    EXPECT_TRUE(file_exists(path_join(run, f))) << f;
  bool has_events = false;
  for (const auto& e : std::filesystem::directory_iterator(path_join(run, "tb")))
    has_events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(has_events);
  auto ev = nlohmann::json::parse(read_file(path_join(run, "eval.json")));
  EXPECT_LT(ev["val_perplexity"].get<double>(), ev["unigram_perplexity"].get<double>());
  EXPECT_NE(r.out.find("unigram baseline"), std::string::npos);
  EXPECT_NE(r.out.find("  w1:"), std::string::npos);  // generated sample

  // Same command again: every stage is reused, training is complete (no new training records).
  const size_t records = train_steps(path_join(run, "metrics.jsonl")).size();
  CliRun again = run_cli("pipeline --config " + cfg, dir.path);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(train_steps(path_join(run, "metrics.jsonl")).size(), records);
  // More steps: resumes from the last checkpoint, logging only the steps after 30.
  CliRun more = run_cli("train --config " + cfg + " --train.max_steps=40", dir.path);
  ASSERT_EQ(more.code, 0) << more.err;
  const std::vector<int64_t> steps = train_steps(path_join(run, "metrics.jsonl"));
  ASSERT_GT(steps.size(), records);
  EXPECT_GT(steps[records], 30);
  EXPECT_EQ(steps.back(), 40);
}

TEST(Cli, SigtermSavesACheckpointAndTheRerunResumes) {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir.path, 100000);
  const std::string out = path_join(dir.path, "log.txt");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* f = std::freopen(out.c_str(), "w", stdout);
    (void)f;
    execl(DSFORGE_CLI, DSFORGE_CLI, "pipeline", "--config", cfg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training is under way (a checkpoint exists), then SIGTERM.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  const std::string ck = path_join(dir.path, "run/checkpoints");
  while (std::chrono::steady_clock::now() < deadline &&
         !(std::filesystem::exists(ck) && !std::filesystem::is_empty(ck)))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(std::filesystem::exists(ck)) << read_file(out);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  // The checkpoint written on the signal is the newest complete one; the rerun continues after it.
  int64_t saved = -1;
  for (const auto& e : std::filesystem::directory_iterator(ck))
    if (std::filesystem::exists(e.path() / "DONE"))
      saved = std::max<int64_t>(saved, nlohmann::json::parse(read_file((e.path() / "trainer_state.json").string()))["step"]);
  ASSERT_GT(saved, 0) << read_file(out);
  const std::vector<int64_t> before = train_steps(path_join(dir.path, "run/metrics.jsonl"));
  CliRun resumed = run_cli("train --config " + cfg + " --train.max_steps=" + std::to_string(saved + 3), dir.path);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  const std::vector<int64_t> after = train_steps(path_join(dir.path, "run/metrics.jsonl"));
  ASSERT_GT(after.size(), before.size());
  EXPECT_GT(after[before.size()], saved);
  EXPECT_EQ(after.back(), saved + 3);
}

TEST(Cli, SigkillMidCheckpointResumesFromThePreviousGoodOne) {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir.path, 30);  // checkpoints every 10 steps
  // The process kills itself with SIGKILL halfway through writing the step-20 checkpoint.
  const std::string log = path_join(dir.path, "killed.txt");
  const int status = std::system(("DSFORGE_KILL_IN_CHECKPOINT=20 " + std::string(DSFORGE_CLI) + " pipeline --config " + cfg +
                                  " >" + log + " 2>&1").c_str());
  ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL)) << read_file(log);
  const std::string ck = path_join(dir.path, "run/checkpoints");
  EXPECT_TRUE(std::filesystem::exists(path_join(ck, "step_0000010/DONE")));
  EXPECT_TRUE(std::filesystem::exists(path_join(ck, "step_0000020.tmp")));  // the torn write
  EXPECT_FALSE(std::filesystem::exists(path_join(ck, "step_0000020")));
  // The rerun resumes from step 10, finishes, and clears the torn folder.
  CliRun resumed = run_cli("train --config " + cfg, dir.path);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming from " + path_join(ck, "step_0000010") + " at step 10"), std::string::npos) << resumed.out;
  EXPECT_TRUE(std::filesystem::exists(path_join(ck, "step_0000030/DONE")));
  EXPECT_FALSE(std::filesystem::exists(path_join(ck, "step_0000020.tmp")));
}

TEST(Cli, HtmlReportRendersInHeadlessChromium) {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir.path, 20);
  CliRun run = run_cli("pipeline --config " + cfg, dir.path);
  ASSERT_EQ(run.code, 0) << run.err;
  const std::string run_dir = path_join(dir.path, "run");
  const std::string html = read_file(path_join(run_dir, "report.html"));  // the pipeline writes it
  CliRun rep = run_cli("report " + run_dir + " --out " + path_join(dir.path, "r.html"), dir.path);
  ASSERT_EQ(rep.code, 0) << rep.err;
  EXPECT_EQ(read_file(path_join(dir.path, "r.html")), html);
  // Self-contained: nothing fetched from anywhere.
  for (const char* ref : {"http://", "https://", "src=\"", "<link"}) EXPECT_EQ(html.find(ref), std::string::npos) << ref;
  for (const char* part : {"Loss", "Learning rate", "Throughput", "Model FLOPs utilisation", "Expert load", "Samples",
                           "Configuration", "val_perplexity"})
    EXPECT_NE(html.find(part), std::string::npos) << part;
  // A bad run folder is refused with the file named.
  CliRun bad = run_cli("report " + dir.path, dir.path);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("metrics.jsonl"), std::string::npos) << bad.err;

  const BrowserRender page = render_in_chromium(path_join(run_dir, "report.html"), dir.path);
  if (!page.available) GTEST_SKIP() << "chromium not installed (scripts/setup.sh installs it)";
  ASSERT_EQ(page.exit_code, 0) << page.console;
  // The page's own check: every chart laid out with a non-empty box.
  EXPECT_GE(page.charts_total, 6) << page.dom.substr(0, 400);
  EXPECT_EQ(page.charts_rendered, page.charts_total);
  // No console errors or uncaught exceptions.
  EXPECT_EQ(page.console.find("CONSOLE"), std::string::npos) << page.console;
  EXPECT_EQ(page.console.find("Uncaught"), std::string::npos) << page.console;
}

TEST(Cli, MetricsPrintJsonAndRefuseMisalignedFiles) {
  TempDir dir;
  write_file_atomic(path_join(dir.path, "h.txt"), "the cat sat on the mat\n");
  write_file_atomic(path_join(dir.path, "r.txt"), "the cat sat on the mat\n");
  write_file_atomic(path_join(dir.path, "r2.txt"), "the cat sat on the mat\nanother line\n");
  CliRun ok = run_cli("metrics bleu --hyp " + path_join(dir.path, "h.txt") + " --ref " + path_join(dir.path, "r.txt"), dir.path);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_NEAR(nlohmann::json::parse(ok.out)["score"].get<double>(), 100.0, 1e-9);
  CliRun bad = run_cli("metrics rouge --hyp " + path_join(dir.path, "h.txt") + " --ref " + path_join(dir.path, "r2.txt"), dir.path);
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(line_count(bad.err), 1u) << bad.err;
  EXPECT_NE(bad.err.find("r2.txt: 2 lines but"), std::string::npos) << bad.err;
}

namespace {
// Original fixture text for documents of any shape: source files and a play script.
const char* kPythonFile = R"(# Shapes and their areas, for a small geometry quiz.
import math


class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2

    def perimeter(self):
        return 2 * math.pi * self.radius


class Rectangle:
    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height

    def perimeter(self):
        return 2 * (self.width + self.height)


def largest(shapes):
    best = None
    for shape in shapes:
        if best is None or shape.area() > best.area():
            best = shape
    return best
)";

const char* kCppFile = R"(// A fixed-size stack that refuses to overflow.
#include <array>
#include <stdexcept>

template <typename T, int N>
class Stack {
 public:
    void push(const T& value) {
        if (size_ == N) {
            throw std::overflow_error("stack is full");
        }
        items_[size_++] = value;
    }

    T pop() {
        if (size_ == 0) {
            throw std::underflow_error("stack is empty");
        }
        return items_[--size_];
    }

    int size() const { return size_; }

 private:
    std::array<T, N> items_{};
    int size_ = 0;
};
)";

const char* kPlayFile = R"(THE LANTERN KEEPER
A short play in one scene.

Night. A lighthouse gallery. MARA trims a wick; TOBIAS climbs in, out of breath.

TOBIAS. The boat is late again.
    I counted every wave since supper.

MARA. Then count the lamps instead.
    Lamps, at least, come home when they are called.

TOBIAS. And if the fog rolls in before it does?

MARA. Then we light the second lamp,
    and the third, and we keep them burning
    until the sea gives back what it borrowed.

TOBIAS. You say that every night.

MARA. And every night it has been true.

(A horn sounds, far off. They both turn to the window.)
)";

const char* kValFile = R"(def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)


def spread(values):
    low = min(values)
    high = max(values)
    return high - low
)";

const char* kTestFile = R"(MARA. Hold the rope.
TOBIAS. I am holding it.
    Both hands, as you taught me.
)";
}  // namespace

// Documents of any shape, end to end: whole source files and a play as documents, byte for byte
// through prepare -> tokenizer -> tokenize, then a short training run and multi-line generation.
TEST(Cli, SourceTreeDocumentsRoundTripAndGenerateLines) {
  TempDir dir;
  make_dirs(path_join(dir.path, "tree/src"));
  write_file_atomic(path_join(dir.path, "tree/src/shapes.py"), kPythonFile);
  write_file_atomic(path_join(dir.path, "tree/src/stack.cpp"), kCppFile);
  write_file_atomic(path_join(dir.path, "tree/lantern.txt"), kPlayFile);
  write_file_atomic(path_join(dir.path, "valid.py"), kValFile);
  write_file_atomic(path_join(dir.path, "test.txt"), kTestFile);
  const std::string run = path_join(dir.path, "run");
  const std::string cfg = path_join(dir.path, "tree.toml");
  write_file_atomic(
      cfg, fmt("[run]\nout_dir = \"", run, "\"\nthreads = 1\n",
               "[data]\nsource = \"files\"\npaths = [\"", path_join(dir.path, "tree"), "\"]\n", "val_paths = [\"",
               path_join(dir.path, "valid.py"), "\"]\ntest_paths = [\"", path_join(dir.path, "test.txt"), "\"]\n",
               "txt_documents = \"file\"\nnormalize = false\nmin_chars = 1\nmax_chars = 100000\n",
               "max_ngram_repetition = 1.0\nmax_repeated_line_fraction = 1.0\n",
               "[tokenizer]\nvocab_size = 320\n[model]\nconfig = \"nano\"\n",
               "[train]\nseq_len = 32\nbatch_size = 4\nmax_steps = 600\nwarmup_steps = 10\nlog_every = 100\n",
               "eval_every = 300\ncheckpoint_every = 300\n[eval]\nbatches = 2\n",
               "[generate]\nprompts = [\"class Rectangle:\\n    def \"]\nmax_new_tokens = 40\ntemperature = 0.0\n"));
  for (const char* stage : {"data prepare", "tokenizer train", "tokenize"}) {
    CliRun r = run_cli(std::string(stage) + " --config " + cfg, dir.path);
    ASSERT_EQ(r.code, 0) << stage << "\n" << r.out << r.err;
  }
  auto stats = nlohmann::json::parse(read_file(path_join(run, "data/stats.json")));
  EXPECT_EQ(stats["filters"]["kept"], 3);
  EXPECT_EQ(stats["filters"]["binary_files_skipped"], 0);
  EXPECT_EQ(stats["split"]["test_documents"], 1);

  // Every document decodes back to its file, byte for byte; the end-of-text token separates them.
  auto tok = tok::BpeTokenizer::load(path_join(run, "tokenizer.json"));
  auto documents_of = [&](const std::string& shard) {
    data::TokenShard s(path_join(run, "shards/" + shard));
    std::vector<std::string> docs;
    std::vector<int32_t> ids;
    for (uint64_t i = 0; i < s.size(); ++i) {
      const auto id = static_cast<int32_t>(s.at(i));
      if (id != tok.eot_id()) {
        ids.push_back(id);
        continue;
      }
      docs.push_back(tok.decode(ids));
      ids.clear();
    }
    EXPECT_TRUE(ids.empty()) << shard << ": tokens after the last end-of-text";
    return docs;
  };
  // Files in sorted path order: tree/lantern.txt, tree/src/shapes.py, tree/src/stack.cpp.
  EXPECT_EQ(documents_of("train_000.bin"), (std::vector<std::string>{kPlayFile, kPythonFile, kCppFile}));
  EXPECT_EQ(documents_of("val_000.bin"), std::vector<std::string>{kValFile});
  EXPECT_EQ(documents_of("test_000.bin"), std::vector<std::string>{kTestFile});
  auto manifest = data::read_manifest(path_join(run, "shards/manifest.json"));
  EXPECT_TRUE(manifest.has_test());

  // The tokenizer learned layout: a whitespace-only token with a newline or an indentation of 4+.
  std::string layout_token;
  for (int32_t id = 0; id < static_cast<int32_t>(tok.vocab_size()) && layout_token.empty(); ++id) {
    if (id == tok.eot_id()) continue;
    const std::string& b = tok.token_bytes(id);
    const bool blank = b.size() >= 2 && b.find_first_not_of(" \t\n") == std::string::npos;
    if (blank && (b.find('\n') != std::string::npos || b.find("    ") != std::string::npos)) layout_token = b;
  }
  EXPECT_FALSE(layout_token.empty()) << "no newline or indentation token among " << tok.vocab_size();

  // Train until the three documents are nearly memorised (600 steps of 4 x 32 tokens on ~2,000
  // tokens), then decode greedily from a prompt taken from the Python file: the continuation is the
  // next lines of the class, so it holds line breaks, and greedy decoding makes it deterministic.
  CliRun train = run_cli("train --config " + cfg, dir.path);
  ASSERT_EQ(train.code, 0) << train.out << train.err;
  CliRun gen = run_cli("generate --config " + cfg, dir.path);
  ASSERT_EQ(gen.code, 0) << gen.out << gen.err;
  auto samples = nlohmann::json::parse(read_file(path_join(run, "samples.json")));
  ASSERT_EQ(samples.size(), 1u);
  const std::string completion = samples[0]["completion"].get<std::string>();
  EXPECT_NE(completion.find('\n'), std::string::npos) << completion;
  // Printed as lines, not escaped: the streamed text after the prompt holds the completion's line
  // breaks plus the final one. (Compared by count: a broken UTF-8 sequence is raw bytes on stdout
  // and U+FFFD in samples.json.)
  const size_t at = gen.out.rfind("    def ");
  ASSERT_NE(at, std::string::npos) << gen.out;
  const std::string printed = gen.out.substr(at);
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), std::count(completion.begin(), completion.end(), '\n') + 1)
      << printed;
  // bfloat16 decode weights: the memorised continuation survives their rounding, greedy token for token;
  // a dtype it does not know is refused with the key's name.
  CliRun bf16 = run_cli("generate --config " + cfg + " --generate.weights=bf16", dir.path);
  ASSERT_EQ(bf16.code, 0) << bf16.out << bf16.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(path_join(run, "samples.json")))[0]["completion"].get<std::string>(), completion);
  CliRun bad = run_cli("generate --config " + cfg + " --generate.weights=f16", dir.path);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE((bad.out + bad.err).find("generate.weights"), std::string::npos) << bad.out << bad.err;
}

TEST(Cli, DataPathsWithTheWordNetSourceFailWithOneLine) {
  TempDir dir;
  CliRun r = run_cli("data prepare --run.out_dir=" + path_join(dir.path, "run") + " --data.paths=mycorp/", dir.path);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("data.paths' is set but data.source is \"wordnet\": set data.source=\"files\""), std::string::npos)
      << r.err;
}

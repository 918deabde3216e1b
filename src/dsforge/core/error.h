// Typed exceptions of the library. Only main() turns them into exit codes.
//
// Each message says what failed, where (file, key, line, step) and what was expected, so that one
// line on stderr is enough to fix the input:
//   throw ConfigError("configs/run/x.toml: unknown key 'train.lrr' (did you mean 'train.lr'?)");
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dsforge {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class ConfigError : public Error { using Error::Error; };      // bad run/model config, unknown key
class DataError : public Error { using Error::Error; };        // unreadable or malformed input data
class CheckpointError : public Error { using Error::Error; };  // corrupt, truncated or mismatched checkpoint
class IoError : public Error { using Error::Error; };          // filesystem failures
class Interrupted : public Error { using Error::Error; };      // SIGINT/SIGTERM, a checkpoint saved (exit 130)

// Concatenates its arguments with operator<< : fmt("key '", k, "' expected ", n).
template <typename... Args>
std::string fmt(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace dsforge

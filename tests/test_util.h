// Helpers shared by the tests: temporary folders, message-checking throws, paths.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

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
inline std::string shared_data_dir() { return source_dir() + "/../shared/data"; }

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

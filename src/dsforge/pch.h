// The one precompiled header of the build (library, tests, benchmarks). Sources still include
// what they use; this only makes libtorch's headers cheap to parse.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

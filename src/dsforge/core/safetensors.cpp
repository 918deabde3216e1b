#include "dsforge/core/safetensors.h"

#include <ATen/ATen.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge {
namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

const char* dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw Error(fmt("safetensors: unsupported dtype ", c10::toString(t)));
}

at::ScalarType dtype_from_name(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw CheckpointError(fmt(where, ": unsupported dtype '", name, "'"));
}

}  // namespace

std::string encode_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  std::vector<at::Tensor> ordered;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    ordered.push_back(c);
  }
  std::string data;
  data.reserve(offset);
  for (const auto& c : ordered) data.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());

  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  meta["dsforge.crc32c"] = std::to_string(crc32c(data.data(), data.size()));
  nlohmann::ordered_json full;
  full["__metadata__"] = meta;
  for (auto it = header.begin(); it != header.end(); ++it) full[it.key()] = it.value();
  std::string h = full.dump();
  while (h.size() % 8 != 0) h.push_back(' ');  // keep the data section 8-byte aligned

  std::string out;
  uint64_t hlen = h.size();
  out.append(reinterpret_cast<const char*>(&hlen), 8);  // little-endian on every supported target
  out += h;
  out += data;
  return out;
}

SafetensorsFile decode_safetensors(const std::string& bytes, const std::string& origin) {
  if (bytes.size() < 8) throw CheckpointError(fmt(origin, ": truncated safetensors file (", bytes.size(), " bytes)"));
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  if (hlen > bytes.size() - 8)
    throw CheckpointError(fmt(origin, ": header length ", hlen, " exceeds file size ", bytes.size(),
                              " (truncated or not a safetensors file)"));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(hlen));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt(origin, ": header is not valid JSON (", e.what(), ")"));
  }
  const char* data = bytes.data() + 8 + hlen;
  const uint64_t data_size = bytes.size() - 8 - hlen;

  SafetensorsFile out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const std::string where = fmt(origin, ": tensor '", it.key(), "'");
    const auto& info = it.value();
    if (!info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      throw CheckpointError(fmt(where, ": header entry needs dtype, shape and data_offsets"));
    at::ScalarType type = dtype_from_name(info["dtype"].get<std::string>(), where);
    std::vector<int64_t> shape = info["shape"].get<std::vector<int64_t>>();
    auto offs = info["data_offsets"].get<std::vector<uint64_t>>();
    if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_size)
      throw CheckpointError(fmt(where, ": data offsets out of range (data section is ", data_size,
                                " bytes; file truncated?)"));
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const uint64_t expect = static_cast<uint64_t>(numel) * c10::elementSize(type);
    if (offs[1] - offs[0] != expect)
      throw CheckpointError(fmt(where, ": holds ", offs[1] - offs[0], " bytes, shape needs ", expect));
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    if (expect) std::memcpy(t.data_ptr(), data + offs[0], expect);
    out.tensors.emplace(it.key(), t);
  }
  auto crc = out.metadata.find("dsforge.crc32c");
  if (crc != out.metadata.end()) {
    uint32_t got = crc32c(data, data_size);
    if (std::to_string(got) != crc->second)
      throw CheckpointError(fmt(origin, ": checksum mismatch (stored crc32c ", crc->second, ", computed ", got,
                                "): the file is corrupt"));
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, encode_safetensors(tensors, metadata));
}

SafetensorsFile load_safetensors(const std::string& path) {
  if (!file_exists(path)) throw CheckpointError(fmt(path, ": no such file"));
  return decode_safetensors(read_file(path), path);
}

}  // namespace dsforge

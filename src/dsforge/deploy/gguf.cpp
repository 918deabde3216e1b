#include "dsforge/deploy/gguf.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::deploy {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;

// GGUF value types.
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

uint64_t align_up(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// Little-endian serialisation into a byte string (x86-64 and every libtorch target are little-endian).
struct Bytes {
  std::string s;
  template <typename T>
  void pod(T v) { s.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& v) {
    pod<uint64_t>(v.size());
    s += v;
  }
};

void put_value(Bytes& b, const GgufValue& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint32_t>) { b.pod(kU32); b.pod(x); }
        else if constexpr (std::is_same_v<T, int32_t>) { b.pod(kI32); b.pod(x); }
        else if constexpr (std::is_same_v<T, float>) { b.pod(kF32); b.pod(x); }
        else if constexpr (std::is_same_v<T, bool>) { b.pod(kBool); b.pod<uint8_t>(x ? 1 : 0); }
        else if constexpr (std::is_same_v<T, std::string>) { b.pod(kString); b.str(x); }
        else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          b.pod(kArray); b.pod(kString); b.pod<uint64_t>(x.size());
          for (const auto& e : x) b.str(e);
        } else if constexpr (std::is_same_v<T, std::vector<int32_t>>) {
          b.pod(kArray); b.pod(kI32); b.pod<uint64_t>(x.size());
          for (int32_t e : x) b.pod(e);
        } else {
          b.pod(kArray); b.pod(kF32); b.pod<uint64_t>(x.size());
          for (float e : x) b.pod(e);
        }
      },
      v);
}

uint64_t tensor_bytes(int64_t numel, GgmlType t) {
  switch (t) {
    case GgmlType::F32: return static_cast<uint64_t>(numel) * 4;
    case GgmlType::F16:
    case GgmlType::BF16: return static_cast<uint64_t>(numel) * 2;
    case GgmlType::Q8_0: return static_cast<uint64_t>(numel / kQ8Block) * kQ8BlockBytes;
  }
  return 0;
}

// The tensor's data in the file's encoding.
std::string encode(const at::Tensor& t, GgmlType type) {
  at::Tensor f = t.detach().to(at::kCPU).contiguous();
  std::string out(tensor_bytes(f.numel(), type), '\0');
  switch (type) {
    case GgmlType::F32: {
      f = f.to(at::kFloat).contiguous();
      std::memcpy(out.data(), f.data_ptr(), out.size());
      break;
    }
    case GgmlType::F16: {
      f = f.to(at::kHalf).contiguous();
      std::memcpy(out.data(), f.data_ptr(), out.size());
      break;
    }
    case GgmlType::BF16: {
      f = f.to(at::kBFloat16).contiguous();
      std::memcpy(out.data(), f.data_ptr(), out.size());
      break;
    }
    case GgmlType::Q8_0: {
      f = f.to(at::kFloat).contiguous();
      quantize_q8_0(f.data_ptr<float>(), f.numel(), reinterpret_cast<uint8_t*>(out.data()));
      break;
    }
  }
  return out;
}

}  // namespace

GgmlType parse_ggml_type(const std::string& name) {
  if (name == "f32") return GgmlType::F32;
  if (name == "f16") return GgmlType::F16;
  if (name == "bf16") return GgmlType::BF16;
  if (name == "q8_0") return GgmlType::Q8_0;
  throw ConfigError(fmt("GGUF type '", name, "' is unknown (known: f32, f16, bf16, q8_0)"));
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "f32";
    case GgmlType::F16: return "f16";
    case GgmlType::BF16: return "bf16";
    case GgmlType::Q8_0: return "q8_0";
  }
  return "?";
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const float* v = x + b * kQ8Block;
    float amax = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* blk = out + b * kQ8BlockBytes;
    const uint16_t dh = c10::Half(d).x;
    std::memcpy(blk, &dh, 2);
    for (int64_t i = 0; i < kQ8Block; ++i) blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(v[i] * id)));
  }
}

void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const uint8_t* blk = blocks + b * kQ8BlockBytes;
    c10::Half dh;
    std::memcpy(&dh.x, blk, 2);
    const float d = static_cast<float>(dh);
    for (int64_t i = 0; i < kQ8Block; ++i) out[b * kQ8Block + i] = d * static_cast<float>(static_cast<int8_t>(blk[2 + i]));
  }
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : kv_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, const at::Tensor& t, GgmlType type) {
  if (type == GgmlType::Q8_0 && (t.dim() == 0 || t.size(-1) % kQ8Block != 0))
    throw ConfigError(fmt("GGUF tensor ", name, ": q8_0 needs rows of a multiple of ", kQ8Block, " values, got ", t.sizes()));
  for (const auto& e : tensors_)
    if (e.name == name) throw Error(fmt("GGUF tensor ", name, " added twice"));
  tensors_.push_back({name, t, type});
}

void GgufWriter::write(const std::string& path) const {
  Bytes head;
  head.pod(kMagic);
  head.pod(kVersion);
  head.pod<uint64_t>(tensors_.size());
  head.pod<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    head.str(k);
    put_value(head, v);
  }
  uint64_t offset = 0;
  for (const auto& e : tensors_) {
    head.str(e.name);
    head.pod<uint32_t>(static_cast<uint32_t>(e.tensor.dim()));
    for (int64_t d = e.tensor.dim() - 1; d >= 0; --d) head.pod<uint64_t>(static_cast<uint64_t>(e.tensor.size(d)));
    head.pod<uint32_t>(static_cast<uint32_t>(e.type));
    head.pod<uint64_t>(offset);
    offset = align_up(offset + tensor_bytes(e.tensor.numel(), e.type));
  }
  head.s.resize(align_up(head.s.size()), '\0');
  AtomicFileWriter out(path);
  out.write(head.s);
  const std::string pad(kAlignment, '\0');
  for (const auto& e : tensors_) {
    const std::string data = encode(e.tensor, e.type);
    out.write(data);
    out.write(pad.data(), align_up(data.size()) - data.size());
  }
  out.commit();
}

// ---- reading ----

namespace {

struct Reader {
  const std::string& s;
  const std::string& origin;
  size_t at = 0;
  void need(size_t n) {
    if (at + n > s.size())
      throw CheckpointError(fmt(origin, ": truncated GGUF file (wanted ", n, " bytes at offset ", at, " of ", s.size(), ")"));
  }
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, s.data() + at, sizeof v);
    at += sizeof v;
    return v;
  }
  std::string str() {
    const uint64_t n = pod<uint64_t>();
    need(n);
    std::string v = s.substr(at, n);
    at += n;
    return v;
  }
};

GgufValue read_value(Reader& r, uint32_t type, const std::string& key) {
  switch (type) {
    case kU32: return r.pod<uint32_t>();
    case kI32: return r.pod<int32_t>();
    case kF32: return r.pod<float>();
    case kBool: return r.pod<uint8_t>() != 0;
    case kString: return r.str();
    case kArray: {
      const uint32_t et = r.pod<uint32_t>();
      const uint64_t n = r.pod<uint64_t>();
      if (et == kString) {
        std::vector<std::string> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(r.str());
        return v;
      }
      if (et == kI32) {
        std::vector<int32_t> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(r.pod<int32_t>());
        return v;
      }
      if (et == kF32) {
        std::vector<float> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(r.pod<float>());
        return v;
      }
      throw CheckpointError(fmt(r.origin, ": key ", key, ": array of value type ", et, " is not read by dsforge"));
    }
    default:
      throw CheckpointError(fmt(r.origin, ": key ", key, ": value type ", type, " is not read by dsforge"));
  }
}

}  // namespace

GgufFile read_gguf(const std::string& path) {
  const std::string bytes = read_file(path);
  Reader r{bytes, path};
  if (r.pod<uint32_t>() != kMagic) throw CheckpointError(fmt(path, ": not a GGUF file (bad magic)"));
  GgufFile f;
  f.version = r.pod<uint32_t>();
  if (f.version != 3) throw CheckpointError(fmt(path, ": GGUF version ", f.version, ", dsforge reads version 3"));
  const uint64_t n_tensors = r.pod<uint64_t>();
  const uint64_t n_kv = r.pod<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.str();
    const uint32_t type = r.pod<uint32_t>();
    f.kv[key] = read_value(r, type, key);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = r.str();
    GgufTensorInfo info;
    const uint32_t dims = r.pod<uint32_t>();
    for (uint32_t d = 0; d < dims; ++d) info.ne.push_back(static_cast<int64_t>(r.pod<uint64_t>()));
    info.type = static_cast<GgmlType>(r.pod<uint32_t>());
    info.offset = r.pod<uint64_t>();
    f.tensor_order.push_back(name);
    f.tensors[name] = info;
  }
  const size_t data_at = align_up(r.at);
  if (data_at > bytes.size()) throw CheckpointError(fmt(path, ": truncated GGUF file (no data section)"));
  f.data = bytes.substr(data_at);
  for (const auto& [name, info] : f.tensors) {
    int64_t numel = 1;
    for (int64_t d : info.ne) numel *= d;
    if (info.offset + tensor_bytes(numel, info.type) > f.data.size())
      throw CheckpointError(fmt(path, ": tensor ", name, " runs past the end of the file (truncated?)"));
  }
  return f;
}

at::Tensor GgufFile::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw CheckpointError(fmt("GGUF: no tensor ", name));
  const GgufTensorInfo& info = it->second;
  std::vector<int64_t> shape(info.ne.rbegin(), info.ne.rend());
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const char* p = data.data() + info.offset;
  at::Tensor out = at::empty(shape, at::kFloat);
  switch (info.type) {
    case GgmlType::F32: std::memcpy(out.data_ptr(), p, numel * 4); break;
    case GgmlType::F16: {
      at::Tensor h = at::empty(shape, at::kHalf);
      std::memcpy(h.data_ptr(), p, numel * 2);
      out.copy_(h);
      break;
    }
    case GgmlType::BF16: {
      at::Tensor h = at::empty(shape, at::kBFloat16);
      std::memcpy(h.data_ptr(), p, numel * 2);
      out.copy_(h);
      break;
    }
    case GgmlType::Q8_0: dequantize_q8_0(reinterpret_cast<const uint8_t*>(p), numel, out.data_ptr<float>()); break;
    default: throw CheckpointError(fmt("GGUF tensor ", name, ": type ", static_cast<uint32_t>(info.type), " is not read by dsforge"));
  }
  return out;
}

// ---- export ----

namespace {

struct Exporter {
  GgufWriter w;
  GgmlType type;
  GgufExportReport report;

  void matrix(const std::string& name, const at::Tensor& t) {
    GgmlType ty = type;
    if (ty == GgmlType::Q8_0 && t.size(-1) % kQ8Block != 0) {
      ty = GgmlType::F16;
      report.notes.push_back(fmt(name, ": rows of ", t.size(-1), " values are not a multiple of 32, written as f16"));
    }
    w.add_tensor(name, t, ty);
    ++report.tensors;
  }
  void vector(const std::string& name, const at::Tensor& t) {
    w.add_tensor(name, t.to(at::kFloat), GgmlType::F32);
    ++report.tensors;
  }
};

const at::Tensor& need(const TensorMap& s, const std::string& name) {
  auto it = s.find(name);
  if (it == s.end()) throw CheckpointError(fmt("export: the model has no tensor ", name));
  return it->second;
}

void add_tokenizer(GgufWriter& w, const tok::BpeTokenizer& tok, const model::ModelConfig& mc, const std::string& origin) {
  const int64_t V = tok.vocab_size();
  if (V != mc.vocab_size)
    throw ConfigError(fmt(origin, ": the tokenizer has ", V, " tokens but the model's vocab_size is ", mc.vocab_size,
                          " (llama.cpp needs one row per token)"));
  std::vector<int32_t> types(V, 1);  // NORMAL
  for (const auto& s : tok.special_tokens()) types[tok.special_id(s)] = 3;  // CONTROL
  for (const auto& s : tok.added_tokens()) types[tok.added_token_id(s)] = 4;  // USER_DEFINED
  auto unicode = [](const std::string& bytes) {
    std::string u;
    for (unsigned char c : bytes) u += tok::byte_to_unicode(c);
    return u;
  };
  std::vector<std::string> tokens(V);
  for (int32_t id = 0; id < V; ++id) tokens[id] = types[id] == 1 ? unicode(tok.token_bytes(id)) : tok.token_bytes(id);
  std::vector<std::string> merges;
  merges.reserve(tok.merges().size());
  for (const auto& [l, r] : tok.merges()) merges.push_back(unicode(tok.token_bytes(l)) + " " + unicode(tok.token_bytes(r)));

  std::string pre;
  if (tok.pretokenizer_patterns() == tok::pretokenizer_patterns("gpt2")) pre = "gpt-2";
  else if (tok.pretokenizer_patterns() == tok::pretokenizer_patterns("deepseek-v3")) pre = "deepseek-v3";
  else
    throw ConfigError(fmt(origin, ": the tokenizer's pre-tokenizer is neither GPT-2's nor DeepSeek-V3's; llama.cpp "
                          "knows pre-tokenizers only by name"));
  w.set("tokenizer.ggml.model", std::string("gpt2"));
  w.set("tokenizer.ggml.pre", pre);
  w.set("tokenizer.ggml.tokens", std::move(tokens));
  w.set("tokenizer.ggml.token_type", std::move(types));
  w.set("tokenizer.ggml.merges", std::move(merges));
  w.set("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(mc.bos_token_id));
  w.set("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(mc.eos_token_id));
  w.set("tokenizer.ggml.add_bos_token", false);  // dsforge prompts are encoded without a leading BOS
}

void export_deepseek(Exporter& ex, const model::ModelConfig& c, const TensorMap& s) {
  if (c.moe_layer_freq != 1 && c.n_routed_experts > 0)
    throw ConfigError("export: llama.cpp's deepseek2 runs every layer after the leading dense ones as MoE; "
                      "moe_layer_freq must be 1, got " + std::to_string(c.moe_layer_freq));
  if (c.num_hidden_layers == 26 || c.num_hidden_layers == 27)
    throw ConfigError("export: llama.cpp treats a deepseek2 model of 26 or 27 layers as V2-Lite (DEEPSEEK.md §4.5 P1)");
  if (c.qk_nope_head_dim < 1 || c.qk_rope_head_dim % 2 != 0)
    throw ConfigError("export: llama.cpp needs qk_nope_head_dim >= 1 and an even qk_rope_head_dim");
  const std::string a = "deepseek2.";
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  GgufWriter& w = ex.w;
  w.set(a + "context_length", u32(c.max_position_embeddings));
  w.set(a + "embedding_length", u32(c.hidden_size));
  w.set(a + "block_count", u32(c.num_hidden_layers));
  w.set(a + "feed_forward_length", u32(c.intermediate_size));
  w.set(a + "attention.head_count", u32(c.num_attention_heads));
  w.set(a + "attention.head_count_kv", u32(1));
  w.set(a + "attention.key_length", u32(c.kv_lora_rank + c.qk_rope_head_dim));
  w.set(a + "attention.value_length", u32(c.kv_lora_rank));
  w.set(a + "attention.key_length_mla", u32(c.qk_head_dim()));
  w.set(a + "attention.value_length_mla", u32(c.v_head_dim));
  if (c.q_lora_rank > 0) w.set(a + "attention.q_lora_rank", u32(c.q_lora_rank));
  w.set(a + "attention.kv_lora_rank", u32(c.kv_lora_rank));
  w.set(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.set(a + "rope.dimension_count", u32(c.qk_rope_head_dim));
  w.set(a + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.set(a + "leading_dense_block_count", u32(std::min(c.first_k_dense_replace, c.num_hidden_layers)));
  w.set(a + "vocab_size", u32(c.vocab_size));
  if (c.n_routed_experts > 0) {
    w.set(a + "expert_count", u32(c.n_routed_experts));
    w.set(a + "expert_used_count", u32(c.num_experts_per_tok));
    w.set(a + "expert_shared_count", u32(c.n_shared_experts));
    w.set(a + "expert_feed_forward_length", u32(c.moe_intermediate_size));
    w.set(a + "expert_weights_scale", static_cast<float>(c.routed_scaling_factor));
    w.set(a + "expert_weights_norm", c.norm_topk_prob);
    w.set(a + "expert_gating_func", u32(c.scoring_func == "sigmoid" ? 2 : 1));
    if (c.n_group > 1) {
      w.set(a + "expert_group_count", u32(c.n_group));
      w.set(a + "expert_group_used_count", u32(c.topk_group));
    }
  }
  if (!c.rope_scaling.type.empty()) {
    if (c.rope_scaling.type != "yarn") throw ConfigError("export: rope_scaling type '" + c.rope_scaling.type + "' has no GGUF form");
    w.set(a + "rope.scaling.type", std::string("yarn"));
    w.set(a + "rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
    w.set(a + "rope.scaling.original_context_length", u32(c.rope_scaling.original_max_position_embeddings));
    w.set(a + "rope.scaling.yarn_log_multiplier", static_cast<float>(0.1 * c.rope_scaling.mscale_all_dim));
  }

  ex.matrix("token_embd.weight", need(s, "model.embed_tokens.weight"));
  ex.vector("output_norm.weight", need(s, "model.norm.weight"));
  ex.matrix("output.weight", c.tie_word_embeddings ? need(s, "model.embed_tokens.weight") : need(s, "lm_head.weight"));
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, dc = c.kv_lora_rank;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt("model.layers.", i, "."), b = fmt("blk.", i, ".");
    ex.vector(b + "attn_norm.weight", need(s, p + "input_layernorm.weight"));
    if (c.q_lora_rank > 0) {
      ex.matrix(b + "attn_q_a.weight", need(s, p + "self_attn.q_a_proj.weight"));
      ex.vector(b + "attn_q_a_norm.weight", need(s, p + "self_attn.q_a_layernorm.weight"));
      ex.matrix(b + "attn_q_b.weight", need(s, p + "self_attn.q_b_proj.weight"));
    } else {
      ex.matrix(b + "attn_q.weight", need(s, p + "self_attn.q_proj.weight"));
    }
    ex.matrix(b + "attn_kv_a_mqa.weight", need(s, p + "self_attn.kv_a_proj_with_mqa.weight"));
    ex.vector(b + "attn_kv_a_norm.weight", need(s, p + "self_attn.kv_a_layernorm.weight"));
    // kv_b [H (d_n + d_v), d_c] split per head into k_b [H, d_c, d_n] (transposed) and v_b [H, d_v, d_c].
    const at::Tensor kvb = need(s, p + "self_attn.kv_b_proj.weight").view({H, dn + dv, dc});
    ex.matrix(b + "attn_k_b.weight", kvb.slice(1, 0, dn).transpose(1, 2).contiguous());
    ex.matrix(b + "attn_v_b.weight", kvb.slice(1, dn, dn + dv).contiguous());
    ex.matrix(b + "attn_output.weight", need(s, p + "self_attn.o_proj.weight"));
    ex.vector(b + "ffn_norm.weight", need(s, p + "post_attention_layernorm.weight"));
    if (!c.is_moe_layer(i)) {
      ex.matrix(b + "ffn_gate.weight", need(s, p + "mlp.gate_proj.weight"));
      ex.matrix(b + "ffn_up.weight", need(s, p + "mlp.up_proj.weight"));
      ex.matrix(b + "ffn_down.weight", need(s, p + "mlp.down_proj.weight"));
      continue;
    }
    ex.matrix(b + "ffn_gate_inp.weight", need(s, p + "mlp.gate.weight"));
    ex.vector(b + "exp_probs_b.bias", need(s, p + "mlp.gate.e_score_correction_bias"));
    for (const char* part : {"gate", "up", "down"}) {
      std::vector<at::Tensor> experts;
      for (int64_t e = 0; e < c.n_routed_experts; ++e) experts.push_back(need(s, fmt(p, "mlp.experts.", e, ".", part, "_proj.weight")));
      ex.matrix(fmt(b, "ffn_", part, "_exps.weight"), at::stack(experts));
    }
    if (c.n_shared_experts > 0)
      for (const char* part : {"gate", "up", "down"})
        ex.matrix(fmt(b, "ffn_", part, "_shexp.weight"), need(s, fmt(p, "mlp.shared_experts.", part, "_proj.weight")));
  }
  if (mtp_depth(c) > 0) ex.report.notes.push_back("the MTP modules are left out (llama.cpp's deepseek2 does not run them)");
}

// A GPT-2 block's modules and their GGUF names (each has a weight and a bias).
constexpr std::pair<const char*, const char*> kGpt2BlockParts[] = {{"ln_1", "attn_norm"},     {"attn.c_attn", "attn_qkv"},
                                                                  {"attn.c_proj", "attn_output"}, {"ln_2", "ffn_norm"},
                                                                  {"mlp.c_fc", "ffn_up"},         {"mlp.c_proj", "ffn_down"}};

void export_gpt2(Exporter& ex, const model::ModelConfig& c, const TensorMap& s) {
  const std::string a = "gpt2.";
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  GgufWriter& w = ex.w;
  w.set(a + "context_length", u32(c.max_position_embeddings));
  w.set(a + "embedding_length", u32(c.hidden_size));
  w.set(a + "feed_forward_length", u32(c.intermediate_size));
  w.set(a + "block_count", u32(c.num_hidden_layers));
  w.set(a + "attention.head_count", u32(c.num_attention_heads));
  w.set(a + "attention.layer_norm_epsilon", static_cast<float>(c.layer_norm_epsilon));
  ex.matrix("token_embd.weight", need(s, "transformer.wte.weight"));
  ex.matrix("position_embd.weight", need(s, "transformer.wpe.weight"));
  ex.vector("output_norm.weight", need(s, "transformer.ln_f.weight"));
  ex.vector("output_norm.bias", need(s, "transformer.ln_f.bias"));
  ex.matrix("output.weight", need(s, "transformer.wte.weight"));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    for (const auto& [from, to] : kGpt2BlockParts) {
      const std::string p = fmt("transformer.h.", i, ".", from, "."), b = fmt("blk.", i, ".", to, ".");
      const at::Tensor& weight = need(s, p + "weight");
      if (weight.dim() == 2) ex.matrix(b + "weight", weight);
      else ex.vector(b + "weight", weight);
      ex.vector(b + "bias", need(s, p + "bias"));
    }
}

// ---- import ----

template <typename T>
T kv_get(const GgufFile& f, const std::string& key, const std::string& origin) {
  auto it = f.kv.find(key);
  if (it == f.kv.end()) throw CheckpointError(fmt(origin, ": no metadata key ", key));
  if (const T* v = std::get_if<T>(&it->second)) return *v;
  throw CheckpointError(fmt(origin, ": metadata key ", key, " has another type than dsforge writes"));
}
template <typename T>
T kv_or(const GgufFile& f, const std::string& key, T fallback) {
  auto it = f.kv.find(key);
  if (it == f.kv.end()) return fallback;
  if (const T* v = std::get_if<T>(&it->second)) return *v;
  return fallback;
}

TensorMap import_deepseek(const GgufFile& f, model::ModelConfig& c, const std::string& origin) {
  const std::string a = "deepseek2.";
  auto u = [&](const std::string& k) { return static_cast<int64_t>(kv_get<uint32_t>(f, a + k, origin)); };
  c = model::model_config_from_preset("nano");
  c.max_position_embeddings = u("context_length");
  c.hidden_size = u("embedding_length");
  c.num_hidden_layers = u("block_count");
  c.intermediate_size = u("feed_forward_length");
  c.num_attention_heads = c.num_key_value_heads = u("attention.head_count");
  c.q_lora_rank = static_cast<int64_t>(kv_or<uint32_t>(f, a + "attention.q_lora_rank", 0));
  c.kv_lora_rank = u("attention.kv_lora_rank");
  c.qk_rope_head_dim = u("rope.dimension_count");
  c.qk_nope_head_dim = u("attention.key_length_mla") - c.qk_rope_head_dim;
  c.v_head_dim = u("attention.value_length_mla");
  c.rms_norm_eps = kv_get<float>(f, a + "attention.layer_norm_rms_epsilon", origin);
  c.rope_theta = kv_or<float>(f, a + "rope.freq_base", 10000.0f);
  c.first_k_dense_replace = u("leading_dense_block_count");
  c.n_routed_experts = static_cast<int64_t>(kv_or<uint32_t>(f, a + "expert_count", 0));
  if (c.n_routed_experts > 0) {
    c.num_experts_per_tok = u("expert_used_count");
    c.n_shared_experts = u("expert_shared_count");
    c.moe_intermediate_size = u("expert_feed_forward_length");
    c.routed_scaling_factor = kv_get<float>(f, a + "expert_weights_scale", origin);
    c.norm_topk_prob = kv_or<bool>(f, a + "expert_weights_norm", false);
    c.scoring_func = kv_or<uint32_t>(f, a + "expert_gating_func", 1) == 2 ? "sigmoid" : "softmax";
    c.n_group = static_cast<int64_t>(kv_or<uint32_t>(f, a + "expert_group_count", 1));
    c.topk_group = static_cast<int64_t>(kv_or<uint32_t>(f, a + "expert_group_used_count", 1));
  }
  if (kv_or<std::string>(f, a + "rope.scaling.type", "none") == "yarn") {
    c.rope_scaling.type = "yarn";
    c.rope_scaling.factor = kv_get<float>(f, a + "rope.scaling.factor", origin);
    c.rope_scaling.original_max_position_embeddings = static_cast<int64_t>(kv_get<uint32_t>(f, a + "rope.scaling.original_context_length", origin));
    c.rope_scaling.mscale_all_dim = kv_or<float>(f, a + "rope.scaling.yarn_log_multiplier", 0.0f) / 0.1;
    c.rope_scaling.mscale = c.rope_scaling.mscale_all_dim;
  }
  c.num_nextn_predict_layers = 0;  // not in GGUF
  c.tie_word_embeddings = false;
  TensorMap s;
  s["model.embed_tokens.weight"] = f.tensor("token_embd.weight");
  s["model.norm.weight"] = f.tensor("output_norm.weight");
  s["lm_head.weight"] = f.tensor("output.weight");
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, dc = c.kv_lora_rank;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt("model.layers.", i, "."), b = fmt("blk.", i, ".");
    s[p + "input_layernorm.weight"] = f.tensor(b + "attn_norm.weight");
    if (c.q_lora_rank > 0) {
      s[p + "self_attn.q_a_proj.weight"] = f.tensor(b + "attn_q_a.weight");
      s[p + "self_attn.q_a_layernorm.weight"] = f.tensor(b + "attn_q_a_norm.weight");
      s[p + "self_attn.q_b_proj.weight"] = f.tensor(b + "attn_q_b.weight");
    } else {
      s[p + "self_attn.q_proj.weight"] = f.tensor(b + "attn_q.weight");
    }
    s[p + "self_attn.kv_a_proj_with_mqa.weight"] = f.tensor(b + "attn_kv_a_mqa.weight");
    s[p + "self_attn.kv_a_layernorm.weight"] = f.tensor(b + "attn_kv_a_norm.weight");
    s[p + "self_attn.kv_b_proj.weight"] =
        at::cat({f.tensor(b + "attn_k_b.weight").transpose(1, 2), f.tensor(b + "attn_v_b.weight")}, 1).reshape({H * (dn + dv), dc});
    s[p + "self_attn.o_proj.weight"] = f.tensor(b + "attn_output.weight");
    s[p + "post_attention_layernorm.weight"] = f.tensor(b + "ffn_norm.weight");
    if (!c.is_moe_layer(i)) {
      for (const char* part : {"gate", "up", "down"}) s[fmt(p, "mlp.", part, "_proj.weight")] = f.tensor(fmt(b, "ffn_", part, ".weight"));
      continue;
    }
    s[p + "mlp.gate.weight"] = f.tensor(b + "ffn_gate_inp.weight");
    s[p + "mlp.gate.e_score_correction_bias"] =
        f.tensors.count(b + "exp_probs_b.bias") ? f.tensor(b + "exp_probs_b.bias") : at::zeros({c.n_routed_experts});
    for (const char* part : {"gate", "up", "down"}) {
      const at::Tensor stacked = f.tensor(fmt(b, "ffn_", part, "_exps.weight"));
      for (int64_t e = 0; e < c.n_routed_experts; ++e) s[fmt(p, "mlp.experts.", e, ".", part, "_proj.weight")] = stacked[e].clone();
    }
    if (c.n_shared_experts > 0)
      for (const char* part : {"gate", "up", "down"})
        s[fmt(p, "mlp.shared_experts.", part, "_proj.weight")] = f.tensor(fmt(b, "ffn_", part, "_shexp.weight"));
  }
  return s;
}

TensorMap import_gpt2(const GgufFile& f, model::ModelConfig& c, const std::string& origin) {
  const std::string a = "gpt2.";
  auto u = [&](const std::string& k) { return static_cast<int64_t>(kv_get<uint32_t>(f, a + k, origin)); };
  c = model::model_config_from_preset("gpt2-tiny");
  c.max_position_embeddings = u("context_length");
  c.hidden_size = u("embedding_length");
  c.intermediate_size = u("feed_forward_length");
  c.num_hidden_layers = u("block_count");
  c.num_attention_heads = u("attention.head_count");
  c.layer_norm_epsilon = kv_get<float>(f, a + "attention.layer_norm_epsilon", origin);
  TensorMap s;
  s["transformer.wte.weight"] = f.tensor("token_embd.weight");
  s["transformer.wpe.weight"] = f.tensor("position_embd.weight");
  s["transformer.ln_f.weight"] = f.tensor("output_norm.weight");
  s["transformer.ln_f.bias"] = f.tensor("output_norm.bias");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    for (const auto& [ours, theirs] : kGpt2BlockParts)
      for (const char* w : {"weight", "bias"}) s[fmt("transformer.h.", i, ".", ours, ".", w)] = f.tensor(fmt("blk.", i, ".", theirs, ".", w));
  return s;
}

}  // namespace

void import_gguf(const std::string& gguf_path, const std::string& out_dir) {
  const GgufFile f = read_gguf(gguf_path);
  const std::string arch = kv_get<std::string>(f, "general.architecture", gguf_path);
  model::ModelConfig c;
  TensorMap state;
  try {
    if (arch == "deepseek2") state = import_deepseek(f, c, gguf_path);
    else if (arch == "gpt2") state = import_gpt2(f, c, gguf_path);
    else throw CheckpointError(fmt(gguf_path, ": architecture '", arch, "' is not one dsforge runs (deepseek2, gpt2)"));
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    throw CheckpointError(what.rfind(gguf_path, 0) == 0 ? what : gguf_path + ": " + what);
  }
  // The tokenizer: byte-level entries by their GPT-2 strings, control and user-defined ones by content.
  const auto tokens = kv_get<std::vector<std::string>>(f, "tokenizer.ggml.tokens", gguf_path);
  const auto types = kv_get<std::vector<int32_t>>(f, "tokenizer.ggml.token_type", gguf_path);
  const auto merges = kv_get<std::vector<std::string>>(f, "tokenizer.ggml.merges", gguf_path);
  std::map<std::string, int32_t> vocab;
  std::vector<tok::BpeTokenizer::AddedToken> added;
  for (size_t id = 0; id < tokens.size(); ++id) {
    vocab[tokens[id]] = static_cast<int32_t>(id);
    if (id < types.size() && (types[id] == 3 || types[id] == 4)) {
      tok::BpeTokenizer::AddedToken t;
      t.content = tokens[id];
      t.special = types[id] == 3;
      added.push_back(t);
    }
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& m : merges) {
    const size_t sp = m.find(' ');
    if (sp == std::string::npos) throw CheckpointError(fmt(gguf_path, ": merge '", m, "' has no space"));
    pairs.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  tok::BpeTokenizer::Source src;
  src.vocab = gguf_path + ": tokenizer.ggml.tokens";
  src.merges = gguf_path + ": tokenizer.ggml.merges";
  auto tok = tok::BpeTokenizer::from_vocab_and_merges(vocab, pairs, added, src);
  const std::string pre = kv_or<std::string>(f, "tokenizer.ggml.pre", "gpt-2");
  tok.set_pretokenizer(tok::pretokenizer_patterns(pre == "deepseek-v3" ? "deepseek-v3" : "gpt2"));
  c.vocab_size = static_cast<int64_t>(tokens.size());
  c.bos_token_id = kv_or<uint32_t>(f, "tokenizer.ggml.bos_token_id", 0);
  c.eos_token_id = kv_or<uint32_t>(f, "tokenizer.ggml.eos_token_id", 0);

  model::CausalLm m = model::build_model(c);
  model::load_model_state(*m, state, gguf_path);
  model::save_pretrained(out_dir, *m);
  tok.save(path_join(out_dir, "tokenizer.json"));
}

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, GgmlType type) {
  model::CausalLm m = model::load_pretrained(model_dir);
  const model::ModelConfig& c = m->config();
  const TensorMap state = model::model_state(*m);
  const std::string tok_path = path_join(model_dir, "tokenizer.json");
  if (!file_exists(tok_path)) throw ConfigError(fmt(model_dir, ": no tokenizer.json (GGUF embeds the tokenizer)"));
  const auto tok = tok::BpeTokenizer::load(tok_path);

  Exporter ex{GgufWriter{}, type, {}};
  ex.w.set("general.architecture", std::string(c.is_deepseek() ? "deepseek2" : c.model_type));
  ex.w.set("general.name", std::string("dsforge ") + c.model_type);
  ex.w.set("general.file_type", static_cast<uint32_t>(type == GgmlType::F32 ? 0 : type == GgmlType::F16 ? 1
                                                       : type == GgmlType::BF16 ? 32 : 7));
  ex.w.set("general.alignment", static_cast<uint32_t>(kAlignment));
  if (c.is_deepseek()) export_deepseek(ex, c, state);
  else if (c.model_type == "gpt2") export_gpt2(ex, c, state);
  else throw ConfigError(fmt(model_dir, ": model_type '", c.model_type, "' has no llama.cpp architecture (deepseek_v3 and gpt2 do)"));
  add_tokenizer(ex.w, tok, c, tok_path);
  ex.report.architecture = c.is_deepseek() ? "deepseek2" : c.model_type;
  ex.w.write(out_path);
  ex.report.bytes = static_cast<uint64_t>(std::filesystem::file_size(out_path));
  return ex.report;
}

}  // namespace dsforge::deploy

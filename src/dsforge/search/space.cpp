#include "dsforge/search/space.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/config.h"

namespace dsforge::search {
namespace {

std::string number_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // The shortest text that reads back to the same double.
  for (int prec = 1; prec <= 17; ++prec) {
    char shorter[64];
    std::snprintf(shorter, sizeof shorter, "%.*g", prec, v);
    if (std::strtod(shorter, nullptr) == v) return shorter;
  }
  return buf;
}

std::string choice_text(const nlohmann::json& c) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_boolean()) return c.get<bool>() ? "true" : "false";
  if (c.is_number_integer()) return std::to_string(c.get<int64_t>());
  return number_text(c.get<double>());
}

nlohmann::json toml_to_json(const toml::node& n) {
  if (n.is_integer()) return *n.value<int64_t>();
  if (n.is_floating_point()) return *n.value<double>();
  if (n.is_boolean()) return *n.value<bool>();
  if (n.is_string()) return *n.value<std::string>();
  return nullptr;
}

bool is_model_field(const std::string& key) { return key.rfind("model.", 0) == 0 && key != "model.config"; }

// Sections whose keys shape the shared data, tokenizer and shards the trials train on.
bool shapes_data(const std::string& key) {
  for (const char* s : {"data.", "augment.", "tokenizer.", "dist."})
    if (key.rfind(s, 0) == 0) return true;
  return key == "run.out_dir";
}

}  // namespace

double Param::internal_low() const {
  const double lo = kind == ParamKind::kCategorical ? 0 : low - 0.5 * step;
  return kind == ParamKind::kCategorical ? 0 : log ? std::log(lo) : lo;
}
double Param::internal_high() const {
  if (kind == ParamKind::kCategorical) return static_cast<double>(choices.size()) - 1;
  const double hi = high + 0.5 * step;
  return log ? std::log(hi) : hi;
}
double Param::to_internal(double v) const { return numeric() && log ? std::log(v) : v; }
double Param::from_internal(double u) const {
  if (kind == ParamKind::kCategorical)
    return std::clamp(std::round(u), 0.0, static_cast<double>(choices.size()) - 1);
  double v = log ? std::exp(u) : u;
  if (step > 0) v = low + std::round((v - low) / step) * step;
  return std::clamp(v, low, high);
}
nlohmann::json Param::value_json(double v) const {
  if (kind == ParamKind::kCategorical) return choices.at(static_cast<size_t>(v));
  if (kind == ParamKind::kInt) return static_cast<int64_t>(std::llround(v));
  return v;
}
std::string Param::override_text(double v) const {
  if (kind == ParamKind::kCategorical) return name + "=" + choice_text(choices.at(static_cast<size_t>(v)));
  if (kind == ParamKind::kInt) return name + "=" + std::to_string(std::llround(v));
  return name + "=" + number_text(v);
}

const Param* SearchSpace::find(const std::string& name) const {
  for (const auto& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

bool SearchSpace::active(const Param& p, const Params& assigned) const {
  if (p.parent.empty()) return true;
  auto it = assigned.find(p.parent);
  if (it == assigned.end()) return false;
  const auto idx = static_cast<int64_t>(it->second);
  return std::find(p.parent_choices.begin(), p.parent_choices.end(), idx) != p.parent_choices.end();
}

nlohmann::json SearchSpace::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : params) {
    nlohmann::json e{{"name", p.name},
                     {"type", p.kind == ParamKind::kFloat ? "float" : p.kind == ParamKind::kInt ? "int" : "categorical"}};
    if (p.numeric()) e.update({{"low", p.low}, {"high", p.high}, {"log", p.log}, {"step", p.step}});
    else e["choices"] = p.choices;
    if (!p.parent.empty()) e.update({{"parent", p.parent}, {"parent_choices", p.parent_choices}});
    j.push_back(e);
  }
  return j;
}

SearchSpace space_from_json(const nlohmann::json& j, const std::string& source) {
  SearchSpace s;
  s.source = source;
  for (const auto& e : j) {
    Param p;
    p.name = e.at("name").get<std::string>();
    const std::string type = e.at("type").get<std::string>();
    p.kind = type == "float" ? ParamKind::kFloat : type == "int" ? ParamKind::kInt : ParamKind::kCategorical;
    if (p.numeric()) {
      p.low = e.at("low").get<double>();
      p.high = e.at("high").get<double>();
      p.log = e.at("log").get<bool>();
      p.step = e.at("step").get<double>();
    } else {
      p.choices = e.at("choices").get<std::vector<nlohmann::json>>();
    }
    if (e.contains("parent")) {
      p.parent = e.at("parent").get<std::string>();
      p.parent_choices = e.at("parent_choices").get<std::vector<int64_t>>();
    }
    s.params.push_back(std::move(p));
  }
  return s;
}

std::string SearchSpace::hash() const { return hex64(fnv1a64(to_json().dump())); }

nlohmann::json SearchSpace::params_json(const Params& values) const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& p : params)
    if (auto it = values.find(p.name); it != values.end()) j[p.name] = p.value_json(it->second);
  return j;
}

Params SearchSpace::params_from_json(const nlohmann::json& j) const {
  Params out;
  for (const auto& p : params) {
    if (!j.contains(p.name)) continue;
    const auto& v = j.at(p.name);
    if (p.numeric()) {
      out[p.name] = v.get<double>();
    } else {
      auto it = std::find(p.choices.begin(), p.choices.end(), v);
      if (it == p.choices.end()) throw ConfigError(fmt(source, ": '", p.name, "' = ", v.dump(), " is not one of its choices"));
      out[p.name] = static_cast<double>(it - p.choices.begin());
    }
  }
  return out;
}

std::vector<const Param*> SearchSpace::unconditional() const {
  std::vector<const Param*> out;
  for (const auto& p : params)
    if (p.parent.empty()) out.push_back(&p);
  return out;
}

std::string model_config_with(const RunConfig& base, const nlohmann::json& fields) {
  auto j = nlohmann::json::parse(model::model_config_to_json(model::load_model_config(base.model.config)));
  for (const auto& [k, v] : fields.items()) j[k] = v;
  const std::string text = j.dump(2);
  model::ModelConfig m = model::model_config_from_json(text, base.model.config + " (with the trial's model keys)");
  model::validate(m, base.model.config + " (with the trial's model keys)");
  return text;
}

SearchSpace load_search_space(const std::string& path, const RunConfig& base) {
  if (!file_exists(path)) throw ConfigError(fmt(path, ": search space file not found"));
  return parse_search_space(read_file(path), path, base);
}

SearchSpace parse_search_space(const std::string& text, const std::string& origin, const RunConfig& base) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt(origin, ":", e.source().begin.line, ": ", e.description()));
  }
  SearchSpace space;
  space.source = origin;
  const auto model_json = nlohmann::json::parse(model::model_config_to_json(model::load_model_config(base.model.config)));
  std::map<std::string, std::pair<Param, std::string>> raw;  // name -> (param, parent choices raw check later)
  std::map<std::string, std::vector<nlohmann::json>> enable_values;
  for (const auto& [k, node] : tbl) {
    const std::string key(k.str());
    auto where = [&](const std::string& what) { return ConfigError(fmt(origin, ": parameter '", key, "': ", what)); };
    const toml::table* t = node.as_table();
    if (!t) throw where("expected a table ([\"" + key + "\"] with type, low/high or choices)");
    Param p;
    p.name = key;
    const std::string type = t->get("type") ? t->get("type")->value_or(std::string()) : "";
    if (type == "float") p.kind = ParamKind::kFloat;
    else if (type == "int") p.kind = ParamKind::kInt;
    else if (type == "categorical") p.kind = ParamKind::kCategorical;
    else throw where(fmt("type must be \"float\", \"int\" or \"categorical\", got \"", type, "\""));
    for (const auto& [f, _] : *t) {
      static const std::set<std::string> known{"type", "low", "high", "log", "step", "choices", "enabled_if"};
      if (!known.count(std::string(f.str()))) throw where(fmt("unknown field '", f.str(), "'"));
    }
    if (p.numeric()) {
      auto lo = t->get("low"), hi = t->get("high");
      if (!lo || !hi || !lo->is_number() || !hi->is_number()) throw where("needs numbers 'low' and 'high'");
      p.low = *lo->value<double>();
      p.high = *hi->value<double>();
      p.log = t->get("log") ? t->get("log")->value_or(false) : false;
      p.step = t->get("step") ? t->get("step")->value_or(0.0) : (p.kind == ParamKind::kInt ? 1.0 : 0.0);
      if (!(p.low < p.high)) throw where(fmt("empty range: low = ", p.low, " must be below high = ", p.high));
      if (p.log && p.low <= 0) throw where(fmt("log scale needs a positive range, got low = ", p.low));
      if (p.step < 0 || (p.kind == ParamKind::kInt && (p.step < 1 || p.step != std::round(p.step))))
        throw where(fmt("step must be ", p.kind == ParamKind::kInt ? "a positive integer" : "positive", ", got ", p.step));
      if (p.log && p.step > 0 && p.kind == ParamKind::kFloat) throw where("a log scale takes no step");
      if (p.kind == ParamKind::kInt && (p.low != std::round(p.low) || p.high != std::round(p.high)))
        throw where("an int range needs integer low and high");
    } else {
      const toml::array* arr = t->get("choices") ? t->get("choices")->as_array() : nullptr;
      if (!arr || arr->empty()) throw where("needs a non-empty array 'choices'");
      for (const auto& c : *arr) {
        nlohmann::json v = toml_to_json(c);
        if (v.is_null()) throw where("choices must be numbers, strings or booleans");
        if (std::find(p.choices.begin(), p.choices.end(), v) != p.choices.end()) throw where("duplicate choice " + v.dump());
        p.choices.push_back(v);
      }
    }
    if (auto e = t->get("enabled_if")) {
      const toml::table* et = e->as_table();
      if (!et || et->size() != 1) throw where("enabled_if must name one parent: enabled_if = { \"parent.key\" = [\"value\"] }");
      for (const auto& [pk, pv] : *et) {
        p.parent = std::string(pk.str());
        if (const toml::array* a = pv.as_array()) {
          for (const auto& v : *a) enable_values[key].push_back(toml_to_json(v));
        } else {
          enable_values[key].push_back(toml_to_json(pv));
        }
      }
    }

    // The key against the run config (or the model config), with the parameter's values.
    if (shapes_data(key))
      throw where("keys of data, augment, tokenizer and dist shape the shards every trial shares; search over "
                  "training and model keys");
    std::vector<std::string> samples;
    if (p.kind == ParamKind::kCategorical) {
      for (const auto& c : p.choices) samples.push_back(choice_text(c));
    } else {
      samples = {p.override_text(p.low).substr(key.size() + 1), p.override_text(p.high).substr(key.size() + 1)};
      if (p.kind == ParamKind::kFloat) samples.push_back("0.5");
    }
    if (is_model_field(key)) {
      const std::string field = key.substr(6);
      if (!model_json.contains(field) || field == "vocab_size" || field == "bos_token_id" || field == "eos_token_id")
        throw where(fmt("unknown key: '", field, "' is not a searchable field of the model config ", base.model.config,
                        " (vocab_size comes from the tokenizer)"));
      const auto& ref = model_json.at(field);
      const bool ok = p.kind == ParamKind::kCategorical
                          ? std::all_of(p.choices.begin(), p.choices.end(),
                                        [&](const nlohmann::json& c) {
                                          return (c.is_number() && ref.is_number() && (!ref.is_number_integer() || c.is_number_integer())) ||
                                                 (c.is_string() && ref.is_string()) || (c.is_boolean() && ref.is_boolean());
                                        })
                          : ref.is_number() && (p.kind == ParamKind::kInt || !ref.is_number_integer());
      if (!ok) throw where(fmt("the model config's '", field, "' is ", ref.type_name(), ", not what this parameter samples"));
    } else {
      for (const auto& s : samples) {
        RunConfig probe = base;
        try {
          apply_override(probe, key + "=" + s);
        } catch (const ConfigError& e) {
          std::string msg = e.what();
          if (msg.rfind("override: ", 0) == 0) msg = msg.substr(10);
          if (msg.find("unknown key") == std::string::npos)
            msg = fmt("value ", s, " does not fit the key (", p.kind == ParamKind::kFloat ? "a float parameter needs a number key" : msg, ")");
          throw where(msg);
        }
        try {
          validate(probe);  // the key's own rules (a positive lr, a known schedule)
        } catch (const ConfigError& e) {
          if (p.kind == ParamKind::kFloat && s == "0.5" && samples.size() == 3) continue;  // the type probe only
          throw where(fmt("value ", s, " is out of the key's range: ", e.what()));
        }
      }
    }
    raw[key] = {p, ""};
  }

  // Parents: declared, categorical, and enabling values among their choices; parents before children.
  std::map<std::string, int> depth;
  std::function<int(const std::string&, int)> depth_of = [&](const std::string& name, int guard) -> int {
    if (guard > static_cast<int>(raw.size())) throw ConfigError(fmt(origin, ": parameter '", name, "': enabled_if forms a cycle"));
    const Param& p = raw.at(name).first;
    return p.parent.empty() ? 0 : 1 + depth_of(p.parent, guard + 1);
  };
  for (auto& [name, entry] : raw) {
    Param& p = entry.first;
    if (p.parent.empty()) continue;
    auto it = raw.find(p.parent);
    if (it == raw.end())
      throw ConfigError(fmt(origin, ": parameter '", name, "': enabled_if names '", p.parent, "', which is not a parameter of this space"));
    const Param& parent = it->second.first;
    if (parent.kind != ParamKind::kCategorical)
      throw ConfigError(fmt(origin, ": parameter '", name, "': its parent '", p.parent, "' must be categorical"));
    for (const auto& v : enable_values[name]) {
      auto c = std::find(parent.choices.begin(), parent.choices.end(), v);
      if (c == parent.choices.end())
        throw ConfigError(fmt(origin, ": parameter '", name, "': enabled_if value ", v.dump(), " is not a choice of '", p.parent, "'"));
      p.parent_choices.push_back(c - parent.choices.begin());
    }
  }
  for (const auto& [name, entry] : raw) depth[name] = depth_of(name, 0);
  for (auto& [name, entry] : raw) space.params.push_back(entry.first);
  std::stable_sort(space.params.begin(), space.params.end(),
                   [&](const Param& a, const Param& b) { return depth[a.name] < depth[b.name]; });
  if (space.params.empty()) throw ConfigError(fmt(origin, ": the search space has no parameters"));
  return space;
}

RunConfig apply_params(const SearchSpace& space, const RunConfig& base, const Params& params, nlohmann::json* model_fields) {
  RunConfig cfg = base;
  for (const auto& p : space.params) {
    auto it = params.find(p.name);
    if (it == params.end()) continue;
    if (is_model_field(p.name)) {
      if (model_fields) (*model_fields)[p.name.substr(6)] = p.value_json(it->second);
    } else {
      apply_override(cfg, p.override_text(it->second));
    }
  }
  return cfg;
}

}  // namespace dsforge::search

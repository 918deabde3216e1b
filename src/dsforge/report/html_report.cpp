#include "dsforge/report/html_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::report {
std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

using nlohmann::json;


std::string num(double v, int sig = 4) {
  char buf[64];
  if (v != 0 && (std::abs(v) >= 1e6 || std::abs(v) < 1e-3)) std::snprintf(buf, sizeof buf, "%.*e", sig - 1, v);
  else std::snprintf(buf, sizeof buf, "%.*g", sig, v);
  return buf;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

// Chart geometry.
constexpr double kW = 560, kH = 300, kLeft = 64, kRight = 16, kTop = 34, kBottom = 42;

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(count, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

std::string svg_line_chart(const std::string& title, const std::vector<Series>& series, const std::string& y_label,
                           bool log_y, const std::string& x_label) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i]));
      y1 = std::max(y1, ty(s.y[i]));
    }
  std::string svg = fmt("<svg class=\"chart\" viewBox=\"0 0 ", kW, " ", kH, "\" width=\"", kW, "\" height=\"", kH,
                        "\" role=\"img\" aria-label=\"", html_escape(title), "\">");
  svg += fmt("<text x=\"", kW / 2, "\" y=\"20\" class=\"title\">", html_escape(title), "</text>");
  if (!std::isfinite(x0)) return svg + fmt("<text x=\"", kW / 2, "\" y=\"", kH / 2, "\" class=\"empty\">no data</text></svg>");
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const double pad = 0.04 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return kTop + (1 - (ty(y) - y0) / (y1 - y0)) * ph; };
  auto pyt = [&](double t) { return kTop + (1 - (t - y0) / (y1 - y0)) * ph; };
  // Grid and ticks.
  // Log axes get their ticks at round values of the data (not of its logarithm).
  std::vector<double> yticks;
  if (log_y) {
    for (double v : nice_ticks(std::pow(10.0, y0), std::pow(10.0, y1)))
      if (v > 0) yticks.push_back(std::log10(v));
  } else {
    yticks = nice_ticks(y0, y1);
  }
  for (double t : yticks) {
    if (t < y0 || t > y1) continue;
    svg += fmt("<line class=\"grid\" x1=\"", kLeft, "\" x2=\"", kLeft + pw, "\" y1=\"", pyt(t), "\" y2=\"", pyt(t), "\"/>");
    svg += fmt("<text class=\"tick\" x=\"", kLeft - 6, "\" y=\"", pyt(t) + 4, "\" text-anchor=\"end\">",
               num(log_y ? std::pow(10.0, t) : t, 3), "</text>");
  }
  for (double t : nice_ticks(x0, x1, 6)) {
    if (t < x0 || t > x1) continue;
    svg += fmt("<line class=\"grid\" x1=\"", px(t), "\" x2=\"", px(t), "\" y1=\"", kTop, "\" y2=\"", kTop + ph, "\"/>");
    svg += fmt("<text class=\"tick\" x=\"", px(t), "\" y=\"", kTop + ph + 16, "\" text-anchor=\"middle\">", num(t, 6), "</text>");
  }
  svg += fmt("<rect class=\"frame\" x=\"", kLeft, "\" y=\"", kTop, "\" width=\"", pw, "\" height=\"", ph, "\"/>");
  svg += fmt("<text class=\"axis\" x=\"", kLeft + pw / 2, "\" y=\"", kH - 6, "\" text-anchor=\"middle\">", html_escape(x_label), "</text>");
  svg += fmt("<text class=\"axis\" transform=\"translate(14 ", kTop + ph / 2, ") rotate(-90)\" text-anchor=\"middle\">",
             html_escape(y_label), log_y ? " (log)" : "", "</text>");
  // Lines, points with tooltips, legend.
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    if (s.x.empty()) continue;  // a metric this run did not log
    const char* color = kColors[k % 6];
    std::string path;
    std::string dots;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      path += fmt(path.empty() ? "M" : "L", px(s.x[i]), " ", py(s.y[i]));
      if (s.x.size() <= 400)
        dots += fmt("<circle cx=\"", px(s.x[i]), "\" cy=\"", py(s.y[i]), "\" r=\"2.2\" fill=\"", color, "\"><title>",
                    html_escape(s.name), " @ step ", num(s.x[i], 8), ": ", num(s.y[i], 6), "</title></circle>");
    }
    svg += fmt("<path d=\"", path, "\" fill=\"none\" stroke=\"", color, "\" stroke-width=\"1.6\"/>", dots);
    svg += fmt("<rect x=\"", kLeft + pw - 150, "\" y=\"", kTop + 8 + 16 * k, "\" width=\"10\" height=\"10\" fill=\"", color,
               "\"/><text class=\"legend\" x=\"", kLeft + pw - 135, "\" y=\"", kTop + 17 + 16 * k, "\">", html_escape(s.name), "</text>");
  }
  return svg + "</svg>";
}

std::string svg_heatmap(const std::string& title, const std::vector<std::vector<double>>& rows,
                        const std::vector<std::string>& row_labels, const std::string& col_label, double center) {
  size_t cols = 0;
  double hi = center;
  for (const auto& r : rows) {
    cols = std::max(cols, r.size());
    for (double v : r) hi = std::max(hi, v);
  }
  const double cell = std::clamp(480.0 / std::max<size_t>(cols, 1), 6.0, 28.0), rh = 22;
  const double left = 80, top = 34;
  const double w = left + cell * static_cast<double>(cols) + 90, h = top + rh * static_cast<double>(rows.size()) + 40;
  std::string svg = fmt("<svg class=\"chart\" viewBox=\"0 0 ", w, " ", h, "\" width=\"", w, "\" height=\"", h,
                        "\" role=\"img\" aria-label=\"", html_escape(title), "\">");
  svg += fmt("<text x=\"", w / 2, "\" y=\"20\" class=\"title\">", html_escape(title), "</text>");
  // Below the centre: white -> blue (under-loaded); above: white -> red (over-loaded).
  auto color = [&](double v) {
    double t;
    int r, g, b;
    if (v <= center) {
      t = std::clamp((center - v) / std::max(center, 1e-12), 0.0, 1.0);
      r = static_cast<int>(255 - 200 * t), g = static_cast<int>(255 - 130 * t), b = 255;
    } else {
      t = std::clamp((v - center) / std::max(hi - center, 1e-12), 0.0, 1.0);
      r = 255, g = static_cast<int>(255 - 200 * t), b = static_cast<int>(255 - 200 * t);
    }
    char buf[16];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
    return std::string(buf);
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    const double y = top + rh * static_cast<double>(i);
    svg += fmt("<text class=\"tick\" x=\"", left - 6, "\" y=\"", y + rh / 2 + 4, "\" text-anchor=\"end\">",
               html_escape(i < row_labels.size() ? row_labels[i] : std::to_string(i)), "</text>");
    for (size_t j = 0; j < rows[i].size(); ++j)
      svg += fmt("<rect x=\"", left + cell * static_cast<double>(j), "\" y=\"", y, "\" width=\"", cell - 1, "\" height=\"",
                 rh - 1, "\" fill=\"", color(rows[i][j]), "\"><title>", html_escape(i < row_labels.size() ? row_labels[i] : ""),
                 ", expert ", j, ": ", num(rows[i][j], 3), "</title></rect>");
  }
  svg += fmt("<text class=\"axis\" x=\"", left + cell * static_cast<double>(cols) / 2, "\" y=\"", h - 8,
             "\" text-anchor=\"middle\">", html_escape(col_label), "</text>");
  // Legend: under / balanced / over.
  const double lx = left + cell * static_cast<double>(cols) + 14;
  const std::pair<double, std::string> keys[] = {{0.0, "0"}, {center, num(center, 3) + " (mean)"}, {hi, num(hi, 3)}};
  for (int k = 0; k < 3; ++k)
    svg += fmt("<rect x=\"", lx, "\" y=\"", top + 20 * k, "\" width=\"12\" height=\"12\" fill=\"", color(keys[k].first),
               "\" stroke=\"#999\"/><text class=\"legend\" x=\"", lx + 16, "\" y=\"", top + 10 + 20 * k, "\">",
               html_escape(keys[k].second), "</text>");
  return svg + "</svg>";
}

std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                          const std::vector<double>& baseline, const std::string& x_label) {
  const double bar = 16, gap = 4, left = 150, top = 34, plot_w = 360;
  const double h = top + (bar + gap) * static_cast<double>(labels.size()) + 44, w = left + plot_w + 70;
  double hi = 0;
  for (double v : values) hi = std::max(hi, v);
  for (double v : baseline) hi = std::max(hi, v);
  hi = hi > 0 ? hi : 1;
  std::string svg = fmt("<svg class=\"chart\" viewBox=\"0 0 ", w, " ", h, "\" width=\"", w, "\" height=\"", h,
                        "\" role=\"img\" aria-label=\"", html_escape(title), "\">");
  svg += fmt("<text x=\"", w / 2, "\" y=\"20\" class=\"title\">", html_escape(title), "</text>");
  for (double t : nice_ticks(0, hi, 4)) {
    const double x = left + plot_w * t / hi;
    svg += fmt("<line class=\"grid\" x1=\"", x, "\" x2=\"", x, "\" y1=\"", top - 4, "\" y2=\"", h - 36, "\"/>",
               "<text class=\"tick\" x=\"", x, "\" y=\"", h - 22, "\" text-anchor=\"middle\">", num(t, 3), "</text>");
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const double y = top + (bar + gap) * static_cast<double>(i);
    svg += fmt("<text class=\"tick\" x=\"", left - 6, "\" y=\"", y + bar - 4, "\" text-anchor=\"end\">", html_escape(labels[i]),
               "</text><rect x=\"", left, "\" y=\"", y, "\" width=\"", std::max(0.5, plot_w * values[i] / hi), "\" height=\"",
               bar, "\" fill=\"", kColors[0], "\"><title>", html_escape(labels[i]), ": ", num(values[i], 3), "</title></rect>");
    if (i < baseline.size() && baseline[i] > 0)
      svg += fmt("<line x1=\"", left + plot_w * baseline[i] / hi, "\" x2=\"", left + plot_w * baseline[i] / hi, "\" y1=\"", y - 1,
                 "\" y2=\"", y + bar + 1, "\" stroke=\"", kColors[1], "\" stroke-width=\"2\"><title>baseline ", num(baseline[i], 3),
                 "</title></line>");
  }
  svg += fmt("<text class=\"axis\" x=\"", left + plot_w / 2, "\" y=\"", h - 6, "\" text-anchor=\"middle\">", html_escape(x_label),
             "</text>");
  return svg + "</svg>";
}

std::string svg_parallel_coordinates(const std::string& title, const std::vector<ParallelAxis>& axes,
                                     const std::vector<std::vector<double>>& lines, const std::vector<double>& shade,
                                     const std::vector<bool>& faint, const std::vector<std::string>& line_titles) {
  const double gap = 150, left = 70, top = 44, plot_h = 260;
  const double w = left * 2 + gap * static_cast<double>(std::max<size_t>(axes.size(), 2) - 1), h = top + plot_h + 40;
  std::string svg = fmt("<svg class=\"chart\" viewBox=\"0 0 ", w, " ", h, "\" width=\"", w, "\" height=\"", h,
                        "\" role=\"img\" aria-label=\"", html_escape(title), "\">");
  svg += fmt("<text x=\"", w / 2, "\" y=\"20\" class=\"title\">", html_escape(title), "</text>");
  // Each axis maps its (log) value range onto [top + plot_h, top]: the lowest value at the bottom.
  struct Scale {
    double lo = 0, hi = 1;
    bool log = false;
    double y(double v) const {
      const double t = log ? std::log10(v) : v;
      return hi > lo ? (t - lo) / (hi - lo) : 0.5;
    }
  };
  std::vector<Scale> scales(axes.size());
  for (size_t a = 0; a < axes.size(); ++a) {
    Scale& sc = scales[a];
    sc.log = axes[a].log && axes[a].labels.empty();
    if (!axes[a].labels.empty()) {
      sc.lo = 0;
      sc.hi = std::max<double>(1, static_cast<double>(axes[a].labels.size()) - 1);
      continue;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& l : lines)
      if (a < l.size() && std::isfinite(l[a]) && (!sc.log || l[a] > 0)) {
        const double t = sc.log ? std::log10(l[a]) : l[a];
        lo = std::min(lo, t);
        hi = std::max(hi, t);
      }
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    if (hi == lo) lo -= 0.5, hi += 0.5;
    sc.lo = lo, sc.hi = hi;
  }
  auto x_of = [&](size_t a) { return left + gap * static_cast<double>(a); };
  auto y_of = [&](size_t a, double v) { return top + plot_h * (1.0 - scales[a].y(v)); };
  for (size_t a = 0; a < axes.size(); ++a) {
    const double x = x_of(a);
    svg += fmt("<line x1=\"", x, "\" x2=\"", x, "\" y1=\"", top, "\" y2=\"", top + plot_h, "\" stroke=\"#888\"/>",
               "<text class=\"axis\" x=\"", x, "\" y=\"", top - 10, "\" text-anchor=\"middle\">", html_escape(axes[a].name), "</text>");
    std::vector<std::pair<double, std::string>> ticks;
    if (!axes[a].labels.empty()) {
      for (size_t i = 0; i < axes[a].labels.size(); ++i) ticks.push_back({static_cast<double>(i), axes[a].labels[i]});
    } else {
      for (double t : nice_ticks(scales[a].lo, scales[a].hi, 4))
        ticks.push_back({scales[a].log ? std::pow(10.0, t) : t, num(scales[a].log ? std::pow(10.0, t) : t, 3)});
    }
    for (const auto& [v, label] : ticks)
      svg += fmt("<text class=\"tick\" x=\"", x - 5, "\" y=\"", y_of(a, v) + 4, "\" text-anchor=\"end\">", html_escape(label), "</text>",
                 "<line x1=\"", x - 3, "\" x2=\"", x, "\" y1=\"", y_of(a, v), "\" y2=\"", y_of(a, v), "\" stroke=\"#888\"/>");
  }
  double s_lo = INFINITY, s_hi = -INFINITY;
  for (size_t i = 0; i < lines.size(); ++i)
    if (!(i < faint.size() && faint[i]) && i < shade.size() && std::isfinite(shade[i])) {
      s_lo = std::min(s_lo, shade[i]);
      s_hi = std::max(s_hi, shade[i]);
    }
  // Faint lines first, then the rest from the highest shade to the lowest.
  std::vector<size_t> order(lines.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto is_faint = [&](size_t i) { return i < faint.size() && faint[i]; };
  auto shade_of = [&](size_t i) { return i < shade.size() && std::isfinite(shade[i]) ? shade[i] : s_hi; };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (is_faint(a) != is_faint(b)) return is_faint(a);
    return shade_of(a) > shade_of(b);
  });
  for (size_t i : order) {
    std::string points;
    for (size_t a = 0; a < axes.size() && a < lines[i].size(); ++a)
      if (std::isfinite(lines[i][a]) && (!scales[a].log || lines[i][a] > 0)) points += fmt(x_of(a), ",", y_of(a, lines[i][a]), " ");
    if (points.empty()) continue;
    std::string colour = "#c8c8c8";
    double opacity = 0.6;
    if (!is_faint(i)) {
      // dark blue (lowest) -> light blue (highest)
      const double t = s_hi > s_lo ? (shade_of(i) - s_lo) / (s_hi - s_lo) : 0.0;
      const int r = static_cast<int>(20 + 180 * t), g = static_cast<int>(60 + 150 * t), b = static_cast<int>(150 + 90 * t);
      colour = fmt("rgb(", r, ",", g, ",", b, ")");
      opacity = 0.9;
    }
    svg += fmt("<polyline class=\"pc-line\" fill=\"none\" stroke=\"", colour, "\" stroke-opacity=\"", opacity,
               "\" stroke-width=\"1.5\" points=\"", points, "\">",
               i < line_titles.size() ? "<title>" + html_escape(line_titles[i]) + "</title>" : std::string(), "</polyline>");
  }
  return svg + "</svg>";
}

std::string svg_confusion(const std::string& title, const std::vector<std::string>& labels,
                          const std::vector<std::vector<int64_t>>& matrix) {
  const size_t n = labels.size();
  const double cell = std::clamp(540.0 / std::max<size_t>(n, 1), 9.0, 40.0), left = 150, top = 34;
  const double w = left + cell * static_cast<double>(n) + 20, h = top + cell * static_cast<double>(n) + 40;
  std::string svg = fmt("<svg class=\"chart\" viewBox=\"0 0 ", w, " ", h, "\" width=\"", w, "\" height=\"", h,
                        "\" role=\"img\" aria-label=\"", html_escape(title), "\">");
  svg += fmt("<text x=\"", w / 2, "\" y=\"20\" class=\"title\">", html_escape(title), "</text>");
  // Shade by the share of the gold row (recall per cell): white -> dark blue; counts in the cells when they fit.
  for (size_t g = 0; g < n; ++g) {
    int64_t row_total = 0;
    for (int64_t v : matrix[g]) row_total += v;
    const double y = top + cell * static_cast<double>(g);
    if (cell >= 12)
      svg += fmt("<text class=\"tick\" x=\"", left - 6, "\" y=\"", y + cell / 2 + 4, "\" text-anchor=\"end\">", html_escape(labels[g]),
                 "</text>");
    for (size_t p = 0; p < n; ++p) {
      const double share = row_total > 0 ? static_cast<double>(matrix[g][p]) / static_cast<double>(row_total) : 0.0;
      char fill[16];
      std::snprintf(fill, sizeof fill, "#%02x%02x%02x", static_cast<int>(255 - 225 * share), static_cast<int>(255 - 175 * share),
                    static_cast<int>(255 - 95 * share));
      const double x = left + cell * static_cast<double>(p);
      svg += fmt("<rect x=\"", x, "\" y=\"", y, "\" width=\"", cell - 1, "\" height=\"", cell - 1, "\" fill=\"", fill,
                 "\"", g == p ? " stroke=\"#2ca02c\"" : "", "><title>gold ", html_escape(labels[g]), ", predicted ", html_escape(labels[p]), ": ",
                 matrix[g][p], " (", num(100 * share, 3), "% of the class)</title></rect>");
      if (cell >= 22 && matrix[g][p] > 0)
        svg += fmt("<text class=\"tick\" x=\"", x + cell / 2, "\" y=\"", y + cell / 2 + 4, "\" text-anchor=\"middle\"",
                   share > 0.5 ? " style=\"fill:#fff\"" : "", ">", matrix[g][p], "</text>");
    }
  }
  svg += fmt("<text class=\"axis\" x=\"", left + cell * static_cast<double>(n) / 2, "\" y=\"", h - 10,
             "\" text-anchor=\"middle\">predicted class (columns) for each gold class (rows)</text>");
  return svg + "</svg>";
}

namespace {

struct RunData {
  std::map<std::string, Series> train, eval;  // by metric name
  json setup, last_train, last_eval;
  std::vector<json> rollbacks;
  json last_load;  // {"step", "layers": [[...]]}
};

RunData read_metrics(const std::string& path) {
  RunData d;
  std::ifstream in(path);
  if (!in) throw IoError(fmt(path, ": cannot open (is this a run folder? `dsforge train` writes metrics.jsonl)"));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw DataError(fmt(path, ":", line_no, ": not a JSON object (", e.what(), ")"));
    }
    const std::string kind = j.value("kind", "train");
    const double step = j.value("step", 0.0);
    if (kind == "train" || kind == "eval") {
      auto& target = kind == "train" ? d.train : d.eval;
      for (const auto& [k, v] : j.items()) {
        if (k == "kind" || k == "step" || !v.is_number()) continue;
        auto& s = target[k];
        s.name = k;
        s.x.push_back(step);
        s.y.push_back(v.get<double>());
      }
      (kind == "train" ? d.last_train : d.last_eval) = j;
    } else if (kind == "setup") {
      d.setup = j;
    } else if (kind == "rollback") {
      d.rollbacks.push_back(j);
    } else if (kind == "expert_load") {
      d.last_load = j;
    }
  }
  return d;
}

Series named(const std::map<std::string, Series>& m, const std::string& key, const std::string& label) {
  auto it = m.find(key);
  Series s = it == m.end() ? Series{} : it->second;
  s.name = label;
  return s;
}

std::string table(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::string t = "<table>";
  for (const auto& [k, v] : rows) t += "<tr><th>" + html_escape(k) + "</th><td>" + html_escape(v) + "</td></tr>";
  return t + "</table>";
}

std::string json_value_text(const json& v) {
  if (v.is_number_float()) return num(v.get<double>(), 6);
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

const char* kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h3{font-size:15px;margin:18px 0 6px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666}.grid2{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px}
svg .title{font-size:14px;font-weight:600;text-anchor:middle}svg .tick,svg .legend{font-size:11px;fill:#444}
svg .axis{font-size:12px;fill:#333}svg .grid{stroke:#eee}svg .frame{fill:none;stroke:#bbb}svg .empty{fill:#999;text-anchor:middle}
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #e3e3e3;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}pre{background:#f6f6f6;padding:10px;overflow:auto;max-height:420px;font-size:12px}
.sample{font-family:ui-monospace,monospace;white-space:pre-wrap}.prompt{color:#1f5fa8;font-weight:600}
)";

// Counts the charts that laid out with a non-empty box; a headless browser test reads it from the DOM.
const char* kScript = R"(
window.addEventListener('load', function () {
  var charts = document.querySelectorAll('svg.chart'), ok = 0;
  charts.forEach(function (c) { var b = c.getBBox(); if (b.width > 0 && b.height > 0) ok++; });
  document.body.setAttribute('data-charts-rendered', String(ok));
  document.body.setAttribute('data-charts-total', String(charts.length));
});
)";

}  // namespace

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON (", e.what(), ")"));
  }
}

// A fine-tuned classifier's results (finetune.json): metrics beside the baseline, per-class F1 bars,
// the confusion matrix as a heatmap.
std::string classification_section(const std::string& dir) {
  const std::string path = path_join(dir, "finetune.json");
  if (!file_exists(path)) return "";
  const json j = read_json(path);
  std::string body = "<h2>Classification: " + html_escape(j.value("task", "")) + "</h2>";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const char* k : {"accuracy", "macro_f1", "weighted_f1"}) {
    if (!j.contains("model") || !j["model"].contains(k)) continue;
    rows.emplace_back(k, num(j["model"][k].get<double>()) + "   (majority class '" + j.value("majority_label", "") + "': " +
                             num(j["baseline_majority"].value(k, 0.0)) + ")");
  }
  rows.emplace_back("examples", fmt(j.value("train_examples", 0), " train, ", j.value("test_examples", 0), " test, ",
                                    j.value("classes", 0), " classes"));
  body += table(rows);
  if (j.contains("per_class")) {
    std::vector<std::string> labels;
    std::vector<double> f1;
    for (const auto& c : j["per_class"]) {
      labels.push_back(c.value("label", "") + " (" + std::to_string(c.value("support", 0)) + ")");
      f1.push_back(c.value("f1", 0.0));
    }
    body += "<div class=\"grid2\">" + svg_bar_chart("F1 per class (test support in brackets)", labels, f1, {}, "F1");
  }
  if (j.contains("confusion"))
    body += svg_confusion("Confusion matrix", j["confusion"]["labels"].get<std::vector<std::string>>(),
                          j["confusion"]["matrix"].get<std::vector<std::vector<int64_t>>>());
  if (j.contains("per_class")) body += "</div>";
  return body;
}

// A generation fine-tune (seq2seq.json): scores per decoder beside copy-source, and the first outputs.
std::string generation_section(const std::string& dir) {
  const std::string path = path_join(dir, "seq2seq.json");
  if (!file_exists(path)) return "";
  const json j = read_json(path);
  std::string body = "<h2>Generation: " + html_escape(j.value("task", "")) + "</h2><table><tr><th>decoder</th><th>BLEU</th>"
                     "<th>chrF</th><th>ROUGE-1</th><th>ROUGE-2</th><th>ROUGE-L</th></tr>";
  for (const char* name : {"greedy", "beam", "copy-source"}) {
    if (!j.contains(name)) continue;
    const json& s = j[name];
    body += std::string("<tr><th>") + name + "</th>";
    for (const char* k : {"bleu", "chrf", "rouge1", "rouge2", "rougeL"}) body += "<td>" + num(s.value(k, 0.0)) + "</td>";
    body += "</tr>";
  }
  body += "</table><p class=\"sub\">" + html_escape(j.value("bleu_signature", "")) + "</p>";
  auto lines = [&](const std::string& name) {
    const std::string p = path_join(dir, name);
    std::vector<std::string> out;
    if (!file_exists(p)) return out;
    const std::string text = read_file(p);
    size_t start = 0;
    for (size_t nl; out.size() < 8 && (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
      out.push_back(text.substr(start, nl - start));
    return out;
  };
  const auto src = lines("source.txt"), ref = lines("reference.txt"), greedy = lines("greedy.txt"), beam = lines("beam.txt");
  if (!src.empty()) {
    body += "<h3>First test examples</h3><table><tr><th>source</th><th>reference</th><th>greedy</th><th>beam</th></tr>";
    for (size_t i = 0; i < src.size(); ++i) {
      auto at = [&](const std::vector<std::string>& v) { return i < v.size() ? html_escape(v[i]) : std::string(); };
      body += "<tr><td>" + at(src) + "</td><td>" + at(ref) + "</td><td>" + at(greedy) + "</td><td>" + at(beam) + "</td></tr>";
    }
    body += "</table>";
  }
  return body;
}

// `dsforge analyze` output (analysis.json): fit findings, hardest tokens/documents/examples, confusions.
std::string analysis_section(const std::string& dir) {
  const std::string path = path_join(dir, "analysis.json");
  if (!file_exists(path)) return "";
  const json j = read_json(path);
  std::string body = "<h2>Error analysis</h2>";
  if (j.contains("fit") && !j["fit"].empty()) {
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& f : j["fit"]) rows.emplace_back(f.value("kind", ""), f.value("evidence", "") + ". " + f.value("suggestion", ""));
    body += "<h3>Fit diagnosis</h3>" + table(rows);
  }
  auto list = [&](const char* title, const json& items, const char* text_key, const char* value_key) {
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& it : items) {
      const json& v = it[value_key];
      rows.emplace_back(v.is_number() ? num(v.get<double>()) : json_value_text(v), json_value_text(it[text_key]));
    }
    return std::string("<h3>") + title + "</h3>" + table(rows);
  };
  if (j.contains("lm")) {
    body += list("Tokens with the highest mean loss (nats)", j["lm"]["tokens"], "text", "mean_loss");
    body += list("Documents with the highest mean loss (nats per token)", j["lm"]["documents"], "text", "mean_loss");
  }
  if (j.contains("classification")) {
    const json& c = j["classification"];
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& h : c["hardest"])
      rows.emplace_back(h.value("loss", ""), "gold " + h.value("gold", "") + ", predicted " + h.value("pred", "") + ": " +
                                                 h.value("text", ""));
    body += "<h3>Hardest test examples (loss)</h3>" + table(rows);
    body += list("Most confused pairs (count)", c["confused"], "pair", "count");
  }
  if (j.contains("mining")) {
    const json& m = j["mining"];
    body += "<h3>Hard-example mining</h3>" +
            table({{"hard examples", fmt(m.value("hard", 0), " of ", m.value("examples", 0), " (loss >= ",
                                         num(m.value("loss_threshold", 0.0)), ")")},
                   {"lines written", std::to_string(m.value("written", 0))}});
  }
  return body;
}

namespace {

// The robustness and fairness sections `dsforge robust|fairness --out DIR` wrote as robust.html and
// fairness.html: their bodies, inside this report.
std::string robustness_fairness_sections(const std::string& run_dir) {
  std::string out;
  for (const char* page : {"robust.html", "fairness.html"}) {
    const std::string path = path_join(run_dir, page);
    if (!file_exists(path)) continue;
    const std::string html = read_file(path);
    const size_t a = html.find("<body>"), b = html.rfind("</body>");
    if (a != std::string::npos && b != std::string::npos && b > a) out += html.substr(a + 6, b - a - 6);
  }
  return out;
}

}  // namespace

std::string render_run_report(const std::string& run_dir) {
  // A fine-tuning folder (finetune.json, no training log) gets the classification and analysis sections;
  // a robust / fairness folder its sections.
  const std::string extra = robustness_fairness_sections(run_dir);
  if (!file_exists(path_join(run_dir, "metrics.jsonl")) &&
      (file_exists(path_join(run_dir, "finetune.json")) || file_exists(path_join(run_dir, "seq2seq.json")) || !extra.empty()))
    return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dsforge report: " + html_escape(run_dir) +
           "</title><style>" + kStyle + "</style><script>" + kScript + "</script></head><body><h1>dsforge report</h1>" +
           "<div class=\"sub\">" + html_escape(run_dir) + "</div>" + classification_section(run_dir) + generation_section(run_dir) +
           analysis_section(run_dir) + extra + "</body></html>\n";
  const RunData d = read_metrics(path_join(run_dir, "metrics.jsonl"));
  std::string body;
  body += "<h1>dsforge run report</h1><div class=\"sub\">" + html_escape(run_dir) + "</div>";

  // Final metrics first: what a reader wants to know.
  std::vector<std::pair<std::string, std::string>> finals;
  if (!d.last_train.is_null())
    for (const auto& [k, v] : d.last_train.items())
      if (k != "kind") finals.emplace_back(k == "step" ? "last step" : "train " + k, json_value_text(v));
  if (!d.last_eval.is_null())
    for (const auto& [k, v] : d.last_eval.items())
      if (k != "kind" && k != "step") finals.emplace_back(k, json_value_text(v));
  const std::string eval_path = path_join(run_dir, "eval.json");
  if (file_exists(eval_path)) {
    const json ev = read_json(eval_path);
    for (const auto& [k, v] : ev.items()) finals.emplace_back("eval.json " + k, json_value_text(v));
  }
  body += "<h2>Final metrics</h2>" + table(finals);
  if (!d.setup.is_null()) {
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& [k, v] : d.setup.items())
      if (k != "kind" && k != "step") rows.emplace_back(k, json_value_text(v));
    body += "<h2>Hardware fit</h2>" + table(rows);
  }

  body += "<h2>Training curves</h2><div class=\"grid2\">";
  std::vector<Series> loss = {named(d.train, "loss", "train loss")};
  if (d.eval.count("val_loss")) loss.push_back(named(d.eval, "val_loss", "validation loss"));
  if (d.train.count("mtp_loss")) loss.push_back(named(d.train, "mtp_loss", "MTP loss"));
  body += svg_line_chart("Loss", loss, "nats / token");
  body += svg_line_chart("Learning rate", {named(d.train, "lr", "lr")}, "lr");
  body += svg_line_chart("Throughput", {named(d.train, "tokens_per_sec", "tokens/s")}, "tokens / s");
  Series mfu = named(d.train, "mfu", "MFU");
  for (double& v : mfu.y) v *= 100;
  body += svg_line_chart("Model FLOPs utilisation", {mfu}, "% of measured matmul peak");
  body += svg_line_chart("Gradient norm (before clipping)", {named(d.train, "grad_norm", "grad norm")}, "L2 norm", true);
  if (d.train.count("expert_load_max_over_mean"))
    body += svg_line_chart("Expert load balance", {named(d.train, "expert_load_max_over_mean", "max / mean"),
                                                   named(d.train, "expert_load_cv", "coefficient of variation")},
                           "ratio");
  body += "</div>";

  if (!d.last_load.is_null() && d.last_load.contains("layers")) {
    std::vector<std::vector<double>> rows;
    std::vector<std::string> labels;
    for (const auto& l : d.last_load["layers"]) {
      rows.push_back(l.get<std::vector<double>>());
      labels.push_back("MoE layer " + std::to_string(rows.size()));
    }
    body += "<h2>Expert load</h2><p class=\"sub\">Tokens routed to each expert over the last logging step, as a "
            "multiple of the mean (1 = balanced; blue under-, red over-loaded).</p>";
    body += svg_heatmap(fmt("Expert load at step ", d.last_load.value("step", 0)), rows, labels, "routed expert", 1.0);
  }

  if (!d.rollbacks.empty()) {
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& r : d.rollbacks)
      rows.emplace_back(fmt("step ", r.value("step", 0)), fmt("loss ", num(r.value("loss", 0.0)), ", rolled back to step ",
                                                              num(r.value("rolled_back_to", 0.0))));
    body += "<h2>Loss-spike rollbacks</h2>" + table(rows);
  }

  body += classification_section(run_dir) + generation_section(run_dir) + analysis_section(run_dir);

  const std::string samples_path = path_join(run_dir, "samples.json");
  if (file_exists(samples_path)) {
    body += "<h2>Samples</h2>";
    for (const auto& s : read_json(samples_path))
      body += "<p class=\"sample\"><span class=\"prompt\">" + html_escape(s.value("prompt", "")) + "</span>" +
              html_escape(s.value("completion", "")) + "</p>";
  }
  const std::string stats_path = path_join(run_dir, "data/stats.json");
  if (file_exists(stats_path)) {
    std::vector<std::pair<std::string, std::string>> rows;
    const json stats = read_json(stats_path);
    for (const auto& [k, v] : stats.items()) {
      if (!v.is_object()) continue;
      for (const auto& [k2, v2] : v.items())  // one level down: source.*, filters.*, split.*, train.*
        if (!v2.is_structured()) rows.emplace_back(k + "." + k2, json_value_text(v2));
    }
    body += "<h2>Data</h2>" + table(rows);
  }
  const std::string cfg_path = path_join(run_dir, "config.toml");
  if (file_exists(cfg_path)) body += "<h2>Configuration</h2><pre>" + html_escape(read_file(cfg_path)) + "</pre>";
  body += extra;

  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dsforge report: " + html_escape(run_dir) +
         "</title><style>" + kStyle + "</style><script>" + kScript + "</script></head><body>" + body +
         "</body></html>\n";
}

std::string html_page(const std::string& title, const std::string& body_html) {
  return "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html_escape(title) + "</title><style>" + kStyle +
         "</style><script>" + kScript + "</script></head><body>" + body_html + "</body></html>\n";
}

std::string write_run_report(const std::string& run_dir, const std::string& out) {
  const std::string path = out.empty() ? path_join(run_dir, "report.html") : out;
  write_file_atomic(path, render_run_report(run_dir));
  return path;
}

}  // namespace dsforge::report

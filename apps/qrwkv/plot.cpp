#include "apps/qrwkv/plot.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "io/error.h"

extern char** environ;

namespace qrwkv::app {

namespace {

// The first executable `name` in $PATH, or "" when there is none.
std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(ss, dir, ':');) {
    const std::string p = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// A gnuplot string literal.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

struct Point {
  int64_t depth;
  double tps, sd, mib;
};

}  // namespace

namespace {

// gnuplot's path; an Error naming `svg_path` when there is none.
std::string gnuplot_path(const std::string& svg_path) {
  const std::string p = find_in_path("gnuplot");
  if (p.empty())
    fail(svg_path,
         "drawing a plot needs gnuplot, which is not in PATH (Debian: apt install gnuplot-nox; "
         "scripts/setup installs it)");
  return p;
}

}  // namespace

void check_plotter(const std::string& svg_path) { gnuplot_path(svg_path); }

void plot_bench(const std::vector<nlohmann::ordered_json>& reports, const std::string& svg_path) {
  const std::string gnuplot = gnuplot_path(svg_path);
  std::vector<std::pair<std::string, std::vector<Point>>> series;
  for (const auto& r : reports) {
    std::vector<Point> pts;
    std::string label;
    try {
      label =
          r.value("model", "?") + " (" + r.value("arch", "?") + ", " + r.value("dtype", "?") + ")";
      for (const auto& row : r.value("results", nlohmann::ordered_json::array())) {
        const std::string test = row.value("test", "");
        if (test.rfind("tg", 0) != 0 || row.value("batch", int64_t{1}) != 1 ||
            !row.contains("state_bytes"))
          continue;
        pts.push_back({row.value("depth", int64_t{0}), row.value("tps_mean", 0.0),
                       row.value("tps_sd", 0.0),
                       row["state_bytes"].get<double>() / (1024.0 * 1024.0)});
      }
    } catch (const nlohmann::json::exception& e) {
      fail(svg_path,
           std::string("a report is not as `qrwkv bench -o json` writes it: ") + e.what());
    }
    if (pts.empty())
      fail(label, "the report has no generation rows to plot (run bench with -n N -d LIST)");
    std::sort(pts.begin(), pts.end(),
              [](const Point& a, const Point& b) { return a.depth < b.depth; });
    series.emplace_back(label, std::move(pts));
  }
  if (series.empty()) fail(svg_path, "nothing to plot");

  // Inline data blocks ($s0, $s1, ...) and two panels sharing the x axis.
  std::ostringstream g;
  const std::string tmp = svg_path + ".tmp";
  for (size_t i = 0; i < series.size(); ++i) {
    g << "$s" << i << " << EOD\n";
    for (const Point& p : series[i].second)
      g << p.depth << ' ' << p.tps << ' ' << p.sd << ' ' << p.mib << '\n';
    g << "EOD\n";
  }
  const bool png = std::filesystem::path(svg_path).extension() == ".png";
  g << (png ? "set terminal pngcairo size 1000,460 noenhanced font 'sans,10' background rgb "
              "'white'\n"
            : "set terminal svg size 1000,460 dynamic noenhanced font 'sans,12' background rgb "
              "'white'\n")
    << "set output " << quoted(tmp) << "\n"
    << "set multiplot layout 1,2\n"
    << "set grid\nset key below\nset bmargin 7\nset xlabel 'context length (tokens)'\n"
    << "set yrange [0:*]\nset format x '%.0f'\n";
  auto plot = [&](const char* ylabel, const char* using_, const char* style) {
    g << "set ylabel '" << ylabel << "'\nplot ";
    for (size_t i = 0; i < series.size(); ++i)
      g << (i ? ", " : "") << "$s" << i << " using " << using_ << " with " << style
        << " lw 2 pt 7 title " << quoted(series[i].first);
    g << "\n";
  };
  plot("decode tokens/s (mean ± sd)", "1:2:3", "yerrorlines");
  plot("memory per sequence (MiB)", "1:4", "linespoints");
  g << "unset multiplot\nset output\n";
  const std::string script = svg_path + ".gp.tmp";
  {
    std::ofstream f(script);
    f << g.str();
    if (!f) fail(script, "cannot write the plot script");
  }
  pid_t pid = 0;
  char* argv[] = {const_cast<char*>(gnuplot.c_str()), const_cast<char*>(script.c_str()), nullptr};
  const int rc = ::posix_spawn(&pid, gnuplot.c_str(), nullptr, nullptr, argv, environ);
  int status = 0;
  if (rc == 0) ::waitpid(pid, &status, 0);
  std::error_code ec;
  std::filesystem::remove(script, ec);
  if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::filesystem::remove(tmp, ec);
    fail(svg_path, "gnuplot failed to draw the plot");
  }
  std::filesystem::rename(tmp, svg_path, ec);
  if (ec) fail(svg_path, "cannot write the plot: " + ec.message());
}

}  // namespace qrwkv::app

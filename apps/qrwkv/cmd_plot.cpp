// plot: draws `qrwkv bench -o json` reports (one per model, e.g. a QRWKV6 model and its parent
// transformer, each run with -d 0,1024,4096,16384) as decode speed and memory per sequence
// against context length, with gnuplot.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "apps/qrwkv/plot.h"
#include "io/mapped_file.h"

namespace qrwkv::app {

namespace {

int run_plot(int argc, char** argv) {
  Args a("plot", "--bench REPORT.json [--bench REPORT.json ...] --out FILE.svg",
         {{{"--bench"}, "FILE", "a report of `qrwkv bench -o json` (repeatable: one line each)"},
          {{"--out"}, "FILE", "the SVG file to write"}});
  a.parse(argc, argv);
  const std::vector<std::string> files = a.get_all("--bench");
  if (files.empty()) throw UsageError("plot needs at least one --bench REPORT.json");
  const std::string out = a.require("--out");
  std::vector<nlohmann::ordered_json> reports;
  for (const std::string& f : files) {
    try {
      reports.push_back(nlohmann::ordered_json::parse(read_text_file(f)));
    } catch (const nlohmann::json::exception& e) {
      fail(f, std::string("not a bench report (JSON): ") + e.what());
    }
    if (!reports.back().is_object() || !reports.back().contains("results"))
      fail(f, "not a bench report: no \"results\"");
  }
  plot_bench(reports, out);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

CommandRegistrar plot_cmd({"plot", "draw bench reports: decode speed and memory vs context",
                           &run_plot});

}  // namespace

}  // namespace qrwkv::app

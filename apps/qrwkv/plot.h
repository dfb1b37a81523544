// Charts of benchmark rows, drawn by gnuplot (the Debian package gnuplot-nox): decode tokens/s
// and memory per sequence against context length, one line per model. `qrwkv bench --plot` and
// `qrwkv plot` both come here.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qrwkv::app {

// Draws the generation rows (batch 1, any depth) of `bench -o json` reports into an SVG file
// (PNG when the name ends in .png), written whole or not at all. Error when gnuplot is missing or a
// report has no such rows. Error (naming `svg_path`) unless gnuplot can be run: checked before a
// long benchmark starts.
void check_plotter(const std::string& svg_path);

void plot_bench(const std::vector<nlohmann::ordered_json>& reports, const std::string& svg_path);

}  // namespace qrwkv::app

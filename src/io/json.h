// JSON parsing of outside input (config files, headers) with errors that name the source.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qrwkv {

using json = nlohmann::json;

// Parses `text`; on malformed JSON throws Error("<where>: not valid JSON (<detail>)").
json parse_json(std::string_view text, const std::string& where);

// Reads and parses a JSON file.
json load_json_file(const std::string& path);

}  // namespace qrwkv

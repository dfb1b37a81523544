#include "io/json.h"

#include "io/error.h"
#include "io/mapped_file.h"

namespace qrwkv {

json parse_json(std::string_view text, const std::string& where) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(where, std::string("not valid JSON (") + e.what() + ")");
  }
}

json load_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

}  // namespace qrwkv

// Stop strings matched on generated text. Text is released only once it can no longer be the
// beginning of a stop string, so a stop string is never emitted, even when its characters
// arrive split across several tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace qrwkv {

class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);

  // Adds generated text (complete UTF-8 characters); returns the part now safe to show. When a
  // stop string appears, stopped() becomes true and the text from it on is dropped.
  std::string push(std::string_view text);
  // Releases what is held back (at the end of generation); empty after a stop.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace qrwkv

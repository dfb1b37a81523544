// Fuzzes the evaluation task files of `qrwkv eval` (JSON Lines or plain text -> Task) and the
// metric code over them: any input must give a Task or a qrwkv::Error, and every metric of a
// parsed task must come out of made-up scores without a crash (no model is needed for that).
#include <cmath>
#include <cstdint>
#include <string_view>

#include "io/error.h"
#include "runtime/eval.h"
#include "text/tok_utf8.h"

using namespace qrwkv;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool jsonl = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  eval::Task t;
  try {
    t = eval::parse_task(text, "fuzz", jsonl, "fuzz.jsonl");
  } catch (const Error&) {
    return 0;
  }
  if (t.docs.empty()) __builtin_trap();
  // Requests shaped as task_requests makes them, with one token per byte, and scores that
  // depend on the input.
  eval::TaskRequests r;
  std::vector<std::vector<eval::Score>> scores;
  for (size_t d = 0; d < t.docs.size(); ++d) {
    const eval::Doc& doc = t.docs[d];
    if (t.kind == eval::TaskKind::Perplexity) {
      std::vector<int32_t> ids(doc.text.begin(), doc.text.end());
      const size_t L = 1 + static_cast<size_t>(data[0] >> 1);
      for (eval::Group& g : eval::rolling_windows(ids, 0, L)) {
        size_t n = 0;
        for (const auto& c : g.continuations) n += c.size();
        if (n == 0 || n > L || g.context.empty()) __builtin_trap();
        scores.push_back({{-static_cast<double>(n), n % 2 == 0}});
        r.groups.push_back(std::move(g));
        r.doc_of_group.push_back(d);
      }
      (void)eval::count_words(doc.text);
      continue;
    }
    eval::Group g;
    g.context = {1};
    std::vector<eval::Score> s;
    for (const std::string& c : doc.choices) {
      g.continuations.push_back(std::vector<int32_t>(c.begin(), c.end()));
      s.push_back({-static_cast<double>(c.size() % 7) - 0.5, c.size() % 3 == 0});
      (void)tok::char_count(c);
    }
    if (doc.gold < 0 || static_cast<size_t>(doc.gold) >= std::max<size_t>(1, doc.choices.size()))
      __builtin_trap();
    r.groups.push_back(std::move(g));
    r.doc_of_group.push_back(d);
    scores.push_back(std::move(s));
  }
  for (const eval::Metric& m : eval::task_metrics(t, r, scores))
    if (std::isnan(m.value) && t.kind != eval::TaskKind::Perplexity) __builtin_trap();
  return 0;
}

#include "runtime/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/error.h"
#include "io/mapped_file.h"
#include "runtime/logprobs.h"
#include "text/tok_utf8.h"

namespace qrwkv::eval {

namespace {

// log P(token) under softmax(z), and whether the token is the argmax (lowest id among ties).
std::pair<double, bool> token_score(std::span<const float> z, int32_t token) {
  const auto best = std::max_element(z.begin(), z.end()) - z.begin();  // first of equal maxima
  return {double{z[static_cast<size_t>(token)]} - log_sum_exp(z), best == token};
}

// A sequence being fed in chunks: its state, the tokens still to feed, and where the logits of
// each fed chunk go.
struct Cursor {
  State state;
  std::span<const int32_t> tokens;  // all the tokens to feed
  size_t fed = 0;
  bool all_logits = false;  // every position's logits (continuations) or the last one (contexts)
  std::vector<float> logits;
};

// Feeds every cursor to its end, a chunk per sequence per forward pass; `on_chunk(i, first, n)`
// sees cursor i's logits after each chunk of n tokens starting at token `first`.
template <class F>
void feed_all(const Model& m, std::vector<Cursor>& cs, size_t chunk, F on_chunk) {
  const auto V = static_cast<size_t>(m.config.vocab_size);
  std::vector<SequenceInput> batch;
  std::vector<size_t> who;
  for (;;) {
    batch.clear();
    who.clear();
    for (size_t i = 0; i < cs.size(); ++i) {
      Cursor& c = cs[i];
      const size_t n = std::min(chunk, c.tokens.size() - c.fed);
      if (n == 0) continue;
      const bool last = c.fed + n == c.tokens.size();
      c.logits.resize((c.all_logits ? n : 1) * V);
      batch.push_back({&c.state, c.tokens.subspan(c.fed, n),
                       c.all_logits || last ? c.logits.data() : nullptr, c.all_logits});
      who.push_back(i);
    }
    if (batch.empty()) return;
    forward_batch(m, batch);
    for (size_t b = 0; b < who.size(); ++b) {
      Cursor& c = cs[who[b]];
      const size_t n = batch[b].tokens.size();
      on_chunk(who[b], c.fed, n);
      c.fed += n;
    }
  }
}

}  // namespace

std::vector<std::vector<Score>> score(const Model& m, std::span<const Group> groups,
                                      const ScoreOptions& o) {
  if (!o.fork) {
    // From scratch: every continuation is a group of its own, with its own copy of the context.
    std::vector<Group> single;
    for (const Group& g : groups)
      for (const auto& c : g.continuations) single.push_back({g.context, {c}});
    ScoreOptions fo = o;
    fo.fork = true;
    const std::vector<std::vector<Score>> flat = score(m, single, fo);
    std::vector<std::vector<Score>> out;
    size_t k = 0;
    for (const Group& g : groups) {
      out.emplace_back();
      for (size_t c = 0; c < g.continuations.size(); ++c) out.back().push_back(flat[k++][0]);
    }
    return out;
  }
  const auto V = static_cast<size_t>(m.config.vocab_size);
  const size_t chunk = std::max<size_t>(1, o.chunk);
  size_t total = 0;
  for (const Group& g : groups) {
    if (g.context.empty()) fail("eval", "a request has an empty context");
    for (const auto& c : g.continuations)
      for (int32_t t : c)
        if (t < 0 || static_cast<size_t>(t) >= V)
          fail("eval", "token id " + std::to_string(t) + " is outside the vocabulary");
    total += g.continuations.size();
  }
  std::vector<std::vector<Score>> out(groups.size());
  size_t done = 0;
  for (size_t g0 = 0; g0 < groups.size();) {
    // A batch: whole groups until `batch` continuations (at least one group).
    size_t g1 = g0, n_cont = 0;
    while (g1 < groups.size() && (g1 == g0 || n_cont + groups[g1].continuations.size() <= o.batch))
      n_cont += groups[g1++].continuations.size();

    // The contexts, once each: their last logits score every continuation's first token.
    std::vector<Cursor> ctx(g1 - g0);
    for (size_t g = g0; g < g1; ++g) {
      ctx[g - g0].state = m.new_state();
      ctx[g - g0].tokens = groups[g].context;
    }
    feed_all(m, ctx, chunk, [](size_t, size_t, size_t) {});

    // Each continuation from a copy of its context's state; the logits at its token i score
    // token i + 1, so its last token is never fed.
    std::vector<Cursor> conts;
    std::vector<std::pair<size_t, size_t>> owner;  // (group, continuation)
    for (size_t g = g0; g < g1; ++g) {
      out[g].resize(groups[g].continuations.size());
      for (size_t c = 0; c < groups[g].continuations.size(); ++c) {
        const auto& toks = groups[g].continuations[c];
        Score& s = out[g][c];
        if (toks.empty()) continue;
        const auto [lp, greedy] = token_score({ctx[g - g0].logits.data(), V}, toks[0]);
        s.logprob = lp;
        s.greedy = greedy;
        if (toks.size() == 1) continue;
        Cursor cur;
        cur.state = ctx[g - g0].state;
        cur.tokens = std::span<const int32_t>(toks.data(), toks.size() - 1);
        cur.all_logits = true;
        conts.push_back(std::move(cur));
        owner.emplace_back(g, c);
      }
    }
    ctx.clear();
    feed_all(m, conts, chunk, [&](size_t i, size_t first, size_t n) {
      const auto [g, c] = owner[i];
      const auto& toks = groups[g].continuations[c];
      Score& s = out[g][c];
      for (size_t r = 0; r < n; ++r) {
        const auto [lp, greedy] =
            token_score({conts[i].logits.data() + r * V, V}, toks[first + r + 1]);
        s.logprob += lp;
        s.greedy = s.greedy && greedy;
      }
    });
    done += n_cont;
    if (o.progress) o.progress(done, total);
    g0 = g1;
  }
  return out;
}

const char* task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::MultipleChoice:
      return "multiple_choice";
    case TaskKind::LastWord:
      return "last_word";
    case TaskKind::Perplexity:
      return "perplexity";
  }
  return "?";
}

Task load_task(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return parse_task(read_text_file(path), std::filesystem::path(path).stem().string(),
                    ext == ".jsonl" || ext == ".json", path);
}

Task parse_task(std::string_view text, const std::string& name, bool jsonl,
                const std::string& path) {
  Task t;
  t.name = name;
  if (!jsonl) {
    // A plain text file is one document.
    t.kind = TaskKind::Perplexity;
    if (text.empty()) fail(path, "the file is empty");
    Doc d;
    d.text = std::string(text);
    t.docs.push_back(std::move(d));
    return t;
  }
  std::istringstream in{std::string(text)};
  std::string line;
  int lineno = 0;
  bool kind_set = false;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail(where, "each line must be a JSON object");
    TaskKind kind;
    Doc d;
    auto str = [&](const char* key) {
      const auto it = j.find(key);
      if (it == j.end() || !it->is_string())
        fail(where, std::string("'") + key + "' must be a string");
      return it->get<std::string>();
    };
    if (j.contains("choices")) {
      kind = TaskKind::MultipleChoice;
      d.context = str("context");
      const auto& ch = j["choices"];
      if (!ch.is_array() || ch.size() < 2)
        fail(where, "'choices' must be a list of at least 2 strings");
      for (const auto& c : ch) {
        if (!c.is_string()) fail(where, "'choices' must be a list of strings");
        d.choices.push_back(c.get<std::string>());
      }
      const auto g = j.find("gold");
      if (g == j.end() || !g->is_number_integer() || g->get<int64_t>() < 0 ||
          g->get<int64_t>() >= static_cast<int64_t>(d.choices.size()))
        fail(where, "'gold' must be the index of the right choice (0.." +
                        std::to_string(d.choices.size() - 1) + ")");
      d.gold = g->get<int>();
      if (j.contains("target_delimiter")) d.delimiter = str("target_delimiter");
    } else if (j.contains("text")) {
      kind = TaskKind::LastWord;
      const std::string text_ = str("text");
      const size_t sp = text_.rfind(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == text_.size())
        fail(where, "'text' needs words before its last word, separated by a space");
      d.context = text_.substr(0, sp);
      d.choices = {text_.substr(sp)};  // " word"
      d.delimiter.clear();
    } else if (j.contains("document")) {
      kind = TaskKind::Perplexity;
      d.text = str("document");
      if (d.text.empty()) fail(where, "'document' is empty");
    } else {
      fail(where,
           "a line needs \"context\"+\"choices\"+\"gold\" (multiple choice), \"text\" (last "
           "word) or \"document\" (perplexity)");
    }
    if (kind_set && kind != t.kind)
      fail(where, std::string("this line is a ") + task_kind_name(kind) +
                      " document, the file's first one a " + task_kind_name(t.kind) + " one");
    t.kind = kind;
    kind_set = true;
    t.docs.push_back(std::move(d));
  }
  if (t.docs.empty()) fail(path, "the task has no documents");
  return t;
}

int32_t prefix_token(const Tokenizer& tok, const std::set<int32_t>& eos_ids) {
  if (const auto b = tok.bos_id()) return *b;
  if (const auto e = tok.eos_id()) return *e;
  if (!eos_ids.empty()) return *eos_ids.begin();
  fail("eval", "the tokenizer has neither a BOS nor an EOS token to start a text with");
}

std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const Tokenizer& tok,
                                                                  const std::string& context,
                                                                  const std::string& continuation,
                                                                  int32_t prefix) {
  if (context.empty()) return {{prefix}, tok.encode(continuation)};
  size_t keep = context.size();
  while (keep > 0 && std::isspace(static_cast<unsigned char>(context[keep - 1]))) --keep;
  const std::string ctx = context.substr(0, keep);
  const std::string cont = context.substr(keep) + continuation;
  const std::vector<int32_t> whole = tok.encode(ctx + cont);
  std::vector<int32_t> c = tok.encode(ctx);
  if (c.empty()) c = {prefix};
  const size_t n = std::min(c.size(), whole.size());
  return {c, std::vector<int32_t>(whole.begin() + static_cast<long>(n), whole.end())};
}

std::vector<Group> rolling_windows(std::span<const int32_t> tokens, int32_t prefix,
                                   size_t max_length) {
  std::vector<Group> out;
  const size_t n = tokens.size();
  if (n == 0) return out;
  const size_t L = std::max<size_t>(1, max_length);
  const size_t first = std::min(L, n);
  out.push_back({{prefix}, {std::vector<int32_t>(tokens.begin(), tokens.begin() + first)}});
  size_t predicted = first;
  while (predicted < n) {
    const size_t len = std::min(n - predicted, L);
    const size_t end = predicted + len;
    // lm-eval's window of L tokens ending before the last predicted one, made disjoint: the
    // L - len + 1 tokens before the predicted ones are the context.
    const size_t ctx_begin = end - L - 1, ctx_end = end - len;
    out.push_back({std::vector<int32_t>(tokens.begin() + ctx_begin, tokens.begin() + ctx_end),
                   {std::vector<int32_t>(tokens.begin() + (end - len), tokens.begin() + end)}});
    predicted = end;
  }
  return out;
}

TaskRequests task_requests(const Task& t, const Tokenizer& tok, int32_t prefix, size_t max_length) {
  TaskRequests r;
  for (size_t d = 0; d < t.docs.size(); ++d) {
    const Doc& doc = t.docs[d];
    if (t.kind == TaskKind::Perplexity) {
      const std::vector<int32_t> ids = tok.encode(doc.text);
      for (Group& g : rolling_windows(ids, prefix, max_length)) {
        r.groups.push_back(std::move(g));
        r.doc_of_group.push_back(d);
      }
      continue;
    }
    Group g;
    for (const std::string& choice : doc.choices) {
      auto [ctx, cont] = encode_pair(tok, doc.context, doc.delimiter + choice, prefix);
      g.context = std::move(ctx);
      g.continuations.push_back(std::move(cont));
    }
    r.groups.push_back(std::move(g));
    r.doc_of_group.push_back(d);
  }
  return r;
}

int64_t fed_tokens(std::span<const Group> groups, bool fork) {
  int64_t n = 0;
  for (const auto& g : groups) {
    const auto k = static_cast<int64_t>(g.continuations.size());
    n += static_cast<int64_t>(g.context.size()) * (fork ? 1 : k);
    for (const auto& c : g.continuations)
      n += std::max<int64_t>(0, static_cast<int64_t>(c.size()) - 1);
  }
  return n;
}

TaskRun run_task(const Model& m, const Tokenizer& tok, int32_t prefix, const Task& t,
                 size_t max_length, const ScoreOptions& options) {
  const TaskRequests req = task_requests(t, tok, prefix, max_length);
  TaskRun r;
  const auto t0 = std::chrono::steady_clock::now();
  const auto scores = score(m, req.groups, options);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_fed = fed_tokens(req.groups, options.fork);
  r.metrics = task_metrics(t, req, scores);
  for (const auto& g : req.groups) r.requests += g.continuations.size();
  return r;
}

std::pair<double, double> mean_stderr(std::span<const double> x) {
  const double n = static_cast<double>(x.size());
  if (x.empty()) return {0, 0};
  double mean = 0;
  for (double v : x) mean += v;
  mean /= n;
  if (x.size() < 2) return {mean, 0};
  double ss = 0;
  for (double v : x) ss += (v - mean) * (v - mean);
  return {mean, std::sqrt(ss / (n - 1)) / std::sqrt(n)};
}

size_t count_words(std::string_view s) {
  // re.split(r"\s+", s) has one more piece than there are whitespace runs (empty pieces at the
  // ends included).
  size_t runs = 0;
  bool in_space = false;
  for (char c : s) {
    const bool sp = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (sp && !in_space) ++runs;
    in_space = sp;
  }
  return runs + 1;
}

std::vector<Metric> task_metrics(const Task& t, const TaskRequests& r,
                                 const std::vector<std::vector<Score>>& scores) {
  std::vector<Metric> out;
  if (t.kind == TaskKind::Perplexity) {
    std::vector<double> ll(t.docs.size(), 0.0);
    for (size_t g = 0; g < r.groups.size(); ++g) ll[r.doc_of_group[g]] += scores[g][0].logprob;
    double sum_ll = 0, words = 0, bytes = 0;
    for (size_t d = 0; d < t.docs.size(); ++d) {
      sum_ll += ll[d];
      words += static_cast<double>(count_words(t.docs[d].text));
      bytes += static_cast<double>(t.docs[d].text.size());
    }
    out.push_back({"word_perplexity", std::exp(-sum_ll / words)});
    out.push_back({"byte_perplexity", std::exp(-sum_ll / bytes)});
    out.push_back({"bits_per_byte", -sum_ll / bytes / std::log(2.0)});
    return out;
  }
  if (t.kind == TaskKind::LastWord) {
    std::vector<double> acc, ll;
    for (size_t g = 0; g < r.groups.size(); ++g) {
      acc.push_back(scores[g][0].greedy ? 1.0 : 0.0);
      ll.push_back(scores[g][0].logprob);
    }
    const auto [a, se] = mean_stderr(acc);
    out.push_back({"acc", a, se});
    out.push_back({"perplexity", std::exp(-mean_stderr(ll).first)});
    return out;
  }
  std::vector<double> acc, acc_norm;
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const Doc& d = t.docs[r.doc_of_group[g]];
    size_t best = 0, best_norm = 0;
    auto norm = [&](size_t c) {
      return scores[g][c].logprob /
             static_cast<double>(std::max<size_t>(1, tok::char_count(d.choices[c])));
    };
    for (size_t c = 1; c < d.choices.size(); ++c) {
      if (scores[g][c].logprob > scores[g][best].logprob) best = c;
      if (norm(c) > norm(best_norm)) best_norm = c;
    }
    acc.push_back(best == static_cast<size_t>(d.gold) ? 1.0 : 0.0);
    acc_norm.push_back(best_norm == static_cast<size_t>(d.gold) ? 1.0 : 0.0);
  }
  const auto [a, se] = mean_stderr(acc);
  const auto [an, sen] = mean_stderr(acc_norm);
  out.push_back({"acc", a, se});
  out.push_back({"acc_norm", an, sen});
  return out;
}

}  // namespace qrwkv::eval

#include "runtime/chat.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "io/bytes.h"
#include "io/error.h"
#include "io/mapped_file.h"

namespace qrwkv {

namespace {
constexpr char kSessionMagic[8] = {'Q', 'R', 'W', 'K', 'V', 'S', 'E', 'S'};
constexpr uint32_t kSessionVersion = 1;
// QRWKV6 snapshots kept; older turns are rarely rewritten by templates.
constexpr size_t kMaxSnapshots = 8;
}  // namespace

ChatSession::ChatSession(const Model& model, const Tokenizer& tok, const ChatTemplate& tmpl,
                         nlohmann::ordered_json extra)
    : model_(&model), tok_(&tok), tmpl_(&tmpl), extra_(std::move(extra)) {
  reset();
}

void ChatSession::reset() {
  messages_ = nlohmann::ordered_json::array();
  state_ = model_->new_state();
  processed_.clear();
  logits_.clear();
  snapshots_.clear();
  snapshot();
}

void ChatSession::add_message(const std::string& role, const std::string& content) {
  messages_.push_back({{"role", role}, {"content", content}});
}

std::string ChatSession::render(bool add_generation_prompt) const {
  nlohmann::ordered_json req = extra_;
  req["messages"] = messages_;
  req["add_generation_prompt"] = add_generation_prompt;
  return tmpl_->render(req);
}

void ChatSession::snapshot() {
  if (states_can_truncate(model_->config)) return;  // going back cuts the cache instead
  if (!snapshots_.empty() && snapshots_.back().n == processed_.size()) return;
  snapshots_.push_back({processed_.size(), state_, logits_});
  // Keep the empty state (first) and the most recent ones.
  if (snapshots_.size() > kMaxSnapshots) snapshots_.erase(snapshots_.begin() + 1);
}

void ChatSession::rollback_to(size_t n) {
  if (n >= processed_.size()) return;
  if (states_can_truncate(model_->config)) {
    truncate_state(state_, model_->config, static_cast<int64_t>(n));
    processed_.resize(n);
    logits_.clear();  // recomputed by the next feed
    return;
  }
  while (snapshots_.size() > 1 && snapshots_.back().n > n) snapshots_.pop_back();
  const Snapshot& s = snapshots_.back();
  state_ = s.state;
  logits_ = s.logits;
  const std::vector<int32_t> replay(processed_.begin() + static_cast<long>(s.n),
                                    processed_.begin() + static_cast<long>(n));
  processed_.resize(s.n);
  if (!replay.empty()) feed(replay);
}

void ChatSession::feed(std::span<const int32_t> tokens) {
  if (tokens.empty()) return;
  logits_ = forward(*model_, state_, tokens, false);
  processed_.insert(processed_.end(), tokens.begin(), tokens.end());
}

SyncStats ChatSession::prepare_reply() {
  const std::vector<int32_t> target = tok_->encode(render(true));
  if (target.empty()) fail("", "the chat template rendered an empty prompt");
  size_t lcp = 0;
  while (lcp < processed_.size() && lcp < target.size() && processed_[lcp] == target[lcp]) ++lcp;
  // The logits of the prompt's last token are needed: keep at least one token to feed.
  if (lcp == target.size()) --lcp;
  rollback_to(lcp);
  SyncStats st;
  st.reused = static_cast<int64_t>(processed_.size());
  const std::span<const int32_t> rest(target.data() + processed_.size(),
                                      target.size() - processed_.size());
  st.fed = static_cast<int64_t>(rest.size());
  feed(rest);
  snapshot();
  return st;
}

void ChatSession::add_reply(const std::string& text, const std::vector<int32_t>& fed_tokens) {
  add_message("assistant", text);
  processed_.insert(processed_.end(), fed_tokens.begin(), fed_tokens.end());
  logits_.clear();  // unknown: the generator kept them
  if (state_.n_tokens != static_cast<int64_t>(processed_.size()))
    fail("", "chat state and processed tokens disagree");
  // A snapshot without logits is still a valid point to restart feeding from, as long as at
  // least one token follows it, which prepare_reply guarantees.
  snapshot();
}

std::string serialize_session(const SessionData& d) {
  nlohmann::ordered_json meta = {{"messages", d.messages}, {"processed", d.processed}};
  const std::string meta_text = meta.dump();
  std::string out(kSessionMagic, sizeof kSessionMagic);
  put_le<uint32_t>(out, kSessionVersion);
  put_le<uint64_t>(out, meta_text.size());
  out += meta_text;
  out += serialize_state(d.state);
  return out;
}

SessionData parse_session(const std::string& bytes, const std::string& where) {
  if (bytes.size() < sizeof kSessionMagic ||
      std::memcmp(bytes.data(), kSessionMagic, sizeof kSessionMagic) != 0)
    fail(where, "not a qrwkv session file (bad magic)");
  ByteReader r(bytes, where, "session file");
  r.bytes(sizeof kSessionMagic, "magic");
  const uint32_t version = r.get<uint32_t>("the header");
  const uint64_t meta_len = r.get<uint64_t>("the header");
  if (version != kSessionVersion)
    fail(where, "session format version " + std::to_string(version) + " is not supported");
  const std::string_view meta_text = r.bytes(meta_len, "the metadata");
  const auto meta =
      nlohmann::ordered_json::parse(meta_text.begin(), meta_text.end(), nullptr, false);
  if (meta.is_discarded() || !meta.is_object() || !meta.contains("messages") ||
      !meta["messages"].is_array() || !meta.contains("processed") || !meta["processed"].is_array())
    fail(where, "corrupt session file (metadata)");
  SessionData d;
  for (const auto& m : meta["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
      fail(where, "corrupt session file (messages)");
  }
  d.messages = meta["messages"];
  for (const auto& v : meta["processed"]) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      fail(where, "corrupt session file (tokens)");
    d.processed.push_back(v.get<int32_t>());
  }
  d.state = deserialize_state(bytes.substr(r.pos()), where);
  if (static_cast<int64_t>(d.processed.size()) != d.state.n_tokens)
    fail(where, "corrupt session file (token count does not match the state)");
  return d;
}

void ChatSession::save(const std::string& path) const {
  const std::string out = serialize_session({messages_, processed_, state_});
  write_file_atomic(path, out.data(), out.size());
}

void ChatSession::load(const std::string& path) {
  SessionData d = parse_session(read_text_file(path), path);
  check_state_matches(d.state, model_->config, path);
  for (int32_t t : d.processed)
    if (t >= model_->config.vocab_size) fail(path, "session holds a token outside the vocabulary");
  messages_ = std::move(d.messages);
  processed_ = std::move(d.processed);
  state_ = std::move(d.state);
  logits_.clear();
  snapshots_.clear();
  // Going back before the loaded point replays from the empty state.
  if (!states_can_truncate(model_->config)) {
    snapshots_.push_back({0, model_->new_state(), {}});
    snapshots_.push_back({processed_.size(), state_, {}});
  }
}

}  // namespace qrwkv

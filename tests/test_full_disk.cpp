// A disk that fills up (a small tmpfs, tests/small_disk.h): writing a state file or a chat
// session there fails with a clear error naming the file and the cause, the file written before
// stays as it was and no temporary file is left; a server whose state directory fills up goes on
// serving.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli.h"
#include "tests/server/server_util.h"
#include "tests/small_disk.h"

namespace qrwkv {
namespace {

using ::testing::HasSubstr;

const std::string kModel = test::data_path("../../models/qrwkv6-demo");

// The demo model's state file is about 200 KB: one fits in 320 KB, a second copy (the
// temporary file of a rewrite) does not.
constexpr size_t kDiskBytes = 320 * 1024;

TEST(FullDisk, StateFileKeepsThePreviousOne) {
  test::SmallDisk disk(kDiskBytes);
  if (!disk.available()) GTEST_SKIP() << "cannot mount a tmpfs: " << disk.why();
  const std::string state = disk.path("s.state");
  auto r = test::run_cli(
      {"generate-ids", "-m", kModel, "--tokens", "1 2 3", "-n", "2", "--state-out", state});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string before = test::file_bytes(state);
  ASSERT_GT(before.size(), kDiskBytes / 2);
  r = test::run_cli(
      {"generate-ids", "-m", kModel, "--tokens", "4 5 6 7", "-n", "2", "--state-out", state});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(state));
  EXPECT_THAT(r.err, HasSubstr("No space left on device"));
  EXPECT_EQ(test::file_bytes(state), before);
  EXPECT_EQ(disk.files(), 1u) << "a temporary file was left behind";
  // The state written before still continues.
  r = test::run_cli(
      {"generate-ids", "-m", kModel, "--state-in", state, "--tokens", "9", "-n", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(FullDisk, ChatSessionKeepsThePreviousOne) {
  // A session made elsewhere, then put on a disk with room for one and a half of it.
  const std::string first = test::temp_dir() + "/c.session";
  auto r = test::run_cli({"chat", "-m", kModel, "--session", first, "-n", "4", "-s", "1"},
                         "Hello there\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string before = test::file_bytes(first);
  test::SmallDisk disk(before.size() * 3 / 2);
  if (!disk.available()) GTEST_SKIP() << "cannot mount a tmpfs: " << disk.why();
  const std::string session = disk.path("c.session");
  std::filesystem::copy_file(first, session);
  r = test::run_cli({"chat", "-m", kModel, "--session", session, "-n", "4", "-s", "1"},
                    "And again\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr(session));
  EXPECT_THAT(r.err, HasSubstr("No space left on device"));
  EXPECT_EQ(test::file_bytes(session), before);
  EXPECT_EQ(disk.files(), 1u) << "a temporary file was left behind";
}

// The disk tier of the state cache on a disk too small for one state: every write fails, is
// logged, and costs the cache, not the requests.
TEST(FullDisk, ServerGoesOnWhenItsStateDirectoryIsFull) {
  test::SmallDisk disk(64 * 1024);
  if (!disk.available()) GTEST_SKIP() << "cannot mount a tmpfs: " << disk.why();
  test::ServerProcess s({"--state-dir", disk.path(""), "--state-cache-mb", "1"}, kModel);
  const int p = s.port();
  for (int i = 0; i < 12; ++i) {
    const std::string body = R"({"prompt":"Request number )" + std::to_string(i) +
                             R"( is here","max_tokens":3,"seed":1})";
    const test::HttpResponse r = test::http(p, "POST", "/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(test::http(p, "GET", "/health").status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
  EXPECT_THAT(s.log(), HasSubstr("cannot write a state"));
}

}  // namespace
}  // namespace qrwkv

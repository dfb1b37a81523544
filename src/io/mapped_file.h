// Read-only memory mapping of a whole file. Weights stay in the page cache and are shared
// between processes; nothing is copied at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qrwkv {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path` read-only; throws Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Asks the kernel to take the whole pages inside [p, p + n) out of this process's resident
// memory (madvise MADV_PAGEOUT): clean pages of a file mapping are dropped and read from the
// file again if touched, other pages are written to swap or kept; nothing is lost. Loading
// calls it on the mapped bytes of each weight it has converted, so that a checkpoint's pages do
// not stay resident next to their converted copy. Best effort: failures are ignored.
void release_pages(const void* p, size_t n);

// Memory the system can give without swapping (MemAvailable of /proc/meminfo), or 0 where it
// cannot be read.
uint64_t available_memory_bytes();

// Reads a whole (small) file into a string; throws Error naming the path on failure.
std::string read_text_file(const std::string& path);

// Writes `size` bytes to `path` atomically: the data goes to a temporary file in the same
// directory which is flushed and then renamed over `path`, so a reader never sees a
// half-written file and an existing file is never lost to a failed write. With `sync` false the
// data is not flushed to the disk before the rename: for caches, whose files a crash may leave
// damaged (they carry checksums), and whose writers must not stall on fsync.
void write_file_atomic(const std::string& path, const void* data, size_t size, bool sync = true);

// The same for a file written in pieces: the bytes go to a temporary file beside `path`, and
// commit() flushes it (with `sync`) and renames it over `path`. A writer destroyed without
// commit() (an error on the way) removes the temporary file and leaves `path` as it was.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path, bool sync = true);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void append(const void* data, size_t size);
  void append(std::string_view bytes) { append(bytes.data(), bytes.size()); }
  void commit();

 private:
  void abandon();
  std::string path_, tmp_;
  bool sync_;
  int fd_ = -1;
};

}  // namespace qrwkv

#include "agent/diagnostics/files.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace instanced::diagnostics {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kChunk = 256 << 10;

Error os_error(const fs::path& path, std::string_view doing) {
  return Error{fmt::format("{}: {}: {}", path.string(), doing, std::strerror(errno))};
}

Result<Fd> create_file(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(path, "create");
  return fd;
}

// pread until `n` bytes or the end; the bytes read.
Result<std::size_t> read_at(int fd, char* buf, std::size_t n, std::uint64_t at, const fs::path& path) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(at + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return os_error(path, "read");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

// Copies [from, from + n) of `in` to `out`, skipping up to the first newline when
// `skip_partial_line`; the bytes written.
Result<std::uint64_t> copy_range(int in, const fs::path& in_path, std::uint64_t from, std::uint64_t n, int out,
                                 const fs::path& out_path, bool& skip_partial_line) {
  std::vector<char> buf(kChunk);
  std::uint64_t written = 0;
  while (n > 0) {
    auto got = read_at(in, buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(n, buf.size())), from, in_path);
    if (!got) return got.error();
    if (*got == 0) break;
    std::string_view chunk(buf.data(), *got);
    from += *got;
    n -= *got;
    if (skip_partial_line) {
      auto nl = chunk.find('\n');
      if (nl == std::string_view::npos) continue;
      chunk.remove_prefix(nl + 1);
      skip_partial_line = false;
    }
    if (!write_all(out, chunk)) return os_error(out_path, "write");
    written += chunk.size();
  }
  return written;
}

}  // namespace

std::string cut_line(std::uint64_t left_out) {
  return fmt::format("[instanced: the {} bytes before this line were left out to keep the bundle under its cap]\n",
                     left_out);
}

Result<TailFile> TailFile::create(const fs::path& ring, std::uint64_t cap) {
  Fd fd(::open(ring.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(ring, "create");
  return TailFile(ring, std::move(fd), std::max<std::uint64_t>(cap, 1));
}

Result<void> TailFile::write(std::string_view bytes) {
  // Only the last cap_ bytes of this piece can matter.
  if (bytes.size() > cap_) {
    written_ += bytes.size() - cap_;
    bytes.remove_prefix(bytes.size() - cap_);
  }
  while (!bytes.empty()) {
    const std::uint64_t at = written_ % cap_;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), cap_ - at));
    ssize_t r = ::pwrite(fd_.get(), bytes.data(), n, static_cast<off_t>(at));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return os_error(ring_, "write");
    bytes.remove_prefix(static_cast<std::size_t>(r));
    written_ += static_cast<std::uint64_t>(r);
  }
  return {};
}

Result<std::uint64_t> TailFile::finish(const fs::path& out) {
  auto dest = create_file(out);
  if (!dest) return dest.error();
  std::uint64_t total = 0;
  bool cut = written_ > cap_;
  if (cut) {
    const std::string line = cut_line(written_ - cap_);
    if (!write_all(dest->get(), line)) return os_error(out, "write");
    total += line.size();
  }
  const std::uint64_t start = cut ? written_ % cap_ : 0;
  const std::uint64_t kept = std::min(written_, cap_);
  // The ring from `start` to its end, then from 0 up to `start`.
  auto first = copy_range(fd_.get(), ring_, start, kept - (cut ? start : 0), dest->get(), out, cut);
  if (!first) return first.error();
  total += *first;
  if (start > 0) {
    auto second = copy_range(fd_.get(), ring_, 0, start, dest->get(), out, cut);
    if (!second) return second.error();
    total += *second;
  }
  fd_.reset();
  std::error_code ec;
  fs::remove(ring_, ec);
  return total;
}

Result<Copied> copy_tail(const fs::path& from, const fs::path& to, std::uint64_t max) {
  Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!in) return os_error(from, "open");
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return os_error(from, "stat");
  if (!S_ISREG(st.st_mode)) return Error{fmt::format("{}: {}, not a regular file", from.string(), file_kind(st.st_mode))};
  auto out = create_file(to);
  if (!out) return out.error();
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // /proc files say 0 and are read to their end.
  const bool sized = size > 0;
  Copied c;
  bool cut = sized && size > max;
  if (cut) {
    c.left_out = size - max;
    const std::string line = cut_line(c.left_out);
    if (!write_all(out->get(), line)) return os_error(to, "write");
    c.bytes += line.size();
  }
  auto copied = copy_range(in.get(), from, cut ? size - max : 0, sized ? std::min(size, max) : max, out->get(), to, cut);
  if (!copied) return copied.error();
  c.bytes += *copied;
  return c;
}

Result<void> write_text(const fs::path& to, std::string_view text) {
  auto out = create_file(to);
  if (!out) return out.error();
  if (!write_all(out->get(), text)) return os_error(to, "write");
  return {};
}

Result<std::uint64_t> scrub_file(const fs::path& file, Scrubber& scrubber) {
  Fd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in) return os_error(file, "open");
  const fs::path tmp = file.string() + ".scrub";
  auto out = create_file(tmp);
  if (!out) return out.error();
  std::vector<char> buf(kChunk);
  std::uint64_t at = 0, size = 0;
  for (;;) {
    auto got = read_at(in.get(), buf.data(), buf.size(), at, file);
    if (!got) return got.error();
    if (*got == 0) break;
    at += *got;
    std::string clean = scrubber.feed(std::string_view(buf.data(), *got));
    if (!write_all(out->get(), clean)) return os_error(tmp, "write");
    size += clean.size();
  }
  std::string rest = scrubber.finish();
  if (!write_all(out->get(), rest)) return os_error(tmp, "write");
  size += rest.size();
  if (::rename(tmp.c_str(), file.c_str()) != 0) return os_error(file, "rename");
  return size;
}

Result<std::string> sha256_file(const fs::path& file) {
  Fd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return os_error(file, "open");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(kChunk);
  std::uint64_t at = 0;
  for (;;) {
    auto got = read_at(in.get(), buf.data(), buf.size(), at, file);
    if (!got) return got.error();
    if (*got == 0) break;
    at += *got;
    EVP_DigestUpdate(ctx.get(), buf.data(), *got);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

}  // namespace instanced::diagnostics

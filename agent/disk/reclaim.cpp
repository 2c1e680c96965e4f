#include "agent/disk/reclaim.hpp"

#include "common/fs.hpp"
#include "common/syscalls.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace instanced::disk {
namespace {

constexpr std::size_t kMaxListed = 10000;
constexpr int kMaxDepth = 256;

using Select = std::function<bool(const std::string&, const struct stat&)>;

// Opens `path` one component at a time with O_NOFOLLOW: a symlink anywhere on the way
// (~/.cache -> /etc) makes the root unusable instead of redirecting the rule.
Fd open_root_nofollow(const std::string& path) {
  if (path.empty() || path.front() != '/') return Fd();
  Fd fd(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::size_t pos = 1;
  while (fd && pos < path.size()) {
    std::size_t next = path.find('/', pos);
    std::string part = path.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    pos = next == std::string::npos ? path.size() : next + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return Fd();
    fd = Fd(::openat(fd.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  return fd;
}

void note_deletion(RuleReport& r, std::string path, std::uint64_t bytes) {
  ++r.files;
  r.bytes += bytes;
  if (r.deleted.size() < kMaxListed) r.deleted.push_back({std::move(path), bytes});
}

// A mount's root, also a bind mount from the same file system (same st_dev); when the
// kernel cannot tell, it is taken for one and skipped.
bool is_mount_root(int dirfd, const std::string& name) { return sys::is_mount_root(dirfd, name.c_str()).value_or(true); }

// Returns true if the directory ended up empty (everything in it was selected and deleted).
bool walk(int dirfd, const std::string& path, dev_t dev, const Select& select, bool dry_run, bool remove_empty,
          RuleReport& r, int depth) {
  if (depth > kMaxDepth) {
    ++r.errors;
    return false;
  }
  Fd listfd(::dup(dirfd));
  DIR* d = listfd ? ::fdopendir(listfd.get()) : nullptr;
  if (!d) {
    ++r.errors;
    return false;
  }
  listfd.release();  // Owned by `d` now: closedir closes it.
  bool all_gone = true;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  ::closedir(d);
  for (const auto& name : names) {
    std::string child = path == "/" ? "/" + name : path + "/" + name;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) ++r.errors, all_gone = false;
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev || is_mount_root(dirfd, name)) {  // a mount point: never entered
        all_gone = false;
        continue;
      }
      Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        ++r.errors;
        all_gone = false;
        continue;
      }
      bool empty = walk(sub.get(), child, dev, select, dry_run, remove_empty, r, depth + 1);
      sub.reset();
      if (empty && remove_empty && select(child, st)) {
        if (!dry_run && ::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
          ++r.errors;
          all_gone = false;
        }
      } else {
        all_gone = false;
      }
      continue;
    }
    if (!select(child, st)) {
      all_gone = false;
      continue;
    }
    const auto bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
    if (!dry_run && ::unlinkat(dirfd, name.c_str(), 0) != 0) {
      ++r.errors;
      all_gone = false;
      continue;
    }
    note_deletion(r, child, bytes);
  }
  return all_gone;
}

bool is_regular_or_link(const struct stat& st) { return S_ISREG(st.st_mode) || S_ISLNK(st.st_mode); }

bool ends_with(const std::string& s, std::string_view suffix) { return s.size() >= suffix.size() && s.ends_with(suffix); }

// <root>/<sub> for a home (/root), <dir>/<user>/<sub> for each user folder of a folder of
// homes (/home). Symlinked user folders are skipped.
std::vector<std::string> under_homes(const ReclaimContext& ctx, const std::string& sub) {
  std::vector<std::string> out;
  for (const auto& h : ctx.home_roots) {
    if (h == "/root") {
      out.push_back(h + "/" + sub);
      continue;
    }
    std::error_code ec;
    for (std::filesystem::directory_iterator it(h, ec), end; !ec && it != end; it.increment(ec))
      if (!it->is_symlink(ec) && it->is_directory(ec)) out.push_back(it->path().string() + "/" + sub);
  }
  return out;
}

void file_rule(RuleReport& r, const std::vector<std::string>& roots, const Select& select, bool dry_run,
               bool remove_empty) {
  for (const auto& root : roots) {
    Fd fd = open_root_nofollow(root);
    if (!fd) continue;  // absent (or reached through a symlink): nothing to do there
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0) walk(fd.get(), root, st.st_dev, select, dry_run, remove_empty, r, 0);
  }
  r.ran = true;
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Runs (or, dry, lists) commands; a failing command is an error in the report.
void command_rule(RuleReport& r, const std::vector<std::vector<std::string>>& commands, bool dry_run,
                  const ReclaimContext& ctx) {
  r.ran = true;
  for (const auto& argv : commands) {
    r.commands.push_back(join(argv));
    if (dry_run || !ctx.run_command) continue;
    auto out = ctx.run_command(argv);
    if (!out) {
      ++r.errors;
      r.note += (r.note.empty() ? "" : "; ") + out.error().message;
    } else if (out->first != 0) {
      ++r.errors;
      r.note += fmt::format("{}{} exited {}", r.note.empty() ? "" : "; ", argv.front(), out->first);
    }
  }
}

// A program the agent may run as root: it and every folder above it owned by root and
// writable by nobody else. A conda that a user installed (and could replace) is not run:
// that would hand the user root.
bool trusted_by_root(const std::string& path) {
  std::string p = path;
  for (;;) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return false;
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      if (::realpath(p.c_str(), target) == nullptr) return false;
      return trusted_by_root(target);
    }
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) return false;
    if (p == "/") return true;
    auto slash = p.find_last_of('/');
    p = slash == 0 ? "/" : p.substr(0, slash);
  }
}

std::string find_program(const ReclaimContext& ctx, const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> dirs{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"};
  dirs.insert(dirs.begin(), extra.begin(), extra.end());
  for (const auto& d : dirs) {
    std::string p = d + "/" + name;
    if (ctx.executable ? ctx.executable(p) : (::access(p.c_str(), X_OK) == 0 && trusted_by_root(p))) return p;
  }
  return {};
}

}  // namespace

void walk_and_delete(const std::string& root, const Select& select, bool dry_run, bool remove_empty_dirs,
                     RuleReport& report) {
  file_rule(report, {root}, select, dry_run, remove_empty_dirs);
}

const std::vector<std::string>& rule_names() {
  static const std::vector<std::string> names{"pip_cache", "conda_cache", "apt_archives", "journal",
                                              "tmp",       "core_dumps",  "containers",   "blob_cache"};
  return names;
}

Result<RuleReport> run_rule(const std::string& rule, const ReclaimConfig& c, bool dry_run, const ReclaimContext& ctx) {
  RuleReport r;
  r.rule = rule;
  r.dry_run = dry_run;
  auto all = [](const std::string&, const struct stat& st) { return is_regular_or_link(st) || S_ISDIR(st.st_mode); };
  auto enabled = [&](const ReclaimRule& rr) {
    if (!rr.enabled) r.note = "not enabled (disk.reclaim." + rule + ".enabled)";
    return rr.enabled;
  };
  if (rule == "pip_cache") {
    if (!enabled(c.pip_cache)) return r;
    auto roots = under_homes(ctx, ".cache/pip");
    roots.insert(roots.end(), c.pip_cache.paths.begin(), c.pip_cache.paths.end());
    file_rule(r, roots, all, dry_run, true);
  } else if (rule == "apt_archives") {
    if (!enabled(c.apt_archives)) return r;
    file_rule(r, c.apt_archives.paths,
              [](const std::string& p, const struct stat& st) { return S_ISREG(st.st_mode) && ends_with(p, ".deb"); },
              dry_run, false);
  } else if (rule == "tmp") {
    if (!enabled(c.tmp)) return r;
    const std::int64_t cutoff =
        std::chrono::duration_cast<std::chrono::nanoseconds>((ctx.now - c.tmp.older_than).time_since_epoch()).count();
    auto ns = [](const struct timespec& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; };
    // Old by every clock: not read, written or changed for older_than. Sockets, FIFOs and
    // devices are left alone (a live X11 or tmux socket may look old).
    file_rule(r, c.tmp.paths,
              [cutoff, ns](const std::string&, const struct stat& st) {
                bool kind = is_regular_or_link(st) || S_ISDIR(st.st_mode);
                return kind && ns(st.st_atim) < cutoff && ns(st.st_mtim) < cutoff && ns(st.st_ctim) < cutoff;
              },
              dry_run, true);
  } else if (rule == "core_dumps") {
    if (!enabled(c.core_dumps)) return r;
    file_rule(r, c.core_dumps.paths, [](const std::string&, const struct stat& st) { return S_ISREG(st.st_mode); },
              dry_run, false);
  } else if (rule == "blob_cache") {
    if (!enabled(c.blob_cache)) return r;
    if (c.blob_cache.paths.empty()) {
      r.note = "no paths configured (disk.reclaim.blob_cache.paths: the blob mounts' file cache folders)";
      return r;
    }
    file_rule(r, c.blob_cache.paths, all, dry_run, true);
  } else if (rule == "conda_cache") {
    if (!enabled(c.conda_cache)) return r;
    std::string conda = find_program(ctx, "conda", {"/opt/conda/bin", "/anaconda/bin", "/opt/miniconda/bin"});
    if (!conda.empty()) {
      // conda knows which extracted packages no environment uses: its own clean.
      std::vector<std::string> argv{conda, "clean", "--all", "--yes"};
      r.commands.push_back(join(argv));
      if (ctx.run_command && !dry_run) {  // a dry run runs nothing
        auto out = ctx.run_command(argv);
        if (!out || out->first != 0) ++r.errors, r.note = out ? fmt::format("conda exited {}", out->first) : out.error().message;
      }
      r.ran = true;
    } else {
      // Without conda: only the downloaded tarballs, which an installed package never needs.
      std::vector<std::string> roots = c.conda_cache.paths;
      if (roots.empty()) {
        roots = {"/opt/conda/pkgs", "/anaconda/pkgs", "/opt/miniconda/pkgs"};
        for (auto& p : under_homes(ctx, ".conda/pkgs")) roots.push_back(p);
      }
      file_rule(r, roots,
                [](const std::string& p, const struct stat& st) {
                  return S_ISREG(st.st_mode) && (ends_with(p, ".tar.bz2") || ends_with(p, ".conda"));
                },
                dry_run, false);
      r.note = "conda not found: only package tarballs";
    }
  } else if (rule == "journal") {
    if (!enabled(c.journal)) return r;
    std::string journalctl = find_program(ctx, "journalctl");
    if (journalctl.empty()) {
      r.note = "journalctl not found";
      return r;
    }
    command_rule(r, {{journalctl, "--vacuum-size=" + std::to_string(c.journal.max_size.bytes)}}, dry_run, ctx);
  } else if (rule == "containers") {
    if (!enabled(c.containers)) return r;
    std::vector<std::vector<std::string>> cmds;
    for (const char* tool : {"podman", "docker"}) {
      std::string p = find_program(ctx, tool);
      if (p.empty()) continue;
      cmds.push_back({p, "container", "prune", "--force"});
      cmds.push_back({p, "image", "prune", "--force"});  // dangling images only
    }
    if (cmds.empty()) {
      r.note = "neither podman nor docker is installed";
      return r;
    }
    command_rule(r, cmds, dry_run, ctx);
  } else {
    return Error{fmt::format("no reclaim rule '{}'; the rules are: {}", rule, fmt::join(rule_names(), ", "))};
  }
  return r;
}

}  // namespace instanced::disk

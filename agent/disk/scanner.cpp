#include "agent/disk/scanner.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <mutex>
#include <queue>
#include <set>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

#include "common/fs.hpp"

namespace instanced::disk {
namespace {

// One directory of the tree. Created by the thread that found it, filled in by the thread
// that reads it; totals are summed up after every thread has finished.
struct Node {
  Node* parent = nullptr;
  std::string name;
  std::uint64_t own = 0;  // the directory's own blocks and its non-directory entries'
  std::uint64_t own_apparent = 0;
  std::uint64_t total = 0;
  std::uint64_t total_apparent = 0;
};

std::string path_of(const Node* n) {
  std::vector<const Node*> chain;
  for (; n; n = n->parent) chain.push_back(n);
  std::string p = chain.back()->name;  // the root, as given
  for (auto it = chain.rbegin() + 1; it != chain.rend(); ++it) {
    if (p.empty() || p.back() != '/') p.push_back('/');
    p += (*it)->name;
  }
  return p;
}

struct FileHit {
  std::uint64_t bytes;
  std::uint64_t apparent;
  const Node* dir;
  std::string name;
  bool operator>(const FileHit& o) const { return bytes > o.bytes; }
};
using TopFiles = std::priority_queue<FileHit, std::vector<FileHit>, std::greater<FileHit>>;

constexpr int kIoprioClassIdle = 3;
constexpr int kIoprioClassShift = 13;
constexpr int kIoprioWhoProcess = 1;

void lower_priority() {
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  ::setpriority(PRIO_PROCESS, tid, 19);
  ::syscall(SYS_ioprio_set, kIoprioWhoProcess, static_cast<int>(tid), kIoprioClassIdle << kIoprioClassShift);
}

struct linux_dirent64 {
  ino64_t d_ino;
  off64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

class Scan {
 public:
  Scan(const ScanOptions& o, ScanProgress& p) : options_(o), progress_(p) {}

  ScanResult run(const std::string& root) {
    ScanResult r;
    r.root = root;
    struct stat st {};
    if (::lstat(root.c_str(), &st) != 0) {
      r.error = root + ": " + std::strerror(errno);
      return r;
    }
    if (!S_ISDIR(st.st_mode)) {
      r.error = root + ": not a directory";
      return r;
    }
    dev_ = st.st_dev;
    Node& top = nodes_.emplace_back();
    top.name = root;
    top.own = static_cast<std::uint64_t>(st.st_blocks) * 512;
    top.own_apparent = static_cast<std::uint64_t>(st.st_size);
    queue_.push_back(&top);
    progress_.dirs = 1;
    progress_.files = 1;

    std::vector<std::thread> threads;
    const unsigned n = std::max(1u, options_.threads);
    std::vector<TopFiles> tops(n);
    threads.reserve(n);
    for (unsigned i = 0; i < n; ++i) threads.emplace_back([this, &tops, i] { work(tops[i]); });
    for (auto& t : threads) t.join();

    // Totals bottom-up: a child is always created after its parent.
    for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
      it->total += it->own;
      it->total_apparent += it->own_apparent;
      if (it->parent) {
        it->parent->total += it->total;
        it->parent->total_apparent += it->total_apparent;
      }
    }
    r.bytes = top.total;
    r.apparent = top.total_apparent;
    r.files = progress_.files;
    r.dirs = progress_.dirs;
    r.errors = errors_;
    r.cancelled = progress_.cancel;
    r.mounts_skipped = std::move(mounts_);
    std::sort(r.mounts_skipped.begin(), r.mounts_skipped.end());

    std::vector<const Node*> dirs;
    for (const auto& node : nodes_)
      if (node.parent) dirs.push_back(&node);
    const std::size_t k = std::min(options_.top, dirs.size());
    std::partial_sort(dirs.begin(), dirs.begin() + static_cast<std::ptrdiff_t>(k), dirs.end(),
                      [](const Node* a, const Node* b) { return a->total > b->total; });
    for (std::size_t i = 0; i < k; ++i) r.top_dirs.push_back({path_of(dirs[i]), dirs[i]->total, dirs[i]->total_apparent});

    std::vector<FileHit> files;
    for (auto& t : tops)
      while (!t.empty()) files.push_back(t.top()), t.pop();
    std::sort(files.begin(), files.end(), [](const FileHit& a, const FileHit& b) { return a.bytes > b.bytes; });
    if (files.size() > options_.top) files.resize(options_.top);
    for (auto& f : files) {
      std::string p = path_of(f.dir);
      if (p.back() != '/') p.push_back('/');
      r.top_files.push_back({p + f.name, f.bytes, f.apparent});
    }
    return r;
  }

 private:
  void work(TopFiles& top) {
    if (options_.low_priority) lower_priority();
    std::vector<char> buf(64 * 1024);
    for (;;) {
      Node* dir = nullptr;
      {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return !queue_.empty() || active_ == 0 || progress_.cancel; });
        if (queue_.empty() || progress_.cancel) {
          cv_.notify_all();
          return;
        }
        dir = queue_.back();
        queue_.pop_back();
        ++active_;
      }
      read_dir(dir, buf, top);
      {
        std::lock_guard lock(m_);
        --active_;
      }
      cv_.notify_all();
    }
  }

  void read_dir(Node* dir, std::vector<char>& buf, TopFiles& top) {
    const std::string path = path_of(dir);
    Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      ++errors_;
      return;
    }
    std::vector<Node*> found;
    for (;;) {
      long n = ::syscall(SYS_getdents64, fd.get(), buf.data(), buf.size());
      if (n < 0) ++errors_;
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        auto* d = reinterpret_cast<linux_dirent64*>(buf.data() + off);
        off += d->d_reclen;
        const char* name = d->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
        struct stat st {};
        if (::fstatat(fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
          ++errors_;  // vanished meanwhile, or no permission
          continue;
        }
        const auto bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
        const auto apparent = static_cast<std::uint64_t>(st.st_size);
        if (S_ISDIR(st.st_mode)) {
          if (st.st_dev != dev_) {  // a mount point: another file system, not counted (du -x)
            std::lock_guard lock(m_);
            mounts_.push_back((path.back() == '/' ? path : path + "/") + name);
            continue;
          }
          Node* child;
          {
            std::lock_guard lock(m_);
            child = &nodes_.emplace_back();
          }
          child->parent = dir;
          child->name = name;
          child->own = bytes;
          child->own_apparent = apparent;
          found.push_back(child);
          ++progress_.dirs;
        } else {
          if (st.st_nlink > 1) {  // a hard link: its inode counts once
            std::lock_guard lock(links_m_);
            if (!links_.insert({st.st_dev, st.st_ino}).second) continue;
          }
          dir->own += bytes;
          dir->own_apparent += apparent;
          if (top.size() < options_.top) {
            top.push({bytes, apparent, dir, name});
          } else if (bytes > top.top().bytes) {
            top.pop();
            top.push({bytes, apparent, dir, name});
          }
        }
        ++progress_.files;
        progress_.bytes += bytes;
      }
      if (progress_.cancel) break;
    }
    fd.reset();
    if (!found.empty()) {
      {
        std::lock_guard lock(m_);
        queue_.insert(queue_.end(), found.begin(), found.end());
      }
      cv_.notify_all();
    }
  }

  const ScanOptions& options_;
  ScanProgress& progress_;
  dev_t dev_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Node> nodes_;  // stable addresses; appended under m_
  std::vector<Node*> queue_;
  unsigned active_ = 0;
  std::vector<std::string> mounts_;
  std::mutex links_m_;
  std::set<std::pair<dev_t, ino_t>> links_;
  std::atomic<std::uint64_t> errors_{0};
};

}  // namespace

ScanResult scan_tree(const std::string& root, const ScanOptions& options, ScanProgress& progress) {
  Scan s(options, progress);
  return s.run(root);
}

}  // namespace instanced::disk

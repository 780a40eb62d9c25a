#include "framework/lock.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "framework/error.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string hex64(uint64_t h, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return std::string(buf + 16 - digits);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string random_hex(int digits) {
  static std::mutex mu;
  static std::mt19937_64 gen{[] {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(getpid()) ^
           uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  }()};
  std::lock_guard<std::mutex> lock(mu);
  return hex64(gen(), digits);
}

// Field 22 of /proc/<pid>/stat (start time after boot, clock ticks); nullopt if no such pid.
std::optional<unsigned long long> start_time(long pid) {
  const std::string s = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto close = s.rfind(')');
  if (s.empty() || close == std::string::npos) return std::nullopt;
  std::istringstream in(s.substr(close + 1));
  std::string tok;
  for (int field = 3; field <= 22 && (in >> tok); ++field)
    if (field == 22) return std::strtoull(tok.c_str(), nullptr, 10);
  return std::nullopt;
}

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  std::string h = buf;
  for (char& c : h)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '-';
  if (h.size() > 40) h.resize(40);
  return h.empty() ? "unknown" : h;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string utc_clock(double epoch_s) {
  const std::time_t t = std::time_t(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S UTC", &tm);
  return buf;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// --- lock records

struct LockRecord {
  ProcessId owner;
  std::string nonce;
  double expires = 0;
};

std::string format_record(const LockRecord& r) {
  std::ostringstream o;
  char exp[32];
  std::snprintf(exp, sizeof exp, "%.3f", r.expires);
  o << "cachelab run lock\nhost=" << r.owner.host << "\nwhere=" << r.owner.where << "\npid=" << r.owner.pid
    << "\nstart=" << r.owner.start << "\nnonce=" << r.nonce << "\nexpires=" << exp << "\n";
  return o.str();
}

std::optional<LockRecord> parse_record(const std::string& text) {
  LockRecord r;
  int seen = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "host") r.owner.host = v, seen |= 1;
    else if (k == "where") r.owner.where = v, seen |= 2;
    else if (k == "pid") r.owner.pid = std::atol(v.c_str()), seen |= 4;
    else if (k == "start") r.owner.start = std::strtoull(v.c_str(), nullptr, 10), seen |= 8;
    else if (k == "nonce") r.nonce = v, seen |= 16;
    else if (k == "expires") r.expires = std::atof(v.c_str()), seen |= 32;
  }
  if (seen != 63) return std::nullopt;
  return r;
}

// Writes `text` to a new file (O_EXCL); returns 0 or the errno.
int write_new_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = n == ssize_t(text.size()) ? 0 : (n < 0 ? errno : ENOSPC);
  if (::close(fd) != 0 && err == 0) return errno;
  return err;
}

std::string describe_holder(const LockRecord& r) {
  const ProcessId& me = this_process();
  std::ostringstream o;
  o << "host " << r.owner.host << ", pid " << r.owner.pid;
  if (r.owner.host == me.host && r.owner.where != me.where) o << " in another PID namespace or boot";
  o << ", lease until " << utc_clock(r.expires);
  return o.str();
}

std::mutex g_space_mu;
std::string g_out_of_space;

}  // namespace

// --- processes and temporaries

const ProcessId& this_process() {
  static const ProcessId me = [] {
    ProcessId p;
    p.host = host_name();
    p.pid = long(getpid());
    // /proc must be this process's own PID namespace's (else pids read there are others').
    const std::string stat = read_text("/proc/self/stat");
    if (std::atol(stat.c_str()) == p.pid) {
      p.start = start_time(p.pid).value_or(0);
      std::error_code ec;
      const std::string ns = fs::read_symlink("/proc/self/ns/pid", ec).string();
      std::string boot = read_text("/proc/sys/kernel/random/boot_id");
      while (!boot.empty() && std::isspace(static_cast<unsigned char>(boot.back()))) boot.pop_back();
      if (!ec && !ns.empty() && !boot.empty()) p.where = hex64(fnv1a(boot + "|" + ns), 8);
    }
    return p;
  }();
  return me;
}

std::optional<ProcessId> local_process(pid_t pid) {
  auto st = start_time(long(pid));
  if (!st) return std::nullopt;
  ProcessId p = this_process();
  p.pid = long(pid);
  p.start = *st;
  return p;
}

bool owner_is_dead(const ProcessId& o) {
  const ProcessId& me = this_process();
  if (me.where.empty() || o.where != me.where || o.host != me.host || o.pid <= 0) return false;
  if (o.pid == me.pid && o.start == me.start) return false;
  const auto st = start_time(o.pid);
  return !st || *st != o.start;
}

std::string temp_path(const std::string& final_path, const ProcessId& o) {
  return final_path + ".tmp." + o.host + "." + std::to_string(o.pid) + "." + (o.where.empty() ? "0" : o.where) +
         "-" + std::to_string(o.start) + "-" + random_hex(8);
}

std::optional<ProcessId> temp_owner(const std::string& name) {
  const auto pos = name.rfind(".tmp.");
  if (pos == std::string::npos) return std::nullopt;
  const std::string rest = name.substr(pos + 5);  // host.pid.where-start-random
  const auto d2 = rest.rfind('.');
  if (d2 == std::string::npos) return std::nullopt;
  const auto d1 = rest.rfind('.', d2 - 1);
  if (d1 == std::string::npos || d1 == 0) return std::nullopt;
  ProcessId p;
  p.host = rest.substr(0, d1);
  const std::string pid = rest.substr(d1 + 1, d2 - d1 - 1), stamp = rest.substr(d2 + 1);
  const auto s1 = stamp.find('-');
  if (!all_digits(pid) || s1 == std::string::npos) return std::nullopt;
  const auto s2 = stamp.find('-', s1 + 1);
  if (s2 == std::string::npos) return std::nullopt;
  p.pid = std::atol(pid.c_str());
  p.where = stamp.substr(0, s1);
  const std::string start = stamp.substr(s1 + 1, s2 - s1 - 1);
  if (!all_digits(start) || p.where.size() != 8) return std::nullopt;
  p.start = std::strtoull(start.c_str(), nullptr, 10);
  return p;
}

int remove_dead_temporaries(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (auto owner = temp_owner(e.path().filename().string()); owner && owner_is_dead(*owner)) {
      std::error_code rm;
      n += fs::remove(e.path(), rm) && !rm;
    }
  }
  return n;
}

LeaseSettings lease_settings() {
  LeaseSettings s;
  if (const char* v = std::getenv("CACHELAB_LEASE_S"); v && *v) {
    const double lease = std::atof(v);
    CL_CHECK(lease >= 1, "CACHELAB_LEASE_S=" << v << ": give the lease in seconds, at least 1");
    s.lease_s = lease;
  }
  s.renew_s = s.lease_s / 10;
  return s;
}

// --- run locks

struct RunLock::State {
  std::string path;
  LockRecord rec;
  LeaseSettings lease;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::atomic<bool> lost{false};
  std::thread renewer;

  bool still_ours() {
    auto cur = parse_record(read_text(path));
    return cur && cur->nonce == rec.nonce;
  }
  void renew_loop() {
    std::unique_lock<std::mutex> lk(mu);
    while (!cv.wait_for(lk, std::chrono::duration<double>(lease.renew_s), [this] { return stop; })) {
      if (!still_ours()) {
        lost = true;
        std::fprintf(stderr, "warning: the lock %s was taken over by another process (this one did not renew "
                             "it in time); both may finish the run\n", path.c_str());
        return;
      }
      rec.expires = now_s() + lease.lease_s;
      const std::string tmp = temp_path(path);
      if (write_new_file(tmp, format_record(rec)) == 0 && ::rename(tmp.c_str(), path.c_str()) == 0) continue;
      ::unlink(tmp.c_str());  // a failed renewal is retried; the lease still has 9/10 to run
    }
  }
  void stop_renewing() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv.notify_all();
    if (renewer.joinable()) renewer.join();
  }
};

RunLock::RunLock(std::unique_ptr<State> s) : s_(std::move(s)) {
  s_->renewer = std::thread([st = s_.get()] { st->renew_loop(); });
}

RunLock::~RunLock() {
  if (!s_) return;
  s_->stop_renewing();
  if (!s_->lost && s_->still_ours()) ::unlink(s_->path.c_str());
}

bool RunLock::lost() const { return s_->lost; }

void RunLock::abandon() {
  s_->stop_renewing();
  s_.reset();
}

std::unique_ptr<RunLock> RunLock::try_acquire(const std::string& path, std::string* holder, const LeaseSettings& lease,
                                              const ProcessId& as) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    LockRecord rec;
    rec.owner = as;
    rec.nonce = random_hex(16);
    rec.expires = now_s() + lease.lease_s;
    // Written whole under a private name, then linked: the lock appears complete or not at all.
    const std::string tmp = temp_path(path);
    if (int err = write_new_file(tmp, format_record(rec))) {
      ::unlink(tmp.c_str());
      fail_write(path, "creating the run lock", err);
    }
    int r = ::link(tmp.c_str(), path.c_str()), err = r == 0 ? 0 : errno;
    if (r != 0 && err != EEXIST) {
      // A file system without hard links: create the lock itself exclusively.
      err = write_new_file(path, format_record(rec));
      r = err == 0 ? 0 : -1;
    }
    ::unlink(tmp.c_str());
    if (r == 0) {
      auto st = std::make_unique<State>();
      st->path = path;
      st->rec = rec;
      st->lease = lease;
      return std::unique_ptr<RunLock>(new RunLock(std::move(st)));
    }
    if (err != EEXIST) fail_write(path, "creating the run lock", err);
    const std::string text = read_text(path);
    std::error_code ec;
    const bool exists = fs::exists(path, ec);
    if (!exists) continue;  // released meanwhile
    auto cur = parse_record(text);
    bool stale = false;
    if (cur) {
      stale = owner_is_dead(cur->owner) || now_s() > cur->expires;
    } else {
      // Unreadable (being written by a file system without links): stale once older than a lease.
      struct stat sb;
      stale = ::stat(path.c_str(), &sb) == 0 && now_s() - double(sb.st_mtime) > lease.lease_s;
    }
    if (!stale) {
      if (holder) *holder = cur ? describe_holder(*cur) : "an unreadable lock file";
      return nullptr;
    }
    // Take over: move the stale lock aside (only one process can), check that it is the one
    // judged stale (not a fresh one taken meanwhile), then compete for the name again.
    const std::string aside = temp_path(path);
    if (::rename(path.c_str(), aside.c_str()) != 0) continue;
    auto moved = parse_record(read_text(aside));
    const bool same = cur ? moved && moved->nonce == cur->nonce : !moved;
    if (!same) (void)!::link(aside.c_str(), path.c_str());  // put a fresh holder's lock back
    ::unlink(aside.c_str());
  }
  if (holder) *holder = "other processes (the lock kept changing hands)";
  return nullptr;
}

// --- write failures

void fail_write(const std::string& path, const std::string& what, int err) {
  std::string reason = err ? std::strerror(err) : "write error";
  const std::string dir = fs::path(path).parent_path().string();
  const double free = free_bytes(dir.empty() ? "." : dir);
  bool space = err == ENOSPC || err == EDQUOT || err == EFBIG;
  if (!space && free == 0) space = true, reason = "no space left on device";
  if (err == EFBIG) reason += " (a file-size limit: ulimit -f)";
  if (space) {
    std::lock_guard<std::mutex> lk(g_space_mu);
    if (g_out_of_space.empty()) g_out_of_space = reason + " writing " + path;
  }
  CL_FAIL("cannot write `" << path << "` (" << what << "): " << reason);
}

std::string out_of_space() {
  std::lock_guard<std::mutex> lk(g_space_mu);
  return g_out_of_space;
}

void clear_out_of_space() {
  std::lock_guard<std::mutex> lk(g_space_mu);
  g_out_of_space.clear();
}

double free_bytes(const std::string& path) {
  struct statvfs s;
  fs::path p = fs::absolute(path);
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();  // not created yet
  if (::statvfs(p.c_str(), &s) != 0) return -1;
  return double(s.f_bavail) * double(s.f_frsize);
}

void write_text_file(const std::string& path, const std::string& text, const std::string& what) {
  const std::string tmp = temp_path(path);
  {
    std::ofstream f(tmp);
    f << text;
    CL_CHECK(f.good(), "cannot write " << what << " `" << path << "`");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace cachelab

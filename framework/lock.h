// Files that several processes share: a results folder on a cluster file system, written by
// tasks on other nodes or in other PID namespaces (a Slurm array, containers, `--jobs`).
// Torch-free.
//
// - Temporary files are named <file>.tmp.<host>.<pid>.<where>-<start>-<random>, where
//   <where> hashes this boot's id (/proc/sys/kernel/random/boot_id) and this process's PID
//   namespace (/proc/self/ns/pid) and <start> is the process's start time (clock ticks
//   after boot, /proc/<pid>/stat). A temporary is removed only when it provably belongs to
//   a dead process of this host, boot and PID namespace: its pid is gone or was reused
//   (another start time). Anything else (another node, namespace or boot, an older name)
//   is left alone.
// - A run in progress holds <run>.lock: a small text file (host, pid, where, start, nonce,
//   expiry) created atomically with link(2), renewed while the run goes on and removed when
//   it ends. Another process seeing a live lease leaves the run to its holder; an expired
//   lease (its holder stopped renewing), or one whose holder is a dead local process, is
//   taken over.
#pragma once
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

namespace cachelab {

// Who a temporary file or a lock belongs to.
struct ProcessId {
  std::string host;        // host name, with characters other than [A-Za-z0-9_-] replaced by '-'
  std::string where;       // 8 hex digits: hash of the boot id and the PID namespace
  long pid = 0;            // as seen in that namespace
  unsigned long long start = 0;  // start time, clock ticks after boot
};

// This process. `where` is empty when /proc does not show this process's own PID namespace
// (then nothing can be proven dead, and nothing is removed).
const ProcessId& this_process();
// A live process of this host and namespace, as a lock or temporary would name it (nullopt
// when `pid` does not exist).
std::optional<ProcessId> local_process(pid_t pid);
// Whether `owner` provably no longer runs: same host, boot and PID namespace as this
// process, and its pid is gone or now has another start time.
bool owner_is_dead(const ProcessId& owner);

// A fresh unique temporary name beside `final_path` (rename it onto final_path when complete).
std::string temp_path(const std::string& final_path, const ProcessId& owner = this_process());
// Writes `text` to a temporary beside `path` and renames it onto `path`: a killed process never
// leaves half a file under the name. Errors name `what` ("the schedule file") and the path.
void write_text_file(const std::string& path, const std::string& text, const std::string& what);
// The owner encoded in a temporary's file name; nullopt for names of another form.
std::optional<ProcessId> temp_owner(const std::string& file_name);
// Removes the temporaries in `dir` (not recursive) whose owner is provably dead; returns
// how many.
int remove_dead_temporaries(const std::string& dir);

// Lease length and renewal period, seconds. CACHELAB_LEASE_S sets the lease (default 300);
// it is renewed every tenth of it (30 s).
struct LeaseSettings {
  double lease_s = 300, renew_s = 30;
};
LeaseSettings lease_settings();

// One held <run>.lock, renewed by a background thread until destroyed (which removes it).
class RunLock {
 public:
  // Takes `path` unless a live lease holds it; then returns null and, when `holder` is
  // given, says who holds it ("host node3, pid 4711, lease until 12:03:04 UTC").
  static std::unique_ptr<RunLock> try_acquire(const std::string& path, std::string* holder = nullptr,
                                              const LeaseSettings& lease = lease_settings(),
                                              const ProcessId& as = this_process());
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  // Whether another process took the lock over (this one stopped renewing in time).
  bool lost() const;
  // Stops renewing and leaves the file, as a process killed by SIGKILL would (tests).
  void abandon();

 private:
  struct State;
  explicit RunLock(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// Write failures. A failed write for want of space (ENOSPC, EDQUOT, or EFBIG: a full disk,
// a quota, a file-size limit) is remembered, so a sweep stops instead of failing every
// later run the same way.
//
// Throws cachelab::Error "cannot write `path` (what): <reason>"; `err` is the errno of the
// failed call (0: unknown; then a full file system is detected with statvfs).
[[noreturn]] void fail_write(const std::string& path, const std::string& what, int err);
// The reason of the first write that failed for want of space in this process, or "".
std::string out_of_space();
void clear_out_of_space();  // a new sweep starts
// Bytes free for an unprivileged user on the file system holding `path` (-1 if unknown).
double free_bytes(const std::string& path);

}  // namespace cachelab

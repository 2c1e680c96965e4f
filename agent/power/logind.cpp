#include "agent/power/logind.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

namespace instanced::power {

// sd-bus's ABI (sd-bus(3)): opaque handles, and sd_bus_error's documented layout.
extern "C" {
struct sd_bus;
struct sd_bus_message;
struct sd_bus_slot;
struct sd_bus_error {
  const char* name;
  const char* message;
  int need_free;
};
using sd_bus_message_handler_t = int (*)(sd_bus_message*, void*, sd_bus_error*);
}

struct SdBusLogind::Api {
  void* handle = nullptr;
  int (*open_system)(sd_bus**) = nullptr;
  sd_bus* (*flush_close_unref)(sd_bus*) = nullptr;
  int (*call_method)(sd_bus*, const char*, const char*, const char*, const char*, sd_bus_error*, sd_bus_message**,
                     const char*, ...) = nullptr;
  int (*message_read)(sd_bus_message*, const char*, ...) = nullptr;
  sd_bus_message* (*message_unref)(sd_bus_message*) = nullptr;
  int (*match_signal)(sd_bus*, sd_bus_slot**, const char*, const char*, const char*, const char*,
                      sd_bus_message_handler_t, void*) = nullptr;
  int (*get_fd)(sd_bus*) = nullptr;
  int (*process)(sd_bus*, sd_bus_message**) = nullptr;
  void (*error_free)(sd_bus_error*) = nullptr;
};

struct SdBusLogind::State {
  Api api;
  sd_bus* bus = nullptr;
  std::vector<bool> received;
};

namespace {

constexpr const char* kLogin1 = "org.freedesktop.login1";
constexpr const char* kPath = "/org/freedesktop/login1";
constexpr const char* kManager = "org.freedesktop.login1.Manager";

std::string bus_error(const sd_bus_error& e, int r) {
  if (e.message) return e.message;
  if (e.name) return e.name;
  return std::strerror(r < 0 ? -r : r);
}

int on_prepare(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* s = static_cast<SdBusLogind::State*>(userdata);
  int going_down = 0;
  if (s->api.message_read(m, "b", &going_down) >= 0) s->received.push_back(going_down != 0);
  return 0;
}

}  // namespace

SdBusLogind::SdBusLogind() : s_(std::make_unique<State>()) {}

SdBusLogind::~SdBusLogind() {
  release();
  if (s_->bus) s_->api.flush_close_unref(s_->bus);
  // The library stays loaded: unloading code that may have left callbacks is not worth it.
}

Result<void> SdBusLogind::open() {
  // No bus, no library: libsystemd and what it links cost about 1 MiB resident.
  const char* address = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
  if ((!address || !*address) && access("/run/dbus/system_bus_socket", F_OK) != 0)
    return Error{"there is no system bus (/run/dbus/system_bus_socket)"};
  Api& a = s_->api;
  a.handle = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!a.handle) return Error{fmt::format("libsystemd.so.0 is not loadable: {}", dlerror())};
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.handle, name));
    return fn != nullptr;
  };
  if (!(sym(a.open_system, "sd_bus_open_system") && sym(a.flush_close_unref, "sd_bus_flush_close_unref") &&
        sym(a.call_method, "sd_bus_call_method") && sym(a.message_read, "sd_bus_message_read") &&
        sym(a.message_unref, "sd_bus_message_unref") && sym(a.match_signal, "sd_bus_match_signal") &&
        sym(a.get_fd, "sd_bus_get_fd") && sym(a.process, "sd_bus_process") && sym(a.error_free, "sd_bus_error_free")))
    return Error{"libsystemd.so.0 lacks sd-bus functions (systemd 237 or newer needed)"};
  int r = a.open_system(&s_->bus);
  if (r < 0) return Error{fmt::format("cannot connect to the system bus: {}", std::strerror(-r))};
  r = a.match_signal(s_->bus, nullptr, kLogin1, kPath, kManager, "PrepareForShutdown", on_prepare, s_.get());
  if (r < 0) return Error{fmt::format("cannot subscribe to logind's PrepareForShutdown: {}", std::strerror(-r))};
  return inhibit();
}

Result<void> SdBusLogind::inhibit() {
  if (lock_fd_ >= 0) return {};
  Api& a = s_->api;
  sd_bus_error err{nullptr, nullptr, 0};
  sd_bus_message* reply = nullptr;
  int r = a.call_method(s_->bus, kLogin1, kPath, kManager, "Inhibit", &err, &reply, "ssss", "shutdown", "instanced",
                        "report the shutdown to the control plane", "delay");
  if (r < 0) {
    std::string why = bus_error(err, r);
    a.error_free(&err);
    return Error{fmt::format("logind's Inhibit(shutdown, delay) failed: {}", why)};
  }
  int fd = -1;
  r = a.message_read(reply, "h", &fd);
  // The descriptor belongs to the message: keep a copy of our own.
  int mine = r >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
  a.message_unref(reply);
  if (mine < 0) return Error{"logind's Inhibit answered without a descriptor"};
  lock_fd_ = mine;
  return {};
}

void SdBusLogind::release() {
  if (lock_fd_ >= 0) close(lock_fd_);
  lock_fd_ = -1;
}

int SdBusLogind::fd() const { return s_->bus ? s_->api.get_fd(s_->bus) : -1; }

Result<std::vector<bool>> SdBusLogind::process() {
  for (;;) {
    int r = s_->api.process(s_->bus, nullptr);
    if (r < 0) return Error{fmt::format("the system bus connection ended: {}", std::strerror(-r))};
    if (r == 0) break;
  }
  return std::exchange(s_->received, {});
}

}  // namespace instanced::power

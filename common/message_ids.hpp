// The journal's MESSAGE_ID of each kind of record the agent writes about an event, so that
// `journalctl MESSAGE_ID=...` finds every job that finished on a fleet of machines whatever
// the message's wording. Generated once (random 128-bit ids) and never changed; listed in
// docs/logging.md, which a test keeps in step with this file.
#pragma once

#include <array>
#include <string_view>

namespace instanced::msgid {

struct Entry {
  std::string_view name;  // what the record tells (the event type of /v1/events, where it is one)
  std::string_view id;
};

inline constexpr std::string_view kAgentStarted = "f8addd42a9f94d439113b74b74957300";
inline constexpr std::string_view kAgentStopping = "37e1f7cfe86143ddb9b54aa2a5c1897f";
inline constexpr std::string_view kConfigReloaded = "56913ff6ba2246d7a711fd0a2515f6a8";
inline constexpr std::string_view kConfigReloadFailed = "dfdc0652ad134c509f61a82398373470";
inline constexpr std::string_view kScriptStarted = "fa8b004a40f44f0680fa6ee560a807f6";
inline constexpr std::string_view kScriptFinished = "e8bc2e94f56c484090d48e2aa3072a67";
inline constexpr std::string_view kJobStarted = "3f6ae59d67f04d56a002391f10070bce";
inline constexpr std::string_view kJobFinished = "4e33e87f8a5c4b9a97637ee96c5a4004";
inline constexpr std::string_view kMountStateChanged = "feb9521befe7499b968937bf81370987";
inline constexpr std::string_view kDiskStateChanged = "e2599130e35742bcbce17210f56bf8d3";
inline constexpr std::string_view kGpuXid = "d118a3548a044c73b16dc6c66aafc2be";
inline constexpr std::string_view kGpuStateChanged = "4fb3ea84632e44f0933f392589676453";
inline constexpr std::string_view kAppRestarted = "822fed526fdc49b5985f387151276457";
inline constexpr std::string_view kSshDrift = "ac9dfd43c5d14750bcf1e8b15d5d7333";
inline constexpr std::string_view kOsShutdown = "e61af804b68447a3b8cda252864bd020";
inline constexpr std::string_view kControlConnected = "37af349fda9f48b9b37e92821c6458a9";

inline constexpr std::array kAll{
    Entry{"agent_started", kAgentStarted},         Entry{"agent_stopping", kAgentStopping},
    Entry{"reloaded", kConfigReloaded},            Entry{"reload_failed", kConfigReloadFailed},
    Entry{"script_started", kScriptStarted},       Entry{"script_finished", kScriptFinished},
    Entry{"job_started", kJobStarted},             Entry{"job_finished", kJobFinished},
    Entry{"mount_state_changed", kMountStateChanged}, Entry{"path_state_changed", kDiskStateChanged},
    Entry{"xid", kGpuXid},                         Entry{"gpu_state_changed", kGpuStateChanged},
    Entry{"app_restarted", kAppRestarted},         Entry{"ssh_drift", kSshDrift},
    Entry{"os_shutdown", kOsShutdown},             Entry{"connected", kControlConnected},
};

}  // namespace instanced::msgid

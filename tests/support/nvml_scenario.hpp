// Scenarios for the fake libnvidia-ml.so.1 (tests/gpu/fake_nvml.cpp): GPUs as an H100
// reports them, written where FAKE_NVML_SCENARIO points.
#pragma once

#include <filesystem>
#include <fmt/format.h>
#include <string>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

inline std::string h100(int i) {
  return fmt::format(R"({{"uuid": "GPU-4a3b2c1d-0000-4000-8000-00000000000{0}", "name": "NVIDIA H100 80GB HBM3",
    "pci": "00000000:{1:02X}:00.0", "memory_total": 85520809984, "memory_used": 1048576000, "util": 37,
    "mem_util": 12, "temp": 41, "slowdown": 87, "shutdown": 92, "power_mw": 123456, "limit_mw": 700000,
    "reasons": 1, "ecc": true, "ecc_cv": 0, "ecc_uv": 0, "ecc_ca": 3, "ecc_ua": 0, "retired_sbe": 0,
    "retired_dbe": 0, "retired_pending": false, "remap": [0, 0, 0, 0], "replays": 2, "persistence": true}})",
                     i, 0x1b + 0x20 * i);
}

inline std::string with_gpus(int n, const std::string& extra = "") {
  std::string gpus;
  for (int i = 0; i < n; ++i) gpus += (i ? "," : "") + h100(i);
  return "{\"driver\": \"550.54.15\", \"cuda\": 12040, " + extra + "\"gpus\": [" + gpus + "]}";
}

// Replaced whole (rename), so the fake never reads half a file.
inline void write_scenario(const TempDir& dir, const std::string& text) {
  dir.write("scenario.tmp", text);
  std::filesystem::rename(dir / "scenario.tmp", dir / "scenario.json");
}

}  // namespace instanced::testing

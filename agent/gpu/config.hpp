// GPU and CUDA health settings (`gpu:`, docs/gpu.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

struct GpuConfig {
  bool enabled = true;
  std::string library = "libnvidia-ml.so.1";  // found by the dynamic loader's search (ld.so.conf, LD_LIBRARY_PATH)
  Duration interval = std::chrono::seconds(10);
  Duration call_timeout = std::chrono::seconds(5);  // an NVML call not back by then: the driver is stuck
  std::string kmsg = "/dev/kmsg";                   // where XID lines are read; empty: not read
  std::vector<std::string> cuda_roots{"/usr/local"};  // folders holding cuda-X.Y toolkits
  std::vector<std::string> include_dirs{"/usr/include", "/usr/include/x86_64-linux-gnu"};  // cudnn_version.h, nccl.h
  Duration inventory_interval = std::chrono::minutes(10);

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("library", library, check::not_empty(), check::max_length(4096));
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("call_timeout", call_timeout, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("kmsg", kmsg, check::absolute_path_or_empty());
    v("cuda_roots", cuda_roots);
    v("include_dirs", include_dirs);
    v("inventory_interval", inventory_interval, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24)));
  }
};

}  // namespace instanced

// The CUDA stack on disk: installed toolkits (version.json / version.txt), cuDNN and NCCL
// (their version headers), compared with the CUDA version the loaded driver supports.
// Reads small files only; call it off the event loop (a search path may be a mount).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace instanced::gpu {

struct Toolkit {
  std::string path;     // /usr/local/cuda-12.2
  std::string version;  // 12.2.140
};

struct CudaInventory {
  std::vector<Toolkit> toolkits;
  std::vector<std::pair<std::string, std::string>> cudnn;  // (header, version)
  std::vector<std::pair<std::string, std::string>> nccl;
  std::vector<std::string> warnings;  // a toolkit newer than the driver supports
};

// `toolkit_roots`: folders holding cuda-X.Y (and cuda) folders; `include_dirs`: where
// cudnn_version.h and nccl.h may be. `driver_cuda`: NVML's 12020 for 12.2, if known.
CudaInventory scan_cuda(const std::vector<std::string>& toolkit_roots, const std::vector<std::string>& include_dirs,
                        std::optional<int> driver_cuda);

// "12.2" from 12020.
std::string cuda_version_text(int v);

}  // namespace instanced::gpu

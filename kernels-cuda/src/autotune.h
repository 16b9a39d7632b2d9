// First-use autotuning of the block-sparse products (opt in: setAutotune, or BLOCKSPARSE_CUDA_AUTOTUNE=1 in the
// TypeScript backend). The dispatch picks a route from rules measured on a few GPUs and shapes; a training run
// calls the same products with the same shapes thousands of times, so timing every route once, on the user's own
// shapes, patterns and GPU, and keeping the fastest costs a few milliseconds once and follows no rule's error.
//
// The first call with a key (product, dtype, block shape, tokens, W's shape, stored blocks, bias, the epilogue fused
// with it, device) runs each candidate once to warm it, then times the candidates in turn, twice over, each time three
// calls between two events with the stream held until they are queued (launchHoldStream: the device's time, not the
// host's), and keeps the fastest by its better pass; it then runs the chosen route once more, so that the output of
// that call, like every later one, is the chosen route's. The timing synchronizes the stream once per candidate and
// pass. Records live in memory for the process (clearAutotune drops them; importAutotuneRecord takes those an earlier
// process saved); a route that later declines (an alignment that changed) drops its record and the default path runs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bsr_pattern.h"
#include "common.h"
#include "tc/tc.h"

namespace bs {

// What the call runs after the product, timed with it: nothing (bsrLinear, bsrMatmul, sampledMatmul), an activation
// (bsrLinearActivation: z and act(z)) or an activation's backward (bsrMatmulActivationBackward: dZ = (dY W) act'(Z) and
// the bias gradient). Part of the key: a fused call times each route with its epilogue (in the tile's own epilogue where
// the route has one, else the route and then the pass), so its choice can differ from the bare product's.
enum class TuneEpilogue : int { None = 0, Activation = 1, ActivationBackward = 2 };
const char* tuneEpilogueName(TuneEpilogue epilogue);

// One way to run a product: cuBLAS's dense product (dW: with the blocks sampled out of it; bsrLinear and bsrMatmul:
// over W's blocks scattered into a dense matrix), or the tensor-core kernels with these options.
struct TunedRoute {
  bool dense = false;
  TcOptions tc;
};
std::string tunedRouteName(tc::Op product, const TunedRoute& route);

struct TuneRecord {
  tc::Op product;
  DType dtype;
  int blockHeight, blockWidth;
  int64_t m, rows, cols;
  int32_t nnzBlocks;
  bool bias;
  TuneEpilogue epilogue;
  int device;
  TunedRoute chosen;
  std::vector<std::pair<TunedRoute, double>> timings;  // milliseconds per call of each candidate that ran
};

// Turns autotuning on or off (process-wide); returns the previous setting. Off by default.
bool setAutotune(bool on);
bool autotuneEnabled();
// Forgets every record (the next call of each shape tunes again).
void clearAutotune();
std::vector<TuneRecord> autotuneRecords();
// Adds a choice made by an earlier process (a saved cache) for the current device, its timings empty; a key this
// process has already tuned keeps its own record. Returns whether it was added. Like a tuned route, an imported one
// that declines on a later call is dropped and the default path runs.
bool importAutotuneRecord(TuneRecord record);

// Runs the product by its tuned route (see above). `candidates` lists the routes to time; it is called only on a
// key's first call, so later calls cost one lookup. `run` runs one route and returns false when it declines.
// Returns false, having left the output to the caller, when no candidate ran or the recorded route declines, and for
// a key not yet tuned while `stream` is being captured into a graph (nothing is timed then).
bool runTuned(tc::Op product, DType dtype, const BsrPatternView& pattern, int64_t m, bool bias, TuneEpilogue epilogue,
              const std::function<std::vector<TunedRoute>()>& candidates,
              const std::function<bool(const TunedRoute&)>& run, cudaStream_t stream);

}  // namespace bs

// The tile rules that take counts only (src/tc/tc_kernels.h: persistentTileRule, pingPong3ForwardTileRule) checked on
// the host: backend-cuda's tile_rules_host.test.ts compiles and runs it wherever nvcc is, GPU or not. Each rule's bounds
// (the line's length, the tile count) hold exactly where tc_kernels.h says; and on the cases measured on an H100
// (132 SMs, 2026-12-06, benchmarks/results/gpu-nvidia-h100-80gb-hbm3/three-consumers-128-few-tiles-2026-12-06.md) the
// rules take every case where their tile was 4% (the three consumers, on lines of at most 4 blocks) or 5% (the
// persistent tile) or more faster than the alternative and none where it was 2% (the three consumers) or 4% (the
// persistent tile) or more slower. A line there is the density times the blocks a row or
// column holds: what a random pattern averages.
//
//   nvcc -std=c++17 -x cu -I kernels-cuda/src kernels-cuda/test/tile_rules_host.cpp -o tile_rules_host && ./tile_rules_host
#include <cstdio>

#include "tc/tc_kernels.h"

using bs::tc::persistentTileRule;
using bs::tc::pingPong3ForwardTileRule;

namespace {

int failures = 0;
long checks = 0;

void check(bool ok, const char* what, long long a, long long b, double line) {
  ++checks;
  if (ok) return;
  if (++failures <= 20) std::printf("FAIL %s: %lld, %lld, line %.2f\n", what, a, b, line);
}

struct ForwardCase {
  long long tokens, k, n;
  double density, ratio;  // three consumers fused / the better of the dispatched tile fused and the product then the pass
};
// bsrLinear with GELU(tanh), 128x128 blocks.
constexpr ForwardCase kForward128[] = {
    {2048, 768, 3072, 0.5, 0.937},
    {2048, 768, 3072, 0.25, 0.865},
    {2048, 768, 3072, 0.1, 0.812},
    {2048, 1024, 4096, 0.5, 0.980},
    {2048, 1024, 4096, 0.25, 0.918},
    {2048, 1024, 4096, 0.1, 0.914},
    {2048, 2048, 8192, 0.5, 1.058},
    {2048, 2048, 8192, 0.25, 0.778},
    {2048, 2048, 8192, 0.1, 0.838},
    {2048, 3072, 768, 0.5, 1.087},
    {2048, 3072, 768, 0.25, 1.035},
    {2048, 3072, 768, 0.1, 0.954},
    {2048, 4096, 1024, 0.5, 1.157},
    {2048, 4096, 1024, 0.25, 1.037},
    {2048, 4096, 1024, 0.1, 0.957},
    {2048, 4096, 4096, 0.5, 1.090},
    {2048, 4096, 4096, 0.25, 0.908},
    {2048, 4096, 4096, 0.1, 0.878},
    {2048, 8192, 2048, 0.5, 1.211},
    {2048, 8192, 2048, 0.25, 1.113},
    {2048, 8192, 2048, 0.1, 1.058},
    {8192, 768, 3072, 0.5, 0.931},
    {8192, 768, 3072, 0.25, 0.833},
    {8192, 768, 3072, 0.1, 0.922},
    {8192, 1024, 4096, 0.5, 1.000},
    {8192, 1024, 4096, 0.25, 0.838},
    {8192, 1024, 4096, 0.1, 0.865},
    {8192, 2048, 8192, 0.5, 1.173},
    {8192, 2048, 8192, 0.25, 0.882},
    {8192, 2048, 8192, 0.1, 0.846},
    {8192, 3072, 768, 0.5, 1.075},
    {8192, 3072, 768, 0.25, 0.874},
    {8192, 3072, 768, 0.1, 0.805},
    {8192, 4096, 1024, 0.5, 1.252},
    {8192, 4096, 1024, 0.25, 1.136},
    {8192, 4096, 1024, 0.1, 0.877},
    {8192, 4096, 4096, 0.5, 1.224},
    {8192, 4096, 4096, 0.25, 1.081},
    {8192, 4096, 4096, 0.1, 0.864},
    {8192, 8192, 2048, 0.5, 1.498},
    {8192, 8192, 2048, 0.25, 1.235},
    {8192, 8192, 2048, 0.1, 0.928},
};

struct PersistentCase {
  bool linear;
  long long tokens, k, n;
  double density, ratio;  // the persistent tile / the default tile, 64x64 blocks
};
constexpr PersistentCase kPersistent64[] = {
    {true, 1024, 768, 3072, 0.5, 0.911},
    {true, 1024, 768, 3072, 0.25, 0.880},
    {true, 1024, 768, 3072, 0.1, 0.923},
    {true, 1024, 1024, 1024, 0.5, 0.962},
    {true, 1024, 1024, 1024, 0.25, 0.966},
    {true, 1024, 1024, 1024, 0.1, 1.000},
    {true, 1024, 1024, 4096, 0.5, 0.883},
    {true, 1024, 1024, 4096, 0.25, 0.925},
    {true, 1024, 1024, 4096, 0.1, 0.809},
    {true, 1024, 3072, 768, 0.5, 1.015},
    {true, 1024, 3072, 768, 0.25, 0.981},
    {true, 1024, 3072, 768, 0.1, 0.967},
    {true, 1024, 4096, 1024, 0.5, 1.005},
    {true, 1024, 4096, 1024, 0.25, 1.000},
    {true, 1024, 4096, 1024, 0.1, 0.986},
    {true, 2048, 768, 3072, 0.5, 0.840},
    {true, 2048, 768, 3072, 0.25, 0.840},
    {true, 2048, 768, 3072, 0.1, 0.843},
    {true, 2048, 1024, 1024, 0.5, 0.978},
    {true, 2048, 1024, 1024, 0.25, 0.958},
    {true, 2048, 1024, 1024, 0.1, 0.983},
    {true, 2048, 1024, 4096, 0.5, 0.859},
    {true, 2048, 1024, 4096, 0.25, 0.820},
    {true, 2048, 1024, 4096, 0.1, 0.800},
    {true, 2048, 3072, 768, 0.5, 1.000},
    {true, 2048, 3072, 768, 0.25, 0.986},
    {true, 2048, 3072, 768, 0.1, 0.973},
    {true, 2048, 4096, 1024, 0.5, 0.992},
    {true, 2048, 4096, 1024, 0.25, 0.970},
    {true, 2048, 4096, 1024, 0.1, 0.964},
    {true, 4096, 768, 3072, 0.5, 0.822},
    {true, 4096, 768, 3072, 0.25, 0.765},
    {true, 4096, 768, 3072, 0.1, 0.763},
    {true, 4096, 1024, 1024, 0.5, 0.895},
    {true, 4096, 1024, 1024, 0.25, 0.906},
    {true, 4096, 1024, 1024, 0.1, 0.871},
    {true, 4096, 1024, 4096, 0.5, 0.884},
    {true, 4096, 1024, 4096, 0.25, 0.771},
    {true, 4096, 1024, 4096, 0.1, 0.725},
    {true, 4096, 3072, 768, 0.5, 1.110},
    {true, 4096, 3072, 768, 0.25, 1.037},
    {true, 4096, 3072, 768, 0.1, 1.014},
    {true, 4096, 4096, 1024, 0.5, 1.057},
    {true, 4096, 4096, 1024, 0.25, 0.980},
    {true, 4096, 4096, 1024, 0.1, 0.980},
    {false, 1024, 768, 3072, 0.5, 1.007},
    {false, 1024, 768, 3072, 0.25, 0.960},
    {false, 1024, 768, 3072, 0.1, 0.955},
    {false, 1024, 1024, 1024, 0.5, 0.973},
    {false, 1024, 1024, 1024, 0.25, 0.983},
    {false, 1024, 1024, 1024, 0.1, 0.980},
    {false, 1024, 1024, 4096, 0.5, 1.029},
    {false, 1024, 1024, 4096, 0.25, 1.018},
    {false, 1024, 1024, 4096, 0.1, 0.970},
    {false, 1024, 3072, 768, 0.5, 0.936},
    {false, 1024, 3072, 768, 0.25, 0.880},
    {false, 1024, 3072, 768, 0.1, 0.857},
    {false, 1024, 4096, 1024, 0.5, 0.826},
    {false, 1024, 4096, 1024, 0.25, 0.895},
    {false, 1024, 4096, 1024, 0.1, 0.907},
    {false, 2048, 768, 3072, 0.5, 0.990},
    {false, 2048, 768, 3072, 0.25, 0.976},
    {false, 2048, 768, 3072, 0.1, 0.974},
    {false, 2048, 1024, 1024, 0.5, 0.978},
    {false, 2048, 1024, 1024, 0.25, 0.969},
    {false, 2048, 1024, 1024, 0.1, 0.964},
    {false, 2048, 1024, 4096, 0.5, 0.980},
    {false, 2048, 1024, 4096, 0.25, 0.975},
    {false, 2048, 1024, 4096, 0.1, 0.982},
    {false, 2048, 3072, 768, 0.5, 0.877},
    {false, 2048, 3072, 768, 0.25, 0.806},
    {false, 2048, 3072, 768, 0.1, 0.718},
    {false, 2048, 4096, 1024, 0.5, 0.876},
    {false, 2048, 4096, 1024, 0.25, 0.763},
    {false, 2048, 4096, 1024, 0.1, 0.699},
    {false, 4096, 768, 3072, 0.5, 1.047},
    {false, 4096, 768, 3072, 0.25, 0.991},
    {false, 4096, 768, 3072, 0.1, 0.967},
    {false, 4096, 1024, 1024, 0.5, 0.882},
    {false, 4096, 1024, 1024, 0.25, 0.844},
    {false, 4096, 1024, 1024, 0.1, 0.876},
    {false, 4096, 1024, 4096, 0.5, 1.029},
    {false, 4096, 1024, 4096, 0.25, 0.975},
    {false, 4096, 1024, 4096, 0.1, 1.030},
    {false, 4096, 3072, 768, 0.5, 0.860},
    {false, 4096, 3072, 768, 0.25, 0.761},
    {false, 4096, 3072, 768, 0.1, 0.720},
    {false, 4096, 4096, 1024, 0.5, 0.905},
    {false, 4096, 4096, 1024, 0.25, 0.752},
    {false, 4096, 4096, 1024, 0.1, 0.717},
};

}  // namespace

int main() {
  constexpr int kSms = 132;
  // The bounds, at a tile count on either side and a line on either side.
  for (int sms : {1, 78, 132, 144}) {
    // Persistent: kPersistentMinTilesPerSm tiles of 256 tokens per SM take lines up to kPersistentMaxLine, fewer up to
    // kPersistentFewTilesMaxLine.
    const long long many = bs::tc::kPersistentMinTilesPerSm * sms;  // tiles, as lines of one 256-token tile
    check(persistentTileRule(256, many, 16.0, sms), "persistent: many tiles, lines of 16", many, sms, 16.0);
    check(!persistentTileRule(256, many, 16.01, sms), "persistent: many tiles, lines past 16", many, sms, 16.01);
    check(!persistentTileRule(256, many - 1, 8.01, sms), "persistent: few tiles, lines past 8", many - 1, sms, 8.01);
    check(persistentTileRule(256, many - 1, 8.0, sms), "persistent: few tiles, lines of 8", many - 1, sms, 8.0);
    check(persistentTileRule(1, 1, 1.0, sms), "persistent: one tile, a line of 1", 1, sms, 1.0);
    // Three consumers at 64 wide: kPingPongMinTilesPerSm tiles of 256 tokens per SM, lines up to 8.
    const long long pairs = bs::tc::kPingPongMinTilesPerSm * sms;
    check(pingPong3ForwardTileRule(64, 256, pairs, 8.0, sms), "three consumers at 64: lines of 8", pairs, sms, 8.0);
    check(!pingPong3ForwardTileRule(64, 256, pairs, 8.01, sms), "three consumers at 64: lines past 8", pairs, sms, 8.01);
    check(!pingPong3ForwardTileRule(64, 256, pairs - 1, 1.0, sms), "three consumers at 64: too few tiles", pairs - 1, sms, 1.0);
    // At 128 wide: a 64-token tile per SM, lines up to 4 (here 65 tokens: two tiles per line).
    check(pingPong3ForwardTileRule(128, 64, sms, 4.0, sms), "three consumers at 128: lines of 4", sms, sms, 4.0);
    check(pingPong3ForwardTileRule(128, 65, (sms + 1) / 2, 4.0, sms), "three consumers at 128: a partial tile counts", (sms + 1) / 2, sms, 4.0);
    check(!pingPong3ForwardTileRule(128, 64, sms, 4.01, sms), "three consumers at 128: lines past 4", sms, sms, 4.01);
    check(!pingPong3ForwardTileRule(128, 64, sms - 1, 1.0, sms), "three consumers at 128: too few tiles", sms - 1, sms, 1.0);
    // Other widths and empty patterns are never taken.
    check(!pingPong3ForwardTileRule(32, 1 << 20, 1024, 1.0, sms), "three consumers at 32", 1024, sms, 1.0);
    check(!pingPong3ForwardTileRule(128, 1 << 20, 0, 0.0, sms), "three consumers without lines", 0, sms, 0.0);
  }
  check(!pingPong3ForwardTileRule(128, 1 << 20, 1024, 1.0, 0), "three consumers without SMs", 1024, 0, 1.0);
  // The measured cases.
  for (const ForwardCase& c : kForward128) {
    const double line = c.density * double(c.k / 128);
    const bool taken = pingPong3ForwardTileRule(128, c.tokens, c.n / 128, line, kSms);
    if (c.ratio <= 0.96) check(taken || line > bs::tc::kPingPong3ForwardMaxLine128, "a win on lines of at most 4 not taken", c.tokens, c.k * 100000 + c.n, line);
    if (c.ratio >= 1.02) check(!taken, "a loss taken (three consumers at 128)", c.tokens, c.k * 100000 + c.n, line);
  }
  for (const PersistentCase& c : kPersistent64) {
    const double line = c.density * double((c.linear ? c.k : c.n) / 64);
    const bool taken = persistentTileRule(c.tokens, (c.linear ? c.n : c.k) / 64, line, kSms);
    if (c.ratio <= 0.95) check(taken, "a win not taken (persistent)", c.tokens, c.k * 100000 + c.n, line);
    if (c.ratio >= 1.04) check(!taken, "a loss taken (persistent)", c.tokens, c.k * 100000 + c.n, line);
  }
  if (failures > 0) {
    std::printf("%d of %ld checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok: %ld checks\n", checks);
  return 0;
}

import { backward } from "@blocksparse/autograd";
import { disableLeakGuard, enableLeakGuard, type LeakReport, tensor } from "@blocksparse/core";
import { BlockSparseLinear, mseLoss, SGD } from "@blocksparse/nn";
import { afterEach, expect, it } from "vitest";

afterEach(() => disableLeakGuard());

it("the leak guard catches a training loop written without tidy, with no leakGuard.step() in it", () => {
  const reports: LeakReport[] = [];
  enableLeakGuard({ onLeak: (report) => reports.push(report) });
  const model = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 1 });
  const optimizer = new SGD(model.parameters(), { lr: 0.01 });
  const x = tensor(Array.from({ length: 16 }, (_, i) => i / 16), [2, 8]);
  const y = tensor(new Array(16).fill(0), [2, 8]);
  for (let step = 0; step < 80; step++) {
    optimizer.zeroGrad();
    const loss = mseLoss(model.forward(x), y); // never disposed: the leak
    backward(loss);
    optimizer.step();
  }
  expect(reports).toHaveLength(1);
  expect(reports[0].sites[0].site).toMatch(/leak_guard\.test\.ts:\d+/);
}, 60_000);

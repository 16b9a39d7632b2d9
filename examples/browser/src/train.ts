/**
 * The job both sides run: build a small block-sparse MLP, train it with Adam on a fixed synthetic
 * task, save it as safetensors bytes, load the bytes into a fresh model and check it answers the same.
 * Everything is seeded and the js backend is deterministic, so Node and a browser give the same bits.
 */
import {
  Adam,
  BlockSparseLinear,
  Linear,
  ReLU,
  Sequential,
  argmax,
  backward,
  crossEntropy,
  loadStateDict,
  randn,
  saveStateDict,
  tensor,
  tidy,
} from "@blocksparse/nn";

export interface TrainResult {
  losses: number[];
  accuracy: number;
  savedBytes: number;
  /** The reloaded model's outputs equal the trained model's, element for element. */
  reloadedMatches: boolean;
  /** The first outputs of the reloaded model, for a bit-level comparison across runtimes. */
  outputs: number[];
}

function makeModel(seed: number): Sequential {
  return new Sequential(
    new BlockSparseLinear(64, 128, { density: 0.25, blockShape: [16, 16], seed }),
    new ReLU(),
    new Linear(128, 4, { seed: seed + 1 }),
  );
}

export function trainAndReload(steps = 30): TrainResult {
  const model = makeModel(1);
  const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
  const x = randn([64, 64], { seed: 7 });
  // A learnable target: the class of a row is which quarter of its first four features is largest.
  const features = x.toArray();
  const labels = Array.from({ length: 64 }, (_, row) => {
    const first = features.slice(row * 64, row * 64 + 4);
    return first.indexOf(Math.max(...first));
  });
  const y = tensor(labels, [64], "int32");
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    optimizer.zeroGrad();
    losses.push(
      tidy(() => {
        const loss = crossEntropy(model.forward(x), y);
        backward(loss);
        return loss.item();
      }),
    );
    optimizer.step();
  }
  const predicted = tidy(() => argmax(model.forward(x), -1).toArray());
  const accuracy = predicted.filter((label, i) => label === labels[i]).length / labels.length;

  const bytes = saveStateDict(model.stateDict());
  const reloaded = makeModel(99);
  reloaded.loadStateDict(loadStateDict(bytes));
  const [trained, again] = tidy(() => [model.forward(x).toArray(), reloaded.forward(x).toArray()]);
  return {
    losses,
    accuracy,
    savedBytes: bytes.length,
    reloadedMatches: trained.length === again.length && trained.every((value, i) => Object.is(value, again[i])),
    outputs: again.slice(0, 16),
  };
}

// A CommonJS app: every package by its require entry.
const assert = require("node:assert/strict");
const { BsrMatrix } = require("@blocksparse/format");
const { decodeScipyNpz, encodeScipyNpz } = require("@blocksparse/format/npz");
const core = require("@blocksparse/core");
const { gradcheck } = require("@blocksparse/autograd");
const { BlockSparseLinear, tidy, randn } = require("@blocksparse/nn");
require("@blocksparse/nn/node");
const { BlockSparseModelPatcher } = require("@blocksparse/patcher");
const { cudaAvailability } = require("@blocksparse/backend-cuda");

const m = BsrMatrix.random([32, 32], { blockShape: [8, 8], density: 0.5, seed: 1 });
assert.equal(m.pattern.nnzBlocks, 8);
// The npz subpath shares the main entry's classes (one BsrMatrix).
assert.ok(decodeScipyNpz(encodeScipyNpz(m)) instanceof BsrMatrix);
const layer = new BlockSparseLinear(32, 16, { density: 0.5, blockShape: [8, 8], seed: 1 });
const shape = tidy(() => layer.forward(randn([2, 32], { seed: 2 })).shape);
assert.deepEqual(shape, [2, 16]);
assert.equal(typeof gradcheck, "function");
assert.ok(core.tensor([1, 2]) instanceof core.Tensor);
assert.equal(typeof BlockSparseModelPatcher, "function");
// The js-kernels subpath shares the main entry's classes: a delegated kernel's or a compute function's error is core's.
const jsKernels = require("@blocksparse/core/js-kernels");
assert.equal(jsKernels.JsBackend, core.JsBackend);
assert.equal(jsKernels.delegateToJs, core.delegateToJs);
assert.throws(() => jsKernels.matmulF32({ a: new Float32Array(1), b: new Float32Array(1), c: new Float32Array(1), m: -1, n: 1, k: 1 }), core.ShapeError);
console.log(`cjs: ok on ${core.getBackend()} (cuda: ${cudaAvailability().available ? "available" : "unavailable"})`);

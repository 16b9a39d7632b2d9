import { describe, expect, it } from "vitest";
import { browserBundle, evaluatedCode } from "../../../browser-bundle.shared.ts";

describe("browser bundles (esbuild, minified, every export kept)", () => {
  it("@blocksparse/format stays within 30 KiB gzipped and evaluates no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format"]);
    console.log(`@blocksparse/format: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(30);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  // SciPy .npz files (and their zip library) are a subpath: a bundle takes them only when it imports them.
  // 30 KiB until the .npy reader refused minor versions and read in the host's byte order, and the safetensors reader
  // refused lone surrogate escapes and its writer took the reference's layout order (29.753 before, 30.054 with them);
  // 30.06 KiB until the .npz reader checked local headers, the end record and overlapping members against the central
  // directory, read members named without .npy, bounded huge declared headers, strings and shapes, and read the shape
  // integers np.load reads, and safetensors refused what serde_json refuses (+1.44 KiB: 31.496).
  // 31.5 KiB until the safetensors writer refused a header its names and metadata alone put past 100 MB, before
  // encoding it (31.535 measured); 31.54 KiB until encodeValues / decodeValues refused unknown dtypes and wrongly typed
  // values, the Into conversions outputs of another length, divisors what is no dimension, and blockMask, zeros and
  // random what one array cannot hold (+0.19 KiB: 31.725 measured); 31.73 KiB until the safetensors writer wrote its
  // header entry by entry (integer-like names in the data's order), counted shape elements exactly, and patterns
  // refused index array-likes longer than int32 (+0.05 KiB: 31.778 measured); 31.78 KiB until a zip member that
  // inflates past its recorded size was refused in one call too, the Into conversions refused arrays of another type,
  // encodeValues values that are no numbers, and BSR contents built by hand were checked as a file's are (+0.17 KiB:
  // 31.946 measured).
  it("@blocksparse/format with its npz subpath stays within 31.95 KiB gzipped and evaluates no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format", "@blocksparse/format/npz"]);
    console.log(`@blocksparse/format + /npz: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(31.95);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  // 60 KiB until autograd took a consumer's input gradient through the activation that made its input (+0.5 KiB);
  // 61 KiB until the optimizer's multi-tensor step ran in place (multiTensorAdamUpdateInPlace, +0.5 KiB); 62 KiB
  // until Adam could count its steps on the device for a captured whole step (`capturable`, +0.8 KiB); 63 KiB until
  // the fused attention (scaledDotProductAttention: its op, js kernels and gradient rule, +1.7 KiB); 64.5 KiB until
  // the js kernels' strided reads walked rows instead of per-element offsets (walkRows: transposes and broadcasts
  // 1.35x faster on cpu, +0.3 KiB); 65 KiB until core's indexCopy and cachedAttention (decoding over a cache of
  // fixed length, captured: their ops and js kernels, 65.2 KiB measured); 68 KiB until the input checks of repeated
  // safetensors keys, random patterns over 2^31 blocks, optimizer gradients of the wrong shape or dtype and optimizer
  // state kept across module.to(dtype) (68.7 KiB measured); 69 KiB until optimizers saved and loaded their state
  // (Optimizer.stateDict/loadStateDict, saveOptimizerState/loadOptimizerState, +1.3 KiB: 70.1 KiB measured); 70.5 KiB
  // until core's null options, rand's bounds and js's OutOfMemoryError (70.5 KiB measured; 70.99 with nn's to() moving
  // gradients and core's tidy walking results at any depth, rand's cap below 1 and exact int32 sums); 71 KiB until
  // format's checks of seeds, std, null matrices and npz members and autograd's null seeds (70.997 KiB measured); 72 KiB
  // until optimizer state dicts named the state no step has written yet (`fresh`) and GradScaler's state carried its
  // schedule (72.06 KiB measured before them, 72.38 with them); 72.4 KiB until SparseOptimizer saved and loaded its
  // state (stateDict/loadStateDict with their checks, +0.44 KiB: 72.41 measured before, 72.85 with it); 72.9 KiB until
  // format read and wrote the newer safetensors dtypes (F8_E8M0, the FNUZ eights, C64, the packed F4/F6), null
  // metadata, F64 BSR values and a header-size check (+0.2 KiB: 73.05 measured); 73.1 KiB until crossEntropy took a
  // class as ignoreIndex (+0.06 KiB: 73.11 measured); 73.2 KiB until nn's fixes for -inf teacher logits, unscale in a
  // scope and to("int32") (73.18 measured), format's npz integer data and CSR parts, and autograd's refusal of an output
  // written before an op read it (tensor versions, InPlaceWriteError: 73.7 measured); 73.8 KiB until distillationLoss
  // took an ignoreIndex (+0.14 KiB: 73.84 measured); 73.9 KiB until pattern moves left stale optimizer state alone and
  // took a master copy again from replaced weights (Optimizer.syncMaster, +0.12 KiB: 73.963 measured); 74.0 KiB until
  // core refused unknown option keys (each op's list of names, +0.23 KiB) and where() named each input's shape (74.27
  // measured with them); 74.3 KiB until autograd's reachableLeaves (data-parallel training's count of the parameters a
  // loss leaves out), optimizers' refusal of unknown options, a pattern move after module.to(another backend), and
  // format's message for a safetensors offset past 2^53 (74.466 measured); 74.5 KiB until every options object of nn
  // refused unknown names (layers, losses, pruneAndRegrow, SparseOptimizer, loadStateDict, Module.to: one optionsArg
  // call each, +0.2 KiB: 74.693 measured) and core's js-kernels compute functions joined its main entry; 74.75 KiB until
  // autograd refused unknown backward/gradcheck options, named noGrad's and detach's bad arguments, refused an eps that
  // moves nothing and told a captured forward's replay apart from a write in place (+0.16 KiB: 74.849 measured); 74.9 KiB
  // until Tensor.to and indexCopy carried gradients (the engine's Move kernel, indexCopy recorded as an in-place write
  // with its rule, the tape's per-tensor backend) and int32 tensors refused requiresGrad (+0.62 KiB: 75.470 measured);
  // 75.5 KiB until format refused unknown option keys and masks of other than 0 / 1 (+0.24 KiB: 75.706 measured); 75.8
  // KiB until RigL's gradient pass put back other leaves' gradients, zerosLike kept its input's backend and rand refused
  // bounds past its dtype (+0.16 KiB: 75.863 measured); 76.0 KiB until pruneAndRegrow checked x / dy against the layer,
  // the layers and core's random ops named a seed that is not a safe integer, matmul refused non-boolean flags,
  // reduceToShape named both shapes and autograd refused requiresGrad = false on an op's output (+0.7 KiB: 76.62
  // measured), and format refused misspelt torch / scipy keys and metadata Maps (76.8 measured); 77.0 KiB until format
  // refused a missing dtype and two conflicting ones, a module in a dropout's place or a replaced attention / MLP kept
  // its part of a TransformerBlock (the residual added when the branch does not fuse it), and stack and arange named
  // themselves in their errors (+0.12 KiB: 77.025 measured); since then, format refused metadata keys a matrix writes
  // and an empty matrix name, core checked keepDims as a boolean and took a null gamma / beta, nn named an Embedding's
  // index out of range, took LayerNorm([n]) and quoted values in its messages (77.203 measured); 77.25 KiB until
  // setPattern checked newValues' shape and dtype, SparseOptimizer.attachOptimizer refused a non-Optimizer and
  // autograd's reachableLeaves refused what backward refuses (+0.09 KiB: 77.290 measured); 77.4 KiB until format
  // widened 16-bit floats and transposed float32 matrices bit for bit (signaling NaNs kept), named values from files
  // without serialising them whole, and the optimizers took a master copy again after an in-place write or a load
  // after a backend move (+0.11 KiB: 77.400 measured), SparseOptimizer left frozen layers alone, and core's messages
  // never serialised an argument and zerosLike / onesLike checked theirs (77.468 measured); 77.55 KiB until Embedding
  // took torch's paddingIdx (its check, the fresh row zeroed, the lookup's gradient stopped: +0.23 KiB, 77.781 measured);
  // 77.79 KiB until full refused finite values past a float dtype's range and crossEntropy a target of -2^31 beside a
  // class as ignoreIndex, and SparseOptimizer named a single layer its closure missed (77.849 measured); 77.85 KiB until
  // full compared the float32 a half dtype is rounded from with its limit (77.853 measured); 77.86 KiB until autograd
  // refused a .grad on another backend than its leaf by name and kept rsqrt's gradient in range (77.865 measured); 77.88
  // KiB until format's fromDense refused entries that are not numbers and kept a Float32Array's bits, and toDense named
  // a shape too large for one array (77.982 measured in a clean build); 77.96 KiB until fromLinear drew the pattern of a
  // zero or constant weight, net of loadStateDict refusing a block-sparse entry for a dense parameter (78.013 measured);
  // 78.02 KiB until clipGradNorm took torch's norm_type and error_if_nonfinite, GradScaler.update its new scale,
  // zeroGrad set_to_none=False and Optimizer.step a closure (78.396 measured); 78.40 KiB until a number a half dtype
  // holds as a subnormal joined in float32 and core's argument errors quoted what was passed (78.462 measured); 78.47
  // KiB until core checked requiresGrad, registerBackend, observers, tensorOn's values and the leak guard's options where
  // they are given and took a scalar's axes 0 and -1, and nn took Dropout(1), kept a Parameter a leaf and checked its
  // boolean options (79.407 measured); 79.41 KiB until autograd kept blockNorms' and rstd's gradients in range,
  // TransformerBlock refused a mask it would ignore and core printed -0 and large whole floats as torch (79.466 measured);
  // 79.47 KiB until nn gained its learning-rate schedulers (+3.2 KiB), a module held in two places had entries under both
  // names, format's SeededRandom used a seed's every bit and autograd counted max/min ties in int32 (82.786 measured);
  // 82.79 KiB until core named a tensor()'s bad entry and refused a backwards arange, autograd checked registerGradient's
  // saved lists, and nn's BlockSparseLinear took forwardResidual and its block helpers checked their arguments (83.567);
  // 83.57 KiB until the js backend converted halves into per-kernel scratch through format's *Into conversions (83.836);
  // 83.84 KiB until forwardResidual checked its residual, TransformerBlock named a bad mlpRatio, distillationLoss checked
  // its targets at alpha 1, pruneAndRegrow kept a pattern no block left and BsrPattern.equals took a non-pattern (84.034);
  // 84.04 KiB until crossEntropy took labelSmoothing (84.138 measured);
  // 84.14 KiB until nn gained torch's losses (nllLoss, the binary cross-entropies, l1/smoothL1/huber, klDiv; +1.6 KiB),
  // crossEntropy took weight and class probabilities, cachedAttention was recorded without a gradient, toString read
  // only the values it shows, Sequential and Parameter checked what they own and autograd rounded half means once (86.610);
  // 86.62 KiB until MLP named its widths and the js Sum/Mean added leading and trailing runs in place (86.758);
  // 86.76 KiB until core's checks saw holes in arrays and arange checked a half dtype's range, autograd checked
  // inputsToSave names and Linear/BlockSparseLinear refused a plain Tensor in a parameter slot (87.168);
  // 87.17 KiB until LayerNorm and Embedding refused one too (87.181); 87.19 KiB until core exported adamKernels (87.221);
  // 87.23 KiB until the module walks checked the declared parameter slots, fromLinear refused a non-finite weight, the
  // safetensors writer refused lone surrogates and Adam's decoupledWeightDecay had to be a boolean (87.661);
  // 87.67 KiB until nn gained skipInit, format's fillNormal kept its state in locals, the optimizers ran with their
  // checked settings and GradScaler.scale refused a capture (87.961); 87.97 KiB until tanh's gradient computed in
  // float32 for half inputs (87.978); 87.98 KiB until skipInit refused async builds, Module gained apply and train()
  // called each child's, loadStateDict and ModuleList named what they refuse and nn exported dropsNothing (88.335);
  // 88.34 KiB until core exported cachedAttentionWrites (88.375); 88.38 KiB until the optimizers took parameter groups
  // (with their schedulers and state dicts), format's safetensors reader refused float-written offsets and
  // byte-order marks and core's bsrMatmul checked its column view (91.261); 91.27 KiB until nn gained ModuleDict and
  // per-group scheduler options and autograd refused assigns that would cut a gradient (92.649); 92.65 KiB until core's
  // tensor() refused a shape other than its nested arrays' (92.703) and a captured optimizer step's replays checked
  // its groups and options (core's addReplayCheck, 92.950); 92.95 KiB until format's safetensors reader refused lone
  // surrogate escapes and said why a dimension past 2^53 - 1 is refused, and its writer took the reference's layout
  // order (93.167); 93.17 KiB until nn gained clipGradValue (93.215); 93.22 KiB until ReduceLROnPlateau took a
  // one-element tensor as its metric and a minLr per parameter group (+0.11 KiB: 93.322); 93.33 KiB until loadStateDict
  // called a block-sparse entry for a dense parameter a layout mismatch and said how to load it (+0.14 KiB: 93.458);
  // 93.46 KiB until core's importBackendModules said that a module imported before registers nothing again (93.487);
  // 93.49 KiB until core's ops took a null axes or axis as their default (+0.008 KiB: 93.495); 93.50 KiB until
  // namedChildren listed a child held twice once (Module.childSlots) and a disabled GradScaler saved {} (+0.11: 93.606);
  // 93.61 KiB until fromLinear drew the pattern of any weight whose blocks all tie in norm, +-c included (+0.064);
  // 93.68 KiB until format's safetensors reader refused the headers the reference's JSON parser refuses (nested 128
  // deep, a number past float64: +0.19 KiB, 93.838); 93.84 KiB until a captured step refused its replay after a
  // BlockSparseLinear's pattern moved and SparseOptimizer skipped the gradient pass of an update moving no block (+0.13;
  // 94.056 measured, with format's early refusal of oversized safetensors headers and core's count of the tensors a
  // collected output's tape frees, +0.07 the limit had not taken); 93.97 KiB until optimizers, clipGradNorm,
  // clipGradValue and GradScaler refused disposed parameters (+0.26 KiB: 94.317); 94.32 KiB until pattern moves took a
  // list of optimizers, refused one holding none of the moved layer's parameters and setPattern named newValues on
  // another backend (+0.254 KiB: 94.558 measured); 94.58 KiB until core's bsrLinear took a residual (its options, checks
  // and the js kernel's add) and BlockSparseLinear.forwardResidual ran it as one kernel, its three forwards sharing
  // their checks (+0.142 KiB: 94.700 measured); 94.71 KiB until SparseOptimizer's gradient regrowth recorded a layer
  // called through forwardResidual (+0.022 KiB); 94.73 KiB until format refused unknown dtypes and wrongly typed values
  // in encodeValues / decodeValues, outputs of another length in the Into conversions, divisors of what is no dimension
  // and masks and values past one array, and core refused a backend named otherwise than it is registered and objects
  // that are no Backend where one is asked for (+0.34 KiB: 95.066 measured); 95.11 until the js GELU(tanh) computed its
  // gate as a logistic (95.106 measured); 95.15 until SparseOptimizer moved a tied weight once, OneCycleLR's linear
  // anneal took step totalSteps, a refused SequentialLR load put the optimizer's lr back, core refused a backend name
  // that is no string, and format's writer and pattern checks above (+0.15 KiB: 95.296 measured); 95.3 until
  // Module.toString printed a module held by its own descendant without entering it again (95.317 measured) and
  // format's checks of 31.95 KiB above (+0.11 KiB: 95.429 measured); 95.43 until Module.to named the dtype meant by
  // "half", "bf16", "float" and the like (+0.09 KiB: 95.521 measured); 95.53 until Linear and BlockSparseLinear named
  // themselves for an input of another dtype than their weight (+0.09 KiB: 95.608 measured); 95.61 until a backend's
  // compute could read half weights as stored (ProductCompute's optional bsrLinearHalf and linearHalf) and the js
  // backend converted halves through methods a subclass replaces (widenHalf, roundHalf; +0.1 KiB: 95.706 measured); 95.71
  // until the block-sparse ops named what came in the pattern's place (+0.04 KiB: 95.744 measured); 95.75 until the js
  // backend rounded an optimizer's low-precision copies straight into their buffers (storeFloats, +0.08 KiB: 95.824);
  // 95.83 until Cast converted straight into its output (floatsInto, +0.09 KiB: 95.909 measured).
  it("format + core + autograd + nn stay within 95.91 KiB gzipped and evaluate no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format", "@blocksparse/core", "@blocksparse/autograd", "@blocksparse/nn"]);
    console.log(`format + core + autograd + nn: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(95.91);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  it("the eval check finds code evaluated from a string", () => {
    expect(evaluatedCode('a=1;const f=new Function("return 1");b.eval();class M{eval(){}};eval("2")')).toHaveLength(2);
  });

  it("the Node-only entry names its Node built-ins instead of bundling for a browser", async () => {
    await expect(browserBundle(["@blocksparse/nn/node"])).rejects.toThrow(/node:/);
  }, 60_000);
});

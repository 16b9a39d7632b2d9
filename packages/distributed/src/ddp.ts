import { createHash } from "node:crypto";
import { addGradReadyObserver, backward, noGrad, reachableLeaves } from "@blocksparse/autograd";
import { assertBoolean, type Backend, BsrPattern, bytesPerElement, concat, fullOn, gather, keep, optionsArg, reshape, slice, type Tensor, tensorOn, tidy, ValueError } from "@blocksparse/core";
import { BlockSparseLinear, blockSources, type LossClosure, Module, type Parameter, type PatternMove, SparseOptimizer, type SparseOptimizerState } from "@blocksparse/nn";
import { type SaveOptions, save } from "@blocksparse/nn/node";
import { DistributedError, GradientMismatchError, ReplicaDivergenceError, type ScheduleDifference, ScheduleMismatchError } from "./errors";
import type { ProcessGroup } from "./process_group";

export interface DistributedDataParallelOptions {
  /** Gradient bytes per all-reduce (default 25 MiB, as PyTorch): fewer, larger collectives. The same on every rank (backward checks). */
  bucketBytes?: number;
  /** Start every bucket's all-reduce as soon as backward has its gradients (default true); false reduces after backward. */
  overlap?: boolean;
  /** Copy rank 0's patterns and parameters to every rank at creation (default true). */
  broadcastParameters?: boolean;
}

/** A run of parameters whose gradients are reduced together (one dtype). */
interface Bucket {
  parameters: Parameter[];
  /** Parameters whose gradient backward has completed. */
  ready: number;
}

/** A bucket's all-reduce in flight: its gradients flattened into `flat`, and which of them this rank held. */
interface Reduction {
  bucket: Bucket;
  flat: Tensor;
  /** Per parameter: whether it had a gradient on this rank (else its part of `flat` is zeros). */
  held: boolean[];
  reduced: Promise<void>;
}

const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;

/** Each pattern's digest for the ranks' agreement check, hashed once per pattern (patterns do not change). */
const PATTERN_DIGESTS = new WeakMap<BsrPattern, number>();

/**
 * What decides a SparseOptimizer's moves, as the ranks compare it: its calls so far and its options. Not its seed:
 * rank 0 draws the moves, and a seed left to the default differs between ranks.
 */
const SCHEDULE_SETTINGS = ["calls", "every", "totalSteps", "fraction", "schedule", "regrow", "newBlocks", "scale"] as const;

/** The settings whose values are names, each name gathered as its index here. */
const SCHEDULE_CHOICES: Readonly<Record<string, readonly string[]>> = {
  schedule: ["constant", "cosine"],
  regrow: ["random", "gradient"],
  newBlocks: ["zeros", "normal"],
} satisfies { [K in "schedule" | "regrow" | "newBlocks"]: readonly SparseOptimizerState["options"][K][] };

/** What movePatterns' where-clause says. */
const MOVE_PATTERNS = "DistributedDataParallel.movePatterns";

/** The flat block positions (blockRow * blockCols + blockCol) a pattern holds, in its block order. */
function flatBlocks(pattern: BsrPattern): Int32Array {
  const { blockRow, blockCol } = pattern.coordinates;
  return Int32Array.from(blockRow, (row, k) => row * pattern.blockCols + blockCol[k]);
}

/** A digest of a pattern's grid and block positions (never 0), hashed once per pattern. */
function patternDigest(pattern: BsrPattern): number {
  let digest = PATTERN_DIGESTS.get(pattern);
  if (digest === undefined) {
    digest = digest32(Int32Array.from([...pattern.shape, ...pattern.blockShape]), flatBlocks(pattern)) || 1;
    PATTERN_DIGESTS.set(pattern, digest);
  }
  return digest;
}

function difference(a: Int32Array, b: Int32Array): Int32Array {
  const inB = new Set(b);
  return a.filter((flat) => !inB.has(flat)).sort();
}

/**
 * Data-parallel training: every rank holds a replica of `module`, runs it on its own part of
 * the batch, and gets the gradients averaged over all ranks, so that each optimizer step is
 * the step of one model on the combined batch. At creation, rank 0's block-sparse patterns
 * and parameters are copied to every rank. Gradients are all-reduced in buckets of about
 * `bucketBytes`, each started from a gradient-ready hook of autograd as soon as backward has
 * finished its parameters (in a fixed bucket order, so that every rank calls the same
 * collectives). Pattern moves are decided by rank 0 and copied to the others
 * (`movePatterns`), so the replicas never diverge; `save` writes a checkpoint from rank 0.
 *
 * Create it with `await DistributedDataParallel.create(model, group)`, before the optimizer.
 */
export class DistributedDataParallel extends Module {
  /** The wrapped model (its state dict has no "module." prefix). */
  readonly module: Module;
  readonly #group: ProcessGroup;
  readonly #bucketBytes: number;
  readonly #overlap: boolean;
  /**
   * Per SparseOptimizer given to movePatterns, in the order of their first calls: the count of its calls that the ranks
   * last agreed on (movePatterns' first call with it, then each backward), plus movePatterns' calls since. The same on
   * every rank, so each call decides from it whether to move: a count changed on some ranks only (a state loaded, or
   * sparse.step called, there) cannot send one rank into a move the others skip; it is found at the next collective.
   */
  readonly #agreedCalls = new Map<SparseOptimizer, number>();
  #requireGradSync = true;
  /**
   * The parameters the ranks last agreed on: the model's when `create` wrapped it, or when `broadcastParameters` last
   * copied rank 0's. One added or replaced since (`model.head = new Linear(...)` after wrapping) holds values of its
   * rank's own: `backward` refuses it on every rank, instead of averaging its gradients into replicas that differ.
   */
  #wrapped = new WeakSet<Parameter>();

  private constructor(module: Module, group: ProcessGroup, bucketBytes: number, overlap: boolean) {
    super();
    this.module = module;
    this.#group = group;
    this.#bucketBytes = bucketBytes;
    this.#overlap = overlap;
  }

  /** Wraps `module` for training over `group`; every rank must call it (it copies rank 0's parameters unless told not to). */
  static async create(module: Module, group: ProcessGroup, options: DistributedDataParallelOptions = {}): Promise<DistributedDataParallel> {
    if (!(module instanceof Module)) throw new ValueError(`DistributedDataParallel: module must be a Module, got ${module === null ? "null" : typeof module}`);
    if (group === null || typeof group !== "object" || typeof group.allReduce !== "function" || typeof group.broadcast !== "function") {
      throw new ValueError("DistributedDataParallel: group must be a ProcessGroup (from initProcessGroup)");
    }
    options = optionsArg("DistributedDataParallel", options, ["bucketBytes", "overlap", "broadcastParameters"]);
    const bucketBytes = options.bucketBytes ?? DEFAULT_BUCKET_BYTES;
    if (!(Number.isFinite(bucketBytes) && bucketBytes > 0)) throw new ValueError(`DistributedDataParallel: bucketBytes must be a positive number, got ${String(bucketBytes)}`);
    // A truthy non-boolean ("false", "no") turned the option on without a word: `broadcastParameters: "false"` still broadcast.
    for (const name of ["overlap", "broadcastParameters"] as const) if (options[name] !== undefined) assertBoolean("DistributedDataParallel", name, options[name]);
    if (module.parameters().length === 0) throw new ValueError("DistributedDataParallel: the module has no parameters");
    const ddp = new DistributedDataParallel(module, group, bucketBytes, options.overlap ?? true);
    if (options.broadcastParameters ?? true) await ddp.broadcastParameters();
    else ddp.#wrapped = new WeakSet(module.parameters());
    return ddp;
  }

  get group(): ProcessGroup {
    return this.#group;
  }

  forward(...inputs: unknown[]): Tensor {
    return this.module.forward(...inputs);
  }

  /**
   * Whether `backward` averages the gradients over the ranks (default true): torch's
   * `require_backward_grad_sync`. `noSync` turns it off for the length of a callback; set it by
   * hand where a callback does not fit (`ddp.requireGradSync = (microBatch + 1) % k === 0`). Every
   * rank must set it alike: a rank that reduces while another does not calls collectives the other
   * never calls (on the CPU group, a CollectiveError naming both calls; with NCCL, a hang).
   */
  get requireGradSync(): boolean {
    return this.#requireGradSync;
  }

  set requireGradSync(value: boolean) {
    if (typeof value !== "boolean") throw new ValueError(`DistributedDataParallel.requireGradSync must be a boolean, got ${value === null ? "null" : typeof value}`);
    this.#requireGradSync = value;
  }

  /**
   * Runs `fn` with gradient averaging off, for gradient accumulation (torch's `ddp.no_sync()`):
   * `backward` inside it is autograd's backward alone (no agreement check, no bucket, no
   * collective), so the micro-batches' gradients add up locally, and the first `backward` outside
   * it averages the sums. Returns what `fn` returns; when that is a promise, averaging stays off
   * until it settles. `requireGradSync` is then restored to its value before the call (so calls
   * nest), also when `fn` throws or its promise rejects. The setting belongs to this wrapper, not
   * to `fn`'s async context: a `backward` of the same wrapper running meanwhile elsewhere does not
   * communicate either. `allReduceGradients` is an explicit request and reduces in any case.
   */
  noSync<T>(fn: () => T): T {
    if (typeof fn !== "function") throw new ValueError(`DistributedDataParallel.noSync: fn must be a function, got ${fn === null ? "null" : typeof fn}`);
    const previous = this.#requireGradSync;
    this.#requireGradSync = false;
    let result: T;
    try {
      result = fn();
    } catch (error) {
      this.#requireGradSync = previous;
      throw error;
    }
    if (!isPromiseLike(result)) {
      this.#requireGradSync = previous;
      return result;
    }
    const restore = () => {
      this.#requireGradSync = previous;
    };
    return result.then(
      (value) => {
        restore();
        return value;
      },
      (error: unknown) => {
        restore();
        throw error;
      },
    ) as T;
  }

  /**
   * Backward from `loss` (this rank's loss on its part of the batch), then every gradient
   * averaged over the ranks. With `overlap` (default), buckets are all-reduced while backward
   * runs. A parameter with a gradient on some ranks only counts as zeros on the others, so that
   * every rank reduces the same buckets; one with a gradient on no rank keeps none (the optimizer
   * skips it, as torch's DDP leaves it). A parameter frozen (`requiresGrad` false) on some ranks
   * only is a GradientMismatchError on every rank, and block-sparse patterns that differ between
   * ranks (moved by `sparse.step` on each rank instead of `movePatterns`) a ReplicaDivergenceError
   * naming the layer, both before backward runs (the ranks first compare which parameters take
   * gradients and digests of their patterns, in one small allGather). Gradients accumulated by earlier
   * plain `backward` calls or inside `noSync` (micro-batches) are included: only this call
   * communicates. Inside `noSync`, this is autograd's backward alone.
   */
  async backward(loss: Tensor, grad?: Tensor): Promise<void> {
    if (!this.#requireGradSync) {
      backward(loss, grad);
      return;
    }
    // Parameters this backward leaves without a gradient: held none before and not in loss's graph.
    const reached = reachableLeaves(loss);
    const buckets = this.#planBuckets();
    const exchange = await this.#checkGradientAgreement(
      "DistributedDataParallel.backward",
      this.#unusedCount((parameter) => reached.has(parameter.value)),
      buckets,
    );
    if (!this.#overlap) {
      backward(loss, grad);
      await this.#finishReductions(this.#startReductions(buckets), exchange);
      return;
    }
    const bucketOf = new Map<Tensor, Bucket>();
    for (const bucket of buckets) for (const parameter of bucket.parameters) bucketOf.set(parameter.value, bucket);
    const launched: Reduction[] = [];
    // Buckets start in index order only: every rank then calls the same collectives in the same order.
    const launchReady = () => {
      while (launched.length < buckets.length && buckets[launched.length].ready === buckets[launched.length].parameters.length) {
        launched.push(this.#startReduction(buckets[launched.length]));
      }
    };
    const stop = addGradReadyObserver((leaf) => {
      const bucket = bucketOf.get(leaf);
      if (bucket === undefined) return;
      bucket.ready++;
      launchReady();
    });
    try {
      backward(loss, grad);
    } catch (error) {
      this.#abandon(launched);
      throw error;
    } finally {
      stop();
    }
    await this.#finishReductions(this.#startReductions(buckets, launched), exchange);
  }

  /**
   * Averages the gradients already computed (by plain `backward` calls) over the ranks, as `backward`
   * does (a parameter with a gradient on no rank keeps none); checks first that the ranks freeze the
   * same parameters and hold the same patterns. It reduces inside `noSync` too: it is asked for.
   */
  async allReduceGradients(): Promise<void> {
    const buckets = this.#planBuckets();
    const exchange = await this.#checkGradientAgreement("DistributedDataParallel.allReduceGradients", this.#unusedCount(() => false), buckets);
    await this.#finishReductions(this.#startReductions(buckets), exchange);
  }

  /** Copies rank 0's block-sparse patterns, then its parameters, to every rank. */
  async broadcastParameters(): Promise<void> {
    const patterns = await this.#broadcastPatterns();
    noGrad(() => {
      for (const [layer, pattern] of patterns) if (!pattern.equals(layer.pattern)) layer.setPattern(pattern);
    });
    await this.#checkLayouts("DistributedDataParallel.broadcastParameters");
    const parameters = this.module.parameters();
    await Promise.all(parameters.map((parameter) => this.#group.broadcast(parameter.value, 0)));
    this.#wrapped = new WeakSet(parameters);
  }

  /**
   * One call of `sparse.step(loss)`, decided by rank 0 and copied to every rank: rank 0 moves
   * its patterns (with `loss`, its closure for gradient regrowth), the others count the call
   * and take rank 0's patterns and the values of the blocks they add; the attached
   * optimizer's state follows on every rank. Every rank must call it where it would call
   * `sparse.step`. Returns the moves, the same on every rank.
   *
   * Every rank's SparseOptimizer must have the same schedule: its options (the seed aside) and calls so far. The first
   * call with a SparseOptimizer compares them in one allGather; from then on, whether a call moves is decided from the
   * count the ranks agreed on, and each move's first collective and every `backward` compare the schedules again, so
   * that schedules that differ or drift apart are a ScheduleMismatchError on every rank, never one rank waiting in a
   * move the others skip. Calls that do not move call no collective.
   */
  async movePatterns(sparse: SparseOptimizer, loss?: LossClosure): Promise<Map<BlockSparseLinear, PatternMove>> {
    if (!(sparse instanceof SparseOptimizer)) throw new ValueError(`${MOVE_PATTERNS}: sparse must be a SparseOptimizer`);
    const own = new Set(this.#blockSparseLayers());
    const layers = sparse.layers();
    // Layers outside this model ride with the schedule: a rank that threw here alone would leave the others in its gather.
    const schedule = Float64Array.of(layers.filter((layer) => !own.has(layer)).length, ...scheduleValues(sparse));
    if (!this.#agreedCalls.has(sparse)) {
      await this.#compareSchedules(MOVE_PATTERNS, [schedule]);
      this.#agreedCalls.set(sparse, sparse.calls);
    }
    // A rank alone agrees with itself: its own count, a state it loaded since included.
    const agreed = this.#group.worldSize === 1 ? sparse.calls : (this.#agreedCalls.get(sparse) ?? sparse.calls);
    if (!sparse.willUpdate(agreed)) {
      sparse.skipStep();
      this.#agreedCalls.set(sparse, agreed + 1);
      return new Map();
    }
    const before = new Map(layers.map((layer) => [layer, layer.pattern]));
    // Rank 0 decides once the ranks agree on the schedule and the layers moved: a layer frozen on some ranks only is moved by rank 0's alone.
    const decide = () => {
      try {
        if (this.#group.rank === 0) sparse.step(loss);
        else sparse.skipStep();
      } finally {
        // The schedules were found equal, counts included: every rank counted this call from the same count.
        this.#agreedCalls.set(sparse, sparse.calls);
      }
    };
    const patterns = await this.#broadcastPatterns({ moved: new Set(layers), schedule, decide });
    const values = new Map<BlockSparseLinear, Tensor>();
    for (const [layer, pattern] of patterns) {
      const weight = layer.weight.value;
      values.set(layer, this.#group.rank === 0 ? weight : keep(fullOn(weight.backend, [pattern.nnzBlocks, ...pattern.blockShape], 0, weight.dtype)));
    }
    try {
      await Promise.all([...values.values()].map((t) => this.#group.broadcast(t, 0)));
      if (this.#group.rank !== 0) {
        noGrad(() => {
          for (const [layer, pattern] of patterns) {
            const received = values.get(layer) as Tensor;
            if (!pattern.equals(layer.pattern)) {
              const sources = blockSources(layer.pattern, pattern);
              const added = Int32Array.from(sources.keys()).filter((k) => sources[k] < 0);
              const newValues = added.length === 0 ? undefined : tidy(() => gather(received, tensorOn(received.backend, added, [added.length], "int32"), 0));
              try {
                layer.setPattern(pattern, { newValues, optimizer: sparse.optimizers.length > 0 ? sparse.optimizers : undefined });
              } finally {
                newValues?.dispose();
              }
            }
          }
        });
      }
    } finally {
      // The other ranks' buffers for rank 0's blocks, also when a broadcast failed (rank 0's are its weights).
      if (this.#group.rank !== 0) for (const received of values.values()) received.dispose();
    }
    const moves = new Map<BlockSparseLinear, PatternMove>();
    for (const [layer, previous] of before) {
      const [was, is] = [flatBlocks(previous), flatBlocks(layer.pattern)];
      moves.set(layer, { pruned: difference(was, is), regrown: difference(is, was) });
    }
    return moves;
  }

  /**
   * One allGather of `schedules` (per SparseOptimizer: how many of the layers it moves are outside this model, then
   * its scheduleValues; as many on every rank), then the same error on every rank where they differ: a ValueError when
   * some rank's moves layers outside its model, else a ScheduleMismatchError naming each setting and every rank's value.
   */
  async #compareSchedules(where: string, schedules: Float64Array[]): Promise<void> {
    const width = 1 + SCHEDULE_SETTINGS.length;
    const own = new Float64Array(schedules.length * width);
    for (const [i, schedule] of schedules.entries()) own.set(schedule, i * width);
    // Each float64 as two int32 words: exact for fractions, counts past 2^31 and a totalSteps of Infinity.
    const all = this.#group.worldSize === 1 ? own : new Float64Array(Int32Array.from(await this.#allGatherInt32(new Int32Array(own.buffer))).buffer);
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const value = (r: number, i: number, field: number) => all[(r * schedules.length + i) * width + field];
    const outside = ranks.filter((r) => schedules.some((_, i) => value(r, i, 0) > 0));
    if (outside.length > 0) {
      throw new ValueError(`${where}: the SparseOptimizer moves layers that are not in this model${this.#group.worldSize > 1 ? ` (on rank(s) ${outside.join(", ")})` : ""}`);
    }
    const differences: ScheduleDifference[] = [];
    schedules.forEach((_, i) => {
      SCHEDULE_SETTINGS.forEach((setting, s) => {
        const values = ranks.map((r) => value(r, i, 1 + s));
        if (values.some((v) => v !== values[0])) differences.push({ optimizer: i, setting, values: values.map((v) => settingValue(setting, v)) });
      });
    });
    // Every rank sees the same values: all return here alike (after digests that differed, a guard only).
    if (differences.length === 0) return;
    const shown = (v: number | string | null) => (v === null ? "none" : typeof v === "string" ? JSON.stringify(v) : String(v));
    const details = differences.map(
      ({ optimizer, setting, values }) => `${schedules.length > 1 ? `SparseOptimizer #${optimizer}'s ` : ""}${setting} ${values.map((v, r) => `${shown(v)} on rank ${r}`).join(", ")}`,
    );
    throw new ScheduleMismatchError(
      differences,
      `${where}: the ranks' SparseOptimizers have different schedules: ${details.join("; ")}. Give every rank's SparseOptimizer the same options and state (a resumed run loads the same stateDict on every rank), and move patterns only with movePatterns, called on every rank where sparse.step would run`,
    );
  }

  /**
   * Checks that every rank holds the same parameters (bit for bit) and patterns, by comparing
   * digests; throws a ReplicaDivergenceError naming what differs and where.
   */
  async checkReplicas(): Promise<void> {
    // Each digest covers the layout (dtype and shape) as well as the bytes: [4, 6] and [6, 4] zeros are not the same parameter.
    const entries: [string, string, Uint8Array][] = [];
    let patterns = 0;
    for (const [name, parameter] of this.module.namedParameters()) {
      const raw = parameter.value.backend.readSync(parameter.value.dataId);
      entries.push([name, `${parameter.dtype} [${parameter.shape.join(", ")}]`, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)]);
      const pattern = parameter.pattern;
      if (pattern === null) continue;
      patterns++;
      entries.push([`${name} (pattern)`, `[${pattern.shape.join(", ")}] in [${pattern.blockShape.join(", ")}] blocks`, new Uint8Array(flatBlocks(pattern).buffer)]);
    }
    // The name too: parameters listed in another order on some rank would otherwise compare equal after the broadcast.
    const digests = Int32Array.from(entries, ([name, layout, bytes]) => digest32(`${name}\n${layout}\n`, bytes));
    // Counts first, in a gather of one size on every rank: per-entry digests of other counts would be gathers of other sizes (a hang on NCCL).
    const parameters = entries.length - patterns;
    const summary = await this.#allGatherInt32([parameters, patterns, digest32(digests)]);
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const field = (r: number, f: number) => summary[r * 3 + f];
    if (ranks.some((r) => field(r, 0) !== field(0, 0) || field(r, 1) !== field(0, 1))) {
      const counts = ranks.map((r) => `${field(r, 0)} parameters and ${field(r, 1)} block-sparse patterns on rank ${r}`).join(", ");
      throw new ReplicaDivergenceError(`the replicas diverged: the ranks built different models (${counts})`);
    }
    if (ranks.every((r) => field(r, 2) === field(0, 2))) return;
    const all = await this.#allGatherInt32(digests);
    const differences: string[] = [];
    entries.forEach(([name], i) => {
      const differing = ranks.filter((r) => all[r * entries.length + i] !== all[i]);
      if (differing.length > 0) differences.push(`${name} differs from rank 0's on rank(s) ${differing.join(", ")}`);
    });
    if (differences.length > 0) throw new ReplicaDivergenceError(`the replicas diverged: ${differences.join("; ")}`);
  }

  /**
   * Saves the wrapped model's checkpoint from rank 0 only (nn's `save`); every rank returns once rank 0 has written it.
   * When rank 0's write fails, rank 0 throws its error and every other rank a DistributedError saying so, at once (not
   * at the timeout, as a barrier that rank 0 never reached would).
   */
  async save(path: string, metadata: Record<string, string> = {}, options: SaveOptions = {}): Promise<void> {
    let failure: unknown = null;
    if (this.#group.rank === 0) {
      try {
        await save(this.module, path, metadata, options);
      } catch (error) {
        failure = error;
      }
    }
    // Rank 0's outcome to every rank: 1 for written, 0 for failed.
    const written = (await this.#broadcastInt32([this.#group.rank === 0 && failure === null ? 1 : 0]))[0];
    if (failure !== null) throw failure;
    if (written !== 1) throw new DistributedError(`DistributedDataParallel.save: rank 0 could not write ${JSON.stringify(path)} (its error is on rank 0)`);
  }

  #blockSparseLayers(): BlockSparseLinear[] {
    return this.module.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
  }

  #backend(): Backend {
    return this.module.parameters()[0].value.backend;
  }

  /** Rank 0's `values` (int32, the same count on each rank) on every rank; nothing left allocated if the collective fails. */
  async #broadcastInt32(values: ArrayLike<number>): Promise<ArrayLike<number>> {
    const own = tensorOn(this.#backend(), Int32Array.from(values), [values.length], "int32");
    try {
      await this.#group.broadcast(own, 0);
      return own.dataSync();
    } finally {
      own.dispose();
    }
  }

  /** Every rank's `values` (int32, the same count on each), rank after rank; nothing left allocated if the collective fails. */
  async #allGatherInt32(values: ArrayLike<number>): Promise<ArrayLike<number>> {
    const own = tensorOn(this.#backend(), Int32Array.from(values), [values.length], "int32");
    try {
      const gathered = await this.#group.allGather(own);
      try {
        return gathered.dataSync();
      } finally {
        gathered.dispose();
      }
    } finally {
      own.dispose();
    }
  }

  /**
   * Rank 0's pattern of every block-sparse layer, in three collectives: an allGather of every
   * rank's number of block-sparse layers (so that the next one has the same size on every rank),
   * an allGather of every rank's block counts and layer sizes (so that a layer of another size on
   * some rank fails on every rank, instead of taking rank 0's block positions in another grid),
   * then a broadcast of rank 0's block positions. For a pattern move, the first one also carries
   * digests of the SparseOptimizer's schedule (`moving.schedule`, as #compareSchedules takes it), of
   * which layers `moving.moved` holds (a SparseOptimizer's layers: those whose weight takes
   * gradients) and of the patterns before the move; `moving.decide` (rank 0's step) runs only once
   * the ranks agree on all three, and the second one carries whether it threw, so that every rank
   * stops there if it did.
   */
  async #broadcastPatterns(moving?: { moved: ReadonlySet<BlockSparseLinear>; schedule: Float64Array; decide: () => void }): Promise<Map<BlockSparseLinear, BsrPattern>> {
    const named = this.module.namedModules().filter((entry): entry is [string, BlockSparseLinear] => entry[1] instanceof BlockSparseLinear);
    const layers = named.map(([, layer]) => layer);
    const movedFlags = Int32Array.from(layers, (layer) => (moving?.moved.has(layer) ? 1 : 0));
    const scheduleDigest = moving === undefined ? 0 : digest32(moving.schedule);
    // A move starts from patterns every rank holds: each rank keeps its own values of the blocks it held.
    const patternDigests = Int32Array.from(layers, (layer) => (moving === undefined ? 0 : patternDigest(layer.pattern)));
    // Before the gather sized by the layer count: gathers of other sizes are a CollectiveError about shapes on the CPU group, a hang or garbage on NCCL.
    const fields = 4;
    const counts = this.#group.worldSize === 1 ? [layers.length, 0, 0, 0] : await this.#allGatherInt32([layers.length, digest32(movedFlags), scheduleDigest, digest32(patternDigests)]);
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const agree = (f: number) => ranks.every((r) => counts[fields * r + f] === counts[f]);
    if (!agree(0)) {
      const where = ranks.map((r) => `${counts[fields * r]} on rank ${r}`).join(", ");
      throw new ReplicaDivergenceError(`DistributedDataParallel: the ranks built different models: their numbers of block-sparse layers differ (${where})`);
    }
    // Where every rank's SparseOptimizer moves layers outside its model too, alike: the same ValueError on every rank.
    if (moving !== undefined && (!agree(2) || moving.schedule[0] > 0)) await this.#compareSchedules(MOVE_PATTERNS, [moving.schedule]);
    if (!agree(1)) await this.#throwMovedMismatch(named, movedFlags);
    if (!agree(3)) await this.#throwPatternMismatch(named, patternDigests);
    let failure: { error: unknown } | undefined;
    try {
      moving?.decide();
    } catch (error) {
      failure = { error };
    }
    if (layers.length === 0) {
      if (failure !== undefined) throw failure.error;
      return new Map();
    }
    const backend = this.#backend();
    // Per layer: its block count, rows, columns, block rows and block columns; after whether this rank's decide threw.
    const layerFields = 5;
    const stride = 1 + layers.length * layerFields;
    const describe = (values: ArrayLike<number>, at: number) => `[${values[at + 1]}, ${values[at + 2]}] in [${values[at + 3]}, ${values[at + 4]}] blocks`;
    const described = await this.#allGatherInt32([failure === undefined ? 0 : 1, ...layers.flatMap((layer) => [layer.nnzBlocks, ...layer.pattern.shape, ...layer.pattern.blockShape])]);
    if (failure !== undefined) throw failure.error;
    const failed = ranks.filter((r) => described[r * stride] !== 0);
    if (failed.length > 0) {
      throw new DistributedError(`${MOVE_PATTERNS}: rank ${failed.join(", ")}'s SparseOptimizer.step failed (its error is on that rank), so no other rank took its patterns`);
    }
    const mismatches: string[] = [];
    named.forEach(([name], i) => {
      const sizes = (r: number) => describe(described, r * stride + 1 + i * layerFields);
      const differing = Array.from({ length: this.#group.worldSize }, (_, r) => r).filter((r) => sizes(r) !== sizes(0));
      if (differing.length > 0) {
        const where = differing.map((r) => `${sizes(r)} on rank ${r}`).join(", ");
        mismatches.push(`block-sparse layer ${name === "" ? "(the wrapped module)" : `'${name}'`} is ${sizes(0)} on rank 0 but ${where}`);
      }
    });
    if (mismatches.length > 0) throw new ReplicaDivergenceError(`DistributedDataParallel: the ranks built different models: ${mismatches.join("; ")}`);
    const nnz = layers.map((_, i) => described[1 + i * layerFields]);
    const all = new Int32Array(nnz.reduce((a, b) => a + b, 0));
    if (this.#group.rank === 0) {
      let offset = 0;
      for (const layer of layers) {
        all.set(flatBlocks(layer.pattern), offset);
        offset += layer.nnzBlocks;
      }
    }
    const positions = tensorOn(backend, all, [all.length], "int32");
    let received: Int32Array;
    try {
      await this.#group.broadcast(positions, 0);
      received = positions.dataSync() as Int32Array;
    } finally {
      positions.dispose();
    }
    const patterns = new Map<BlockSparseLinear, BsrPattern>();
    let offset = 0;
    layers.forEach((layer, i) => {
      const own = layer.pattern;
      patterns.set(layer, this.#group.rank === 0 ? own : BsrPattern.fromFlatBlocks(own.shape, own.blockShape, received.subarray(offset, offset + nnz[i])));
      offset += nnz[i];
    });
    return patterns;
  }

  /**
   * With the ranks' digests of the layers their SparseOptimizers move known to differ: one allGather of the flags, and a
   * GradientMismatchError on every rank naming the layers' weights, before any pattern moves (rank 0's optimizer would
   * move a layer that a rank where it is frozen, or not in its SparseOptimizer, would then take from rank 0 anyway).
   */
  async #throwMovedMismatch(named: [string, BlockSparseLinear][], movedFlags: Int32Array): Promise<void> {
    const all = await this.#allGatherInt32(movedFlags);
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const names: string[] = [];
    const details: string[] = [];
    named.forEach(([name, layer], i) => {
      const moving = ranks.filter((r) => all[r * named.length + i] === 1);
      if (moving.length === 0 || moving.length === ranks.length) return;
      const still = ranks.filter((r) => all[r * named.length + i] !== 1);
      const weight = name === "" ? "weight" : `${name}.weight`;
      names.push(weight);
      details.push(`block-sparse layer ${name === "" ? "(the wrapped module)" : `'${name}'`} (its weight ${layer.weight.requiresGrad ? "takes gradients" : "is frozen"} on rank ${this.#group.rank}) is moved on rank(s) ${moving.join(", ")} but not on rank(s) ${still.join(", ")}`);
    });
    // A guard only: equal flags give equal digests, and every rank sees the same flags.
    if (names.length === 0) return;
    throw new GradientMismatchError(
      names,
      `DistributedDataParallel.movePatterns: the ranks' SparseOptimizers move different layers: ${details.join("; ")}. A SparseOptimizer moves the layers of its target whose weight takes gradients: freeze layers alike on every rank and give every rank's SparseOptimizer the same layers`,
    );
  }

  /**
   * With the ranks' digests of their patterns before a move known to differ: one allGather of each layer's digest and
   * sizes, and a ReplicaDivergenceError on every rank naming the layers, before anything moves or is counted. Taking
   * rank 0's pattern, a rank keeps its own values of the blocks it held: a pattern moved on some rank alone
   * (`pruneAndRegrow` or `setPattern` there, a checkpoint loaded there) would leave that rank's values apart from rank
   * 0's, with patterns the later checks find equal.
   */
  async #throwPatternMismatch(named: [string, BlockSparseLinear][], patternDigests: Int32Array): Promise<void> {
    const fields = 5;
    const all = await this.#allGatherInt32(named.flatMap(([, layer], i) => [patternDigests[i], ...layer.pattern.shape, ...layer.pattern.blockShape]));
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const at = (r: number, i: number) => (r * named.length + i) * fields;
    const sizes = (r: number, i: number) => `[${all[at(r, i) + 1]}, ${all[at(r, i) + 2]}] in [${all[at(r, i) + 3]}, ${all[at(r, i) + 4]}] blocks`;
    const resized: string[] = [];
    const moved: string[] = [];
    named.forEach(([name], i) => {
      const layer = name === "" ? "(the wrapped module)" : `'${name}'`;
      const otherSizes = ranks.filter((r) => sizes(r, i) !== sizes(0, i));
      if (otherSizes.length > 0) resized.push(`block-sparse layer ${layer} is ${sizes(0, i)} on rank 0 but ${otherSizes.map((r) => `${sizes(r, i)} on rank ${r}`).join(", ")}`);
      const otherPatterns = ranks.filter((r) => all[at(r, i)] !== all[at(0, i)]);
      if (otherPatterns.length > 0) moved.push(`block-sparse layer ${layer} has another pattern than rank 0's on rank(s) ${otherPatterns.join(", ")}`);
    });
    if (resized.length > 0) throw new ReplicaDivergenceError(`DistributedDataParallel: the ranks built different models: ${resized.join("; ")}`);
    // A guard only: equal digests give equal fingerprints, and every rank sees the same digests.
    if (moved.length === 0) return;
    throw new ReplicaDivergenceError(
      `${MOVE_PATTERNS}: the ranks held different block-sparse patterns before the move: ${moved.join("; ")}. Each rank would take rank 0's pattern but keep its own values of the blocks it held, so the replicas would train apart. ` +
        "Move patterns with movePatterns alone (rank 0 decides, every rank follows), load a checkpoint on every rank alike, or call ddp.broadcastParameters() on every rank to copy rank 0's patterns and values",
    );
  }

  /** Parameters that take gradients, hold none and are not `reached` (by the coming backward): this rank's unused ones. */
  #unusedCount(reached: (parameter: Parameter) => boolean): number {
    return this.module.parameters().filter((parameter) => parameter.requiresGrad && parameter.grad === null && !reached(parameter)).length;
  }

  /**
   * Before any bucket is reduced: checks that every rank has the same parameters taking gradients
   * and the same block-sparse patterns (the buckets are planned from them, and a gradient's
   * values are per block), and that the SparseOptimizers given to movePatterns still have the same
   * schedules (a count that drifted apart would send ranks into different collectives at a later
   * move), and that no parameter was added or replaced since `create` (its values would be its
   * rank's own), and that the ranks cut the gradients into the same buckets (a `bucketBytes` that differs
   * between ranks: buckets of other sizes), in one allGather of ten numbers per rank (parameter count, how
   * many take gradients, a digest of which, a digest of the patterns, the count of unused parameters, a
   * digest of every parameter's dtype and shape, the number of SparseOptimizers, a digest of their schedules,
   * the count of parameters added since and a digest of `buckets`, the plan the caller then reduces).
   * Only when they differ, a second allGather finds what differs, and every rank throws the same
   * error naming it, instead of calling collectives of other sizes (a CollectiveError about shapes
   * on the CPU group; a hang or wrong sums on NCCL) or averaging the gradients of different blocks.
   * A parameter frozen on every rank is left out of the buckets on every rank, as before. Returns
   * whether any rank has `unused` parameters (then the reduction asks which parameters held a
   * gradient anywhere: one more small collective, which steps where every parameter is used never pay).
   */
  async #checkGradientAgreement(where: string, unused: number, buckets: readonly Bucket[]): Promise<boolean> {
    const worldSize = this.#group.worldSize;
    if (worldSize === 1) return unused > 0;
    const named = this.module.namedParameters();
    const count = named.length;
    const flags = Int32Array.from(named, ([, parameter]) => (parameter.requiresGrad ? 1 : 0));
    // Per parameter: 0 without a pattern, else a digest of its grid and block positions (never 0).
    const patternDigests = Int32Array.from(named, ([, { pattern }]) => (pattern === null ? 0 : patternDigest(pattern)));
    // Per parameter: its name, dtype and shape (a block-sparse weight's dense shape: its block count is the pattern check's).
    const layouts = named.map(([, parameter]) => layoutOf(parameter));
    const layoutDigests = Int32Array.from(named, ([name], i) => identityDigest(name, layouts[i]));
    // Per SparseOptimizer: as movePatterns compares it (none of its layers can be outside the model: its first call checked).
    const sparses = [...this.#agreedCalls.keys()];
    const schedules = sparses.map((sparse) => Float64Array.of(0, ...scheduleValues(sparse)));
    const scheduleDigests = Int32Array.from(schedules, (schedule) => digest32(schedule));
    // Per parameter: 1 where it is not one the ranks agreed on (added or replaced since create or broadcastParameters).
    const added = Int32Array.from(named, ([, parameter]) => (this.#wrapped.has(parameter) ? 0 : 1));
    // The buckets' sizes, in order: with the parameters alike, a bucketBytes that differs cuts them into buckets of other sizes.
    const plan = Int32Array.from(buckets, (bucket) => bucket.parameters.length);
    const fields = 10;
    const fingerprints = await this.#allGatherInt32([
      count,
      flags.reduce((a, b) => a + b, 0),
      digest32(flags),
      digest32(patternDigests),
      unused,
      digest32(layoutDigests),
      sparses.length,
      digest32(scheduleDigests),
      added.reduce((a, b) => a + b, 0),
      digest32(plan),
    ]);
    const ranks = Array.from({ length: worldSize }, (_, r) => r);
    const field = (r: number, f: number) => fingerprints[r * fields + f];
    const agree = (f: number) => ranks.every((r) => field(r, f) === field(0, f));
    const exchange = ranks.some((r) => field(r, 4) > 0);
    // The schedules are equal on every rank, counts included: each rank's count is the one they agree on (a state loaded on every rank alike, too).
    const schedulesAgreed = () => {
      for (const sparse of sparses) this.#agreedCalls.set(sparse, sparse.calls);
      return exchange;
    };
    const changed = ranks.some((r) => field(r, 8) > 0);
    if (agree(0) && agree(1) && agree(2) && agree(3) && agree(5) && agree(6) && agree(7) && agree(9) && !changed) return schedulesAgreed();
    if (!agree(0)) {
      const counts = ranks.map((r) => `${field(r, 0)} on rank ${r}`).join(", ");
      throw new ReplicaDivergenceError(`${where}: the ranks built different models: their numbers of parameters differ (${counts})`);
    }
    const label = (name: string, i: number) => (name === "" ? `parameter #${i}` : `parameter '${name}'`);
    if (!(agree(1) && agree(2))) {
      const all = await this.#allGatherInt32(flags);
      const names: string[] = [];
      const details: string[] = [];
      named.forEach(([name, parameter], i) => {
        const taking = ranks.filter((r) => all[r * count + i] === 1);
        if (taking.length === 0 || taking.length === worldSize) return;
        const frozen = ranks.filter((r) => all[r * count + i] !== 1);
        names.push(name === "" ? `#${i}` : name);
        details.push(
          `${label(name, i)} (#${i} of ${count}, ${parameter.dtype} [${parameter.shape.join(", ")}]) takes gradients on rank(s) ${taking.join(", ")} but is frozen (requiresGrad false) on rank(s) ${frozen.join(", ")}`,
        );
      });
      // A guard only (equal flags give equal fingerprints); every rank sees the same flags, so all would go on alike.
      if (names.length > 0) {
        throw new GradientMismatchError(
          names,
          `${where}: the ranks disagree on which parameters take gradients, so they would reduce different gradient buckets: ${details.join("; ")}. Freeze or unfreeze parameters alike on every rank (a parameter that takes gradients but gets none in backward need not be frozen: it counts as zeros where other ranks have one, and keeps none where no rank has one)`,
        );
      }
    }
    // Same sizes in other shapes would be averaged silently (a [4, 8] weight's gradient with a [8, 4] one's); other sizes hang NCCL.
    if (!agree(5)) await this.#throwLayoutMismatch(where, named, layouts);
    // The same on every rank (torch's DDP ignores such a parameter): each rank's values of its own, never broadcast.
    if (changed) {
      const all = await this.#allGatherInt32(added);
      const details: string[] = [];
      named.forEach(([name], i) => {
        const on = ranks.filter((r) => all[r * count + i] === 1);
        if (on.length > 0) details.push(`${label(name, i)} on rank(s) ${on.join(", ")}`);
      });
      throw new ReplicaDivergenceError(
        `${where}: the model changed after DistributedDataParallel.create: ${details.join("; ")} ${details.length === 1 ? "was" : "were"} added or replaced since, so ${details.length === 1 ? "its values were" : "their values were"} never copied from rank 0 and the replicas would train from different values. Change the model before wrapping it, or call ddp.broadcastParameters() on every rank after changing it (and give the optimizer the new parameters)`,
      );
    }
    if (!agree(3)) {
      const all = await this.#allGatherInt32(patternDigests);
      const details: string[] = [];
      named.forEach(([name], i) => {
        const differing = ranks.filter((r) => all[r * count + i] !== all[i]);
        if (differing.length > 0) details.push(`${label(name, i)} has another block-sparse pattern than rank 0's on rank(s) ${differing.join(", ")}`);
      });
      // A guard only, as above: equal digests give equal fingerprints.
      if (details.length > 0) {
        throw new ReplicaDivergenceError(
          `${where}: the ranks hold different block-sparse patterns, so they would average the gradients of different blocks: ${details.join("; ")}. Move patterns with DistributedDataParallel.movePatterns (rank 0 decides, every rank follows) rather than sparse.step on each rank`,
        );
      }
    }
    if (!agree(6)) {
      const counts = ranks.map((r) => `${field(r, 6)} on rank ${r}`).join(", ");
      throw new ReplicaDivergenceError(`${where}: the ranks have given movePatterns different numbers of SparseOptimizers (${counts}): give every rank's movePatterns the same ones, at the same calls`);
    }
    if (!agree(7)) await this.#compareSchedules(where, schedules);
    // The parameters agree, so the plans differ by bucketBytes alone (an all-reduce of other sizes: a hang or wrong sums on NCCL).
    if (!agree(9)) {
      const all = new Float64Array(Int32Array.from(await this.#allGatherInt32(new Int32Array(Float64Array.of(this.#bucketBytes).buffer))).buffer);
      const values = ranks.map((r) => `${all[r]} on rank ${r}`).join(", ");
      throw new ValueError(
        `${where}: the ranks cut the gradients into different buckets: DistributedDataParallel.create was given different bucketBytes (${values}), so they would all-reduce buckets of other sizes. Give every rank the same bucketBytes`,
      );
    }
    return schedulesAgreed();
  }

  /**
   * Checks that every rank has the same number of parameters, of the same dtypes and shapes (torch's DDP checks
   * this when it starts): a ReplicaDivergenceError on every rank naming the parameters that differ, instead of
   * broadcasts of other sizes (a hang with NCCL) or a rank that finishes create while rank 0 still waits.
   */
  async #checkLayouts(where: string): Promise<void> {
    if (this.#group.worldSize === 1) return;
    const named = this.module.namedParameters();
    const layouts = named.map(([, parameter]) => layoutOf(parameter));
    const digests = Int32Array.from(named, ([name], i) => identityDigest(name, layouts[i]));
    const fingerprints = await this.#allGatherInt32([named.length, digest32(digests)]);
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    if (ranks.every((r) => fingerprints[2 * r] === fingerprints[0] && fingerprints[2 * r + 1] === fingerprints[1])) return;
    if (!ranks.every((r) => fingerprints[2 * r] === fingerprints[0])) {
      const counts = ranks.map((r) => `${fingerprints[2 * r]} on rank ${r}`).join(", ");
      throw new ReplicaDivergenceError(`${where}: the ranks built different models: their numbers of parameters differ (${counts})`);
    }
    await this.#throwLayoutMismatch(where, named, layouts);
  }

  /**
   * With the ranks' digests of names and layouts known to differ: one allGather of each parameter's layout and name
   * digests, and a ReplicaDivergenceError naming the parameters that differ. A name that differs alone is a model
   * that lists its parameters in another order: each rank would take another parameter's values and gradients.
   */
  async #throwLayoutMismatch(where: string, named: [string, Parameter][], layouts: string[]): Promise<void> {
    const all = await this.#allGatherInt32(named.flatMap(([name], i) => [digest32(layouts[i]), digest32(name)]));
    const ranks = Array.from({ length: this.#group.worldSize }, (_, r) => r);
    const details: string[] = [];
    named.forEach(([name], i) => {
      const differing = (field: number) => ranks.filter((r) => all[(r * named.length + i) * 2 + field] !== all[i * 2 + field]);
      const label = name === "" ? `parameter #${i}` : `parameter '${name}'`;
      const [otherLayout, otherName] = [differing(0), differing(1)];
      if (otherLayout.length > 0) details.push(`${label} (${layouts[i]} on rank ${this.#group.rank}) has another dtype or shape than rank 0's on rank(s) ${otherLayout.join(", ")}`);
      else if (otherName.length > 0) details.push(`parameter #${i} of ${named.length} is '${name}' on rank ${this.#group.rank} but has another name than rank 0's on rank(s) ${otherName.join(", ")}`);
    });
    // A guard only: equal digests give equal fingerprints, and every rank sees the same digests.
    if (details.length > 0) {
      const order = details.some((detail) => detail.includes("has another name")) ? " (a parameter named otherwise: the ranks list their parameters in other orders, so each would take another parameter's values and gradients)" : "";
      throw new ReplicaDivergenceError(`${where}: the ranks built different models: ${details.join("; ")}${order}`);
    }
  }

  /** Parameters that take gradients, in reverse order (backward reaches the last layers first), cut into buckets of one dtype. */
  #planBuckets(): Bucket[] {
    const buckets: Bucket[] = [];
    let bytes = 0;
    for (const parameter of [...this.module.parameters()].reverse()) {
      if (!parameter.requiresGrad) continue;
      const last = buckets[buckets.length - 1];
      const size = parameter.size * bytesPerElement(parameter.dtype);
      if (last === undefined || bytes >= this.#bucketBytes || last.parameters[0].dtype !== parameter.dtype) {
        buckets.push({ parameters: [parameter], ready: 0 });
        bytes = size;
      } else {
        last.parameters.push(parameter);
        bytes += size;
      }
    }
    return buckets;
  }

  /**
   * Starts one bucket's all-reduce: its gradients flattened into one tensor, zeros for a parameter
   * without a gradient on this rank (every rank reduces the same sizes).
   */
  #startReduction(bucket: Bucket): Reduction {
    const held = bucket.parameters.map((parameter) => parameter.grad !== null);
    const flat = noGrad(() =>
      keep(
        tidy(() => {
          const grads = bucket.parameters.map((parameter) =>
            parameter.grad === null ? fullOn(parameter.value.backend, [parameter.size], 0, parameter.dtype) : reshape(parameter.grad, [parameter.size]),
          );
          return grads.length === 1 ? grads[0] : concat(grads, 0);
        }),
      ),
    );
    return { bucket, flat, held, reduced: this.#group.allReduce(flat, "avg") };
  }

  /** Starts the reductions of `buckets` from `started.length` on, in order; when one cannot start, abandons those started. */
  #startReductions(buckets: Bucket[], started: Reduction[] = []): Reduction[] {
    try {
      while (started.length < buckets.length) started.push(this.#startReduction(buckets[started.length]));
    } catch (error) {
      this.#abandon(started);
      throw error;
    }
    return started;
  }

  /** After a failure before the reductions could finish: the gradients stay this rank's own, each buffer freed once its collective settles. */
  #abandon(reductions: Reduction[]): void {
    for (const { reduced, flat } of reductions) reduced.catch(() => {}).finally(() => flat.dispose());
  }

  /**
   * Once every bucket's all-reduce has started (in the same order on every rank): with `exchange`
   * (some rank's backward left a parameter out of its graph, see #checkGradientAgreement) one
   * allGather of which parameters held a gradient on each rank, then the averages copied back into the
   * gradients of the parameters that held one on some rank. One that held none on any rank keeps
   * none (torch's DDP leaves such a `.grad` as it was), so optimizers skip it instead of stepping
   * on zeros (AdamW's decay and moments). The buffers are freed once every collective settled.
   */
  async #finishReductions(reductions: Reduction[], exchange: boolean): Promise<void> {
    try {
      const held = reductions.flatMap((reduction) => reduction.held);
      // Without `exchange` every rank's backward reaches every parameter: all of them hold a gradient somewhere.
      const [heldAnywhere] = await Promise.all([exchange ? this.#heldOnAnyRank(held) : held.map(() => true), ...reductions.map((reduction) => reduction.reduced)]);
      noGrad(() =>
        tidy(() => {
          let index = 0;
          for (const { bucket, flat } of reductions) {
            let offset = 0;
            for (const parameter of bucket.parameters) {
              if (heldAnywhere[index++]) {
                const averaged = reshape(slice(flat, [offset], [parameter.size]), parameter.shape);
                const grad = parameter.grad;
                if (grad === null) parameter.grad = keep(averaged);
                else grad.assign(averaged);
              }
              offset += parameter.size;
            }
          }
        }),
      );
    } finally {
      await Promise.allSettled(reductions.map((reduction) => reduction.reduced));
      for (const { flat } of reductions) flat.dispose();
    }
  }

  /** Per entry of `held` (this rank's flags, in bucket order): whether any rank holds that gradient. Calls its collective at once. */
  async #heldOnAnyRank(held: boolean[]): Promise<boolean[]> {
    // Every rank plans the same buckets: all skip the collective alike when there is nothing to reduce.
    if (this.#group.worldSize === 1 || held.length === 0) return held;
    const all = await this.#allGatherInt32(held.map((h) => (h ? 1 : 0)));
    return held.map((_, i) => Array.from({ length: this.#group.worldSize }, (_, r) => all[r * held.length + i] === 1).some(Boolean));
  }
}

/** `sparse`'s SCHEDULE_SETTINGS as numbers: a name as its index in SCHEDULE_CHOICES (-1 for another), a totalSteps that never comes as Infinity. */
function scheduleValues(sparse: SparseOptimizer): number[] {
  const { calls, options } = sparse.stateDict();
  const state: Record<string, number | string | null> = { calls, ...options };
  return SCHEDULE_SETTINGS.map((setting) => {
    const value = state[setting];
    if (value === null) return Number.POSITIVE_INFINITY;
    return typeof value === "string" ? (SCHEDULE_CHOICES[setting]?.indexOf(value) ?? -1) : value;
  });
}

/** One of scheduleValues' numbers as the setting's value (null: totalSteps never comes). */
function settingValue(setting: string, value: number): number | string | null {
  const choices = SCHEDULE_CHOICES[setting];
  if (choices !== undefined) return choices[value] ?? "another value";
  return value === Number.POSITIVE_INFINITY ? null : value;
}

/** A parameter's dtype and shape as the ranks compare them; a block-sparse weight's is its dense shape and block shape. */
function layoutOf(parameter: Parameter): string {
  const { pattern } = parameter;
  return pattern === null ? `${parameter.dtype} [${parameter.shape.join(", ")}]` : `${parameter.dtype} [${pattern.shape.join(", ")}] in [${pattern.blockShape.join(", ")}] blocks`;
}

/** A parameter's name and layout in one digest (one hash per parameter, as the layout alone took). */
function identityDigest(name: string, layout: string): number {
  return digest32(`${name}\n${layout}`);
}

/** The first int32 of the SHA-256 of `parts` in turn: what the ranks compare in place of the data itself. */
function digest32(...parts: (string | ArrayBufferView)[]): number {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(typeof part === "string" ? part : new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
  return hash.digest().readInt32LE(0);
}

/** True for a promise or any object with a `then` method (what `await` would wait for). */
function isPromiseLike<T>(value: T): value is T & PromiseLike<Awaited<T>> {
  return (typeof value === "object" || typeof value === "function") && value !== null && typeof (value as { then?: unknown }).then === "function";
}

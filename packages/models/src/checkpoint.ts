import { noGrad } from "@blocksparse/autograd";
import { type DType, fromStorage, type Tensor, tidy, transpose, ValueError } from "@blocksparse/core";
import type { SafetensorsTensor } from "@blocksparse/format";
import { disposeStateDict, Module, type StateDict, type StateDictMismatch } from "@blocksparse/nn";
import { CheckpointError } from "./errors";
import { checkOptions, dtypeHint, shown } from "./layers";

/** How a model's Hugging Face checkpoints name and lay out its parameters. */
export interface CheckpointRules {
  /** The model's own name for a file key (prefixes such as "transformer." or "bert." resolved), or null to skip the key (buffers, tied copies). */
  modelKey(fileKey: string): string | null;
  /** Keys stored transposed in the file (GPT-2's Conv1D weights are [in, out]). */
  transposed(modelKey: string): boolean;
  /** File key -> model key, read only when no other key loads that parameter (a tied head saved in the embedding's place). */
  tiedFallbacks?: ReadonlyMap<string, string>;
  /** Keys strict loading lets pass, still reported: model keys a file may lack and file keys of heads the model has not (BERT's pooler; cls.*). TASK_HEADS pass for every model. */
  optional?: RegExp;
  /** Model key -> why the file must hold it, said when strict loading refuses a file that lacks it (an untied head). */
  missingNotes?: ReadonlyMap<string, string>;
}

/** A model this package can load Hugging Face checkpoints into. */
export interface HuggingFaceModel extends Module {
  checkpointRules(): CheckpointRules;
}

/** What a file says about one tensor, from its header. */
export interface TensorHeader {
  dtype: string;
  shape: readonly number[];
}

export interface CheckpointOptions {
  /** Refuse missing and unexpected keys (default true). Mis-shaped keys are refused either way. */
  strict?: boolean;
}

export const CHECKPOINT_OPTIONS: readonly string[] = ["strict"];

export interface CheckpointPlan {
  /** File key -> the model key it loads into, for every key that loads. */
  load: Map<string, { modelKey: string; transposed: boolean }>;
  /** Model keys the checkpoint lacks (when strict, only those the rules let pass). */
  missingKeys: string[];
  /** File keys the model has no place for (when strict, only those the rules let pass). */
  unexpectedKeys: string[];
}

// F64 has no tensor dtype here: its values are rounded to float32 on the way in, as torch's load casts them to the model's dtype.
const FLOAT_FILE_DTYPES: Record<string, DType> = { F32: "float32", F16: "float16", BF16: "bfloat16", F64: "float32" };

/**
 * File keys of transformers' task heads (sequence / token classification and multiple choice: classifier.*, RoBERTa's
 * classifier.dense / out_proj, GPT-2's score and multiple_choice_head; question answering: qa_outputs): strict loading
 * lets them pass into a base model and reports them, as from_pretrained loads a fine-tune's encoder and warns.
 */
const TASK_HEADS = /^(classifier(\.dense|\.out_proj)?|qa_outputs|score|multiple_choice_head\.summary)\.(weight|bias)$/;

const format = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/**
 * Refuses a model that names no checkpoint keys (no checkpointRules: a GPT2Model trunk, a Module of one's own), which
 * would fail inside with a TypeError, with a ValueError naming what it got.
 */
export function checkCheckpointModel(model: unknown): asserts model is HuggingFaceModel {
  if (model instanceof Module && typeof (model as { checkpointRules?: unknown }).checkpointRules === "function") return;
  const got = model instanceof Module ? `a ${model.constructor.name}` : shown(model);
  throw new ValueError(`loadCheckpoint: model must be a GPT2LMHeadModel, BertModel or RobertaModel, got ${got} (no checkpointRules); GPT-2's trunk loads as a GPT2LMHeadModel's transformer`);
}

/**
 * Checks a checkpoint's headers (every file's keys with dtype and shape) against `model`
 * before anything loads: missing keys, unexpected keys, shapes that differ (in the file's
 * layout) and non-float dtypes are all listed in one CheckpointError. F64 tensors load rounded to float32 (then to
 * the parameter's dtype).
 */
export function planCheckpoint(model: HuggingFaceModel, headers: Map<string, TensorHeader>, options: CheckpointOptions | null = {}): CheckpointPlan {
  checkCheckpointModel(model);
  const strict = checkOptions<CheckpointOptions>("loadCheckpoint", options, CHECKPOINT_OPTIONS, dtypeHint).strict ?? true;
  const rules = model.checkpointRules();
  const parameters = new Map(model.namedParameters());
  const load: CheckpointPlan["load"] = new Map();
  const unexpectedKeys: string[] = [];
  const mismatches: StateDictMismatch[] = [];
  const loadedBy = new Map<string, string>();
  const problems: string[] = [];
  const keys = [...headers.keys()].map((fileKey) => [fileKey, rules.modelKey(fileKey)] as const);
  for (const [fileKey, modelKey] of rules.tiedFallbacks ?? []) {
    if (headers.has(fileKey) && !keys.some(([, key]) => key === modelKey)) keys.push([fileKey, modelKey]);
  }
  for (const [fileKey, modelKey] of keys) {
    if (modelKey === null) continue;
    const header = headers.get(fileKey) as TensorHeader;
    const parameter = parameters.get(modelKey);
    if (parameter === undefined) {
      unexpectedKeys.push(fileKey);
      continue;
    }
    const previous = loadedBy.get(modelKey);
    if (previous !== undefined) {
      problems.push(`'${previous}' and '${fileKey}' both name the parameter '${modelKey}'`);
      continue;
    }
    loadedBy.set(modelKey, fileKey);
    const transposed = rules.transposed(modelKey);
    const shape = parameter.pattern === null ? parameter.shape : parameter.pattern.shape;
    const expected = transposed ? [shape[1], shape[0]] : shape;
    const dtypeOk = header.dtype in FLOAT_FILE_DTYPES;
    if (!dtypeOk || header.shape.length !== expected.length || header.shape.some((d, i) => d !== expected[i])) {
      mismatches.push({
        key: fileKey,
        expected: `${format(expected)} F32, F16, BF16 or F64${transposed ? " (Conv1D layout [in, out])" : ""}`,
        got: `${format(header.shape)} ${header.dtype}`,
      });
      continue;
    }
    load.set(fileKey, { modelKey, transposed });
  }
  const missingKeys = [...parameters.keys()].filter((key) => !loadedBy.has(key));
  const refused = [...missingKeys, ...unexpectedKeys.filter((key) => !TASK_HEADS.test(key))].some((key) => !rules.optional?.test(key));
  if (strict && refused) {
    for (const key of missingKeys) {
      const note = rules.missingNotes?.get(key);
      if (note !== undefined) problems.push(`${key}: ${note}`);
    }
  }
  if (problems.length > 0 || mismatches.length > 0 || (strict && refused)) {
    throw new CheckpointError("loadCheckpoint", strict ? missingKeys : [], strict ? unexpectedKeys : [], mismatches, problems);
  }
  return { load, missingKeys, unexpectedKeys };
}

/** Loads the planned tensors among `tensors` (one file's contents) into the model; the others are left for their own files. */
export function loadPlannedTensors(model: Module, plan: CheckpointPlan, tensors: Map<string, SafetensorsTensor>): void {
  const stateDict: StateDict = new Map();
  try {
    for (const [fileKey, tensor] of tensors) {
      const target = plan.load.get(fileKey);
      if (target === undefined) continue;
      const dtype = FLOAT_FILE_DTYPES[tensor.dtype];
      const data = tensor.data instanceof Float64Array ? Float32Array.from(tensor.data) : (tensor.data as Float32Array | Uint16Array);
      const stored = fromStorage(data, tensor.shape, dtype);
      stateDict.set(target.modelKey, target.transposed ? transposedCopy(stored) : stored);
    }
    noGrad(() => model.loadStateDict(stateDict, { strict: false }));
  } finally {
    disposeStateDict(stateDict);
  }
}

function transposedCopy(stored: Tensor): Tensor {
  try {
    return tidy(() => transpose(stored));
  } finally {
    stored.dispose();
  }
}

/** Loads one file's contents (the whole checkpoint) into `model`, checked first as planCheckpoint does. */
export function loadCheckpointTensors(model: HuggingFaceModel, tensors: Map<string, SafetensorsTensor>, options: CheckpointOptions | null = {}): CheckpointPlan {
  const headers = new Map<string, TensorHeader>([...tensors].map(([key, t]) => [key, { dtype: t.dtype, shape: t.shape }]));
  const plan = planCheckpoint(model, headers, options);
  loadPlannedTensors(model, plan, tensors);
  return plan;
}

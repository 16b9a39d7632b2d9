export const version = "0.1.0";

export {
  BERT_ATTENTION_LAYERS,
  BERT_FFN_LAYERS,
  BertAttention,
  BertEmbeddings,
  BertEncoder,
  BertIntermediate,
  BertLayer,
  BertModel,
  BertPooler,
  BertResidualOutput,
  BertSelfAttention,
  type EncoderInputs,
  type EncoderOutput,
  RobertaModel,
} from "./bert";
export {
  type CheckpointOptions,
  type CheckpointPlan,
  type CheckpointRules,
  type HuggingFaceModel,
  loadCheckpointTensors,
  loadPlannedTensors,
  planCheckpoint,
  type TensorHeader,
} from "./checkpoint";
export { type Activation, type BertConfig, type Gpt2Config, parseBertConfig, parseGpt2Config } from "./config";
export { CheckpointError, ConfigError, ModelsError } from "./errors";
export { maxRelativeError } from "./layers";
export {
  GPT2_ATTENTION_LAYERS,
  GPT2_FFN_LAYERS,
  GPT2Attention,
  GPT2Block,
  GPT2Cache,
  type GPT2Inputs,
  GPT2LMHeadModel,
  GPT2MLP,
  GPT2Model,
  type GenerateOptions,
  type KeyValue,
  type ModelOptions,
} from "./gpt2";

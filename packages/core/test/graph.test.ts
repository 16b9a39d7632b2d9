import { declareGraphTests, declareNoGraphTests, registerGraphRecordingBackend } from "@blocksparse/core/testing";

// captureGraph's semantics on the js backend with recorded graphs (the same suite runs on cuda's CUDA graphs).
registerGraphRecordingBackend();
declareGraphTests("js-graphs");
declareNoGraphTests("js");

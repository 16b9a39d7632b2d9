import { runBackendConformance } from "@blocksparse/core/testing";

runBackendConformance("js");

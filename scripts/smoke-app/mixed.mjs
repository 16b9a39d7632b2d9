// A mistake apps make: one package by import, another by require. Core must say so.
import { createRequire } from "node:module";
import "@blocksparse/core";

createRequire(import.meta.url)("@blocksparse/core");
console.log("mixed: both copies loaded without a complaint");

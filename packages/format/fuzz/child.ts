import { type FuzzReader, runCase } from "./cases.js";

/** A fuzz worker: runs the cases it is sent, one result message per case (so a hang is pinned to its case). */
process.on("message", (message: { reader: FuzzReader; seed: number; from: number; to: number }) => {
  for (let index = message.from; index < message.to; index++) process.send?.(runCase(message.reader, message.seed, index));
  process.send?.({ done: true });
});

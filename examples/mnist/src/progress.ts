import { Presets, SingleBar } from "cli-progress";
import type { TrainHooks } from "./train";

/**
 * A progress bar per epoch on a terminal; one plain line per epoch otherwise (a CI log or
 * a pipe gets no cursor movement).
 */
export function progressHooks(stream: NodeJS.WriteStream = process.stdout): TrainHooks {
  if (!stream.isTTY) {
    return {
      onEpochEnd: ({ model, epoch, epochs, meanLoss, seconds }) =>
        stream.write(`${model.padEnd(18)} epoch ${epoch}/${epochs}  loss ${meanLoss.toFixed(4)}  ${seconds.toFixed(1)} s\n`),
    };
  }
  let bar: SingleBar | null = null;
  return {
    onEpochStart: ({ model, epoch, epochs, steps }) => {
      bar = new SingleBar(
        {
          format: `${model.padEnd(18)} epoch ${epoch}/${epochs} [{bar}] {value}/{total} steps | loss {loss} | {duration}s`,
          stream,
          hideCursor: true,
        },
        Presets.shades_classic,
      );
      bar.start(steps, 0, { loss: "-" });
    },
    onStep: ({ step, loss }) => bar?.update(step, { loss: loss.toFixed(4) }),
    onEpochEnd: ({ meanLoss }) => {
      bar?.update({ loss: `${meanLoss.toFixed(4)} (mean)` });
      bar?.stop();
      bar = null;
    },
  };
}
